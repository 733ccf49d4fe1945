//! Cockpit serving hostd's page to a headless Chromium, for
//! tests/tests/cockpit.rs.
//!
//! `cockpit-ws --local-session=cockpit-bridge` (Debian's cockpit-ws): the
//! web service starts one bridge as the user it runs as, with its
//! environment, and serves it without a login; that is what cockpit-ws
//! offers for a session without PAM (the machine's users exist only in its
//! mount namespace, where no PAM login service is configured). cockpit-ws
//! runs inside the machine's namespace as the test user, so the bridge has
//! that user's uid on the machine's private system bus, and polkitd judges
//! its calls as it would a logged-in user's. It listens on 127.0.0.1 only.
//! The page comes from `make install-cockpit` into a private prefix, found
//! through `XDG_DATA_DIRS` as Cockpit finds installed packages.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::machine::TestMachine;
use crate::registry::free_port;
use crate::{binary, repo_root};

/// A running cockpit-ws with hostd's page; stopped (with its bridge) on drop.
#[derive(Debug)]
pub struct CockpitWs {
    child: Child,
    dir: tempfile::TempDir,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// Where failing scenarios leave their screenshots.
    pub artifacts: PathBuf,
}

impl CockpitWs {
    /// Install the page and start cockpit-ws as `user` (uid; root when
    /// `None`) against `machine`'s bus. `name` names the artifacts folder,
    /// target/cockpit-artifacts/<name>.
    pub fn start(machine: &TestMachine, user: Option<u32>, name: &str) -> Result<CockpitWs> {
        let dir = tempfile::Builder::new().prefix("hostd-cockpit-").tempdir()?;
        let d = dir.path();
        let prefix = d.join("root");
        let install = Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(repo_root())
            .arg("install-cockpit")
            .arg(format!("DESTDIR={}", prefix.display()))
            .arg("PREFIX=/usr")
            .output()?;
        anyhow::ensure!(install.status.success(), "make install-cockpit: {}", String::from_utf8_lossy(&install.stderr));
        // cockpit-ws reads cockpit.conf from $XDG_CONFIG_DIRS/cockpit/.
        std::fs::create_dir_all(d.join("config/cockpit"))?;
        std::fs::write(d.join("config/cockpit/cockpit.conf"), "[WebService]\nAllowUnencrypted = true\n")?;
        let home = d.join("home");
        std::fs::create_dir_all(&home)?;
        if let Some(uid) = user {
            nix::unistd::chown(&home, Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(uid)))?;
        }
        set_mode(d, 0o755)?;
        let port = free_port()?;
        let log = std::fs::File::create(d.join("cockpit-ws.log"))?;
        let child = machine
            .command_inside("/usr/lib/cockpit/cockpit-ws", user)
            .args(["--no-tls", "--address", "127.0.0.1", "--port", &port.to_string()])
            .arg("--local-session=/usr/bin/cockpit-bridge")
            .env("XDG_DATA_DIRS", format!("{}:/usr/share", prefix.join("usr/share").display()))
            .env("XDG_CONFIG_DIRS", d.join("config"))
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_RUNTIME_DIR", &home)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting cockpit-ws")?;
        let artifacts = repo_root().join("target/cockpit-artifacts").join(name);
        let ws = CockpitWs { child, dir, port, artifacts };
        ws.wait_listening()?;
        Ok(ws)
    }

    fn wait_listening(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("cockpit-ws did not listen:\n{}", self.log())
    }

    /// What cockpit-ws and the bridge printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cockpit-ws.log")).unwrap_or_default()
    }

    /// The page's address.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/cockpit/@localhost/hostd/index.html", self.port)
    }

    /// Run `scenario` of tests/cockpit/page.py against the page; panics
    /// with its message (and where its screenshot is) when it fails.
    /// `HOSTD_COCKPIT_SHOTS` in the test's environment keeps every
    /// scenario's final screenshot there (`make demo-cockpit`).
    pub fn scenario(&self, machine: &TestMachine, scenario: &str) {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(repo_root().join("tests/cockpit/page.py"))
            .arg(scenario)
            .env("HOSTD_COCKPIT_URL", self.url())
            .env("HOSTD_COCKPIT_ARTIFACTS", &self.artifacts)
            .env("HOSTCTL", binary("hostctl"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &machine.address)
            .env("HOME", self.dir.path().join("home"))
            .stdin(Stdio::null());
        let started = Instant::now();
        let out = cmd.output().expect("python3 runs");
        assert!(
            out.status.success(),
            "scenario {scenario} failed after {:?} (screenshot and page text in {}):\n{}{}\n--- cockpit-ws ---\n{}\n--- machine ---\n{}",
            started.elapsed(),
            self.artifacts.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log(),
            machine.log()
        );
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

impl Drop for CockpitWs {
    fn drop(&mut self) {
        // cockpit-ws and the bridge it started share its process group.
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}
