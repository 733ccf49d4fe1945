//! A booted test machine: a physical sysroot on a tmpfs with the test OS
//! installed, booted (and rebooted) the way a bootloader would boot it.
//!
//! The machine tracks `oci:<its image dir>:stable`. Its image directory is a
//! private copy of the test OS images, visible inside the guest at the same
//! path; [`BootedMachine::publish`] moves the `stable` tag to another
//! version, which is how a new release reaches the machine.
//!
//! On drop the guest is killed and the sysroot unmounted; when the test is
//! failing, the console and the end of the guest's journal are printed.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hostd_interface::host::Host;

use super::bls;
use super::cache;
use super::guest::{tail, BootSpec, Exit, Guest};
use super::image::{test_os_images, TestOsImages};
use super::oci;
use crate::fixture::{ImageBuilder, LayerFile};
use crate::offline::text;
use crate::sysroot::{TestSysroot, STATEROOT};

/// The tag the machine tracks.
pub const TRACKED_TAG: &str = "stable";
/// Size of the sysroot's tmpfs (it is filled only as far as needed).
const SYSROOT_SIZE: &str = "3g";
/// Longest wait for a shutdown, including ostree-finalize-staged.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(120);

/// The machine; everything it started is stopped on drop.
#[derive(Debug)]
pub struct BootedMachine {
    // Dropped first: the guest holds the sysroot's file system.
    guest: Option<Guest>,
    sysroot: TestSysroot,
    scratch: tempfile::TempDir,
    images: &'static TestOsImages,
    boots: u32,
    booted: Option<bls::Entry>,
}

impl BootedMachine {
    /// A machine with v1 installed, not booted yet.
    pub fn install() -> Result<BootedMachine> {
        let images = test_os_images()?;
        let scratch = cache::scratch_dir("machine")?;
        oci::copy_layout(&images.oci_dir, &scratch.path().join("oci"))?;
        let sysroot = TestSysroot::new(SYSROOT_SIZE)?;
        let machine = BootedMachine { guest: None, sysroot, scratch, images, boots: 0, booted: None };
        machine.install_version("v1")?;
        // A persistent journal from the first boot on.
        std::fs::create_dir_all(machine.var().join("log/journal"))?;
        Ok(machine)
    }

    /// Deploy `version` into the sysroot from outside, as an installer
    /// would (it becomes the default; the previous one stays as rollback).
    pub fn install_version(&self, version: &str) -> Result<()> {
        self.publish(version)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(self.sysroot.deploy_image(&self.tracked_reference()))
    }

    /// Make `version` the one the tracked tag points to.
    pub fn publish(&self, version: &str) -> Result<()> {
        oci::retag(&self.oci_dir(), version, TRACKED_TAG)
    }

