//! One boot of a deployment: `systemd-nspawn -b` with systemd as PID 1 of the
//! container, the physical sysroot at `/sysroot`, its `boot/` at `/boot` and
//! the stateroot's `var` at `/var`, as an initramfs would mount them.
//!
//! libostree calls the system booted because `/run/ostree-booted` exists
//! (the image's tmpfiles create it) and `/` has the device and inode of a
//! deployment directory, which `-D <deployment>` keeps.
//!
//! Each guest gets its own cgroup below this process's, because nspawn
//! (`--keep-unit`, on a host without systemd) puts its `payload` and
//! `supervisor` cgroups below the cgroup it runs in: two guests side by side
//! would otherwise share them. Dropping a guest kills it if it still runs
//! and removes its cgroups and nspawn's runtime directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// `PATH` of commands run inside.
const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// nspawn's exit status when the container rebooted.
const REBOOT_EXIT_CODE: i32 = 133;
/// Longest wait for systemd in the guest to finish booting.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Where nspawn keeps per-machine runtime state on the host.
const NSPAWN_RUN_DIR: &str = "/run/systemd/nspawn";

/// What to boot.
#[derive(Debug, Clone)]
pub struct BootSpec {
    /// The physical sysroot.
    pub sysroot: PathBuf,
    /// The stateroot whose `var` is mounted at `/var`.
    pub stateroot: String,
    /// The deployment directory that becomes `/`.
    pub deployment: PathBuf,
    /// Host directories visible read-only at the same path inside.
    pub shared_read_only: Vec<PathBuf>,
    /// Where the console output goes.
    pub console: PathBuf,
}

/// How a guest ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `systemctl poweroff` or the like: nspawn exited 0.
    PoweredOff,
    /// The guest rebooted: nspawn exited 133.
    Rebooted,
}

/// A running (or ended) guest.
#[derive(Debug)]
pub struct Guest {
    nspawn: Child,
    pid1: u32,
    name: String,
    cgroups: Vec<PathBuf>,
    console: PathBuf,
    exit: Option<ExitStatus>,
}

impl Guest {
    /// Boot `spec` and wait until systemd reports the boot finished.
    /// Returns the guest and what `systemctl is-system-running` said
    /// (`running` or `degraded`).
    pub fn boot(spec: &BootSpec) -> Result<(Guest, String)> {
        let mut guest = Guest::start(spec)?;
        let state = guest.wait_until_booted()?;
        Ok((guest, state))
    }

    /// Start booting `spec` without waiting for the boot to finish (for a
    /// boot that ends in a reboot of its own, such as an automatic rollback).
    pub fn start(spec: &BootSpec) -> Result<Guest> {
        let name = unique_machine_name();
        let cgroups = create_cgroups(&name)?;
        let nspawn = spawn_nspawn(spec, &name, &cgroups);
        let nspawn = match nspawn {
            Ok(child) => child,
            Err(e) => {
                remove_cgroups(&cgroups);
                return Err(e);
            }
        };
        let mut guest = Guest { nspawn, pid1: 0, name, cgroups, console: spec.console.clone(), exit: None };
        guest.pid1 = guest.find_pid1()?;
        Ok(guest)
    }

    /// A command run inside the guest (all its namespaces, its root), as
    /// root, with a minimal environment.
    pub fn command(&self, program: &str) -> Command {
        continue_stopped_nsenters();
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t").arg(self.pid1.to_string()).args(["-a", "--", program]);
        cmd.env_clear().env("PATH", GUEST_PATH).stdin(Stdio::null());
        cmd
    }

    /// Run `args` inside and collect its output.
    fn output(&self, args: &[&str]) -> Result<Output> {
        let (program, rest) = args.split_first().context("no command")?;
        self.command(program).args(rest).output().with_context(|| format!("running {args:?} in the guest"))
    }

