//! A test "machine": private system bus and real polkitd in a private mount
//! namespace (see `tests/env/machine.sh`), with hostd D-Bus-activated
//! against a given sysroot.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hostd_interface::proxy::Host1Proxy;

use crate::journal::{JournalSocket, Received};
use crate::{binary, repo_root};

/// Test users created in the machine's /etc.
pub const ADMIN: (&str, u32) = ("hostd-admin", 4101);
/// A plain user.
pub const USER: (&str, u32) = ("hostd-user", 4102);
/// A user the tests grant only `check`.
pub const CHECKER: (&str, u32) = ("hostd-checker", 4103);

/// Optional parts of a machine.
#[derive(Default, Debug)]
pub struct Extras<'a> {
    /// Where hostd's journal entries go (else nowhere).
    pub journal: Option<&'a JournalSocket>,
    /// Environment for hostd, e.g. a `PATH` that finds a fault-injecting
    /// `skopeo` first. Values must not contain spaces.
    pub hostd_env: Vec<(&'static str, String)>,
}

/// The running machine; stopped on drop.
#[derive(Debug)]
pub struct TestMachine {
    state: tempfile::TempDir,
    holder: Child,
    /// `unix:path=…` of the private system bus.
    pub address: String,
    /// hostd and its arguments, as D-Bus activation starts it.
    hostd_command: String,
    /// What hostd sent to the journal, when it has one: its log goes there
    /// instead of to the machine log.
    journal: Option<Received>,
}

