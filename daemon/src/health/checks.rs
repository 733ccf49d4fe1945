//! The health checks of a boot (docs/health.md, "Check sources"):
//!
//! - required units: `[health] required_units` and every unit the image or
//!   the admin puts in `hostd-health.target.wants/`; one that nothing
//!   started is started, and each must be active once its start job ended
//!   (a oneshot service needs `RemainAfterExit=yes`);
//! - executables in `/usr/lib/hostd/health.d/` and `/etc/hostd/health.d/`
//!   (a name in `/etc` replaces the same name in `/usr`, a symlink to
//!   `/dev/null` masks it), run in name order; exit status 0 is healthy,
//!   anything else, or running past the time limit, is a failure;
//! - with `[health] no_failed_units = true`, no unit may be failed.
//!
//! Units are read from systemd over D-Bus; executables run in their own
//! process group, which is killed at the time limit.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::time::{sleep, timeout, Instant};
use zbus::Connection;

use super::HealthSettings;
use crate::systemd::{Systemd1ManagerProxy, Systemd1UnitProxy};

/// Directories of check executables, lowest priority first, relative to the config root.
pub const CHECK_DIRS: [&str; 2] = ["usr/lib/hostd/health.d", "etc/hostd/health.d"];
/// Where units named in `hostd-health.target.wants/` live, relative to the config root.
pub const WANTS_DIRS: [&str; 2] =
    ["usr/lib/systemd/system/hostd-health.target.wants", "etc/systemd/system/hostd-health.target.wants"];
/// The unit running the checks, left out of the failed-units check.
pub const HEALTH_UNIT: &str = "hostd-health-check.service";
/// The most output kept per check (its end), for the journal.
const OUTPUT_BYTES: usize = 4096;
/// How often a unit still starting is looked at again.
const POLL: Duration = Duration::from_millis(500);

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// `unit NAME`, `check PATH` or `failed units`.
    pub name: String,
    /// `None` when healthy; why not otherwise.
    pub failure: Option<String>,
    /// The end of an executable's output (stdout and stderr).
    pub output: String,
}

/// Run every check, each within its limit and all before `deadline`.
pub async fn run_all(conn: &Connection, root: &Path, settings: &HealthSettings, deadline: Instant) -> Vec<CheckResult> {
    let mut results = Vec::new();
    for unit in required_units(root, settings) {
        results.push(check_unit(conn, &unit, deadline).await);
    }
    for exe in executables(root) {
        let limit = settings.check_time_limit.min(deadline.saturating_duration_since(Instant::now()));
        results.push(run_executable(&exe, limit).await);
    }
    if settings.no_failed_units {
        results.push(check_no_failed_units(conn).await);
    }
    results
}

/// `[health] required_units` plus the names in the wants directories, sorted, once each.
pub fn required_units(root: &Path, settings: &HealthSettings) -> Vec<String> {
    let mut units: Vec<String> = settings.required_units.clone();
    for dir in WANTS_DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        units.extend(entries.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)));
    }
    units.sort();
    units.dedup();
    units
}

/// The check executables by name, later directories replacing earlier
/// ones, masked ones left out, in name order.
pub fn executables(root: &Path) -> Vec<PathBuf> {
    let mut by_name = BTreeMap::new();
    for dir in CHECK_DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        for entry in entries.flatten() {
            by_name.insert(entry.file_name(), entry.path());
        }
    }
    by_name.into_values().filter(|p| !is_masked(p)).collect()
}

fn is_masked(p: &Path) -> bool {
    std::fs::read_link(p).is_ok_and(|t| t == Path::new("/dev/null"))
}

