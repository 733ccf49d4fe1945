//! Command line.

use clap::{Args, Parser, Subcommand, ValueEnum};
use hostd_interface::host::Transport;

/// Inspect and update an image-based host through hostd.
///
/// Exit codes: 0 success; 1 failure; 2 usage error; 3 hostd unreachable;
/// 4 not an image-based host; 5 not authorized; 6 another job is running;
/// 7 invalid argument; 8 cancelled; 9 interrupted, job left running;
/// 10 the registry wants credentials; 11 the registry denied access;
/// 12 the image is not bootable; 100 `upgrade --check --exit-code` found
/// an update (a downgrade, an image built before the deployed one, is none:
/// 0). Without `--exit-code`, `upgrade --check` exits 0 whether or not there
/// is an update, as `bootc upgrade --check` does. A closed standard output
/// (`hostctl … | head -1`) ends hostctl quietly with 141, as SIGPIPE would.
///
/// Jobs (upgrade, switch, stage, rollback, cleanup, discard) are followed to their
/// end: on a terminal with a spinner while the image is looked at, then a
/// progress bar (the image, "N of M layers to fetch (K cached)", bytes,
/// rate, ETA) and a closing line with what was fetched and the time taken,
/// otherwise with one line per phase; `--json` prints one JSON object per
/// change (state, phase, image, message, bytesDone, bytesTotal, layersDone,
/// layersTotal, errorName, errorMessage, warnings); warnings (such as image
/// content the host does not deploy) are printed to stderr as `Warning: …`
/// lines otherwise, also with `--quiet`; `--progress-fd N` (any open
/// descriptor, 1 included) also writes bootc's progress events (Start,
/// ProgressBytes with a subtask per fetched layer, ProgressSteps).
///
/// Ctrl-C while a job runs asks whether to cancel it (on a terminal);
/// otherwise the job keeps running in hostd, and `hostctl watch` follows it
/// again.
///
/// On a terminal, a call that polkit lets an administrator authorize with a
/// password runs a polkit text agent (`pkttyagent`) for its duration, so the
/// password is asked for there; `--no-ask-password` never asks.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
pub struct Cli {
    /// Never ask for a password (polkit must decide without interaction).
    #[arg(long, global = true)]
    pub no_ask_password: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show booted, staged and rollback deployments.
    Status(StatusArgs),
    /// Fetch and queue the tracked image (or only look, with --check).
    Upgrade(UpgradeArgs),
    /// Fetch and queue another image and track it from then on.
    Switch(SwitchArgs),
    /// Queue a downloaded (download-only) update for the next boot, offline.
    Stage(ApplyArgs),
    /// Make the rollback deployment the default; again to undo.
    Rollback(ApplyArgs),
    /// Remove images, layers and objects no deployment needs.
    Cleanup(JobOutput),
    /// Drop the update waiting for the next boot: the staged deployment,
    /// or an update fetched with --download-only. The other deployments
    /// keep their order, so the next boot is the one it would have been
    /// without the update. With none waiting, says so and exits 0.
    Discard(JobOutput),
    /// Show or change the automatic update settings ([updates] of hostd.toml).
    ///
    /// `set` and `unset` change /etc/hostd/hostd.d/90-settings.toml through
    /// hostd (needs the org.hostd.host1.configure authorization) and apply
    /// it at once; a drop-in named after it (e.g. 95-site.toml) overrides it.
    /// Keys are those of hostd.toml: updates.policy, updates.strategy,
    /// updates.time_zone, updates.window, updates.fleet_lock.url,
    /// updates.fleet_lock.group (the "updates." may be left out).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Keep a deployment through new deployments and cleanups.
    Pin(PinArgs),
    /// Let a pinned deployment be removed again.
    Unpin(PinArgs),
    /// Mount a writable overlay on /usr of the booted deployment,
    /// discarded at the next reboot unless --persist.
    UsrOverlay(UsrOverlayArgs),
    /// Cancel the running job.
    Cancel,
    /// Follow the running job again (after Ctrl-C, or one started elsewhere).
    Watch(JobOutput),
    /// Re-read /etc/hostd/hostd.toml and drop-ins.
    Reload,
    /// Write the man pages and shell completions into DIR (for `make install`).
    #[command(hide = true)]
    GenerateDocs {
        /// Where: DIR/man1 and DIR/completions.
        dir: std::path::PathBuf,
    },
    /// List files in /etc that differ from the image's defaults (/usr/etc).
    ///
    /// Each line is a change kind (A added, D removed, M modified), the
    /// path, and for modified paths what changed: type, mode, owner,
    /// content. An added or removed directory is one line. File contents
    /// are never shown. Control characters and bytes that are not UTF-8 in
    /// a name are written as \\, \n, \t or \xNN.
    EtcDiff(EtcDiffArgs),
    /// Show what changes between two deployments: packages, kernel, kernel arguments.
    ///
    /// FROM and TO name a deployment: booted (on an offline sysroot: the
    /// default one), staged, rollback, cached (the update downloaded with
    /// `upgrade --download-only` and not deployed), or its index in the
    /// boot order (0 boots next). Without them: booted to staged, else
    /// booted to the downloaded update. Packages are read from each tree's
    /// dpkg database and compared by dpkg's version rules, or from its rpm
    /// database (rpm ≥ 4.16's sqlite one, listed by rpm) and compared by
    /// rpm's rules (epoch, version, release; ~ and ^); lines are
    /// `+ name version` (added), `- name version` (removed), `↑ name old ->
    /// new` (upgraded), `↓ name old -> new` (downgraded), as `rpm-ostree db
    /// diff`. Older rpm databases, and two sides with different package
    /// databases, are not compared package by package (said in the
    /// output). A malformed package database exits 1 naming the file.
    Diff(DiffArgs),
    /// Bring the host to an edited Host spec (image, bootOrder), as `bootc edit`.
    ///
    /// The document is a bootc Host document (apiVersion
    /// org.containers.bootc/v1, kind BootcHost) in YAML or JSON; only its
    /// `spec` is read: a new `image` (with `transport`) switches to it,
    /// `bootOrder: rollback` or `default` rolls back when it differs from
    /// the current one; both at once are refused. A `status` section or an
    /// unknown field is an invalid argument (exit 7) and nothing changes. A
    /// spec equal to the current one changes nothing. Without --filename,
    /// $EDITOR (else $VISUAL, else vi, which needs a terminal) opens the
    /// current spec.
    Edit(EditArgs),
}

