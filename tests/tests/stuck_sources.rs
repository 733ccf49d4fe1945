//! Image sources that stop answering, and what hostd leaves behind: a FIFO
//! in an image directory, a registry that accepts connections and never
//! answers, a layer that stalls mid-stream. Each job ends within a bounded
//! time after `Cancel()` or its time limit, frees the slot for the next
//! caller, changes nothing and leaves no skopeo running; and no job leaves
//! a zombie child behind.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hostd_tests::consistency::{check_host, RebootMarker};
use hostd_tests::jobs::{run_job, JobWatch};
use hostd_tests::machine::{children_of, grant, TestMachine, CHECKER};
use hostd_tests::offline::{deployed, host_with_v1, vd, OfflineHost};
use hostd_tests::registry::{SlowLink, TestRegistry};
use hostd_tests::standin_registry::SilentRegistry;
use hostd_tests::binary;
use hostd_interface::proxy::Host1Proxy;
use zbus::{Connection, Variant};

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

/// How long a job may take to end once cancelled: hostd kills its skopeo
/// within a tenth of a second; this leaves room for a loaded machine.
const CANCEL_BOUND: Duration = Duration::from_secs(10);

fn no_options() -> HashMap<&'static str, Variant<'static>> {
    HashMap::new()
}

struct Host {
    h: OfflineHost,
    machine: TestMachine,
    conn: Connection,
    proxy: Host1Proxy<'static>,
    marker: RebootMarker,
    before: Vec<String>,
}

