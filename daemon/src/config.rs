//! Configuration: `/etc/hostd/hostd.toml` plus drop-ins, in three stages —
//! fragments (every key optional, unknown keys rejected) → merged in order
//! into [`Inputs`], each value checked against the file that set it →
//! validated [`Config`], with defaults and the rules that tie keys together.
//!
//! Drop-ins live in `/usr/lib/hostd/hostd.d`, `/etc/hostd/hostd.d` and
//! `/run/hostd/hostd.d`; a file name in a later directory replaces the same
//! name in an earlier one, a symlink to `/dev/null` masks it, and the
//! survivors apply in file name order after the main file.
//!
//! Settings decide what root does, so a file is read only when no one but
//! root could have written it (as sudo and sshd do): a regular file, not
//! a symbolic link (except the `/dev/null` mask), owned by root, not
//! writable by group or others, at most [`MAX_FILE_BYTES`], in a directory
//! that is owned by root and not writable by group or others. Anything
//! else is refused with an error naming the file. A FIFO or device is
//! never opened for reading, so nothing here waits for a writer; callers on
//! the bus read through a [`Loader`], which also bounds the time.
//!
//! A later file replaces each scalar key it sets; `[[updates.window]]` is
//! one list, replaced whole by any file that has one (and cleared by
//! `window = []`), so what one file says about windows never mixes with
//! another's. See docs/automation.md.

use std::collections::BTreeMap;
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::WeekdaySet;
use chrono_tz::Tz;
use serde::Deserialize;

use hostd_interface::manager::UpdateStrategy;
use hostd_interface::settings as keys;

use crate::health::{HealthSettings, OnFailure};
use crate::updates::fleetlock::{FleetLockGroup, FleetLockUrl};
use crate::updates::policy::{FleetLockSettings, RebootStrategy, UpdatePolicy};
use crate::updates::window::{self, MaintenanceWindows, Window, WindowError};

/// Drop-in directories, lowest priority first, relative to the config root.
const DROPIN_DIRS: [&str; 3] = ["usr/lib/hostd/hostd.d", "etc/hostd/hostd.d", "run/hostd/hostd.d"];
/// The main file, relative to the config root.
const MAIN_FILE: &str = "etc/hostd/hostd.toml";
/// Largest configuration file read; real ones are a few hundred bytes.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;
/// How long a [`Loader`] waits for the files (a hung network file
/// system must not hold a caller, or start-up, for longer).
pub const LOAD_TIME_LIMIT: Duration = Duration::from_secs(5);
/// Permission bits that let someone other than the owner write.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Exit after this long without calls or jobs; `None` never exits.
    pub idle_exit: Option<Duration>,
    /// Cancel jobs running longer than this.
    pub job_timeout: Duration,
    /// A `Check` by a caller other than root this soon after the last one
    /// is answered with its result instead of a new job; `None`: never.
    pub check_interval: Option<Duration>,
    /// Unattended update policy.
    pub policy: UpdatePolicy,
    /// When an unattended run may reboot.
    pub strategy: RebootStrategy,
    /// The maintenance windows, in their time zone (empty: none configured).
    pub windows: MaintenanceWindows,
    /// `[updates] require_signatures`: every image deployed (Switch,
    /// Upgrade, unattended runs, Stage) must be accepted by the containers
    /// policy, which must require signatures for it; as if every Switch
    /// asked for `enforce-container-sigpolicy`. Default false.
    pub require_signatures: bool,
    /// `[health]`: the boot health checks and what a failure leads to
    /// (docs/health.md).
    pub health: HealthSettings,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            idle_exit: Some(Duration::from_secs(60)),
            job_timeout: Duration::from_secs(3600),
            check_interval: Some(Duration::from_secs(60)),
            policy: UpdatePolicy::None,
            strategy: RebootStrategy::Immediate,
            windows: MaintenanceWindows::new(Tz::UTC, Vec::new()),
            require_signatures: false,
            health: HealthSettings::default(),
        }
    }
}

/// Why the configuration was not loaded. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("reading {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A file or directory that someone other than root could have written,
    /// or that is not a plain file of reasonable size.
    #[error("{}: {reason}; refusing to read it", path.display())]
    Refused {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: Refusal,
    },
    /// Reading took longer than [`LOAD_TIME_LIMIT`].
    #[error("reading the configuration took longer than {} s (a hung file system?)", LOAD_TIME_LIMIT.as_secs())]
    TimedOut,
    /// A drop-in directory could not be listed.
    #[error("listing {}: {error}", dir.display())]
    List {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Not TOML, an unknown key or a value of the wrong type.
    #[error("in {}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the line.
        message: String,
    },
    /// A key with a value that is not allowed.
    #[error("in {}: {key}: {problem}", path.display())]
    Invalid {
        /// The file that set it.
        path: PathBuf,
        /// Dotted key, e.g. `updates.window[0].start` (windows count from 0).
        key: String,
        /// What is wrong.
        problem: String,
    },
}

/// Why a configuration file or directory is not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A symbolic link (other than the `/dev/null` mask).
    #[error("a symbolic link; only regular files are read")]
    Symlink,
    /// A FIFO, socket, device or directory where a file belongs (or a
    /// file where a directory belongs).
    #[error("a {found}, not a {expected}")]
    WrongType {
        /// What it is.
        found: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// Owned by someone other than root.
    #[error("owned by uid {0}, not by root")]
    NotOwnedByRoot(u32),
    /// Group or others may write it.
    #[error("writable by group or others (mode {0:04o})")]
    WritableByOthers(u32),
    /// Longer than [`MAX_FILE_BYTES`].
    #[error("larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
}

