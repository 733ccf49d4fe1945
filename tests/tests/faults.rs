//! Faults from outside hostd (a registry that dies, a damaged image, a lock
//! another tool holds, a killed daemon) and clients that misbehave: each gets
//! its named error, and the host is left consistent (see
//! `hostd_tests::consistency`) with an idle daemon.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use hostd_interface::names::{BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH};
use hostd_interface::options::{MAX_KEYS, MAX_STRING_LEN};
use hostd_interface::proxy::Host1Proxy;
use hostd_interface::Error;
use hostd_tests::consistency::{check_daemon, check_host, RebootMarker};
use hostd_tests::fixture::BuiltImage;
use hostd_tests::jobs::{call_error, run_job, JobWatch};
use hostd_tests::inject::{CrashingSkopeo, OstreeAdminHoldingTheLock, PathWithoutSkopeo};
use hostd_tests::machine::{Extras, TestMachine};
use hostd_tests::offline::{deployed, host_with_v1, status_json, vd, OfflineHost};
use hostd_tests::run;
use hostd_tests::registry::{oci_layer_digests, SlowLink, TestRegistry};
use zbus::{Connection, Variant};

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

fn no_options() -> HashMap<&'static str, Variant<'static>> {
    HashMap::new()
}

/// An offline host with v1, its daemon, and what the host looked like first.
struct Host {
    h: OfflineHost,
    machine: TestMachine,
    conn: Connection,
    proxy: Host1Proxy<'static>,
    marker: RebootMarker,
    before: Vec<String>,
}