async fn host(sizes: &[(&'static str, usize)]) -> Host {
    let marker = RebootMarker::observe();
    let h = host_with_v1("512m", sizes).await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let (conn, proxy) = machine.manager().await.unwrap();
    let before = h.sysroot.deployment_checksums().unwrap();
    Host { h, machine, conn, proxy, marker, before }
}

impl Host {
    /// Same deployments, consistent, idle.
    async fn unchanged(&self) {
        let same = |found: &[String]| found == self.before;
        check_host(&self.h.sysroot, &self.proxy, &same, &self.marker)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.machine.log()));
    }

    /// hostd's children that are skopeo (running or not yet reaped) once
    /// the cancelled job's thread has had a moment to unwind (its end is
    /// published first), with their states.
    async fn skopeo_children(&self) -> Vec<(u32, Option<char>)> {
        let pid = self.machine.hostd_pid().expect("hostd runs");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found: Vec<_> = children_of(pid)
                .into_iter()
                .filter(|c| process_name(*c).as_deref() == Some("skopeo"))
                .map(|c| (c, process_state(c)))
                .collect();
            if found.is_empty() || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until hostd's State is `state`.
    async fn until_state(&self, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.proxy.state().await.unwrap() != state {
            assert!(Instant::now() < deadline, "hostd never got to {state}\n{}", self.machine.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn set_time_limit(&self, secs: u32) {
        let dropin = format!("[daemon]\njob_timeout_secs = {secs}\n");
        self.machine.set_config_dropin("limit.toml", Some(&dropin)).unwrap();
        self.proxy.reload_config().await.unwrap();
    }

    /// A job the slot is free for: root's Cleanup succeeds.
    async fn slot_is_free(&self) {
        let cleanup = run_job(&self.conn, "Cleanup", &(no_options(),)).await.unwrap();
        assert_eq!(cleanup.state, "succeeded", "{cleanup:?}");
    }
}

/// The command name of `pid` (`/proc/<pid>/comm`).
fn process_name(pid: u32) -> Option<String> {
    Some(std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?.trim().to_string())
}

/// The state letter of `pid` (`R`, `S`, `Z`, …) from `/proc/<pid>/stat`.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

#[tokio::test]
async fn a_fifo_as_the_layout_index_fails_a_users_check_at_once_and_the_admin_is_not_kept_waiting() {
    let host = host(&[]).await;
    let index = host.h.builder.oci_dir.join("index.json");
    let saved = std::fs::read(&index).unwrap();
    std::fs::remove_file(&index).unwrap();
    nix::unistd::mkfifo(&index, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    host.machine
        .add_polkit_rule("60-checker.rules", &grant("check", CHECKER.0))
        .unwrap();

    let started = Instant::now();
    let check = host
        .machine
        .command(binary("hostctl"), Some(CHECKER.1))
        .args(["--no-ask-password", "upgrade", "--check"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(started.elapsed() < CANCEL_BOUND, "the check hung for {:?}: {text}", started.elapsed());
    assert!(!check.status.success(), "{text}");
    assert!(text.contains("InvalidArgument") && text.contains("FIFO"), "a named error naming the FIFO: {text}");

    // The slot is free for the administrator at once.
    host.slot_is_free().await;
    std::fs::remove_file(&index).unwrap();
    std::fs::write(&index, saved).unwrap();
    host.unchanged().await;
}

#[tokio::test]
async fn a_registry_that_never_answers_is_ended_by_cancel_and_by_the_time_limit() {
    let host = host(&[]).await;
    let silent = SilentRegistry::start().unwrap();
    host.machine.trust_registry(&silent.host()).unwrap();
    let image = format!("{}/hostd/os:stable", silent.host());

    let watch = JobWatch::start(&host.conn, "Switch", &(image.as_str(), no_options())).await.unwrap();
    // Opening the image waits on the registry.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(host.proxy.state().await.unwrap(), "idle", "the job is stuck opening the image");
    let pid = host.machine.hostd_pid().expect("hostd runs");
    assert!(children_of(pid).iter().any(|c| process_name(*c).as_deref() == Some("skopeo")), "skopeo waits on the registry");
    let cancelled = Instant::now();
    watch.cancel().await.unwrap();
    let job = watch.finish().await.unwrap();
    assert!(cancelled.elapsed() < CANCEL_BOUND, "Cancel took {:?}", cancelled.elapsed());
    assert_eq!((job.state.as_str(), job.error_name.as_str()), ("cancelled", "org.hostd.Host1.Error.Cancelled"), "{job:?}");
    host.slot_is_free().await;
    assert_eq!(host.skopeo_children().await, [], "no skopeo left running");

    host.set_time_limit(4).await;
    let started = Instant::now();
    let job = run_job(&host.conn, "Switch", &(image.as_str(), no_options())).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(4) + CANCEL_BOUND, "the time limit took {:?}", started.elapsed());
    assert_eq!((job.state.as_str(), job.error_name.as_str()), ("cancelled", "org.hostd.Host1.Error.Cancelled"), "{job:?}");
    assert!(job.error_message.contains("time limit"), "{job:?}");
    host.slot_is_free().await;
    assert_eq!(host.skopeo_children().await, [], "no skopeo left running");
    host.unchanged().await;
}

#[tokio::test]
async fn a_layer_that_stalls_mid_stream_is_ended_by_cancel_and_by_the_time_limit() {
    let mut host = host(&[("data", 4 << 20)]).await;
    let registry = TestRegistry::start().unwrap();
    registry.push(&host.h.builder.oci_name(), "hostd/os:stable").unwrap();
    let link = SlowLink::start(registry.port, 1 << 20).unwrap();
    host.machine.trust_registry(&link.host()).unwrap();
    let image = format!("{}/hostd/os:stable", link.host());
    let switch = run_job(&host.conn, "Switch", &(image.as_str(), no_options())).await.unwrap();
    assert_eq!(switch.state, "succeeded", "{switch:?}");
    host.before = host.h.sysroot.deployment_checksums().unwrap();
    host.h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    registry.push(&host.h.builder.oci_name(), "hostd/os:stable").unwrap();

    for limit in [None, Some(6)] {
        if let Some(secs) = limit {
            host.set_time_limit(secs).await;
        }
        link.set_rate(1 << 20);
        let mut watch = JobWatch::start(&host.conn, "Upgrade", &(no_options(),)).await.unwrap();
        watch.until(|r| r.bytes.last().is_some_and(|(done, _)| *done > 0)).await.unwrap();
        link.set_rate(0);
        let stalled = Instant::now();
        if limit.is_none() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            watch.cancel().await.unwrap();
        }
        let job = watch.finish().await.unwrap();
        let bound = CANCEL_BOUND + Duration::from_secs(limit.unwrap_or(1).into());
        assert!(stalled.elapsed() < bound, "the stalled job took {:?} to end", stalled.elapsed());
        assert_eq!((job.state.as_str(), job.error_name.as_str()), ("cancelled", "org.hostd.Host1.Error.Cancelled"), "{job:?}");
        if limit.is_some() {
            assert!(job.error_message.contains("time limit"), "{job:?}");
        }
        host.until_state("idle").await;
        assert_eq!(host.skopeo_children().await, [], "no skopeo left running");
        host.unchanged().await;
    }
    host.set_time_limit(600).await;
    link.set_rate(8 << 20);
    let upgrade = run_job(&host.conn, "Upgrade", &(no_options(),)).await.unwrap();
    assert_eq!(upgrade.state, "succeeded", "the slot and the sysroot are free again: {upgrade:?}");
}

#[tokio::test]
async fn twenty_jobs_that_write_deployments_leave_no_zombie_behind() {
    let host = host(&[]).await;
    let v2 = host.h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let upgrade = run_job(&host.conn, "Upgrade", &(no_options(),)).await.unwrap();
    assert_eq!(upgrade.state, "succeeded", "{upgrade:?}");
    for i in 0..20 {
        let rollback = run_job(&host.conn, "Rollback", &(no_options(),)).await.unwrap();
        assert_eq!(rollback.state, "succeeded", "rollback {i}: {rollback:?}");
    }
    assert_eq!(deployed(&host.conn).await, [vd(&v2), vd(&host.h.v1)], "an even number of rollbacks");
    // The job's thread reaps after the job's end is out: give it that moment.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = host.machine.hostd_pid().expect("hostd runs");
    let zombies: Vec<(u32, Option<String>)> = children_of(pid)
        .into_iter()
        .filter(|c| process_state(*c) == Some('Z'))
        .map(|c| (c, process_name(c)))
        .collect();
    assert_eq!(zombies, [], "zombie children of hostd after 21 jobs");
}

