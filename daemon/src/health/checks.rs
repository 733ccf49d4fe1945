//! The health checks of a boot (docs/health.md, "Check sources"):
//!
//! - required units: `[health] required_units` and every unit the image or
//!   the admin puts in `hostd-health.target.wants/`; one that nothing
//!   started is started, and each must be active once its start job ended
//!   (a oneshot service needs `RemainAfterExit=yes`) and still be active
//!   when the check executables are done;
//! - executables in `/usr/lib/hostd/health.d/` and `/etc/hostd/health.d/`
//!   (a name in `/etc` replaces the same name in `/usr`, a symlink to
//!   `/dev/null` masks it; anything that is not an executable regular file,
//!   and backup names such as `*.rpmsave`, are skipped with a warning, as
//!   run-parts(8) does), run in name order; exit status 0 is healthy,
//!   anything else, or running past the time limit, is a failure;
//! - with `[health] no_failed_units = true`, no unit may be failed.
//!
//! Units are read from systemd over D-Bus; executables run in their own
//! process group, which is killed when the check exits or at its time limit.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{ChildStderr, ChildStdout};
use tokio::time::{sleep, timeout, Instant};
use zbus::{Connection, OwnedObjectPath};

use super::HealthSettings;
use crate::systemd::{unit_state, Systemd1ManagerProxy, UnitState};

/// Directories of check executables, lowest priority first, relative to the config root.
pub const CHECK_DIRS: [&str; 2] = ["usr/lib/hostd/health.d", "etc/hostd/health.d"];
/// Where units named in `hostd-health.target.wants/` live, relative to the config root.
pub const WANTS_DIRS: [&str; 2] =
    ["usr/lib/systemd/system/hostd-health.target.wants", "etc/systemd/system/hostd-health.target.wants"];
/// The unit running the checks, left out of the failed-units check.
pub const HEALTH_UNIT: &str = "hostd-health-check.service";
/// Name endings of package managers' and editors' leftovers in a check
/// directory, which are not run (run-parts(8) skips the same).
pub const SKIPPED_SUFFIXES: [&str; 10] =
    ["~", ".rpmsave", ".rpmnew", ".rpmorig", ".dpkg-old", ".dpkg-dist", ".dpkg-new", ".dpkg-tmp", ".swp", ".swo"];
/// The most output kept per check (its end), for the journal.
const OUTPUT_BYTES: usize = 4096;
/// How long a check's pipes are still read once its process group is
/// gone: a process that left the group may hold them open.
const DRAIN: Duration = Duration::from_secs(1);
/// How often a unit still starting is looked at again.
const POLL: Duration = Duration::from_millis(500);

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// `unit NAME`, `check PATH` or `failed units`.
    pub name: String,
    /// `None` when healthy; why not otherwise.
    pub failure: Option<String>,
    /// The end of an executable's output (stdout and stderr, read as they come),
    /// also when it was killed.
    pub output: String,
}

/// Run every check, each within its limit and all before `deadline`.
/// Required units are judged once settled, then read once more after the
/// executables ran, so one that started and then crashed fails too.
pub async fn run_all(conn: &Connection, root: &Path, settings: &HealthSettings, deadline: Instant) -> Vec<CheckResult> {
    let words = deadline_words(settings);
    let mut settled = Vec::new();
    for unit in required_units(root, settings) {
        let state = settled_unit_state(conn, &unit, deadline).await;
        settled.push((unit, state));
    }
    let mut executed = Vec::new();
    for exe in executables(root) {
        let left = deadline.saturating_duration_since(Instant::now());
        let result = if left.is_zero() {
            let name = format!("check {}", exe.display());
            CheckResult { failure: Some(format!("{name}: not run: past {words}")), name, output: String::new() }
        } else if settings.check_time_limit <= left {
            let limit_words = format!("its time limit of {} s", settings.check_time_limit.as_secs());
            run_executable(&exe, settings.check_time_limit, &limit_words).await
        } else {
            run_executable(&exe, left, &words).await
        };
        executed.push(result);
    }
    let mut results = Vec::new();
    for (unit, state) in settled {
        let failure = match state {
            Err(e) => Some(format!("unit {unit}: asking systemd: {e}")),
            Ok((path, first)) => match settled_failure(&unit, &first, &words) {
                Some(failure) => Some(failure),
                None => match unit_state(conn, &path).await {
                    Ok(last) => end_failure(&unit, &last),
                    Err(e) => Some(format!("unit {unit}: asking systemd at the end of the checks: {e}")),
                },
            },
        };
        results.push(CheckResult { name: format!("unit {unit}"), failure, output: String::new() });
    }
    results.extend(executed);
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
/// ones, masked ones left out, in name order. Every entry that is skipped
/// (see [`find_executables`]) is logged as a warning.
pub fn executables(root: &Path) -> Vec<PathBuf> {
    let (run, skipped) = find_executables(root);
    for (path, why) in skipped {
        tracing::warn!("{}: skipped, not run as a health check: {why}", path.display());
    }
    run
}

/// The check executables (as [`executables`]) and the entries skipped,
/// each with why, by path. An entry is skipped when its name ends in one
/// of [`SKIPPED_SUFFIXES`] or it is not, symlinks followed, a regular file
/// with an execute bit (run-parts(8)'s rule); a skipped entry in `/etc`
/// does not replace the same name in `/usr`. A symlink to `/dev/null` is
/// a mask, not skipped.
pub fn find_executables(root: &Path) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut by_name = BTreeMap::new();
    let mut skipped = Vec::new();
    for dir in CHECK_DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if is_masked(&path) {
                tracing::info!("{}: masked (a link to /dev/null), not run", path.display());
                by_name.insert(entry.file_name(), None);
                continue;
            }
            match not_runnable(&path) {
                Some(why) => skipped.push((path, why)),
                None => {
                    by_name.insert(entry.file_name(), Some(path));
                }
            }
        }
    }
    skipped.sort();
    (by_name.into_values().flatten().collect(), skipped)
}