impl Command {
    /// How the verb's job is shown, for verbs that start one.
    pub fn job_output(&self) -> Option<&JobOutput> {
        match self {
            Command::Upgrade(a) => Some(&a.output),
            Command::Switch(a) => Some(&a.output),
            Command::Stage(a) | Command::Rollback(a) => Some(&a.output),
            Command::Cleanup(o) | Command::Watch(o) | Command::Discard(o) => Some(o),
            Command::Edit(a) => Some(&a.output),
            _ => None,
        }
    }
}

/// `status --format`: bootc's output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Text for people (the default when stdout is a terminal).
    Humanreadable,
    /// The Host document as YAML (the default otherwise).
    Yaml,
    /// The Host document as JSON.
    Json,
}

/// `status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format: the Host document (bootc org.containers.bootc/v1
    /// compatible) as YAML or JSON, or text. Default: humanreadable when
    /// stdout is a terminal, else yaml (as `bootc status`).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Version of the Host document: 0 and 1 both mean
    /// org.containers.bootc/v1, the one there is (as in bootc).
    #[arg(long, value_name = "VERSION", value_parser = clap::value_parser!(u32).range(0..=1))]
    pub format_version: Option<u32>,
    /// Same as --format=json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Only the booted deployment (with yaml or json: the Host document
    /// with only the booted entry, as `bootc status --booted`); an offline
    /// sysroot has none.
    #[arg(long)]
    pub booted: bool,
}

impl StatusArgs {
    /// The format to print, given whether stdout is a terminal.
    pub fn format(&self, stdout_is_terminal: bool) -> Format {
        match (self.format, self.json) {
            (Some(format), _) => format,
            (None, true) => Format::Json,
            (None, false) if stdout_is_terminal => Format::Humanreadable,
            (None, false) => Format::Yaml,
        }
    }
}