/// Write the D-Bus activation file that starts hostd with `env`.
fn write_activation(state: &Path, hostd_command: &str, env: &[(&'static str, String)]) -> Result<()> {
    let env: String = env.iter().map(|(k, v)| format!(" {k}={v}")).collect();
    std::fs::write(
        state.join("services/org.hostd.Host1.service"),
        format!(
            "[D-BUS Service]\nName=org.hostd.Host1\nExec=/usr/bin/env HOSTD_LOG=hostd=debug,info{env} {hostd_command}\nUser=root\n"
        ),
    )?;
    Ok(())
}

impl TestMachine {
    /// Start a machine whose hostd manages `sysroot` with `config` as
    /// `/etc/hostd/hostd.toml`.
    pub fn start(sysroot: &Path, config: &str) -> Result<TestMachine> {
        TestMachine::start_with(sysroot, config, Extras::default())
    }

    /// Like [`TestMachine::start`], with hostd's journal entries going to `journal`.
    pub fn start_with_journal(sysroot: &Path, config: &str, journal: &JournalSocket) -> Result<TestMachine> {
        TestMachine::start_with(sysroot, config, Extras { journal: Some(journal), ..Extras::default() })
    }

    /// Like [`TestMachine::start`], with the optional parts in `extras`.
    pub fn start_with(sysroot: &Path, config: &str, extras: Extras<'_>) -> Result<TestMachine> {
        let state = tempfile::Builder::new().prefix("hostd-machine-").tempdir()?;
        let s = state.path();
        let address = format!("unix:path={}", s.join("bus.sock").display());
        std::fs::create_dir_all(s.join("services"))?;
        std::fs::create_dir_all(s.join("system.d"))?;
        std::fs::copy(repo_root().join("dbus-interfaces/org.hostd.Host1.conf"), s.join("system.d/org.hostd.Host1.conf"))
            .context("copying the bus policy")?;
        std::fs::write(s.join("bus.conf"), bus_config(s))?;
        let config_root = s.join("config");
        std::fs::create_dir_all(config_root.join("etc/hostd"))?;
        std::fs::write(config_root.join("etc/hostd/hostd.toml"), config)?;
        let hostd_command = format!(
            "{} --sysroot {} --config-root {} --state-dir {}",
            binary("hostd").display(),
            sysroot.display(),
            config_root.display(),
            s.join("state").display()
        );
        write_activation(s, &hostd_command, &extras.hostd_env)?;
        let log = std::fs::File::create(s.join("machine.log"))?;
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "bash"])
            .arg(repo_root().join("tests/env/machine.sh"))
            .arg(s)
            .arg(repo_root().join("polkit-rules/org.hostd.host1.policy"))
            .args(extras.journal.map(JournalSocket::dir))
            .env("OSTREE_SYSROOT_DEBUG", "mutable-deployments")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting the machine namespace")?;
        let journal = extras.journal.map(JournalSocket::received);
        let machine = TestMachine { state, holder, address, hostd_command, journal };
        machine.wait_ready()?;
        Ok(machine)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.state.path().join("ready").exists() && self.polkit_up() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("the test machine did not come up:\n{}", self.log())
    }

    fn polkit_up(&self) -> bool {
        Command::new("busctl")
            .args(["--address", &self.address, "status", "org.freedesktop.PolicyKit1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Everything the machine's processes (bus, polkitd, hostd) printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("machine.log")).unwrap_or_default()
    }

    /// The GLib CRITICALs hostd logged: a failed precondition inside hostd
    /// or a library it calls, a bug even when the job goes on. Checked when
    /// every machine stops.
    pub fn hostd_glib_criticals(&self) -> Vec<String> {
        let mut found = glib_criticals(&self.log(), &["(polkitd:", "dbus-daemon["]);
        if let Some(journal) = &self.journal {
            found.extend(glib_criticals(&journal.messages().join("\n"), &[]));
        }
        found
    }

    /// A root connection to the machine's bus.
    pub async fn connect(&self) -> Result<zbus::Connection> {
        Ok(zbus::connection::Builder::address(self.address.as_str()).build().await?)
    }

    /// A typed manager proxy over a root connection.
    /// Properties are read afresh on every access.
    pub async fn manager(&self) -> Result<(zbus::Connection, Host1Proxy<'static>)> {
        let conn = self.connect().await?;
        let proxy = Host1Proxy::builder(&conn).cache_properties(zbus::proxy::CacheProperties::No).build().await?;
        Ok((conn, proxy))
    }

    /// A command that runs with the machine's bus as its system bus, as
    /// `user` (uid) or as root when `None`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>, user: Option<u32>) -> Command {
        let mut cmd = match user {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}")).arg(format!("--regid={uid}")).arg("--clear-groups").arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &self.address);
        cmd
    }

    /// Like [`TestMachine::command`], but inside the machine's mount
    /// namespace, where its `/etc` (test users, their passwords, PAM's
    /// view of them) is the one in force: for what authenticates a user,
    /// such as polkit's agent helper.
    pub fn command_inside(&self, program: impl AsRef<std::ffi::OsStr>, user: Option<u32>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.holder.id())).arg("--mount").arg("--");
        if let Some(uid) = user {
            cmd.arg("setpriv").arg(format!("--reuid={uid}")).arg(format!("--regid={uid}")).arg("--clear-groups");
        }
        cmd.arg(program).env("DBUS_SYSTEM_BUS_ADDRESS", &self.address);
        cmd
    }

    /// Run `hostctl ARGS` as `user` (root when `None`).
    pub fn hostctl(&self, user: Option<u32>, args: &[&str]) -> Output {
        self.command(binary("hostctl"), user)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("hostctl runs")
    }

    /// Install a polkit rules file in the machine's /etc (polkitd reloads it).
    pub fn add_polkit_rule(&self, name: &str, javascript: &str) -> Result<()> {
        let dir = self.etc().join("polkit-1/rules.d");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), javascript)?;
        // polkitd notices rule changes asynchronously.
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }

    /// Let image pulls reach the plain-HTTP registry at `host` (`127.0.0.1:port`).
    pub fn trust_registry(&self, host: &str) -> Result<()> {
        let dir = self.etc().join("containers/registries.conf.d");
        std::fs::create_dir_all(&dir)?;
        let name = format!("50-hostd-test-{}.conf", host.replace([':', '.'], "-"));
        std::fs::write(dir.join(name), format!("[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"))?;
        Ok(())
    }

    /// Write (or with `None` remove) the drop-in `name` of hostd's
    /// configuration; `ReloadConfig` makes hostd read it.
    pub fn set_config_dropin(&self, name: &str, content: Option<&str>) -> Result<()> {
        let dir = self.config_dropin_dir();
        std::fs::create_dir_all(&dir)?;
        match content {
            Some(c) => std::fs::write(dir.join(name), c)?,
            None => std::fs::remove_file(dir.join(name))?,
        }
        Ok(())
    }

    /// The directory of hostd's drop-ins in /etc (not created), for
    /// drop-ins that are not plain text files.
    pub fn config_dropin_dir(&self) -> PathBuf {
        self.state.path().join("config/etc/hostd/hostd.d")
    }

    /// Replace the machine's /etc/containers/policy.json.
    pub fn set_containers_policy(&self, policy: &serde_json::Value) -> Result<()> {
        std::fs::write(self.etc().join("containers/policy.json"), serde_json::to_vec_pretty(policy)?)?;
        Ok(())
    }

    /// Make hostd not activatable, as on a host where it is not installed.
    pub fn remove_activation(&self) -> Result<()> {
        std::fs::remove_file(self.state.path().join("services/org.hostd.Host1.service"))?;
        self.reload_bus()
    }

    /// Start the next hostd with `env` instead of what the machine started with.
    pub fn set_hostd_env(&self, env: &[(&'static str, String)]) -> Result<()> {
        write_activation(self.state.path(), &self.hostd_command, env)?;
        self.reload_bus()
    }

    /// Make the bus re-read its configuration and activation files.
    fn reload_bus(&self) -> Result<()> {
        let reload = Command::new("busctl")
            .args(["--address", &self.address, "call", "org.freedesktop.DBus", "/org/freedesktop/DBus"])
            .args(["org.freedesktop.DBus", "ReloadConfig"])
            .output()?;
        anyhow::ensure!(reload.status.success(), "ReloadConfig: {}", String::from_utf8_lossy(&reload.stderr));
        Ok(())
    }

    /// Where hostd keeps its state file (`/var/lib/hostd` on a real host).
    pub fn state_dir(&self) -> PathBuf {
        self.state.path().join("state")
    }

    /// The machine's private /etc.
    pub fn etc(&self) -> PathBuf {
        self.state.path().join("etc")
    }

    /// Whether hostd currently owns its name (false after an idle exit).
    pub fn hostd_running(&self) -> bool {
        Command::new("busctl")
            .args(["--address", &self.address, "status", "org.hostd.Host1"])
            .env("SYSTEMD_LOG_LEVEL", "err")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `kill -9` hostd and its children (skopeo), as a crash or the OOM
    /// killer would, and wait until the bus has seen it go; its pid.
    pub fn kill_hostd(&self) -> Option<u32> {
        let pid = self.hostd_pid()?;
        // Collected first: once hostd is gone its children are re-parented.
        let children = children_of(pid);
        for p in std::iter::once(pid).chain(children) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), nix::sys::signal::Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.hostd_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(pid)
    }

    /// The pid of the running hostd, if any.
    pub fn hostd_pid(&self) -> Option<u32> {
        let out = Command::new("busctl")
            .args(["--address", &self.address, "call", "org.freedesktop.DBus", "/org/freedesktop/DBus"])
            .args(["org.freedesktop.DBus", "GetConnectionUnixProcessID", "s", "org.hostd.Host1"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().nth(1)?.parse().ok()
    }
}

/// A polkit rule granting the action of `verb` (`org.hostd.host1.<verb>`)
/// to `user`, for [`TestMachine::add_polkit_rule`].
pub fn grant(verb: &str, user: &str) -> String {
    format!(
        r#"polkit.addRule(function(action, subject) {{
    if (action.id == "org.hostd.host1.{verb}" && subject.user == "{user}") {{
        return polkit.Result.YES;
    }}
}});
"#
    )
}

