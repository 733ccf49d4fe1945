//! The state file: what the manager reports about the past (last check,
//! the update it found with its download size, the last job of each kind)
//! survives hostd being killed, a corrupt or newer file is ignored with one
//! log line, and a found update that any tool deployed is cleared. On a
//! real bus with real polkitd, hostd D-Bus activated again after each kill.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use hostd_interface::job::{JobKind, JobStatus};
use hostd_interface::manager::CachedUpdate;
use hostd_interface::proxy::Host1Proxy;
use hostd_tests::jobs::run_job;
use hostd_tests::machine::TestMachine;
use hostd_tests::offline::{deployed, host_with_v1, text, vd};
use zbus::proxy::CacheProperties;
use zbus::{Connection, Variant};

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

fn no_options() -> HashMap<&'static str, Variant<'static>> {
    HashMap::new()
}

/// A manager proxy that reads every property from the daemon, so a value
/// read after a restart comes from the new process.
async fn manager(conn: &Connection) -> Host1Proxy<'static> {
    Host1Proxy::builder(conn).cache_properties(CacheProperties::No).build().await.unwrap()
}

/// What a GUI reads after a check.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    time: u64,
    result: String,
    update: CachedUpdate,
}

async fn seen(conn: &Connection) -> Seen {
    let m = manager(conn).await;
    Seen {
        time: m.last_check_time().await.unwrap(),
        result: m.last_check_result().await.unwrap(),
        update: m.cached_update().await.unwrap(),
    }
}

/// Lines of hostd's log that say the saved state was ignored.
fn ignored_lines(machine: &TestMachine) -> Vec<String> {
    machine.log().lines().filter(|l| l.contains("ignoring the saved state")).map(str::to_string).collect()
}