async fn host(sizes: &[(&'static str, usize)]) -> Host {
    host_with_env(sizes, Vec::new()).await
}

/// Like [`host`], with `hostd_env` in hostd's environment.
async fn host_with_env(sizes: &[(&'static str, usize)], hostd_env: Vec<(&'static str, String)>) -> Host {
    let marker = RebootMarker::observe();
    let h = host_with_v1("512m", sizes).await;
    let extras = Extras { hostd_env, ..Extras::default() };
    let machine = TestMachine::start_with(h.sysroot.path(), CONFIG, extras).unwrap();
    let (conn, proxy) = machine.manager().await.unwrap();
    let before = h.sysroot.deployment_checksums().unwrap();
    Host { h, machine, conn, proxy, marker, before }
}

impl Host {
    /// The fault changed nothing: same deployments, consistent, idle.
    async fn unchanged(&self) {
        let same = |found: &[String]| found == self.before;
        check_host(&self.h.sysroot, &self.proxy, &same, &self.marker)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.machine.log()));
    }

    /// hostd's resident memory in KiB (`VmRSS`).
    fn hostd_rss_kib(&self) -> u64 {
        let pid = self.machine.hostd_pid().expect("hostd runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

/// Layers 2 MiB each, tracked through a 1 MiB/s link to a registry holding v2.
struct RegistryHost {
    host: Host,
    registry: TestRegistry,
    _link: SlowLink,
    v2: BuiltImage,
}

async fn registry_host() -> RegistryHost {
    registry_host_with_env(Vec::new()).await
}

/// Like [`registry_host`], with `hostd_env` in hostd's environment.
async fn registry_host_with_env(hostd_env: Vec<(&'static str, String)>) -> RegistryHost {
    let mut host = host_with_env(&[("tools", 2 << 20), ("data", 2 << 20)], hostd_env).await;
    let registry = TestRegistry::start().unwrap();
    registry.push(&host.h.builder.oci_name(), "hostd/os:stable").unwrap();
    let link = SlowLink::start(registry.port, 1 << 20).unwrap();
    host.machine.trust_registry(&link.host()).unwrap();
    let image = format!("{}/hostd/os:stable", link.host());
    let switch = run_job(&host.conn, "Switch", &(image.as_str(), no_options())).await.unwrap();
    assert_eq!(switch.state, "succeeded", "{switch:?}");
    host.before = host.h.sysroot.deployment_checksums().unwrap();
    let v2 = host.h.builder.build("v2", &["tools", "data"], &BTreeMap::new()).await.unwrap();
    registry.push(&host.h.builder.oci_name(), "hostd/os:stable").unwrap();
    RegistryHost { host, registry, _link: link, v2 }
}

/// Start an Upgrade and wait until its first bytes have arrived.
async fn upgrade_in_mid_pull(conn: &Connection) -> JobWatch {
    let mut watch = JobWatch::start(conn, "Upgrade", &(no_options(),)).await.unwrap();
    let record = watch.until(|r| r.bytes.last().is_some_and(|(done, _)| *done > 0)).await.unwrap();
    assert_eq!(record.state, "running", "the pull ended too soon: {record:?}");
    watch
}

#[tokio::test]
async fn a_registry_killed_mid_layer_fails_the_job_with_network_and_changes_nothing() {
    let mut r = registry_host().await;
    let watch = upgrade_in_mid_pull(&r.host.conn).await;
    r.registry.kill();
    let job = watch.finish().await.unwrap();
    assert_eq!((job.state.as_str(), job.error_name.as_str()), ("failed", "org.hostd.Host1.Error.Network"), "{job:?}");
    r.host.unchanged().await;
}

/// libostree's transaction directories (with their lock files) in the repo's tmp/.
fn staging_dirs(h: &OfflineHost) -> Vec<String> {
    let tmp = h.sysroot.path().join("ostree/repo/tmp");
    let names = std::fs::read_dir(tmp).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
    names.filter(|n| n.starts_with("staging-")).collect()
}

#[tokio::test]
async fn hostd_killed_mid_pull_comes_back_idle_and_the_retry_deploys() {
    let r = registry_host().await;
    let _watch = upgrade_in_mid_pull(&r.host.conn).await;
    let killed = r.host.machine.kill_hostd().expect("hostd ran");
    assert!(!staging_dirs(&r.host.h).is_empty(), "the killed pull left its transaction's staging directory");
    r.host.unchanged().await;
    assert_eq!(staging_dirs(&r.host.h), Vec::<String>::new(), "the new hostd cleaned up behind the killed one");
    assert_ne!(r.host.machine.hostd_pid(), Some(killed), "a new hostd answered");
    let retry = run_job(&r.host.conn, "Upgrade", &(no_options(),)).await.unwrap();
    assert_eq!(retry.state, "succeeded", "{retry:?}");
    assert_eq!(deployed(&r.host.conn).await[0], vd(&r.v2));
}

/// `.dirtree` objects of the repo.
fn dirtrees(h: &OfflineHost) -> BTreeSet<PathBuf> {
    let objects = h.sysroot.path().join("ostree/repo/objects");
    let mut found = BTreeSet::new();
    for prefix in std::fs::read_dir(objects).unwrap() {
        for object in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            let path = object.unwrap().path();
            if path.extension().is_some_and(|e| e == "dirtree") {
                found.insert(path);
            }
        }
    }
    found
}

/// Leave the repo as a prune cut off halfway does: a commit no ref reaches
/// whose tree is already deleted (`ostree fsck` fails on it).
fn leave_a_half_pruned_commit(h: &OfflineHost) {
    let tree = h.sysroot.dir.path().join("orphan-tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("unique"), format!("{:?}", Instant::now())).unwrap();
    let trees_before = dirtrees(h);
    let repo = format!("--repo={}", h.sysroot.path().join("ostree/repo").display());
    run(Command::new("ostree").args(["commit", &repo, "--orphan", "--subject=orphan"]).arg(format!("--tree=dir={}", tree.display())))
        .unwrap();
    for dirtree in dirtrees(h).difference(&trees_before) {
        std::fs::remove_file(dirtree).unwrap();
    }
    assert!(h.sysroot.fsck().is_err(), "the half-pruned commit is damage fsck sees");
}

#[tokio::test]
async fn the_next_hostd_finishes_a_prune_its_killed_predecessor_cut_off() {
    let r = registry_host().await;
    let _watch = upgrade_in_mid_pull(&r.host.conn).await;
    // What the kill would leave had it hit the prune; only a hostd killed
    // while it held the sysroot lock knows to clean up.
    leave_a_half_pruned_commit(&r.host.h);
    r.host.machine.kill_hostd().expect("hostd ran");
    r.host.unchanged().await;
    let retry = run_job(&r.host.conn, "Upgrade", &(no_options(),)).await.unwrap();
    assert_eq!(retry.state, "succeeded", "{retry:?}");
    assert_eq!(deployed(&r.host.conn).await[0], vd(&r.v2));
}

#[tokio::test]
async fn a_truncated_layer_in_an_oci_dir_is_refused_and_nothing_is_deployed() {
    let host = host(&[("data", 1 << 20)]).await;
    let v1_layers: BTreeSet<String> = oci_layer_digests(&host.h.builder.oci_dir, "latest").unwrap().into_iter().collect();
    host.h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let blob = |digest: &str| host.h.builder.oci_dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let size = |digest: &String| std::fs::metadata(blob(digest)).unwrap().len();
    let v2_layers = oci_layer_digests(&host.h.builder.oci_dir, "latest").unwrap();
    let data_layer = v2_layers.iter().filter(|d| !v1_layers.contains(*d)).max_by_key(|d| size(d)).expect("a new layer").clone();
    std::fs::OpenOptions::new().write(true).open(blob(&data_layer)).unwrap().set_len(size(&data_layer) / 2).unwrap();

    let job = run_job(&host.conn, "Upgrade", &(no_options(),)).await.unwrap();
    assert_eq!(job.state, "failed", "{job:?}");
    assert_eq!(job.error_name, TRUNCATED_LAYER_ERROR, "{job:?}");
    assert!(job.error_message.contains(&format!("corrupted blob, expecting {data_layer}")), "{job:?}");
    assert!(!host.h.sysroot.layer_digests().unwrap().contains(&data_layer), "the damaged layer was not imported");
    host.unchanged().await;
}

#[tokio::test]
async fn without_skopeo_an_upgrade_fails_naming_it_and_changes_nothing() {
    let path = PathWithoutSkopeo::new().unwrap();
    let host = host_with_env(&[], vec![path.env()]).await;
    host.h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    check_daemon(&host.proxy, 1).await.unwrap();
    let pid = host.machine.hostd_pid();
    let job = run_job(&host.conn, "Upgrade", &(no_options(),)).await.unwrap();
    assert_eq!((job.state.as_str(), job.error_name.as_str()), ("failed", "org.hostd.Host1.Error.Failed"), "{job:?}");
    assert!(job.error_message.contains("skopeo") && job.error_message.contains("not found"), "{job:?}");
    assert_eq!(host.machine.hostd_pid(), pid, "hostd kept running");
    host.unchanged().await;
}

#[tokio::test]
async fn skopeo_crashing_mid_pull_fails_the_job_and_the_retry_deploys() {
    let skopeo = CrashingSkopeo::new().unwrap();
    let r = registry_host_with_env(vec![skopeo.env()]).await;
    let watch = upgrade_in_mid_pull(&r.host.conn).await;
    skopeo.crash();
    let job = watch.finish().await.unwrap();
    assert_eq!((job.state.as_str(), job.error_name.as_str()), ("failed", "org.hostd.Host1.Error.Failed"), "{job:?}");
    assert!(job.error_message.starts_with(SKOPEO_CRASHED), "{job:?}");
    r.host.unchanged().await;

    skopeo.heal();
    let retry = run_job(&r.host.conn, "Upgrade", &(no_options(),)).await.unwrap();
    assert_eq!(retry.state, "succeeded", "{retry:?}");
    assert_eq!(deployed(&r.host.conn).await[0], vd(&r.v2));
}

#[tokio::test]
async fn a_disk_that_fills_up_mid_pull_fails_the_job_with_no_space_and_the_retry_deploys() {
    let r = registry_host().await;
    let watch = upgrade_in_mid_pull(&r.host.conn).await;
    let filler = r.host.h.sysroot.fill_up().unwrap();
    let job = watch.finish().await.unwrap();
    assert_eq!((job.state.as_str(), job.error_name.as_str()), ("failed", "org.hostd.Host1.Error.NoSpace"), "{job:?}");
    r.host.unchanged().await;

    drop(filler);
    let retry = run_job(&r.host.conn, "Upgrade", &(no_options(),)).await.unwrap();
    assert_eq!(retry.state, "succeeded", "{retry:?}");
    assert_eq!(deployed(&r.host.conn).await[0], vd(&r.v2));
}

#[tokio::test]
async fn a_full_disk_during_the_deployment_write_fails_with_no_space_and_changes_nothing() {
    let host = host(&[]).await;
    let v2 = host.h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let download_only = HashMap::from([("download-only", Variant::from(true))]);
    let download = run_job(&host.conn, "Upgrade", &(download_only,)).await.unwrap();
    assert_eq!(download.state, "succeeded", "{download:?}");
    assert_eq!(host.h.sysroot.deployment_checksums().unwrap(), host.before, "download-only deployed nothing");

    let filler = host.h.sysroot.fill_up().unwrap();
    let stage = run_job(&host.conn, "Stage", &(no_options(),)).await.unwrap();
    assert_eq!((stage.state.as_str(), stage.error_name.as_str()), ("failed", "org.hostd.Host1.Error.NoSpace"), "{stage:?}");
    host.unchanged().await;

    drop(filler);
    let retry = run_job(&host.conn, "Stage", &(no_options(),)).await.unwrap();
    assert_eq!(retry.state, "succeeded", "{retry:?}");
    assert_eq!(deployed(&host.conn).await, [vd(&v2), vd(&host.h.v1)]);
}

/// How a job that lost its skopeo in mid-request reports it.
const SKOPEO_CRASHED: &str = "skopeo stopped unexpectedly (it crashed or was killed)";

/// What a layer shorter than its manifest says is reported as: no name of
/// the API fits (docs/reliability.md), so the generic one with skopeo's
/// "corrupted blob" in the message.
const TRUNCATED_LAYER_ERROR: &str = "org.hostd.Host1.Error.Failed";

/// Far longer than the job's time limit of 2 s.
const LOCK_TEST_LIMIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_job_waits_for_a_sysroot_lock_held_elsewhere_and_its_time_limit_cancels_it() {
    let host = host(&[]).await;
    host.machine.set_config_dropin("limit.toml", Some("[daemon]\njob_timeout_secs = 2\n")).unwrap();
    host.proxy.reload_config().await.unwrap();
    let holder = OstreeAdminHoldingTheLock::start(&host.h.sysroot).unwrap();

    let started = Instant::now();
    let mut watch = JobWatch::start(&host.conn, "Cleanup", &(no_options(),)).await.unwrap();
    let waited = tokio::time::timeout(LOCK_TEST_LIMIT, watch.until(|r| r.message.contains("waiting for the sysroot lock"))).await;
    assert!(waited.is_ok(), "no wait message in time: {:?}\n{}", watch.record, host.machine.log());
    let waiting = watch.record.clone();
    assert_eq!(waiting.state, "running", "{waiting:?}");
    let job = watch.finish().await.unwrap();
    assert_eq!((job.state.as_str(), job.error_name.as_str()), ("cancelled", "org.hostd.Host1.Error.Cancelled"), "{job:?}");
    assert!(job.error_message.contains("time limit"), "{job:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "the job hung: {:?}", started.elapsed());
    drop(holder);
    host.unchanged().await;

    let retry = run_job(&host.conn, "Cleanup", &(no_options(),)).await.unwrap();
    assert_eq!(retry.state, "succeeded", "once the lock is free: {retry:?}");
}

#[tokio::test]
async fn a_caller_that_disconnects_right_after_upgrade_does_not_stop_the_job() {
    let host = host(&[]).await;
    let v2 = host.h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let caller = host.machine.connect().await.unwrap();
    caller
        .call_method(Some(BUS_NAME), MANAGER_PATH, Some(MANAGER_INTERFACE), "Upgrade", &(no_options(),))
        .await
        .unwrap();
    drop(caller);
    let deadline = Instant::now() + Duration::from_secs(60);
    while host.proxy.active_job().await.unwrap().as_str() != "/" {
        assert!(Instant::now() < deadline, "the job never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(deployed(&host.conn).await, [vd(&v2), vd(&host.h.v1)], "{}", host.machine.log());
    check_daemon(&host.proxy, 2).await.unwrap();
}

/// Slack for allocator noise when comparing hostd's memory before and after.
const RSS_MARGIN_KIB: u64 = 16 * 1024;

#[tokio::test]
async fn a_thousand_status_calls_from_twenty_connections_all_answer() {
    let host = host(&[]).await;
    check_daemon(&host.proxy, 1).await.unwrap();
    let pid = host.machine.hostd_pid();
    let baseline = host.hostd_rss_kib();
    let mut callers = Vec::new();
    for _ in 0..20 {
        let conn = host.machine.connect().await.unwrap();
        callers.push(tokio::spawn(async move {
            for _ in 0..50 {
                assert!(status_json(&conn).await.contains("BootcHost"));
            }
        }));
    }
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(host.machine.hostd_pid(), pid, "the same hostd answered all");
    host.unchanged().await;
    let after = host.hostd_rss_kib();
    assert!(after <= baseline + RSS_MARGIN_KIB, "hostd grew from {baseline} KiB to {after} KiB");
}

async fn call<B>(conn: &Connection, method: &str, body: &B) -> Result<zbus::Message, zbus::Error>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    conn.call_method(Some(BUS_NAME), MANAGER_PATH, Some(MANAGER_INTERFACE), method, body).await
}

/// Calls that must each be refused with `InvalidArgument`: over-long
/// strings, too many or huge option keys, and wrong argument types.
async fn hostile_calls(conn: &Connection) -> Vec<(&'static str, Result<zbus::Message, zbus::Error>)> {
    let long = "x".repeat(1 << 20);
    let just_too_long = "x".repeat(MAX_STRING_LEN + 1);
    let too_many: HashMap<String, Variant<'_>> = (0..=MAX_KEYS).map(|i| (format!("key{i}"), Variant::from(true))).collect();
    let huge_key = HashMap::from([(long.as_str(), Variant::from(true))]);
    let long_value = HashMap::from([("transport", Variant::from(long.as_str()))]);
    vec![
        ("Switch with a 1 MiB image", call(conn, "Switch", &(long.as_str(), no_options())).await),
        ("Switch with an image one byte too long", call(conn, "Switch", &(just_too_long.as_str(), no_options())).await),
        ("Upgrade with too many options", call(conn, "Upgrade", &(too_many,)).await),
        ("Status with a 1 MiB key", call(conn, "Status", &(huge_key,)).await),
        ("Switch with a 1 MiB transport", call(conn, "Switch", &("/srv/os", long_value)).await),
        ("Status with a string", call(conn, "Status", &("a{sv}",)).await),
        ("Upgrade with no arguments", call(conn, "Upgrade", &()).await),
        ("Switch with a number", call(conn, "Switch", &(7u32, no_options())).await),
    ]
}

#[tokio::test]
async fn oversized_and_mistyped_arguments_are_invalid_argument_and_leave_hostd_as_it_was() {
    let host = host(&[]).await;
    check_daemon(&host.proxy, 1).await.unwrap();
    let pid = host.machine.hostd_pid();
    let baseline = host.hostd_rss_kib();
    for round in 0..20 {
        for (what, reply) in hostile_calls(&host.conn).await {
            let err = call_error(reply.expect_err(what));
            assert!(matches!(err, Error::InvalidArgument(_)), "round {round}, {what}: {err:?}");
        }
    }
    assert_eq!(host.machine.hostd_pid(), pid, "hostd did not restart");
    host.unchanged().await;
    let after = host.hostd_rss_kib();
    assert!(after <= baseline + RSS_MARGIN_KIB, "hostd grew from {baseline} KiB to {after} KiB");
}