// Stage 1: one file as written.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fragment {
    daemon: Option<DaemonFragment>,
    updates: Option<UpdatesFragment>,
    health: Option<HealthFragment>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthFragment {
    required_units: Option<Vec<String>>,
    no_failed_units: Option<bool>,
    check_time_limit_secs: Option<u64>,
    deadline_secs: Option<u64>,
    on_failure: Option<OnFailure>,
    reboot_grace_secs: Option<u64>,
    fleet_lock_keep_slot: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonFragment {
    idle_exit_secs: Option<u64>,
    job_timeout_secs: Option<u64>,
    check_interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdatesFragment {
    policy: Option<UpdatePolicy>,
    strategy: Option<UpdateStrategy>,
    time_zone: Option<String>,
    window: Option<Vec<WindowFragment>>,
    fleet_lock: Option<FleetLockFragment>,
    require_signatures: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowFragment {
    days: Option<Vec<String>>,
    start: Option<String>,
    /// Minutes.
    length: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetLockFragment {
    url: Option<String>,
    group: Option<String>,
}

// Stage 2: all files merged, each value parsed.

/// What the files say, merged: the last file to set a key wins. Each value
/// is already checked on its own, so an error names the file it is in.
#[derive(Debug, Default)]
struct Inputs {
    idle_exit: Option<Option<Duration>>,
    job_timeout: Option<Duration>,
    check_interval: Option<Option<Duration>>,
    policy: Option<UpdatePolicy>,
    require_signatures: Option<bool>,
    /// With the file that set it: the rules tying it to other keys name it.
    strategy: Option<(UpdateStrategy, PathBuf)>,
    time_zone: Option<Tz>,
    windows: Option<Vec<Window>>,
    fleet_lock_url: Option<FleetLockUrl>,
    fleet_lock_group: Option<FleetLockGroup>,
    /// `[health]`, each key replaced by the last file that sets it.
    health: HealthSettings,
    /// The bus-settable keys' sources. (`hostd_interface::settings::KEYS`).
    sources: BTreeMap<&'static str, PathBuf>,
}

impl Inputs {
    /// Fold in `fragment`, read from `file`: every key it sets replaces what
    /// an earlier file said.
    fn merge(&mut self, fragment: Fragment, file: &Path) -> Result<(), ConfigError> {
        if let Some(d) = fragment.daemon {
            self.merge_daemon(d, file)?;
        }
        if let Some(u) = fragment.updates {
            self.merge_updates(u, file)?;
        }
        if let Some(h) = fragment.health {
            self.merge_health(h, file)?;
        }
        Ok(())
    }

    fn merge_health(&mut self, h: HealthFragment, file: &Path) -> Result<(), ConfigError> {
        let positive = |secs: Option<u64>, key: &str| match secs {
            Some(0) => Err(invalid(file, key, "must be greater than 0")),
            other => Ok(other.map(Duration::from_secs)),
        };
        let settings = &mut self.health;
        if let Some(units) = h.required_units {
            if let Some(bad) = units.iter().find(|u| u.is_empty() || u.contains('/') || !u.contains('.')) {
                return Err(invalid(file, "health.required_units", format!("{bad:?} is not a unit name")));
            }
            settings.required_units = units;
        }
        if let Some(on) = h.no_failed_units {
            settings.no_failed_units = on;
        }
        if let Some(limit) = positive(h.check_time_limit_secs, "health.check_time_limit_secs")? {
            settings.check_time_limit = limit;
        }
        if let Some(deadline) = positive(h.deadline_secs, "health.deadline_secs")? {
            settings.deadline = deadline;
        }
        if let Some(on_failure) = h.on_failure {
            settings.on_failure = on_failure;
        }
        if let Some(secs) = h.reboot_grace_secs {
            settings.reboot_grace = Duration::from_secs(secs);
        }
        if let Some(keep) = h.fleet_lock_keep_slot {
            settings.fleet_lock_keep_slot = keep;
        }
        Ok(())
    }

    fn merge_daemon(&mut self, d: DaemonFragment, file: &Path) -> Result<(), ConfigError> {
        if let Some(secs) = d.idle_exit_secs {
            self.idle_exit = Some((secs > 0).then(|| Duration::from_secs(secs)));
        }
        if let Some(secs) = d.job_timeout_secs {
            if secs == 0 {
                return Err(invalid(file, "daemon.job_timeout_secs", "must be greater than 0"));
            }
            self.job_timeout = Some(Duration::from_secs(secs));
        }
        if let Some(secs) = d.check_interval_secs {
            self.check_interval = Some((secs > 0).then(|| Duration::from_secs(secs)));
        }
        Ok(())
    }

    fn merge_updates(&mut self, u: UpdatesFragment, file: &Path) -> Result<(), ConfigError> {
        if let Some(policy) = u.policy {
            self.policy = Some(policy);
            self.set_by(keys::POLICY, file);
        }
        if let Some(required) = u.require_signatures {
            self.require_signatures = Some(required);
        }
        if let Some(strategy) = u.strategy {
            self.strategy = Some((strategy, file.to_path_buf()));
            self.set_by(keys::STRATEGY, file);
        }
        if let Some(name) = u.time_zone {
            let zone = window::parse_time_zone(&name).map_err(|e| invalid(file, keys::TIME_ZONE, e))?;
            self.time_zone = Some(zone);
            self.set_by(keys::TIME_ZONE, file);
        }
        if let Some(windows) = u.window {
            // The whole list, never mixed with an earlier file's.
            let windows = windows.into_iter().enumerate().map(|(i, w)| parse_window(i, w, file));
            self.windows = Some(windows.collect::<Result<_, _>>()?);
            self.set_by(keys::WINDOW, file);
        }
        if let Some(f) = u.fleet_lock {
            if let Some(url) = f.url {
                let url = FleetLockUrl::parse(&url).map_err(|e| invalid(file, keys::FLEET_LOCK_URL, e))?;
                self.fleet_lock_url = Some(url);
                self.set_by(keys::FLEET_LOCK_URL, file);
            }
            if let Some(group) = f.group {
                let group = FleetLockGroup::parse(&group).map_err(|e| invalid(file, keys::FLEET_LOCK_GROUP, e))?;
                self.fleet_lock_group = Some(group);
                self.set_by(keys::FLEET_LOCK_GROUP, file);
            }
        }
        Ok(())
    }

    fn set_by(&mut self, key: &'static str, file: &Path) {
        self.sources.insert(key, file.to_path_buf());
    }

    /// [`Inputs::validate`], keeping where each value came from.
    fn explain(self, host_zone: impl FnOnce() -> Tz) -> Result<Explained, ConfigError> {
        let sources = self.sources.clone();
        let fleet_lock_url = self.fleet_lock_url.clone();
        let fleet_lock_group = self.fleet_lock_group.clone();
        let config = self.validate(host_zone)?;
        Ok(Explained { config, sources, fleet_lock_url, fleet_lock_group })
    }

    // Stage 3: defaults and the rules between keys.

    /// The settings, with defaults for what no file set. `host_zone` is only
    /// asked when no file sets `time_zone`.
    fn validate(self, host_zone: impl FnOnce() -> Tz) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        let zone = self.time_zone.unwrap_or_else(host_zone);
        let windows = MaintenanceWindows::new(zone, self.windows.unwrap_or_default());
        let strategy = match self.strategy {
            None | Some((UpdateStrategy::Immediate, _)) => RebootStrategy::Immediate,
            Some((UpdateStrategy::Periodic, file)) => {
                if windows.is_empty() {
                    let problem = "\"periodic\" needs at least one [[updates.window]], and none is configured";
                    return Err(invalid(&file, "updates.strategy", problem));
                }
                RebootStrategy::Periodic
            }
            Some((UpdateStrategy::FleetLock, file)) => {
                let Some(url) = self.fleet_lock_url else {
                    let problem = "\"fleet-lock\" needs the lock manager's [updates.fleet_lock] url";
                    return Err(invalid(&file, "updates.strategy", problem));
                };
                let group = self.fleet_lock_group.unwrap_or_default();
                RebootStrategy::FleetLock(FleetLockSettings { url, group })
            }
        };
        Ok(Config {
            idle_exit: self.idle_exit.unwrap_or(defaults.idle_exit),
            job_timeout: self.job_timeout.unwrap_or(defaults.job_timeout),
            check_interval: self.check_interval.unwrap_or(defaults.check_interval),
            policy: self.policy.unwrap_or(defaults.policy),
            strategy,
            windows,
            require_signatures: self.require_signatures.unwrap_or(defaults.require_signatures),
            health: self.health,
        })
    }
}

/// The `index`th `[[updates.window]]` of `file`; an error names the key.
fn parse_window(index: usize, w: WindowFragment, file: &Path) -> Result<Window, ConfigError> {
    let key = |name: &str| format!("updates.window[{index}].{name}");
    let days = w
        .days
        .ok_or_else(|| invalid(file, &key("days"), "missing; name the days, e.g. [\"Sat\", \"Sun\"]"))?;
    let start = w
        .start
        .ok_or_else(|| invalid(file, &key("start"), "missing; give the start as \"HH:MM\""))?;
    let length = w
        .length
        .ok_or_else(|| invalid(file, &key("length"), "missing; give the length in minutes"))?;
    let mut day_set = WeekdaySet::EMPTY;
    for day in &days {
        day_set.insert(window::parse_day(day).map_err(|e| invalid(file, &key("days"), e))?);
    }
    let start = window::parse_start(&start).map_err(|e| invalid(file, &key("start"), e))?;
    Window::new(day_set, start, length).map_err(|e| {
        let name = if e == WindowError::NoDays { "days" } else { "length" };
        invalid(file, &key(name), e)
    })
}

/// `key` in `file` has a value that is not allowed.
fn invalid(file: &Path, key: &str, problem: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        path: file.to_path_buf(),
        key: key.to_string(),
        problem: problem.to_string(),
    }
}

impl Config {
    /// Read the main file and drop-ins under `root` (`/` in production).
    /// Without `[updates] time_zone`, windows are read in the zone
    /// `<root>/etc/localtime` names. Blocking: async code uses a [`Loader`].
    pub fn load(root: &Path) -> Result<Config, ConfigError> {
        Ok(Config::explain(root, None)?.config)
    }

    /// [`Config::load`], with where each value came from; with
    /// `replacement`, as if that file said what it holds (the check of
    /// settings before they are written, by the same code that reads them).
    pub fn explain(root: &Path, replacement: Option<&Replacement>) -> Result<Explained, ConfigError> {
        let mut inputs = Inputs::default();
        for file in config_files(root, replacement)? {
            let fragment = match replacement {
                Some(Replacement { path, text: Some(text) }) if *path == file => parse_fragment(&file, text)?,
                _ => read_fragment(&file)?,
            };
            inputs.merge(fragment, &file)?;
        }
        inputs.explain(|| window::host_time_zone(root))
    }
}

/// The settings and where they came from.
#[derive(Debug, Clone, Default)]
pub struct Explained {
    /// The validated settings.
    pub config: Config,
    /// The file that set each key of `hostd_interface::settings::KEYS`;
    /// a key no file set has its default.
    pub sources: BTreeMap<&'static str, PathBuf>,
    /// `[updates.fleet_lock] url` as the files say, also when the strategy
    /// does not use it.
    pub fleet_lock_url: Option<FleetLockUrl>,
    /// `[updates.fleet_lock] group` as the files say.
    pub fleet_lock_group: Option<FleetLockGroup>,
}

/// A configuration file as it would be: `text`, or absent when `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    /// The file (under the config root), a drop-in.
    pub path: PathBuf,
    /// Its text; `None`: the file is not there.
    pub text: Option<String>,
}

/// Runs [`Config::load`] on a blocking thread, one at a time, waiting at
/// most [`LOAD_TIME_LIMIT`] (queueing behind another load included). A read
/// that overruns is left to finish on its thread and holds the turn until
/// it does, so a stuck file system costs one thread, not one per call.
#[derive(Debug, Default)]
pub struct Loader {
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Loader {
    /// The configuration under `root`, read off the async threads.
    pub async fn load(&self, root: &Path) -> Result<Config, ConfigError> {
        self.load_within(root, LOAD_TIME_LIMIT, Config::load).await
    }

    /// [`Config::explain`] off the async threads.
    pub async fn explain(&self, root: &Path, replacement: Option<Replacement>) -> Result<Explained, ConfigError> {
        self.load_within(root, LOAD_TIME_LIMIT, move |root| Config::explain(root, replacement.as_ref())).await
    }

    /// `read(root)` on a blocking thread once no other read runs;
    /// [`ConfigError::TimedOut`] after `limit`.
    async fn load_within<T: Send + 'static>(
        &self,
        root: &Path,
        limit: Duration,
        read: impl FnOnce(&Path) -> Result<T, ConfigError> + Send + 'static,
    ) -> Result<T, ConfigError> {
        let root = root.to_path_buf();
        let turn = self.turn.clone();
        let load = async move {
            let my_turn = turn.lock_owned().await;
            tokio::task::spawn_blocking(move || {
                let _my_turn = my_turn;
                read(&root)
            })
            .await
        };
        match tokio::time::timeout(limit, load).await {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(join)) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            // Cancelled: the runtime is shutting down, nothing waits for it.
            Ok(Err(_)) | Err(_) => Err(ConfigError::TimedOut),
        }
    }
}