/// How job progress is shown.
#[derive(Debug, Args, Clone, Default)]
pub struct JobOutput {
    /// Print only errors and warnings.
    #[arg(long, short)]
    pub quiet: bool,
    /// One JSON object per event on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write bootc-compatible progress JSON lines to this file descriptor.
    #[arg(long, value_name = "FD")]
    pub progress_fd: Option<i32>,
}

/// `upgrade` options.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Only look for an update (manifest and config) and say what was
    /// found; exits 0 whether or not there is one (as `bootc upgrade
    /// --check`). For users other than root, a check soon after the last one
    /// (check_interval_secs in hostd.toml) shows that one's result instead
    /// of looking again.
    #[arg(long, conflicts_with_all = ["download_only", "apply", "allow_downgrade", "auto", "retry_failed"])]
    pub check: bool,
    /// With --check: exit 100 when an update is available and not yet
    /// downloaded. An image built before the deployed one is reported as a
    /// downgrade and exits 0.
    #[arg(long, requires = "check")]
    pub exit_code: bool,
    /// Do what the configured policy allows ([updates] policy in
    /// hostd.toml: check, download, stage, or stage and reboot when the
    /// strategy lets it); this is what the update timer runs.
    #[arg(long, conflicts_with_all = ["download_only", "apply", "allow_downgrade", "retry_failed"])]
    pub auto: bool,
    /// Fetch and keep the deployment locked: a plain reboot does not apply it.
    #[arg(long, conflicts_with = "apply")]
    pub download_only: bool,
    /// Reboot when the update is queued.
    #[arg(long)]
    pub apply: bool,
    /// Accept an image built before the current one.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Install the image even though its deployment failed the boot health
    /// checks before (and was rolled back); without it such an image is
    /// refused, and unattended runs skip it.
    #[arg(long)]
    pub retry_failed: bool,
    #[command(flatten)]
    pub output: JobOutput,
}

/// Image transports.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TransportArg {
    /// A container registry.
    Registry,
    /// An OCI layout directory (absolute path, optional :tag).
    Oci,
    /// An OCI archive (absolute path).
    OciArchive,
    /// Local containers-storage: podman's image store (`podman build`,
    /// `podman pull`), as storage.conf names it.
    ContainersStorage,
    /// A `skopeo copy dir:` directory (absolute path).
    Dir,
    /// A `podman save` (docker-archive) tar file (absolute path).
    DockerArchive,
}

impl From<TransportArg> for Transport {
    fn from(arg: TransportArg) -> Transport {
        match arg {
            TransportArg::Registry => Transport::Registry,
            TransportArg::Oci => Transport::Oci,
            TransportArg::OciArchive => Transport::OciArchive,
            TransportArg::ContainersStorage => Transport::ContainersStorage,
            TransportArg::Dir => Transport::Dir,
            TransportArg::DockerArchive => Transport::DockerArchive,
        }
    }
}

/// `switch` options.
#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// The image, e.g. quay.io/org/os:latest or /srv/images/os:latest with --transport oci.
    pub image: String,
    /// How to reach the image.
    #[arg(long, value_enum, default_value = "registry")]
    pub transport: TransportArg,
    /// Keep the current deployment instead of letting it be pruned.
    #[arg(long)]
    pub retain: bool,
    /// Require the host's containers policy to verify the image signature.
    #[arg(long)]
    pub enforce_container_sigpolicy: bool,
    /// Fetch and keep the deployment locked.
    #[arg(long, conflicts_with = "apply")]
    pub download_only: bool,
    /// Reboot when the update is queued.
    #[arg(long)]
    pub apply: bool,
    #[command(flatten)]
    pub output: JobOutput,
}

/// Which deployment `etc-diff` compares.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DeploymentArg {
    /// The booted deployment (on an offline sysroot: the default one).
    Booted,
    /// The deployment staged for the next boot.
    Staged,
}