    /// Everything the guest printed on its console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Wait up to `timeout` for the guest to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Exit> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited()? {
                return match status.code() {
                    Some(0) => Ok(Exit::PoweredOff),
                    Some(REBOOT_EXIT_CODE) => Ok(Exit::Rebooted),
                    _ => bail!("systemd-nspawn ended with {status}; console:\n{}", tail(&self.console(), 60)),
                };
            }
            if Instant::now() > deadline {
                bail!("the guest did not end within {timeout:?}; console:\n{}", tail(&self.console(), 60));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether nspawn still runs.
    pub fn running(&mut self) -> Result<bool> {
        Ok(self.exited()?.is_none())
    }

    /// Shut the guest down cleanly (so units with work at shutdown, such as
    /// `ostree-finalize-staged`, run) and wait for nspawn to end.
    pub fn poweroff(&mut self, timeout: Duration) -> Result<Exit> {
        let out = self.output(&["systemctl", "poweroff"])?;
        // systemctl may be killed by the shutdown it started.
        if !out.status.success() && out.status.code().is_some() && self.running()? {
            bail!("systemctl poweroff failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        self.wait_exit(timeout)
    }

    /// Whether nspawn ends within `timeout`.
    fn ends_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !matches!(self.exited(), Ok(None)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn exited(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.nspawn.try_wait()?;
        }
        Ok(self.exit)
    }

    /// The container's PID 1 is the child of nspawn that runs systemd
    /// (nspawn's own helper child is briefly a child too).
    fn find_pid1(&mut self) -> Result<u32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let nspawn_pid = self.nspawn.id();
        while Instant::now() < deadline {
            if let Some(pid) = child_running(nspawn_pid, "systemd")? {
                return Ok(pid);
            }
            if self.exited()?.is_some() {
                bail!("systemd-nspawn ended before booting; console:\n{}", tail(&self.console(), 60));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("no systemd below systemd-nspawn after 30 s; console:\n{}", tail(&self.console(), 60))
    }

    /// `is-system-running --wait` fails while PID 1's bus socket does not
    /// exist yet, so it is retried until it names a final state.
    fn wait_until_booted(&mut self) -> Result<String> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            let out = self.output(&["timeout", "60", "systemctl", "is-system-running", "--wait"])?;
            last = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            let state = last.trim().to_string();
            if state == "running" || state == "degraded" {
                return Ok(state);
            }
            if self.exited()?.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the guest did not finish booting (last answer: {last:?}); console:\n{}", tail(&self.console(), 80))
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if matches!(self.exited(), Ok(None)) {
            // Killing PID 1 of a PID namespace kills every process in it.
            let target = if self.pid1 != 0 { self.pid1 } else { self.nspawn.id() };
            let _ = kill(Pid::from_raw(target as i32), Signal::SIGKILL);
            if !self.ends_within(Duration::from_secs(15)) {
                let _ = self.nspawn.kill();
                let _ = self.nspawn.wait();
            }
        }
        remove_cgroups(&self.cgroups);
        let _ = std::fs::remove_dir_all(Path::new(NSPAWN_RUN_DIR).join("propagate").join(&self.name));
        // Only empty directories go: another guest may still use them.
        for dir in ["propagate", "locks", ""] {
            let _ = std::fs::remove_dir(Path::new(NSPAWN_RUN_DIR).join(dir));
        }
    }
}

fn unique_machine_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!("hostd-test-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn spawn_nspawn(spec: &BootSpec, name: &str, cgroups: &[PathBuf]) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let console = std::fs::File::create(&spec.console)?;
    let var = spec.sysroot.join("ostree/deploy").join(&spec.stateroot).join("var");
    let mut cmd = Command::new("sh");
    // Enter the guest's own cgroups, then become nspawn.
    cmd.arg("-c")
        .arg(r#"while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs" || exit 1; shift; done; shift; exec "$@""#)
        .arg("sh")
        .args(cgroups)
        .arg("--");
    cmd.arg("systemd-nspawn")
        .args(["-b", "--register=no", "--keep-unit", "--resolv-conf=off", "--timezone=off"])
        .args(["--link-journal=no", "--console=read-only"])
        .arg(format!("--machine={name}"))
        .arg("-D")
        .arg(&spec.deployment)
        // norbind: the guest's own mounts below /sysroot must not show up again.
        .arg(format!("--bind={}:/sysroot:norbind", spec.sysroot.display()))
        .arg(format!("--bind={}:/boot", spec.sysroot.join("boot").display()))
        .arg(format!("--bind={}:/var", var.display()));
    // What ostree-prepare-root does in the initramfs: /usr is read-only on
    // a booted ostree system, unless the deployment was unlocked as a
    // hotfix (`ostree admin unlock --hotfix`), whose overlay is mounted
    // again at every boot.
    let usr = spec.deployment.join("usr");
    if spec.deployment.join(".usr-ovl-work").is_dir() {
        cmd.arg(format!("--overlay={}:{}:/usr", usr.display(), spec.deployment.join(".usr-ovl-upper").display()));
    } else {
        cmd.arg(format!("--bind-ro={}:/usr", usr.display()));
    }
    for dir in &spec.shared_read_only {
        cmd.arg(format!("--bind-ro={}", dir.display()));
    }
    cmd.stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        // Not in the test's process group: a Ctrl-C of the test run is
        // handled by dropping the guest, not by nspawn.
        .process_group(0);
    cmd.spawn().context("starting systemd-nspawn")
}

/// A cgroup named `name` below this process's cgroup in the hierarchies
/// nspawn uses: the unified (cgroup2) one and, on a hybrid host, the
/// named `systemd` one.
fn create_cgroups(name: &str) -> Result<Vec<PathBuf>> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    let mut created = Vec::new();
    for (hierarchy, mount_point) in cgroup_hierarchies(&mounts) {
        let Some(path) = own_cgroup(&own, hierarchy) else { continue };
        let dir = Path::new(mount_point).join(path.trim_start_matches('/')).join(name);
        if let Err(e) = std::fs::create_dir(&dir) {
            remove_cgroups(&created);
            return Err(e).with_context(|| format!("creating cgroup {}", dir.display()));
        }
        created.push(dir);
    }
    if created.is_empty() {
        bail!("no cgroup2 or name=systemd hierarchy is mounted; systemd-nspawn cannot run a guest");
    }
    Ok(created)
}

/// (hierarchy in /proc/self/cgroup terms, mount point): `""` for cgroup2,
/// `"name=systemd"` for the named v1 hierarchy.
fn cgroup_hierarchies(mounts: &str) -> Vec<(&'static str, &str)> {
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (mount_point, fstype, options) = (*fields.get(1)?, *fields.get(2)?, *fields.get(3)?);
            match fstype {
                "cgroup2" => Some(("", mount_point)),
                "cgroup" if options.split(',').any(|o| o == "name=systemd") => Some(("name=systemd", mount_point)),
                _ => None,
            }
        })
        .collect()
}