/// The text of `file`, if it is a file only root could have written.
fn read_trusted(file: &Path) -> Result<String, ConfigError> {
    let refused = |reason| ConfigError::Refused { path: file.to_path_buf(), reason };
    let read_error = |error| ConfigError::Read { path: file.to_path_buf(), error };
    // Looked at before opening, so a FIFO or device is never opened.
    let before = std::fs::symlink_metadata(file).map_err(read_error)?;
    check_trusted(&before, FileKind::File).map_err(refused)?;
    let opened = open_no_follow(file).map_err(|error| {
        if error.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
            refused(Refusal::Symlink)
        } else {
            read_error(error)
        }
    })?;
    // Checked again on what was opened: it may have been replaced.
    let after = opened.metadata().map_err(read_error)?;
    check_trusted(&after, FileKind::File).map_err(refused)?;
    let mut bytes = Vec::new();
    opened.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(refused(Refusal::TooLarge));
    }
    String::from_utf8(bytes).map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// `file` opened for reading, failing with `ELOOP` on a symbolic link and
/// without waiting for a writer should it be a FIFO after all.
fn open_no_follow(file: &Path) -> std::io::Result<File> {
    use nix::fcntl::OFlag;
    OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(file)
}

/// What a path of the configuration must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    File,
    Directory,
}