    /// The test OS images (versions, digests).
    pub fn images(&self) -> &'static TestOsImages {
        self.images
    }

    /// The OCI directory the machine's image comes from.
    pub fn oci_dir(&self) -> PathBuf {
        self.scratch.path().join("oci")
    }

    /// The tracked image as the Host document names it (`<dir>:stable`).
    pub fn tracked_image(&self) -> String {
        format!("{}:{TRACKED_TAG}", self.oci_dir().display())
    }

    /// `ostree-unverified-image:oci:<dir>:stable`
    pub fn tracked_reference(&self) -> String {
        format!("ostree-unverified-image:oci:{}", self.tracked_image())
    }

    /// The physical sysroot.
    pub fn sysroot(&self) -> &TestSysroot {
        &self.sysroot
    }

    /// The stateroot's `/var`, which the guest mounts at `/var`.
    pub fn var(&self) -> PathBuf {
        self.sysroot.path().join("ostree/deploy").join(STATEROOT).join("var")
    }

    /// Add `version` to the machine's image directory: v1 plus one layer
    /// holding `files`, the way `FROM v1` + `COPY` makes an image (the
    /// cached test OS images stay as they are). Its manifest digest.
    pub fn derive_version(&self, version: &str, files: &[LayerFile]) -> Result<String> {
        let work = cache::scratch_dir("derive")?;
        let mut builder = ImageBuilder::new(work.path())?;
        builder.oci_dir = self.oci_dir();
        let built = builder.derive_files(&self.images.v1, version, files)?;
        oci::retag(&self.oci_dir(), "latest", version)?;
        Ok(built.digest)
    }

    fn boot_spec(&mut self) -> Result<(BootSpec, bls::Entry)> {
        anyhow::ensure!(self.guest.is_none(), "the machine is already running");
        let entry = bls::default_entry(self.sysroot.path())?;
        self.boots += 1;
        let spec = BootSpec {
            sysroot: self.sysroot.path().to_path_buf(),
            stateroot: STATEROOT.to_string(),
            deployment: entry.deployment(self.sysroot.path())?,
            shared_read_only: vec![self.oci_dir()],
            console: self.scratch.path().join(format!("console-{}.log", self.boots)),
        };
        Ok((spec, entry))
    }

    /// Boot what the bootloader would boot by default, expecting the guest
    /// to go down by itself within `timeout` before or after its boot
    /// finished (an automatic rollback reboots); how it ended.
    pub fn boot_until_it_goes_down(&mut self, timeout: Duration) -> Result<Exit> {
        self.start_boot()?;
        self.wait_for_shutdown(timeout)
    }

    /// Start booting what the bootloader would boot by default, without
    /// waiting for the boot to finish (commands can run once systemd does).
    pub fn start_boot(&mut self) -> Result<()> {
        let (spec, entry) = self.boot_spec()?;
        self.guest = Some(Guest::start(&spec)?);
        self.booted = Some(entry);
        Ok(())
    }

    /// Boot what the bootloader would boot by default.
    pub fn boot(&mut self) -> Result<()> {
        let failed = self.boot_with_failed_units()?;
        if !failed.is_empty() {
            bail!("boot {} ended degraded; failed units: {}", self.boots, failed.join(", "));
        }
        Ok(())
    }

    /// Boot what the bootloader would boot by default; the units that
    /// failed (none when the boot ended `running`), sorted.
    pub fn boot_with_failed_units(&mut self) -> Result<Vec<String>> {
        let (spec, entry) = self.boot_spec()?;
        let (guest, state) = Guest::boot(&spec)?;
        self.guest = Some(guest);
        self.booted = Some(entry);
        if state == "running" {
            return Ok(Vec::new());
        }
        let failed = self.must(&["systemctl", "--failed", "--plain", "--no-legend", "--no-pager"])?;
        let mut units: Vec<String> =
            failed.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect();
        units.sort();
        Ok(units)
    }

    /// The boot entry the running system was booted from.
    pub fn booted_entry(&self) -> Result<&bls::Entry> {
        self.booted.as_ref().context("the machine is not running")
    }

    /// Power off cleanly (staged deployments are finalized) and boot again.
    pub fn reboot(&mut self) -> Result<()> {
        self.poweroff()?;
        self.boot()
    }

    /// Power off cleanly (staged deployments are finalized).
    pub fn poweroff(&mut self) -> Result<()> {
        let exit = self.guest_mut()?.poweroff(SHUTDOWN_TIMEOUT)?;
        anyhow::ensure!(exit == Exit::PoweredOff, "poweroff ended the guest with {exit:?}");
        self.stopped();
        Ok(())
    }

    /// Wait for the guest to go down by itself within `timeout`; how it ended.
    pub fn wait_for_shutdown(&mut self, timeout: Duration) -> Result<Exit> {
        let exit = self.guest_mut()?.wait_exit(timeout)?;
        self.stopped();
        Ok(exit)
    }

    /// Whether the guest still runs.
    pub fn running(&mut self) -> Result<bool> {
        match self.guest.as_mut() {
            Some(g) => g.running(),
            None => Ok(false),
        }
    }

    fn stopped(&mut self) {
        self.guest = None;
        self.booted = None;
    }

    fn guest(&self) -> Result<&Guest> {
        self.guest.as_ref().context("the machine is not running")
    }

    fn guest_mut(&mut self) -> Result<&mut Guest> {
        self.guest.as_mut().context("the machine is not running")
    }

    /// A command running `args` inside the guest as `user` (root when
    /// `None`), with the user's groups and no login session: polkit decides
    /// from rules alone.
    pub fn command_as(&self, user: Option<&str>, args: &[&str]) -> Result<Command> {
        let guest = self.guest()?;
        let (program, rest) = args.split_first().context("no command")?;
        let mut cmd = match user {
            Some(user) => {
                let mut c = guest.command("setpriv");
                c.arg(format!("--reuid={user}")).arg(format!("--regid={user}")).args(["--init-groups", "--", program]);
                c
            }
            None => guest.command(program),
        };
        cmd.args(rest);
        Ok(cmd)
    }

    /// Run `args` inside as root.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        self.run_as(None, args)
    }

    /// Run `args` inside as root; its stdout, or an error when it fails.
    pub fn must(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!("{args:?} in the guest failed ({}): {}", out.status, text(&out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run `args` inside as `user` (root when `None`); see [`Self::command_as`].
    pub fn run_as(&self, user: Option<&str>, args: &[&str]) -> Result<Output> {
        self.command_as(user, args)?.output().with_context(|| format!("running {args:?} in the guest"))
    }

    /// `hostctl ARGS` inside, as `user` (root when `None`).
    pub fn hostctl(&self, user: Option<&str>, args: &[&str]) -> Result<Output> {
        let mut all = vec!["hostctl"];
        all.extend_from_slice(args);
        self.run_as(user, &all)
    }

    /// The Host document from `hostctl status --json`.
    pub fn status(&self) -> Result<Host> {
        let out = self.hostctl(None, &["status", "--json"])?;
        if !out.status.success() {
            bail!("hostctl status --json failed ({}): {}", out.status, text(&out));
        }
        serde_json::from_slice(&out.stdout).context("parsing hostctl status --json")
    }

    /// Create `user` inside (and group `wheel` when `wheel`); its uid.
    pub fn add_user(&self, user: &str, wheel: bool) -> Result<u32> {
        let mut args = vec!["useradd", "--no-create-home"];
        if wheel {
            self.must(&["groupadd", "-f", "wheel"])?;
            args.extend(["-G", "wheel"]);
        }
        args.push(user);
        self.must(&args)?;
        self.must(&["id", "-u", user])?.trim().parse().context("parsing a uid")
    }

    /// Write `content` to `path` inside (as root, parent directories created).
    pub fn write_file(&self, path: &str, content: &str) -> Result<()> {
        use std::io::Write;
        let script = r#"mkdir -p "$(dirname "$1")" && cat > "$1""#;
        let mut child = self
            .command_as(None, &["sh", "-c", script, "sh", path])?
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().context("stdin")?.write_all(content.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("writing {path} in the guest failed: {}", text(&out));
        }
        Ok(())
    }

    /// Whether `path` exists inside.
    pub fn exists(&self, path: &str) -> Result<bool> {
        Ok(self.run(&["test", "-e", path])?.status.success())
    }

    /// The guest journal's entries with `MESSAGE_ID=id`, read from the
    /// stateroot's `/var/log/journal` (the guest need not run).
    pub fn journal_entries(&self, message_id: &str) -> Result<Vec<serde_json::Value>> {
        let out = crate::run(
            Command::new("journalctl")
                .arg("-D")
                .arg(self.var().join("log/journal"))
                .args(["--no-pager", "-o", "json"])
                .arg(format!("MESSAGE_ID={message_id}")),
        )?;
        out.lines().map(|l| serde_json::from_str(l).context("parsing journalctl -o json")).collect()
    }

    /// Wait up to 10 s for an entry with `MESSAGE_ID=id` whose fields match
    /// every `(name, value)` of `fields`; the entry.
    pub fn journal_entry(&self, message_id: &str, fields: &[(&str, &str)]) -> Result<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let entries = self.journal_entries(message_id)?;
            let found = entries.iter().find(|e| fields.iter().all(|(name, value)| e[*name] == *value));
            if let Some(entry) = found {
                return Ok(entry.clone());
            }
            if Instant::now() > deadline {
                bail!("no journal entry {message_id} with {fields:?}; entries with that id: {entries:#?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The console of the current (or last) boot.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.scratch.path().join(format!("console-{}.log", self.boots))).unwrap_or_default()
    }

    /// The end of the guest's journal, for failure reports.
    fn journal_tail(&self) -> String {
        let out = Command::new("journalctl")
            .arg("-D")
            .arg(self.var().join("log/journal"))
            .args(["--no-pager", "-n", "150", "-o", "short-monotonic"])
            .output();
        out.map(|o| text(&o)).unwrap_or_default()
    }
}

impl Drop for BootedMachine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- console of boot {} ---\n{}", self.boots, tail(&self.console(), 80));
            eprintln!("--- guest journal ---\n{}", self.journal_tail());
        }
        self.guest = None;
    }
}