/// This process's cgroup path in `hierarchy` (the controllers field of
/// `/proc/self/cgroup`).
fn own_cgroup<'a>(proc_cgroup: &'a str, hierarchy: &str) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        (controllers == hierarchy).then_some(path)
    })
}

/// Remove the cgroups and everything the guest's systemd created below
/// them, deepest first. Cgroups empty out a moment after their last
/// process died, so this retries briefly.
fn remove_cgroups(cgroups: &[PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for top in cgroups {
        while remove_cgroup_tree(top).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// A child of `parent` whose command name is `comm`.
fn child_running(parent: u32, comm: &str) -> Result<Option<u32>> {
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if let Some((ppid, name)) = parse_stat(&stat) {
            if ppid == parent && name == comm {
                return Ok(Some(pid));
            }
        }
    }
    Ok(None)
}

/// (ppid, comm) from `/proc/<pid>/stat`; comm may hold spaces and parentheses.
fn parse_stat(stat: &str) -> Option<(u32, &str)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = &stat[open + 1..close];
    let ppid = stat[close + 1..].split_whitespace().nth(1)?.parse().ok()?;
    Some((ppid, comm))
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Keeps this process's `nsenter` children running: nsenter stops itself
/// when its child in the guest is stopped, and systemd-shutdown stops
/// every process of the guest (SIGSTOP before its SIGTERM and SIGKILL), so
/// a command running while a guest reboots by itself would leave nsenter
/// stopped for good, its killed child never reaped, and the guest's PID 1
/// waiting for that child forever. Continued, nsenter continues its child,
/// reaps it and ends. A thread for the life of the test process, started
/// by the first guest command.
fn continue_stopped_nsenters() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| loop {
            for pid in stopped_nsenter_children() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGCONT);
            }
            std::thread::sleep(Duration::from_millis(200));
        });
    });
}

/// The pids of this process's children that are `nsenter` and stopped.
fn stopped_nsenter_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // pid (comm) state ppid …; comm is in parentheses and may hold spaces.
            let (head, rest) = stat.rsplit_once(") ")?;
            let comm = head.split_once(" (")?.1;
            let mut fields = rest.split_whitespace();
            let (state, ppid) = (fields.next()?, fields.next()?);
            (comm == "nsenter" && state == "T" && ppid == me).then_some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        assert_eq!(parse_stat("42 (systemd) S 7 42 42 0"), Some((7, "systemd")));
        assert_eq!(parse_stat("43 (a (b) c) R 42 1 1 0"), Some((42, "a (b) c")));
    }

    #[test]
    fn hybrid_hosts_have_two_hierarchies_for_nspawn() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
                      cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(
            cgroup_hierarchies(mounts),
            [("name=systemd", "/sys/fs/cgroup/systemd"), ("", "/sys/fs/cgroup/unified")]
        );
        let own = "12:cpu:/\n1:name=systemd:/a/b\n0::/c\n";
        assert_eq!(own_cgroup(own, "name=systemd"), Some("/a/b"));
        assert_eq!(own_cgroup(own, ""), Some("/c"));
    }
}