/// Whether `meta` (not following links) is a `kind` only root can write.
fn check_trusted(meta: &Metadata, kind: FileKind) -> Result<(), Refusal> {
    let file_type = meta.file_type();
    let found = if file_type.is_symlink() {
        return Err(Refusal::Symlink);
    } else if file_type.is_file() {
        FileKind::File
    } else if file_type.is_dir() {
        FileKind::Directory
    } else {
        return Err(Refusal::WrongType { found: type_name(meta), expected: kind_name(kind) });
    };
    if found != kind {
        return Err(Refusal::WrongType { found: kind_name(found), expected: kind_name(kind) });
    }
    if meta.uid() != trusted_owner() {
        return Err(Refusal::NotOwnedByRoot(meta.uid()));
    }
    if meta.mode() & WRITABLE_BY_OTHERS != 0 {
        return Err(Refusal::WritableByOthers(meta.mode() & 0o7777));
    }
    Ok(())
}

/// Root in production; the test user when unit tests run unprivileged.
fn trusted_owner() -> u32 {
    if cfg!(test) {
        nix::unistd::geteuid().as_raw()
    } else {
        0
    }
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "regular file",
        FileKind::Directory => "directory",
    }
}

fn type_name(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

fn read_fragment(file: &Path) -> Result<Fragment, ConfigError> {
    parse_fragment(file, &read_trusted(file)?)
}

fn parse_fragment(file: &Path, text: &str) -> Result<Fragment, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: file.to_path_buf(),
        message: syntax_message(text, &e),
    })
}

/// `line N: <what the parser said>`, on one line (the parser's own display
/// is a multi-line excerpt, unfit for a log line or a D-Bus error).
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", one_line(e.message()))
        }
        None => one_line(e.message()),
    }
}

fn one_line(message: &str) -> String {
    message.trim().replace('\n', "; ")
}