/// A symbolic link to `/dev/null`, written absolute or relative (as
/// systemd takes unit masks).
fn is_masked(p: &Path) -> bool {
    let Ok(target) = std::fs::read_link(p) else { return false };
    target == Path::new("/dev/null") || std::fs::canonicalize(p).is_ok_and(|t| t == Path::new("/dev/null"))
}

/// Why `path` is not run as a check, or `None` when it is.
fn not_runnable(path: &Path) -> Option<String> {
    let name = path.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
    if let Some(suffix) = SKIPPED_SUFFIXES.iter().find(|s| name.ends_with(s.as_bytes())) {
        return Some(format!("a backup or editor file (its name ends in {suffix})"));
    }
    match std::fs::metadata(path) {
        Err(e) => Some(format!("cannot be read: {e}")),
        Ok(m) if m.is_dir() => Some("a directory".into()),
        Ok(m) if !m.is_file() => Some("not a regular file".into()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Some(format!("not executable (mode {:04o})", m.permissions().mode() & 0o7777))
        }
        Ok(_) => None,
    }
}

/// Unit `name`'s object path and its state once no job is pending for it
/// and it is not starting or reloading, or whatever it is at `deadline`. A
/// required unit nothing started yet is started first, as
/// `hostd-health.target` does for its wants.
async fn settled_unit_state(conn: &Connection, name: &str, deadline: Instant) -> zbus::Result<(OwnedObjectPath, UnitState)> {
    let manager = Systemd1ManagerProxy::new(conn).await?;
    let path = manager.load_unit(name).await?;
    let state = unit_state(conn, &path).await?;
    if state.load != "loaded" {
        return Ok((path, state));
    }
    if state.active == "inactive" && !state.job_pending {
        manager.start_unit(name, "replace").await?;
    }
    loop {
        let state = unit_state(conn, &path).await?;
        if is_settled(&state) || Instant::now() >= deadline {
            return Ok((path, state));
        }
        sleep(POLL).await;
    }
}

/// No job pending and not starting or reloading.
fn is_settled(state: &UnitState) -> bool {
    !state.job_pending && !matches!(state.active.as_str(), "activating" | "reloading")
}

/// The failure of unit `name` in the `state` [`settled_unit_state`] gave;
/// a state not settled is one the deadline (`deadline_words`) caught.
fn settled_failure(name: &str, state: &UnitState, deadline_words: &str) -> Option<String> {
    let (active, sub) = (&state.active, &state.sub);
    if state.load != "loaded" {
        Some(format!("unit {name}: {}", state.load))
    } else if matches!(active.as_str(), "activating" | "reloading") {
        Some(format!("unit {name}: still {active} ({sub}) at {deadline_words}"))
    } else if active == "active" {
        None
    } else if state.job_pending {
        Some(format!("unit {name}: still {active} ({sub}) with a job pending at {deadline_words}"))
    } else {
        Some(format!("unit {name}: {active} ({sub})"))
    }
}

/// The failure of unit `name`, which passed once settled, in the state
/// `last` read after the executables ran: it must still be active (or
/// reloading, which a running service does while active).
fn end_failure(name: &str, last: &UnitState) -> Option<String> {
    (!matches!(last.active.as_str(), "active" | "reloading"))
        .then(|| format!("unit {name}: {} ({}) by the end of the checks", last.active, last.sub))
}