/// The lines of `log` with a GLib CRITICAL (GLib's own `(prog:pid):
/// Domain-CRITICAL **: …` lines, and hostd's `Domain-CRITICAL: …` ones),
/// except those starting with one of `others` (other programs' lines).
pub fn glib_criticals(log: &str, others: &[&str]) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("CRITICAL"))
        .filter(|l| !others.iter().any(|o| l.trim_start().starts_with(o)))
        .map(str::to_string)
        .collect()
}

/// Pids whose parent is `parent`, from `/proc/<pid>/stat`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

/// The parent pid: the second field after the parenthesised command name.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

fn bus_config(state: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={state}/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{state}/services</servicedir>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
  <includedir>{state}/system.d</includedir>
</busconfig>
"#,
        state = state.display()
    )
}

impl Drop for TestMachine {
    fn drop(&mut self) {
        // hostd was activated by the bus inside the namespace: stop it first
        // so it cannot outlive the bus, then the whole process group.
        if let Some(pid) = self.hostd_pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        let pgid = nix::unistd::Pid::from_raw(self.holder.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.holder.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.holder.wait();
        if std::env::var_os("HOSTD_TEST_SHOW_LOG").is_some() {
            eprintln!("--- machine log ---\n{}", self.log());
        }
        // Every test that starts a machine fails on a CRITICAL of hostd's
        // (not on top of another failure: a panic in a panic aborts).
        let criticals = self.hostd_glib_criticals();
        if !criticals.is_empty() && !std::thread::panicking() {
            panic!("hostd logged GLib CRITICALs:\n{}\n--- machine log ---\n{}", criticals.join("\n"), self.log());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glib_criticals_of_hostd_are_found_in_both_forms() {
        let log = "\
dbus-daemon[1]: [system] Successfully activated service 'org.hostd.Host1'
(process:42): GLib-GIO-CRITICAL **: 09:00:00.000: g_file_input_stream_query_info: assertion 'G_IS_FILE_INPUT_STREAM (stream)' failed
2026-11-30T09:00:00Z ERROR GLib-GIO-CRITICAL: g_file_input_stream_query_info: assertion 'G_IS_FILE_INPUT_STREAM (stream)' failed glib_domain=\"GLib-GIO\"
(polkitd:7): GLib-CRITICAL **: not ours
2026-11-30T09:00:01Z  INFO job succeeded: Deployed v2
";
        let found = glib_criticals(log, &["(polkitd:", "dbus-daemon["]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("(process:42)"));
        assert!(found[1].contains("ERROR GLib-GIO-CRITICAL"));
    }
}
