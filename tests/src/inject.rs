//! Fault injection around hostd: a `PATH` without `skopeo` and a stand-in
//! `skopeo` that crashes on demand (each put in front of hostd through
//! [`crate::machine::Extras::hostd_env`]), and another tool holding the
//! sysroot lock.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::sysroot::{TestSysroot, STATEROOT};

/// A `PATH` for hostd under which there is no `skopeo`, as on a host where
/// the package is missing; the directory lives as long as this value.
#[derive(Debug)]
pub struct PathWithoutSkopeo {
    dir: tempfile::TempDir,
}

impl PathWithoutSkopeo {
    /// A directory linking to every program in /usr/bin but skopeo.
    pub fn new() -> Result<PathWithoutSkopeo> {
        let dir = tempfile::Builder::new().prefix("hostd-no-skopeo-").tempdir()?;
        for entry in std::fs::read_dir("/usr/bin")? {
            let name = entry?.file_name();
            if name != "skopeo" {
                std::os::unix::fs::symlink(Path::new("/usr/bin").join(&name), dir.path().join(&name))?;
            }
        }
        Ok(PathWithoutSkopeo { dir })
    }

    /// The `PATH` entry for [`crate::machine::Extras::hostd_env`].
    pub fn env(&self) -> (&'static str, String) {
        ("PATH", format!("{}:/usr/sbin:/sbin", self.dir.path().display()))
    }
}

/// A fault-injecting stand-in for skopeo: a script named `skopeo` that runs
/// the real one and, once [`CrashingSkopeo::crash`] was called, kills it
/// with SIGSEGV and dies of the same signal, as a crashing skopeo would.
#[derive(Debug)]
pub struct CrashingSkopeo {
    dir: tempfile::TempDir,
}

impl CrashingSkopeo {
    /// Write the stand-in into a fresh directory.
    pub fn new() -> Result<CrashingSkopeo> {
        let dir = tempfile::Builder::new().prefix("hostd-crashing-skopeo-").tempdir()?;
        let trigger = dir.path().join("crash-now");
        let script = dir.path().join("skopeo");
        std::fs::write(
            &script,
            format!(
                r#"#!/bin/bash
# Fault injection for hostd's tests: the real skopeo, crashed on demand.
# Its socket to hostd is standard input, which `&` would replace.
/usr/bin/skopeo "$@" <&0 &
child=$!
while kill -0 "$child" 2>/dev/null; do
    if [[ -e {trigger} ]]; then
        kill -SEGV "$child"
        wait "$child"
        trap - SEGV
        kill -SEGV $$
    fi
    sleep 0.02
done
wait "$child"
"#,
                trigger = trigger.display()
            ),
        )?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        Ok(CrashingSkopeo { dir })
    }

    /// The `PATH` entry for [`crate::machine::Extras::hostd_env`].
    pub fn env(&self) -> (&'static str, String) {
        ("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", self.dir.path().display()))
    }

    /// Crash every running skopeo started through the stand-in, and every
    /// later one, until [`CrashingSkopeo::heal`].
    pub fn crash(&self) {
        std::fs::write(self.trigger(), b"").expect("writing the crash trigger");
    }

    /// Let skopeo run normally again.
    pub fn heal(&self) {
        let _ = std::fs::remove_file(self.trigger());
    }

    fn trigger(&self) -> PathBuf {
        self.dir.path().join("crash-now")
    }
}

/// A real `ostree admin deploy` holding the sysroot lock, as another
/// update tool would: it takes the lock, then blocks reading its
/// `--origin-file`, a FIFO nobody writes. Killed on drop, before it has
/// changed anything.
#[derive(Debug)]
pub struct OstreeAdminHoldingTheLock {
    admin: std::process::Child,
    _fifo_dir: tempfile::TempDir,
}

impl OstreeAdminHoldingTheLock {
    /// Start it on `sysroot` and return once it holds the lock.
    pub fn start(sysroot: &TestSysroot) -> Result<OstreeAdminHoldingTheLock> {
        let fifo_dir = tempfile::Builder::new().prefix("hostd-origin-fifo-").tempdir()?;
        let fifo = fifo_dir.path().join("origin");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR)?;
        let commit = sysroot.deployment_checksums()?.into_iter().next().context("no deployment")?;
        let admin = Command::new("ostree")
            .args(["admin", "deploy", &format!("--sysroot={}", sysroot.path().display()), "--os", STATEROOT])
            .arg(format!("--origin-file={}", fifo.display()))
            .arg(commit)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ostree admin deploy")?;
        let mut holder = OstreeAdminHoldingTheLock { admin, _fifo_dir: fifo_dir };
        holder.wait_until_locked(sysroot)?;
        Ok(holder)
    }

    fn wait_until_locked(&mut self, sysroot: &TestSysroot) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.admin.try_wait()? {
                let mut stderr = String::new();
                self.admin.stderr.take().map(|mut e| std::io::Read::read_to_string(&mut e, &mut stderr));
                bail!("ostree admin deploy ended ({status}) before it held the lock: {stderr}");
            }
            let probe = sysroot.open()?;
            if !probe.try_lock()? {
                return Ok(());
            }
            probe.unlock();
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("ostree admin deploy did not take the sysroot lock")
    }
}

impl Drop for OstreeAdminHoldingTheLock {
    fn drop(&mut self) {
        let _ = self.admin.kill();
        let _ = self.admin.wait();
    }
}