async fn check_unit(conn: &Connection, name: &str, deadline: Instant) -> CheckResult {
    let result = |failure: Option<String>| CheckResult { name: format!("unit {name}"), failure, output: String::new() };
    let state = async {
        let manager = Systemd1ManagerProxy::new(conn).await?;
        let path = manager.load_unit(name).await?;
        let unit = Systemd1UnitProxy::builder(conn).path(path).cache_properties(zbus::proxy::CacheProperties::No).build().await?;
        let load = unit.load_state().await?;
        if load != "loaded" {
            return Ok::<_, zbus::Error>((load, String::new(), String::new()));
        }
        // A required unit nothing started yet is pulled in, as
        // hostd-health.target does for its wants.
        if unit.active_state().await? == "inactive" && unit.job().await?.0 == 0 {
            manager.start_unit(name, "replace").await?;
        }
        loop {
            let active = unit.active_state().await?;
            let pending = unit.job().await?.0 != 0;
            // Still starting: wait for it, up to the deadline.
            let settled = !pending && !matches!(active.as_str(), "activating" | "reloading");
            if settled || Instant::now() >= deadline {
                return Ok((load, active, unit.sub_state().await?));
            }
            sleep(POLL).await;
        }
    };
    match state.await {
        Ok((load, _, _)) if load != "loaded" => result(Some(format!("unit {name}: {load}"))),
        Ok((_, active, _)) if active == "active" => result(None),
        Ok((_, active, sub)) => result(Some(format!("unit {name}: {active} ({sub})"))),
        Err(e) => result(Some(format!("unit {name}: asking systemd: {e}"))),
    }
}

/// Run `exe` with no input; killed (its whole process group) after `limit`.
pub async fn run_executable(exe: &Path, limit: Duration) -> CheckResult {
    let name = format!("check {}", exe.display());
    let executable = std::fs::metadata(exe).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if !executable {
        return CheckResult { failure: Some(format!("{name}: not an executable file")), name, output: String::new() };
    }
    let mut cmd = tokio::process::Command::new(exe);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return CheckResult { failure: Some(format!("{name}: starting it: {e}")), name, output: String::new() },
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let run = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut err).await;
            }
        };
        let (_, _, status) = tokio::join!(read_out, read_err, child.wait());
        out.extend_from_slice(&err);
        (status, out)
    };
    match timeout(limit, run).await {
        Ok((Ok(status), out)) => {
            let output = output_tail(&out);
            let failure = (!status.success()).then(|| format!("{name}: {status}"));
            CheckResult { name, failure, output }
        }
        Ok((Err(e), out)) => CheckResult { failure: Some(format!("{name}: {e}")), name, output: output_tail(&out) },
        Err(_) => {
            if let Some(pgid) = pgid {
                // The check and whatever it started.
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            let failure = Some(format!("{name}: killed at its time limit of {} s", limit.as_secs()));
            CheckResult { name, failure, output: String::new() }
        }
    }
}

fn output_tail(out: &[u8]) -> String {
    let start = out.len().saturating_sub(OUTPUT_BYTES);
    String::from_utf8_lossy(&out[start..]).trim_end().to_string()
}

async fn check_no_failed_units(conn: &Connection) -> CheckResult {
    let name = "failed units".to_string();
    let listed = async { Systemd1ManagerProxy::new(conn).await?.list_units_filtered(&["failed"]).await };
    let failure = match listed.await {
        Ok(units) => {
            let failed: Vec<String> = units.into_iter().map(|u| u.0).filter(|n| n != HEALTH_UNIT).collect();
            (!failed.is_empty()).then(|| format!("failed units: {}", failed.join(", ")))
        }
        Err(e) => Some(format!("failed units: asking systemd: {e}")),
    };
    CheckResult { name, failure, output: String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn exit_status_decides_and_a_hanging_check_is_killed_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let ok = run_executable(&script(dir.path(), "ok", "echo fine"), Duration::from_secs(5)).await;
        assert_eq!((ok.failure, ok.output.as_str()), (None, "fine"));
        let bad = run_executable(&script(dir.path(), "bad", "echo broken >&2; exit 3"), Duration::from_secs(5)).await;
        assert!(bad.failure.unwrap().ends_with("exit status: 3"));
        assert_eq!(bad.output, "broken");
        let started = std::time::Instant::now();
        let hung = run_executable(&script(dir.path(), "hang", "sleep 60 & wait"), Duration::from_secs(1)).await;
        assert!(hung.failure.unwrap().contains("killed at its time limit of 1 s"));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn etc_replaces_usr_and_dev_null_masks() {
        let root = tempfile::tempdir().unwrap();
        for dir in CHECK_DIRS {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let usr = root.path().join(CHECK_DIRS[0]);
        let etc = root.path().join(CHECK_DIRS[1]);
        script(&usr, "10-a", "true");
        script(&usr, "20-b", "true");
        script(&etc, "10-a", "true");
        std::os::unix::fs::symlink("/dev/null", etc.join("20-b")).unwrap();
        script(&etc, "30-c", "true");
        assert_eq!(executables(root.path()), vec![etc.join("10-a"), etc.join("30-c")]);
    }
}