/// The main file (if present) followed by the surviving drop-ins in name
/// order; with `replacement`, as if that drop-in were there or not.
fn config_files(root: &Path, replacement: Option<&Replacement>) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    let main = root.join(MAIN_FILE);
    if main.symlink_metadata().is_ok() && !is_masked(&main) {
        if let Some(dir) = main.parent() {
            check_directory(dir)?;
        }
        files.push(main);
    }
    let mut dropins: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in DROPIN_DIRS.iter().map(|d| root.join(d)) {
        match dir.symlink_metadata() {
            Ok(_) => check_directory(&dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(ConfigError::List { dir, error }),
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(ConfigError::List { dir, error }),
        };
        for entry in entries {
            let entry = entry.map_err(|error| ConfigError::List {
                dir: dir.clone(),
                error,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".toml") {
                dropins.insert(name, entry.path());
            }
        }
    }
    if let Some(r) = replacement {
        replace_dropin(&mut dropins, r);
    }
    files.extend(dropins.into_values().filter(|p| !is_masked(p)));
    Ok(files)
}

/// `dropins` (name → the file that counts) with `r`'s file there or not.
/// A file of the same name in a later directory still replaces it.
fn replace_dropin(dropins: &mut BTreeMap<String, PathBuf>, r: &Replacement) {
    let Some(name) = r.path.file_name().map(|n| n.to_string_lossy().into_owned()) else { return };
    let ours = dropins.get(&name).is_none_or(|p| *p == r.path);
    match (&r.text, ours) {
        (Some(_), true) => {
            dropins.insert(name, r.path.clone());
        }
        (None, true) => {
            dropins.remove(&name);
        }
        (_, false) => {}
    }
}

/// A directory whose files could be replaced by someone other than root is
/// as untrusted as such a file.
fn check_directory(dir: &Path) -> Result<(), ConfigError> {
    let meta = dir.symlink_metadata().map_err(|error| ConfigError::List { dir: dir.to_path_buf(), error })?;
    check_trusted(&meta, FileKind::Directory).map_err(|reason| ConfigError::Refused { path: dir.to_path_buf(), reason })
}

fn is_masked(p: &Path) -> bool {
    std::fs::read_link(p).is_ok_and(|target| target == Path::new("/dev/null"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveTime, Weekday};

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn mask(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/dev/null", p).unwrap();
    }

    /// The error for `text` as the main file, with the temporary root shown as `<root>`.
    fn main_file_error(text: &str) -> String {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), MAIN_FILE, text);
        load_error(d.path())
    }

    fn load_error(root: &Path) -> String {
        Config::load(root)
            .unwrap_err()
            .to_string()
            .replace(root.to_str().unwrap(), "<root>")
    }

    fn load_main(text: &str) -> Config {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), MAIN_FILE, text);
        Config::load(d.path()).unwrap()
    }

    fn start(text: &str) -> NaiveTime {
        window::parse_start(text).unwrap()
    }

    #[test]
    fn require_signatures_is_off_unless_set_and_must_be_a_boolean() {
        assert!(!load_main("").require_signatures);
        assert!(load_main("[updates]\nrequire_signatures = true\n").require_signatures);
        let e = main_file_error("[updates]\nrequire_signatures = \"yes\"\n");
        assert!(e.contains("line 2") && e.contains("expected a boolean"), "{e}");
    }

    fn days(list: &[Weekday]) -> WeekdaySet {
        let mut set = WeekdaySet::EMPTY;
        for d in list {
            set.insert(*d);
        }
        set
    }

    #[test]
    fn health_keys_have_defaults_merge_per_key_and_reject_bad_values() {
        use crate::health::{HealthSettings, OnFailure};
        assert_eq!(load_main("").health, HealthSettings::default());
        let d = tempfile::tempdir().unwrap();
        write(d.path(), MAIN_FILE, "[health]\nrequired_units = [\"app.service\"]\ncheck_time_limit_secs = 5\n");
        write(d.path(), "etc/hostd/hostd.d/10-report.toml", "[health]\non_failure = \"report\"\nreboot_grace_secs = 0\n");
        let health = Config::load(d.path()).unwrap().health;
        assert_eq!(health.required_units, ["app.service"]);
        assert_eq!(health.check_time_limit, Duration::from_secs(5));
        assert_eq!(health.on_failure, OnFailure::Report);
        assert_eq!(health.reboot_grace, Duration::ZERO);
        assert_eq!(health.deadline, HealthSettings::default().deadline);
        assert_eq!(
            main_file_error("[health]\ndeadline_secs = 0\n"),
            "in <root>/etc/hostd/hostd.toml: health.deadline_secs: must be greater than 0"
        );
        assert_eq!(
            main_file_error("[health]\nrequired_units = [\"../x\"]\n"),
            "in <root>/etc/hostd/hostd.toml: health.required_units: \"../x\" is not a unit name"
        );
        assert!(main_file_error("[health]\non_failure = \"reboot\"\n").contains("unknown variant `reboot`"));
    }

    #[test]
    fn defaults_without_files() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Config::load(d.path()).unwrap(), Config::default());
    }

    #[test]
    fn later_directories_win_and_dev_null_masks() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, MAIN_FILE, "[daemon]\nidle_exit_secs = 5\n");
        write(r, "usr/lib/hostd/hostd.d/10-a.toml", "[daemon]\nidle_exit_secs = 7\n");
        write(r, "etc/hostd/hostd.d/10-a.toml", "[daemon]\nidle_exit_secs = 9\n");
        write(
            r,
            "usr/lib/hostd/hostd.d/20-b.toml",
            "[daemon]\njob_timeout_secs = 11\n",
        );
        mask(r, "run/hostd/hostd.d/20-b.toml");
        let c = Config::load(r).unwrap();
        assert_eq!(c.idle_exit, Some(Duration::from_secs(9)));
        assert_eq!(c.job_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn check_interval_defaults_to_a_minute_and_zero_turns_it_off() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), MAIN_FILE, "");
        assert_eq!(Config::load(d.path()).unwrap().check_interval, Some(Duration::from_secs(60)));
        write(d.path(), MAIN_FILE, "[daemon]\ncheck_interval_secs = 5\n");
        assert_eq!(Config::load(d.path()).unwrap().check_interval, Some(Duration::from_secs(5)));
        write(d.path(), "etc/hostd/hostd.d/10-checks.toml", "[daemon]\ncheck_interval_secs = 0\n");
        assert_eq!(Config::load(d.path()).unwrap().check_interval, None);
    }

    #[test]
    fn zero_idle_means_never() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), MAIN_FILE, "[daemon]\nidle_exit_secs = 0\n");
        assert_eq!(Config::load(d.path()).unwrap().idle_exit, None);
    }

    #[test]
    fn unknown_keys_name_file_and_key() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), MAIN_FILE, "[daemon]\nidle_exit = 5\n");
        let e = Config::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("etc/hostd/hostd.toml"), "{e}");
        assert!(e.contains("unknown field `idle_exit`"), "{e}");
    }

    #[test]
    fn bad_policy_value_is_rejected() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), MAIN_FILE, "[updates]\npolicy = \"sometimes\"\n");
        let e = Config::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("unknown variant `sometimes`"), "{e}");
    }

    #[test]
    fn unknown_key_in_each_table() {
        assert_eq!(
            main_file_error("[hostd]\nx = 1\n"),
            "in <root>/etc/hostd/hostd.toml: line 1: unknown field `hostd`, expected one of `daemon`, `updates`, `health`"
        );
        assert!(main_file_error("[health]\nrequired = []\n").contains("unknown field `required`"));
        assert_eq!(
            main_file_error("[daemon]\nidle_exit = 5\n"),
            "in <root>/etc/hostd/hostd.toml: line 2: unknown field `idle_exit`, expected one of `idle_exit_secs`, \
             `job_timeout_secs`, `check_interval_secs`"
        );
        assert_eq!(
            main_file_error("[updates]\nstrategy = \"periodic\"\ntimezone = \"UTC\"\n"),
            "in <root>/etc/hostd/hostd.toml: line 3: unknown field `timezone`, expected one of \
             `policy`, `strategy`, `time_zone`, `window`, `fleet_lock`, `require_signatures`"
        );
        assert_eq!(
            main_file_error("[[updates.window]]\ndays = [\"Sun\"]\nstart = \"01:00\"\nlength_minutes = 60\n"),
            "in <root>/etc/hostd/hostd.toml: line 4: unknown field `length_minutes`, expected one of \
             `days`, `start`, `length`"
        );
        assert_eq!(
            main_file_error("[updates.fleet_lock]\nbase_url = \"http://127.0.0.1:8080\"\n"),
            "in <root>/etc/hostd/hostd.toml: line 2: unknown field `base_url`, expected `url` or `group`"
        );
    }

    #[test]
    fn wrong_types_and_bad_toml() {
        assert_eq!(
            main_file_error("[[updates.window]]\ndays = [\"Sun\"]\nstart = \"01:00\"\nlength = \"90m\"\n"),
            "in <root>/etc/hostd/hostd.toml: line 4: invalid type: string \"90m\", expected i64"
        );
        assert_eq!(
            main_file_error("[updates]\nstrategy = \"fleet_lock\"\n"),
            "in <root>/etc/hostd/hostd.toml: line 2: unknown variant `fleet_lock`, expected one of \
             `immediate`, `periodic`, `fleet-lock`"
        );
        assert_eq!(
            main_file_error("[updates]\nstrategy = \n"),
            "in <root>/etc/hostd/hostd.toml: line 2: invalid string; expected `\"`, `'`"
        );
    }

    #[test]
    fn bad_window_values_name_the_key() {
        let w = |body: &str| main_file_error(&format!("[[updates.window]]\n{body}"));
        assert_eq!(
            w("days = [\"Sat\", \"Funday\"]\nstart = \"01:00\"\nlength = 60\n"),
            "in <root>/etc/hostd/hostd.toml: updates.window[0].days: unknown day \"Funday\"; \
             expected Mon, Tue, Wed, Thu, Fri, Sat, Sun or the full name"
        );
        assert_eq!(
            w("days = []\nstart = \"01:00\"\nlength = 60\n"),
            "in <root>/etc/hostd/hostd.toml: updates.window[0].days: no days given; name at least one"
        );
        assert_eq!(
            w("days = [\"Sun\"]\nstart = \"1:00 am\"\nlength = 60\n"),
            "in <root>/etc/hostd/hostd.toml: updates.window[0].start: \"1:00 am\" is not a 24-hour time HH:MM"
        );
        assert_eq!(
            w("days = [\"Sun\"]\nstart = \"24:00\"\nlength = 60\n"),
            "in <root>/etc/hostd/hostd.toml: updates.window[0].start: \"24:00\" is not a 24-hour time HH:MM"
        );
        assert_eq!(
            w("days = [\"Sun\"]\nstart = \"01:00\"\nlength = 0\n"),
            "in <root>/etc/hostd/hostd.toml: updates.window[0].length: 0 is not a length in minutes greater than 0"
        );
        assert_eq!(
            w("days = [\"Sun\"]\nstart = \"01:00\"\nlength = 10081\n"),
            "in <root>/etc/hostd/hostd.toml: updates.window[0].length: 10081 minutes is longer than a week \
             (10080 minutes)"
        );
        assert_eq!(
            w("days = [\"Sun\"]\nlength = 60\n"),
            "in <root>/etc/hostd/hostd.toml: updates.window[0].start: missing; give the start as \"HH:MM\""
        );
        assert_eq!(
            main_file_error(
                "[[updates.window]]\ndays = [\"Sun\"]\nstart = \"01:00\"\nlength = 60\n\
                 [[updates.window]]\ndays = [\"Mon\"]\nstart = \"01:00\"\n"
            ),
            "in <root>/etc/hostd/hostd.toml: updates.window[1].length: missing; give the length in minutes"
        );
    }

    #[test]
    fn unknown_time_zone() {
        assert_eq!(
            main_file_error("[updates]\ntime_zone = \"Europe/Bern\"\n"),
            "in <root>/etc/hostd/hostd.toml: updates.time_zone: unknown time zone \"Europe/Bern\"; \
             expected an IANA name such as \"Europe/Berlin\" or \"UTC\""
        );
        assert_eq!(
            main_file_error("[updates]\ntime_zone = \"europe/berlin\"\n"),
            "in <root>/etc/hostd/hostd.toml: updates.time_zone: unknown time zone \"europe/berlin\"; \
             expected an IANA name such as \"Europe/Berlin\" or \"UTC\""
        );
    }

    #[test]
    fn strategy_rules_name_the_file_that_set_the_strategy() {
        assert_eq!(
            main_file_error("[updates]\nstrategy = \"periodic\"\n"),
            "in <root>/etc/hostd/hostd.toml: updates.strategy: \"periodic\" needs at least one \
             [[updates.window]], and none is configured"
        );
        assert_eq!(
            main_file_error("[updates]\nstrategy = \"fleet-lock\"\n[updates.fleet_lock]\ngroup = \"workers\"\n"),
            "in <root>/etc/hostd/hostd.toml: updates.strategy: \"fleet-lock\" needs the lock manager's \
             [updates.fleet_lock] url"
        );
        // The windows came from the main file, a drop-in chose periodic and another cleared them.
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(
            r,
            MAIN_FILE,
            "[[updates.window]]\ndays = [\"Sun\"]\nstart = \"01:00\"\nlength = 60\n",
        );
        write(
            r,
            "etc/hostd/hostd.d/10-strategy.toml",
            "[updates]\nstrategy = \"periodic\"\n",
        );
        write(r, "etc/hostd/hostd.d/20-clear.toml", "[updates]\nwindow = []\n");
        assert_eq!(
            load_error(r),
            "in <root>/etc/hostd/hostd.d/10-strategy.toml: updates.strategy: \"periodic\" needs at least one \
             [[updates.window]], and none is configured"
        );
    }

    #[test]
    fn bad_fleet_lock_settings() {
        assert_eq!(
            main_file_error("[updates.fleet_lock]\nurl = \"ftp://lock.example\"\n"),
            "in <root>/etc/hostd/hostd.toml: updates.fleet_lock.url: \"ftp://lock.example\" is not an \
             http:// or https:// URL"
        );
        assert_eq!(
            main_file_error("[updates.fleet_lock]\nurl = \"http://lock.example/?group=a\"\n"),
            "in <root>/etc/hostd/hostd.toml: updates.fleet_lock.url: \"http://lock.example/?group=a\" \
             must not have a query or fragment"
        );
        assert_eq!(
            main_file_error("[updates.fleet_lock]\ngroup = \"\"\n"),
            "in <root>/etc/hostd/hostd.toml: updates.fleet_lock.group: must not be empty"
        );
        assert_eq!(
            main_file_error("[updates.fleet_lock]\ngroup = \"web servers\"\n"),
            "in <root>/etc/hostd/hostd.toml: updates.fleet_lock.group: \"web servers\" may contain only \
             letters, digits, '.' and '-'"
        );
    }

    #[test]
    fn fleet_lock_url_with_credentials_names_the_key_not_the_secret() {
        let e = main_file_error("[updates.fleet_lock]\nurl = \"https://node:s3cret@lock.example\"\n");
        assert!(
            e.starts_with("in <root>/etc/hostd/hostd.toml: updates.fleet_lock.url: must not contain credentials"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
    }

    /// The error for a drop-in `10-x.toml` made by `make`, with the root shown as `<root>`.
    fn dropin_error(make: impl FnOnce(&Path)) -> String {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("etc/hostd/hostd.d");
        std::fs::create_dir_all(&dir).unwrap();
        make(&dir.join("10-x.toml"));
        load_error(d.path())
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let e = dropin_error(|p| nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap());
        assert_eq!(
            e,
            "<root>/etc/hostd/hostd.d/10-x.toml: a FIFO, not a regular file; refusing to read it"
        );
    }

    #[test]
    fn symlinks_other_than_the_mask_are_refused() {
        let e = dropin_error(|p| std::os::unix::fs::symlink("/dev/zero", p).unwrap());
        assert_eq!(
            e,
            "<root>/etc/hostd/hostd.d/10-x.toml: a symbolic link; only regular files are read; refusing to read it"
        );
        let e = dropin_error(|p| {
            std::fs::write(p.with_file_name("real"), "[daemon]\nidle_exit_secs = 5\n").unwrap();
            std::os::unix::fs::symlink("real", p).unwrap();
        });
        assert!(e.ends_with("10-x.toml: a symbolic link; only regular files are read; refusing to read it"), "{e}");
    }

    #[test]
    fn a_directory_in_place_of_a_file_is_refused() {
        let e = dropin_error(|p| std::fs::create_dir(p).unwrap());
        assert_eq!(e, "<root>/etc/hostd/hostd.d/10-x.toml: a directory, not a regular file; refusing to read it");
    }

    #[test]
    fn files_others_may_write_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let e = dropin_error(|p| {
            std::fs::write(p, "[daemon]\nidle_exit_secs = 5\n").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o664)).unwrap();
        });
        assert_eq!(
            e,
            "<root>/etc/hostd/hostd.d/10-x.toml: writable by group or others (mode 0664); refusing to read it"
        );
        let e = dropin_error(|p| {
            std::fs::write(p, "").unwrap();
            std::fs::set_permissions(p.parent().unwrap(), std::fs::Permissions::from_mode(0o777)).unwrap();
        });
        assert_eq!(e, "<root>/etc/hostd/hostd.d: writable by group or others (mode 0777); refusing to read it");
    }

    #[test]
    fn files_not_owned_by_root_are_refused() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let e = dropin_error(|p| {
            std::fs::write(p, "[daemon]\nidle_exit_secs = 5\n").unwrap();
            std::os::unix::fs::chown(p, Some(4242), None).unwrap();
        });
        assert_eq!(e, "<root>/etc/hostd/hostd.d/10-x.toml: owned by uid 4242, not by root; refusing to read it");
    }

    #[test]
    fn files_over_the_size_limit_are_refused() {
        let e = dropin_error(|p| {
            let comment = "#".repeat(MAX_FILE_BYTES as usize) + "\n";
            std::fs::write(p, comment).unwrap();
        });
        assert_eq!(e, "<root>/etc/hostd/hostd.d/10-x.toml: larger than 65536 bytes; refusing to read it");
        // Exactly the limit is read.
        let d = tempfile::tempdir().unwrap();
        let text = format!("[daemon]\nidle_exit_secs = 5\n{}", "#".repeat(MAX_FILE_BYTES as usize - 28));
        assert_eq!(text.len() as u64, MAX_FILE_BYTES);
        write(d.path(), MAIN_FILE, &text);
        assert_eq!(Config::load(d.path()).unwrap().idle_exit, Some(Duration::from_secs(5)));
    }

    #[test]
    fn the_main_file_can_be_masked_too() {
        let d = tempfile::tempdir().unwrap();
        mask(d.path(), MAIN_FILE);
        assert_eq!(Config::load(d.path()).unwrap(), Config::default());
    }

    /// How many times [`stuck_read`] started.
    static STUCK_READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[expect(clippy::disallowed_methods, reason = "stands in for a read stuck on a blocking thread")]
    fn stuck_read(_: &Path) -> Result<Config, ConfigError> {
        STUCK_READS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(800));
        Ok(Config::default())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_stuck_read_times_out_and_holds_its_turn_until_it_ends() {
        let loader = Loader::default();
        let root = Path::new("/nonexistent");
        let limit = Duration::from_millis(100);
        let started = std::time::Instant::now();
        assert!(matches!(loader.load_within(root, limit, stuck_read).await, Err(ConfigError::TimedOut)));
        assert!(matches!(loader.load_within(root, limit, stuck_read).await, Err(ConfigError::TimedOut)));
        assert!(started.elapsed() < Duration::from_millis(600));
        assert_eq!(STUCK_READS.load(std::sync::atomic::Ordering::SeqCst), 1, "the second waited its turn");
        // Once the stuck read has ended, the next one runs.
        assert_eq!(loader.load(root).await.unwrap(), Config::default());
    }

    #[test]
    fn zero_job_timeout_names_the_key() {
        assert_eq!(
            main_file_error("[daemon]\njob_timeout_secs = 0\n"),
            "in <root>/etc/hostd/hostd.toml: daemon.job_timeout_secs: must be greater than 0"
        );
    }

    #[test]
    fn a_bad_value_is_an_error_even_when_a_later_file_overrides_it() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), MAIN_FILE, "[updates]\ntime_zone = \"Nowhere\"\n");
        write(
            d.path(),
            "etc/hostd/hostd.d/10-zone.toml",
            "[updates]\ntime_zone = \"UTC\"\n",
        );
        assert!(load_error(d.path()).starts_with("in <root>/etc/hostd/hostd.toml: updates.time_zone:"));
    }

    #[test]
    fn periodic_in_a_named_zone() {
        let c = load_main(
            "[updates]\npolicy = \"apply\"\nstrategy = \"periodic\"\ntime_zone = \"Europe/Berlin\"\n\
             [[updates.window]]\ndays = [\"sat\", \"Sunday\"]\nstart = \"23:30\"\nlength = 90\n",
        );
        assert_eq!(c.policy, UpdatePolicy::Apply);
        assert_eq!(c.strategy, RebootStrategy::Periodic);
        assert_eq!(c.windows.zone(), Tz::Europe__Berlin);
        let expected = Window::new(days(&[Weekday::Sat, Weekday::Sun]), start("23:30"), 90).unwrap();
        assert_eq!(c.windows.windows(), &[expected]);
    }

    #[test]
    fn explain_names_the_file_that_set_each_key_and_checks_a_replacement() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, MAIN_FILE, "[updates]\npolicy = \"check\"\nstrategy = \"immediate\"\n");
        write(r, "etc/hostd/hostd.d/95-site.toml", "[updates]\nstrategy = \"immediate\"\n");
        let ours = r.join("etc/hostd/hostd.d/90-settings.toml");
        let e = Config::explain(r, None).unwrap();
        assert_eq!(e.sources[keys::POLICY], r.join(MAIN_FILE));
        assert_eq!(e.sources[keys::STRATEGY], r.join("etc/hostd/hostd.d/95-site.toml"));
        assert!(!e.sources.contains_key(keys::WINDOW));
        // The file as it would be: read in its place, in name order, not written.
        let would = |text: &str| Replacement { path: ours.clone(), text: Some(text.to_string()) };
        let e = Config::explain(r, Some(&would("[updates]\npolicy = \"stage\"\nstrategy = \"periodic\"\n"))).unwrap();
        assert_eq!((e.config.policy, &e.sources[keys::POLICY]), (UpdatePolicy::Stage, &ours));
        assert_eq!(e.sources[keys::STRATEGY], r.join("etc/hostd/hostd.d/95-site.toml"), "a later name wins");
        assert!(!ours.exists());
        let bad = would("[[updates.window]]\ndays = [\"Sun\"]\nstart = \"25:00\"\nlength = 60\n");
        let err = Config::explain(r, Some(&bad)).unwrap_err();
        assert!(matches!(&err, ConfigError::Invalid { path, key, .. } if *path == ours && key == "updates.window[0].start"), "{err}");
        // The same name in /run replaces ours, as it would replace the file.
        write(r, "run/hostd/hostd.d/90-settings.toml", "");
        let e = Config::explain(r, Some(&would("[updates]\npolicy = \"stage\"\n"))).unwrap();
        assert_eq!(e.config.policy, UpdatePolicy::Check);
        // Without the file, the others decide.
        std::fs::remove_file(r.join("run/hostd/hostd.d/90-settings.toml")).unwrap();
        write(r, "etc/hostd/hostd.d/90-settings.toml", "[updates]\npolicy = \"apply\"\n");
        assert_eq!(Config::load(r).unwrap().policy, UpdatePolicy::Apply);
        let gone = Replacement { path: ours.clone(), text: None };
        assert_eq!(Config::explain(r, Some(&gone)).unwrap().config.policy, UpdatePolicy::Check);
    }

    #[test]
    fn zone_defaults_to_the_hosts() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), MAIN_FILE, "[updates]\nstrategy = \"immediate\"\n");
        std::os::unix::fs::symlink("../usr/share/zoneinfo/America/New_York", d.path().join("etc/localtime")).unwrap();
        assert_eq!(Config::load(d.path()).unwrap().windows.zone(), Tz::America__New_York);
        write(
            d.path(),
            "etc/hostd/hostd.d/50-utc.toml",
            "[updates]\ntime_zone = \"UTC\"\n",
        );
        assert_eq!(
            Config::load(d.path()).unwrap().windows.zone(),
            Tz::UTC,
            "an explicit zone wins"
        );
    }

    #[test]
    fn fleet_lock_defaults_group_and_merges_keys_separately() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(
            r,
            MAIN_FILE,
            "[updates]\nstrategy = \"fleet-lock\"\n[updates.fleet_lock]\nurl = \"http://127.0.0.1:8080\"\n",
        );
        let c = Config::load(r).unwrap();
        let settings = |url: &str, group: &str| {
            RebootStrategy::FleetLock(FleetLockSettings {
                url: FleetLockUrl::parse(url).unwrap(),
                group: FleetLockGroup::parse(group).unwrap(),
            })
        };
        assert_eq!(c.strategy, settings("http://127.0.0.1:8080", "default"));
        assert!(c.windows.is_empty(), "fleet-lock needs no window");
        // A drop-in sets only the group: the URL from the main file stays.
        write(
            r,
            "etc/hostd/hostd.d/50-group.toml",
            "[updates.fleet_lock]\ngroup = \"workers\"\n",
        );
        assert_eq!(
            Config::load(r).unwrap().strategy,
            settings("http://127.0.0.1:8080", "workers")
        );
    }

    #[test]
    fn fleet_lock_settings_without_the_strategy_are_checked_but_unused() {
        let c = load_main("[updates.fleet_lock]\nurl = \"https://lock.example/\"\ngroup = \"workers\"\n");
        assert_eq!(c.strategy, RebootStrategy::Immediate);
        assert!(main_file_error("[updates.fleet_lock]\nurl = \"lock.example\"\n").contains("updates.fleet_lock.url"));
    }

    #[test]
    fn a_file_with_windows_replaces_the_whole_list() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(
            r,
            MAIN_FILE,
            "[updates]\nstrategy = \"periodic\"\ntime_zone = \"UTC\"\n\
             [[updates.window]]\ndays = [\"Sat\"]\nstart = \"22:00\"\nlength = 60\n\
             [[updates.window]]\ndays = [\"Sun\"]\nstart = \"22:00\"\nlength = 60\n",
        );
        assert_eq!(Config::load(r).unwrap().windows.windows().len(), 2);
        // A drop-in without windows leaves them alone.
        write(
            r,
            "usr/lib/hostd/hostd.d/10-policy.toml",
            "[updates]\npolicy = \"stage\"\n",
        );
        assert_eq!(Config::load(r).unwrap().windows.windows().len(), 2);
        // A drop-in with one window replaces both.
        write(
            r,
            "etc/hostd/hostd.d/20-weekday.toml",
            "[[updates.window]]\ndays = [\"Wed\"]\nstart = \"03:00\"\nlength = 30\n",
        );
        let c = Config::load(r).unwrap();
        assert_eq!(
            c.windows.windows(),
            &[Window::new(days(&[Weekday::Wed]), start("03:00"), 30).unwrap()]
        );
        assert_eq!(c.policy, UpdatePolicy::Stage);
        // Masking that drop-in brings the main file's two back.
        mask(r, "run/hostd/hostd.d/20-weekday.toml");
        assert_eq!(Config::load(r).unwrap().windows.windows().len(), 2);
    }

    #[test]
    fn windows_with_immediate_are_kept_and_checked() {
        let c = load_main("[[updates.window]]\ndays = [\"Sun\"]\nstart = \"04:00\"\nlength = 60\n");
        assert_eq!(c.strategy, RebootStrategy::Immediate);
        assert_eq!(c.windows.windows().len(), 1);
    }

    #[test]
    fn strategy_names() {
        for (name, expected) in [
            ("immediate", "immediate"),
            ("periodic", "periodic"),
            ("fleet-lock", "fleet-lock"),
        ] {
            let c = load_main(&format!(
                "[updates]\nstrategy = \"{name}\"\n[updates.fleet_lock]\nurl = \"http://127.0.0.1:1\"\n\
                 [[updates.window]]\ndays = [\"Sun\"]\nstart = \"04:00\"\nlength = 60\n"
            ));
            assert_eq!(c.strategy.name(), expected);
        }
    }
}
