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
use crate::systemd::{unit_state, Systemd1ManagerProxy, UnitState};

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
        let left = deadline.saturating_duration_since(Instant::now());
        let result = if left.is_zero() {
            let name = format!("check {}", exe.display());
            CheckResult { failure: Some(format!("{name}: not run: past {}", deadline_words(settings))), name, output: String::new() }
        } else if settings.check_time_limit <= left {
            let words = format!("its time limit of {} s", settings.check_time_limit.as_secs());
            run_executable(&exe, settings.check_time_limit, &words).await
        } else {
            run_executable(&exe, left, &deadline_words(settings)).await
        };
        results.push(result);
    }
    if settings.no_failed_units {
        results.push(check_no_failed_units(conn).await);
    }
    results
}

/// The end of the whole assessment, as a failure names it.
fn deadline_words(settings: &HealthSettings) -> String {
    format!("the deadline of all checks ([health] deadline_secs = {})", settings.deadline.as_secs())
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
    match settled_unit_state(conn, name, deadline).await {
        Ok(state) if state.load != "loaded" => result(Some(format!("unit {name}: {}", state.load))),
        Ok(state) if state.active == "active" => result(None),
        Ok(state) => result(Some(format!("unit {name}: {} ({})", state.active, state.sub))),
        Err(e) => result(Some(format!("unit {name}: asking systemd: {e}"))),
    }
}

/// The state of unit `name` once no job is pending for it and it is not
/// starting or reloading, or whatever it is at `deadline`. A required unit
/// nothing started yet is started first, as `hostd-health.target` does for
/// its wants.
async fn settled_unit_state(conn: &Connection, name: &str, deadline: Instant) -> zbus::Result<UnitState> {
    let manager = Systemd1ManagerProxy::new(conn).await?;
    let path = manager.load_unit(name).await?;
    let state = unit_state(conn, &path).await?;
    if state.load != "loaded" {
        return Ok(state);
    }
    if state.active == "inactive" && !state.job_pending {
        manager.start_unit(name, "replace").await?;
    }
    loop {
        let state = unit_state(conn, &path).await?;
        let settled = !state.job_pending && !matches!(state.active.as_str(), "activating" | "reloading");
        if settled || Instant::now() >= deadline {
            return Ok(state);
        }
        sleep(POLL).await;
    }
}

/// Run `exe` with no input; killed (its whole process group) after
/// `limit`, a failure saying "killed at `limit_words`".
pub async fn run_executable(exe: &Path, limit: Duration, limit_words: &str) -> CheckResult {
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
            let failure = Some(format!("{name}: killed at {limit_words}"));
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
            let mut failed: Vec<String> = units.into_iter().map(|u| u.0).filter(|n| n != HEALTH_UNIT).collect();
            failed.sort();
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
        let ok = run_executable(&script(dir.path(), "ok", "echo fine"), Duration::from_secs(5), "5 s").await;
        assert_eq!((ok.failure, ok.output.as_str()), (None, "fine"));
        let bad = run_executable(&script(dir.path(), "bad", "echo broken >&2; exit 3"), Duration::from_secs(5), "5 s").await;
        assert!(bad.failure.unwrap().ends_with("exit status: 3"));
        assert_eq!(bad.output, "broken");
        let started = std::time::Instant::now();
        let hung = run_executable(&script(dir.path(), "hang", "sleep 60 & wait"), Duration::from_secs(1), "its limit").await;
        assert!(hung.failure.unwrap().ends_with("killed at its limit"));
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