/// `etc-diff` options.
///
/// Each line is a change kind (A added, D removed, M modified), the path,
/// and for modified paths what changed: type, mode, owner, content. An
/// added or removed directory is one line. File contents are never shown.
#[derive(Debug, Args)]
pub struct EtcDiffArgs {
    /// Print the changes as JSON ({"deployment", "changes": [{"path", "kind",
    /// "type", "mode", "previousType", "previousMode", "ownerChanged",
    /// "contentChanged"}]}).
    #[arg(long)]
    pub json: bool,
    /// Which deployment's /etc to compare with its /usr/etc. A staged
    /// deployment's /etc gets the running system's changes only at shutdown.
    #[arg(long, value_enum, default_value = "booted")]
    pub deployment: DeploymentArg,
}

/// `diff` arguments.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The deployment to compare from: booted, staged, rollback, cached or
    /// an index (default: booted).
    #[arg(value_name = "FROM")]
    pub from: Option<String>,
    /// The deployment to compare to (default: staged, else cached).
    #[arg(value_name = "TO")]
    pub to: Option<String>,
    /// Print the comparison as JSON ({"from", "to", "packages": [{"name",
    /// "architecture", "kind", "from", "to"}], "kernelChanged", "kargs":
    /// {"removed", "added"}}).
    #[arg(long)]
    pub json: bool,
}

/// `edit` options.
///
/// The document is a bootc Host document (apiVersion
/// org.containers.bootc/v1, kind BootcHost) in YAML or JSON; only its
/// `spec` is read: a new `image` (with `transport`) switches to it,
/// `bootOrder: rollback` or `default` rolls back when it differs from the
/// current one; both at once are refused. A `status` section or an unknown
/// field is an invalid argument (exit 7) and nothing changes. A spec equal
/// to the current one changes nothing.
#[derive(Debug, Args)]
pub struct EditArgs {
    /// Read the document from FILE (`-`: standard input) instead of
    /// opening $EDITOR (else $VISUAL, else vi) on the current spec.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub filename: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub output: JobOutput,
}

/// `pin` and `unpin` arguments.
#[derive(Debug, Args)]
pub struct PinArgs {
    /// The deployment: its commit as `hostctl status` shows it
    /// (checksum.serial, or the checksum alone when unique), or its position
    /// in the boot order (0 boots next).
    pub deployment: String,
}

/// `usr-overlay` options.
#[derive(Debug, Args)]
pub struct UsrOverlayArgs {
    /// Keep the overlay and its changes across reboots of this deployment
    /// (a hotfix, as `ostree admin unlock --hotfix`); an unchanged clone of
    /// the deployment becomes the rollback.
    #[arg(long)]
    pub persist: bool,
}

/// `config` verbs.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show the settings in force and the file that set each (or one
    /// setting's value, as `config set` takes it).
    Get(ConfigGetArgs),
    /// Set a setting, checked as hostd.toml's values are, and apply it.
    ///
    /// updates.window takes one DAYS START LENGTH per window, e.g.
    /// 'Sat,Sun 23:30 90' (day names, HH:MM, minutes), and replaces the
    /// whole list; no value clears it. Every other key takes one value.
    /// An invalid value exits 7 and changes nothing.
    Set(ConfigSetArgs),
    /// Drop settings made with `config set`, so the other files (or the
    /// defaults) decide them again.
    Unset(ConfigUnsetArgs),
}

/// `config get` options.
#[derive(Debug, Args)]
pub struct ConfigGetArgs {
    /// Only this setting, e.g. updates.policy (or policy).
    pub key: Option<String>,
    /// As JSON: {"settings": {KEY: VALUE}, "sources": {KEY: FILE}}.
    #[arg(long)]
    pub json: bool,
}

/// `config set` arguments.
#[derive(Debug, Args)]
pub struct ConfigSetArgs {
    /// The setting, e.g. updates.policy (or policy).
    pub key: String,
    /// Its value (for updates.window: one per window, none for no windows).
    pub values: Vec<String>,
}

/// `config unset` arguments.
#[derive(Debug, Args)]
pub struct ConfigUnsetArgs {
    /// The settings to drop.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub keys: Vec<String>,
    /// Drop every setting made with `config set`.
    #[arg(long)]
    pub all: bool,
}

/// Options of verbs that can reboot.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Reboot when done.
    #[arg(long)]
    pub apply: bool,
    #[command(flatten)]
    pub output: JobOutput,
}
