//! `make demo`: `scripts/demo` with the binaries already built, as a
//! newcomer sees it on a machine that is not an image-based host. Its
//! transcript must show the main job (a check finding v2, the upgrade with
//! its progress, both deployments, the rollback), within the time the
//! README promises, and leave no process and no mount behind.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hostd_tests::machine::children_of;
use hostd_tests::repo_root;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// What the README promises once the workspace is built.
const DEMO_TIME_LIMIT: Duration = Duration::from_secs(120);

/// The transcript's part after the line `$ hostctl <args>` (the `nth` such
/// line, from 0), up to the next command.
fn section<'a>(transcript: &'a str, args: &str, nth: usize) -> &'a str {
    let marker = format!("\n$ hostctl {args}\n");
    let start = transcript
        .match_indices(&marker)
        .nth(nth)
        .unwrap_or_else(|| panic!("no `hostctl {args}` (#{nth}) in the transcript:\n{transcript}"))
        .0
        + marker.len();
    let rest = &transcript[start..];
    &rest[..rest.find("\n$ hostctl ").unwrap_or(rest.len())]
}

/// The versions `hostctl status` lists (its `Version:` lines), in order.
fn versions_listed(status: &str) -> Vec<&str> {
    status
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("Version:"))
        .filter_map(|v| v.split_whitespace().next())
        .collect()
}

/// This process's children that still run after `grace`: as a subreaper it
/// inherits what the demo left, and reaps those that already ended (the
/// demo's teardown kills its processes; they may take a moment to go).
fn still_running_children(grace: Duration) -> Vec<u32> {
    let deadline = Instant::now() + grace;
    loop {
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        let left = children_of(std::process::id());
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kill `pids` and everything below them (descendants first collected, so
/// none is re-parented out of reach), and reap what comes back to us.
fn stop_leftovers(mut pids: Vec<u32>) {
    let mut all = Vec::new();
    while let Some(pid) = pids.pop() {
        pids.extend(children_of(pid));
        all.push(pid);
    }
    for pid in &all {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    still_running_children(Duration::from_secs(2));
}

/// `<pid> <command line>` of a process, for the failure message.
fn describe(pid: u32) -> String {
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    format!("{pid} {}", cmdline.replace('\0', " ").trim())
}

#[test]
fn the_demo_shows_an_upgrade_with_progress_and_a_rollback_and_leaves_nothing_behind() {
    // Whatever the demo leaves running is re-parented to this process.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let scratch = tempfile::Builder::new().prefix("hostd-demo-test-").tempdir().unwrap();
    let log_path = scratch.path().join("transcript");
    let log = std::fs::File::create(&log_path).unwrap();
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();

    let started = Instant::now();
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/demo"))
        .env("HOSTD_DEMO_PREBUILT", "1")
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    let took = started.elapsed();
    let transcript = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "the demo failed ({status}):\n{transcript}");
    assert!(took < DEMO_TIME_LIMIT, "the demo took {took:?}:\n{transcript}");

    let first = section(&transcript, "status --format humanreadable", 0);
    assert_eq!(versions_listed(first), ["v1"], "{first}");
    let check = section(&transcript, "upgrade --check", 0);
    assert!(check.contains("Update available: v2"), "the check names the update it found:\n{check}");
    let upgrade = section(&transcript, "upgrade", 0);
    for phase in ["checking:", "pulling:", "staging:"] {
        assert!(upgrade.lines().any(|l| l.starts_with(phase)), "no `{phase}` progress line:\n{upgrade}");
    }
    let after_upgrade = section(&transcript, "status --format humanreadable", 1);
    assert_eq!(versions_listed(after_upgrade), ["v2", "v1"], "v2 first, v1 kept:\n{after_upgrade}");
    let rollback = section(&transcript, "rollback", 0);
    assert!(rollback.contains("is now the default deployment"), "{rollback}");
    let after_rollback = section(&transcript, "status --format humanreadable", 2);
    assert_eq!(versions_listed(after_rollback), ["v1", "v2"], "v1 first again:\n{after_rollback}");

    let left = still_running_children(Duration::from_secs(2));
    let described: Vec<String> = left.iter().map(|pid| describe(*pid)).collect();
    stop_leftovers(left.clone());
    assert!(left.is_empty(), "the demo left processes running: {described:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let scratch_path = scratch.path().to_string_lossy().into_owned();
    let mounted: Vec<&str> = mounts.lines().filter(|l| l.contains(&scratch_path)).collect();
    assert!(mounted.is_empty(), "the demo left mounts: {mounted:?}");
    let files: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(files.is_empty(), "the demo left files: {files:?}");
}