#[tokio::test]
async fn a_check_survives_hostd_being_killed() {
    let h = host_with_v1("512m", &[]).await;
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();

    let job = run_job(&conn, "Check", &(no_options(),)).await.unwrap();
    assert_eq!(job.state, "succeeded", "{job:?}\n{}", machine.log());
    let before = seen(&conn).await;
    assert!(before.time > 0, "{before:?}");
    assert!(before.result.starts_with("Update available: v2"), "{before:?}");
    assert_eq!(before.update.digest.as_deref(), Some(v2.digest.as_str()));
    assert!(before.update.download_bytes.is_some_and(|b| b > 0), "{before:?}");
    let (fetch, total) = (before.update.layers_to_fetch.unwrap(), before.update.layers_total.unwrap());
    assert!(fetch >= 1 && fetch < total, "{before:?}");

    let file = machine.state_dir().join("state.json");
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600, "root's alone");
    assert_eq!(std::fs::metadata(machine.state_dir()).unwrap().mode() & 0o777, 0o700);
    let pid = machine.kill_hostd().expect("hostd ran");

    // The next read activates a new hostd.
    let after = seen(&conn).await;
    assert_ne!(machine.hostd_pid(), Some(pid), "a new hostd answers");
    assert_eq!(after, before, "time, result and the update with its size survive");
    let jobs = manager(&conn).await.last_jobs().await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let check = &jobs[0];
    assert_eq!((check.kind, check.result, check.initiator_uid), (JobKind::Check, JobStatus::Succeeded, 0));
    assert_eq!(check.message, before.result);
    assert!(check.start_time > 0 && check.start_time <= check.end_time && check.end_time <= before.time + 1_000_000, "{check:?}");
    assert!(check.image.contains(&h.builder.oci_name()), "{check:?}");
    assert!(ignored_lines(&machine).is_empty(), "{}", machine.log());

    let out = machine.hostctl(None, &["status", "--format", "humanreadable"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(!shown.contains("Last check: never"), "{shown}");
    assert!(shown.contains(&format!("— {}", before.result)), "{shown}");
    let size = format!("Update size: {} bytes in {fetch} of {total} layers to fetch", before.update.download_bytes.unwrap());
    assert!(shown.contains(&size), "{shown}");
    assert!(shown.contains("  Last check job: ") && shown.contains("— succeeded: Update available: v2"), "{shown}");
}

/// Start a machine whose state file holds `content` before hostd first runs.
async fn with_state_file(content: &[u8]) -> (hostd_tests::offline::OfflineHost, TestMachine, Connection) {
    let h = host_with_v1("512m", &[]).await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    std::fs::create_dir_all(machine.state_dir()).unwrap();
    std::fs::write(machine.state_dir().join("state.json"), content).unwrap();
    let conn = machine.connect().await.unwrap();
    (h, machine, conn)
}

/// hostd started fresh from an unusable file, said so once, and replaces
/// the file with a good one at the next job, which a restart then reads.
async fn starts_fresh_and_says_so_once(machine: &TestMachine, conn: &Connection, why: &str) {
    let fresh = seen(conn).await;
    assert_eq!(fresh, Seen { time: 0, result: String::new(), update: CachedUpdate::default() }, "{}", machine.log());
    assert!(manager(conn).await.last_jobs().await.unwrap().is_empty());
    let lines = ignored_lines(machine);
    assert_eq!(lines.len(), 1, "one line: {lines:?}\n{}", machine.log());
    assert!(lines[0].contains(why) && lines[0].contains("starting fresh"), "{lines:?}");

    let job = run_job(conn, "Check", &(no_options(),)).await.unwrap();
    assert_eq!(job.state, "succeeded", "{job:?}\n{}", machine.log());
    let checked = seen(conn).await;
    assert_eq!(checked.result, "No update available.");
    machine.kill_hostd().expect("hostd ran");
    assert_eq!(seen(conn).await, checked, "the rewritten file is read back");
    assert_eq!(ignored_lines(machine).len(), 1, "{}", machine.log());
}

#[tokio::test]
async fn a_corrupt_state_file_is_ignored_with_one_log_line() {
    let (_h, machine, conn) = with_state_file(b"{\"version\": 1, \"last-check\": {\"time\": \"yesterday\"").await;
    starts_fresh_and_says_so_once(&machine, &conn, "is corrupt").await;
}

#[tokio::test]
async fn a_state_file_of_a_newer_format_is_ignored_with_one_log_line() {
    let newer = br#"{"version": 7, "last-check": {"time": 1, "result": "from the future", "update": null}}"#;
    let (_h, machine, conn) = with_state_file(newer).await;
    starts_fresh_and_says_so_once(&machine, &conn, "format version 7, newer than the 1").await;
}

/// Wait until `done` holds for what a GUI reads, at most 20 s.
async fn wait_for(conn: &Connection, done: impl Fn(&Seen) -> bool) -> Seen {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = seen(conn).await;
        if done(&now) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_update_deployed_by_another_tool_clears_the_cached_update() {
    let h = host_with_v1("768m", &[]).await;
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();

    // While hostd is down: the next hostd finds it deployed.
    assert_eq!(run_job(&conn, "Check", &(no_options(),)).await.unwrap().state, "succeeded");
    let checked = seen(&conn).await;
    assert_eq!(checked.update.digest.as_deref(), Some(v2.digest.as_str()));
    machine.kill_hostd().expect("hostd ran");
    h.sysroot.deploy_image(&v2.reference).await.unwrap();
    let now = seen(&conn).await;
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&h.v1)]);
    assert_eq!(now.update, CachedUpdate::default(), "{now:?}");
    assert_eq!(now.time, checked.time, "the check itself still happened then");
    assert_eq!(now.result, format!("The update this check found, v2 ({}), has been deployed since.", v2.digest));
    let out = machine.hostctl(None, &["status", "--format", "humanreadable"]);
    let shown = text(&out);
    let announced = |l: &&str| l.trim_start().starts_with("Update available:") || l.starts_with("Update size:");
    assert_eq!(shown.lines().filter(announced).count(), 0, "{shown}");

    // While hostd runs: it follows the deployments as they change.
    let v3 = h.builder.build("v3", &["data"], &BTreeMap::new()).await.unwrap();
    assert_eq!(run_job(&conn, "Check", &(no_options(),)).await.unwrap().state, "succeeded");
    assert_eq!(seen(&conn).await.update.digest.as_deref(), Some(v3.digest.as_str()));
    h.sysroot.deploy_image(&v3.reference).await.unwrap();
    let now = wait_for(&conn, |s| s.update == CachedUpdate::default()).await;
    assert_eq!(now.update, CachedUpdate::default(), "{now:?}\n{}", machine.log());
    assert!(now.result.ends_with("has been deployed since."), "{now:?}");
    machine.kill_hostd().expect("hostd ran");
    assert_eq!(seen(&conn).await, now, "and keeps that");
}

#[tokio::test]
async fn checking_a_downloaded_update_is_not_stale_once_it_is_staged() {
    let h = host_with_v1("768m", &[]).await;
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    let download_only = HashMap::from([("download-only", Variant::Bool(true))]);
    assert_eq!(run_job(&conn, "Upgrade", &(download_only,)).await.unwrap().state, "succeeded");
    assert_eq!(run_job(&conn, "Check", &(no_options(),)).await.unwrap().state, "succeeded");
    let checked = seen(&conn).await;
    assert_eq!(checked.result, format!("Update {} is downloaded and not yet deployed.", v2.digest));
    assert_eq!(checked.update.downloaded, Some(true));
    assert_eq!((checked.update.download_bytes, checked.update.layers_to_fetch), (Some(0), Some(0)), "{checked:?}");

    let staged = run_job(&conn, "Stage", &(no_options(),)).await.unwrap();
    assert_eq!(staged.state, "succeeded", "{staged:?}\n{}", machine.log());
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&h.v1)]);
    let now = seen(&conn).await;
    assert_eq!(now.result, format!("The update this check found, v2 ({}), has been deployed since.", v2.digest));
    assert_eq!(now.update, CachedUpdate::default());
    let kinds: Vec<JobKind> = manager(&conn).await.last_jobs().await.unwrap().iter().map(|j| j.kind).collect();
    assert_eq!(kinds, [JobKind::Upgrade, JobKind::Check, JobKind::Stage], "oldest end first");
}