/// Run `exe` with no input, in a process group of its own. Its exit status
/// decides once the process itself exits; after `limit` it is killed, a
/// failure saying "killed at `limit_words`". Either way its process group
/// is killed then (nothing a check started outlives it), and the output
/// read so far plus what is left in the pipes within [`DRAIN`] is kept.
pub async fn run_executable(exe: &Path, limit: Duration, limit_words: &str) -> CheckResult {
    let name = format!("check {}", exe.display());
    let mut cmd = tokio::process::Command::new(exe);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return CheckResult { failure: Some(format!("{name}: starting it: {e}")), name, output: String::new() },
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let mut output = Output { stdout: child.stdout.take(), stderr: child.stderr.take(), kept: Vec::new() };
    let ended = timeout(limit, output.read_while(child.wait())).await;
    if let Some(pgid) = pgid {
        // Whatever the check left running goes with it, passed or not.
        // Once the check is reaped its pid stays reserved while anything
        // of its group lives; with nothing left this finds no group.
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    if ended.is_err() {
        let _ = timeout(DRAIN, child.wait()).await;
    }
    let _ = timeout(DRAIN, output.read_to_end()).await;
    let failure = match ended {
        Ok(Ok(status)) => (!status.success()).then(|| format!("{name}: {status}")),
        Ok(Err(e)) => Some(format!("{name}: {e}")),
        Err(_) => Some(format!("{name}: killed at {limit_words}")),
    };
    CheckResult { name, failure, output: output_tail(&output.kept) }
}

/// A check's stdout and stderr, read as they come into one buffer that
/// keeps (at least) the last [`OUTPUT_BYTES`].
struct Output {
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    kept: Vec<u8>,
}

impl Output {
    /// Read the pipes until `until` completes; its result.
    async fn read_while<T>(&mut self, until: impl Future<Output = T>) -> T {
        tokio::pin!(until);
        loop {
            tokio::select! {
                done = &mut until => return done,
                () = self.read_once() => {}
            }
        }
    }

    /// Read the pipes until both are at their end.
    async fn read_to_end(&mut self) {
        while self.stdout.is_some() || self.stderr.is_some() {
            self.read_once().await;
        }
    }

    /// One read from whichever pipe has something; never completes once
    /// both are closed. Cancel-safe: a read dropped loses nothing.
    async fn read_once(&mut self) {
        let (mut out, mut err) = ([0; 4096], [0; 4096]);
        let got = tokio::select! {
            n = read_some(&mut self.stdout, &mut out) => &out[..n],
            n = read_some(&mut self.stderr, &mut err) => &err[..n],
        };
        self.kept.extend_from_slice(got);
        if self.kept.len() > 2 * OUTPUT_BYTES {
            self.kept.drain(..self.kept.len() - OUTPUT_BYTES);
        }
    }
}

/// Read once from `pipe` into `buf`, the bytes read; at its end (or a
/// read error) the pipe is dropped and 0 returned; never completes for a
/// pipe already dropped.
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> usize {
    let Some(reader) = pipe.as_mut() else { return std::future::pending().await };
    match reader.read(buf).await {
        Ok(n) if n > 0 => n,
        _ => {
            *pipe = None;
            0
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

    /// Whether process `pid` is gone (or a zombie nobody reaped yet).
    fn is_gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // "pid (comm) state ...": the state follows the last ')'.
            Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    #[tokio::test]
    async fn a_check_that_exits_is_judged_then_even_when_its_background_child_holds_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let body = format!("sleep 600 &\necho $! > {}\necho ok", pid_file.display());
        let started = std::time::Instant::now();
        let ok = run_executable(&script(dir.path(), "daemonizes", &body), Duration::from_secs(5), "5 s").await;
        assert_eq!((ok.failure, ok.output.as_str()), (None, "ok"));
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        // The child it left behind was killed with its process group.
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
        let gone_by = std::time::Instant::now() + Duration::from_secs(5);
        while !is_gone(&pid) && std::time::Instant::now() < gone_by {
            sleep(Duration::from_millis(50)).await;
        }
        assert!(is_gone(&pid), "sleep {pid} outlived its check");
        // A failing one the same, with its output.
        let bad = run_executable(&script(dir.path(), "bad", "sleep 600 &\necho no answer >&2; exit 2"), Duration::from_secs(5), "5 s").await;
        assert_eq!((bad.failure.unwrap().ends_with("exit status: 2"), bad.output.as_str()), (true, "no answer"));
        assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_check_killed_at_its_limit_keeps_the_end_of_what_it_printed() {
        let dir = tempfile::tempdir().unwrap();
        let body = "seq -f 'line %g' 0 1999\necho waiting for the database\nsleep 600 & wait";
        let hung = run_executable(&script(dir.path(), "hang", body), Duration::from_secs(2), "its limit").await;
        assert!(hung.failure.unwrap().ends_with("killed at its limit"));
        assert!(hung.output.ends_with("line 1999\nwaiting for the database"), "{}", hung.output);
        assert!(hung.output.len() <= OUTPUT_BYTES, "{} bytes", hung.output.len());
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
        // A relative link to /dev/null masks too (`ln -sr`).
        script(&usr, "40-d", "true");
        let up = "../".repeat(etc.components().count() - 1);
        std::os::unix::fs::symlink(format!("{up}dev/null"), etc.join("40-d")).unwrap();
        assert_eq!(executables(root.path()), vec![etc.join("10-a"), etc.join("30-c")]);
    }

    #[test]
    fn what_is_not_an_executable_file_or_is_a_backup_is_skipped_and_said_why() {
        let root = tempfile::tempdir().unwrap();
        for dir in CHECK_DIRS {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let usr = root.path().join(CHECK_DIRS[0]);
        let etc = root.path().join(CHECK_DIRS[1]);
        script(&usr, "10-net", "true");
        script(&usr, "20-app", "true");
        std::fs::write(usr.join("README"), "checks of this image\n").unwrap();
        std::fs::set_permissions(usr.join("README"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::create_dir(usr.join("lib")).unwrap();
        script(&etc, "10-net.rpmsave", "false");
        script(&etc, "30-disk~", "false");
        // Not executable in /etc: skipped, so /usr's 20-app still runs.
        std::fs::write(etc.join("20-app"), "#!/bin/sh\ntrue\n").unwrap();
        std::fs::set_permissions(etc.join("20-app"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink("../../../usr/lib/hostd/health.d/10-net", etc.join("40-linked")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", etc.join("50-dangling")).unwrap();
        let (run, skipped) = find_executables(root.path());
        assert_eq!(run, vec![usr.join("10-net"), usr.join("20-app"), etc.join("40-linked")]);
        let skipped: Vec<(PathBuf, &str)> = skipped.iter().map(|(p, why)| (p.clone(), why.as_str())).collect();
        assert_eq!(
            skipped,
            vec![
                (etc.join("10-net.rpmsave"), "a backup or editor file (its name ends in .rpmsave)"),
                (etc.join("20-app"), "not executable (mode 0644)"),
                (etc.join("30-disk~"), "a backup or editor file (its name ends in ~)"),
                (etc.join("50-dangling"), "cannot be read: No such file or directory (os error 2)"),
                (usr.join("README"), "not executable (mode 0644)"),
                (usr.join("lib"), "a directory"),
            ]
        );
    }

    fn state(active: &str, sub: &str, job_pending: bool) -> UnitState {
        UnitState { load: "loaded".into(), active: active.into(), sub: sub.into(), job_pending }
    }

    #[test]
    fn a_unit_is_judged_once_settled_and_must_still_be_active_by_the_end_of_the_checks() {
        let words = deadline_words(&HealthSettings::default());
        let judged = |first: &UnitState, last: &UnitState| {
            settled_failure("app.service", first, &words).or_else(|| end_failure("app.service", last))
        };
        let running = state("active", "running", false);
        assert_eq!(judged(&running, &running), None);
        assert_eq!(judged(&running, &state("reloading", "reload", true)), None);
        // Started, then crashed while the executables ran.
        assert_eq!(
            judged(&running, &state("failed", "failed", false)).as_deref(),
            Some("unit app.service: failed (failed) by the end of the checks")
        );
        assert_eq!(
            judged(&running, &state("activating", "auto-restart", true)).as_deref(),
            Some("unit app.service: activating (auto-restart) by the end of the checks")
        );
        // Failed once settled: that is the failure, whatever comes later.
        assert_eq!(judged(&state("failed", "failed", false), &running).as_deref(), Some("unit app.service: failed (failed)"));
        let missing = UnitState { load: "not-found".into(), ..state("inactive", "dead", false) };
        assert_eq!(judged(&missing, &missing).as_deref(), Some("unit app.service: not-found"));
        // Caught by the deadline while still starting.
        assert_eq!(
            judged(&state("activating", "auto-restart", false), &running).as_deref(),
            Some("unit app.service: still activating (auto-restart) at the deadline of all checks ([health] deadline_secs = 300)")
        );
        assert_eq!(
            judged(&state("inactive", "dead", true), &running).as_deref(),
            Some("unit app.service: still inactive (dead) with a job pending at the deadline of all checks ([health] deadline_secs = 300)")
        );
        assert!(!is_settled(&state("inactive", "dead", true)) && is_settled(&state("failed", "failed", false)));
    }
}
