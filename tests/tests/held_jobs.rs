//! Jobs held at hostd's failpoints (`daemon/src/failpoint.rs`, live in the
//! test build only) and then cancelled or killed at exactly that moment, where
//! other tests can only aim with timing.
//!
//! A held job waits for its cancellation and then goes on into the libostree
//! call after the point with a cancelled `GCancellable`: if the cancellation
//! did not reach that call, the deployment would be written or the prune run,
//! and these tests would see it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use hostd::failpoint::{held_message, points};
use hostd_interface::proxy::Host1Proxy;
use hostd_tests::consistency::{check_host, RebootMarker};
use hostd_tests::jobs::{run_job, JobWatch};
use hostd_tests::machine::{Extras, TestMachine};
use hostd_tests::offline::{deployed, host_with_v1, vd, OfflineHost};
use hostd_tests::fixture::ImageBuilder;
use zbus::{Connection, Variant};

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

/// How soon after `Cancel()` a held job must have ended.
const CANCEL_LIMIT: Duration = Duration::from_secs(5);

/// An offline host with v1 deployed, v2 built into its `oci:` directory,
/// and a hostd that holds jobs at `point`.
struct Held {
    h: OfflineHost,
    machine: TestMachine,
    conn: Connection,
    proxy: Host1Proxy<'static>,
    marker: RebootMarker,
    v2: hostd_tests::fixture::BuiltImage,
}

async fn held_at(point: &str) -> Held {
    let marker = RebootMarker::observe();
    let h = host_with_v1("512m", &[("data", 1 << 20)]).await;
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let extras = Extras { hostd_env: vec![("FAILPOINTS", format!("{point}=return"))], ..Extras::default() };
    let machine = TestMachine::start_with(h.sysroot.path(), CONFIG, extras).unwrap();
    let (conn, proxy) = machine.manager().await.unwrap();
    Held { h, machine, conn, proxy, marker, v2 }
}

fn options(pairs: &[(&'static str, bool)]) -> HashMap<&'static str, Variant<'static>> {
    pairs.iter().map(|(k, v)| (*k, Variant::from(*v))).collect()
}

impl Held {
    /// Start `method` and wait until hostd says it holds the job at `point`.
    async fn start_until_held(&self, method: &str, opts: &[(&'static str, bool)], point: &str) -> JobWatch {
        let mut watch = JobWatch::start(&self.conn, method, &(options(opts),)).await.unwrap();
        let held = held_message(point);
        let record = watch.until(|r| r.message == held).await.unwrap().clone();
        assert_eq!(
            record.state, "running",
            "the job never reached failpoint {point} (is hostd built with `--features hostd/failpoints`, as scripts/test does?): {record:?}\n{}",
            self.machine.log()
        );
        watch
    }

    /// Cancel the held job; it must end `Cancelled` within [`CANCEL_LIMIT`].
    async fn cancel_within_limit(&self, watch: JobWatch) {
        let asked = Instant::now();
        watch.cancel().await.unwrap();
        let end = tokio::time::timeout(CANCEL_LIMIT, watch.finish())
            .await
            .unwrap_or_else(|_| panic!("the job did not end within {CANCEL_LIMIT:?} of Cancel()\n{}", self.machine.log()))
            .unwrap();
        assert_eq!(end.state, "cancelled", "{end:?}\n{}", self.machine.log());
        assert_eq!(end.error_name, "org.hostd.Host1.Error.Cancelled", "{end:?}");
        assert!(asked.elapsed() < CANCEL_LIMIT);
    }

    /// Same deployments as `before`, consistent on disk, idle daemon.
    async fn unchanged(&self, before: &[String]) {
        let same = |found: &[String]| found == before;
        check_host(&self.h.sysroot, &self.proxy, &same, &self.marker)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.machine.log()));
    }

    /// hostd without failpoints from now on, for the retry.
    fn release(&self) {
        self.machine.kill_hostd();
        self.machine.set_hostd_env(&[]).unwrap();
    }
}

#[tokio::test]
async fn cancel_during_the_deployment_write_ends_the_job_cancelled_and_writes_nothing() {
    let held = held_at(points::DEPLOY_WRITE).await;
    let before = held.h.sysroot.deployment_checksums().unwrap();
    let watch = held.start_until_held("Upgrade", &[], points::DEPLOY_WRITE).await;
    held.cancel_within_limit(watch).await;
    held.unchanged(&before).await;
    assert_eq!(deployed(&held.conn).await[0], vd(&held.h.v1));

    held.release();
    let retry = run_job(&held.conn, "Upgrade", &(options(&[]),)).await.unwrap();
    assert_eq!(retry.state, "succeeded", "{retry:?}");
    assert_eq!(deployed(&held.conn).await[0], vd(&held.v2));
}

/// Cleanup has something to remove: another image, fetched by a
/// `download-only` Switch (offline: into the repo only) and never deployed.
/// Returns the layers only that image brought.
async fn fetch_an_image_no_deployment_uses(held: &Held) -> BTreeSet<String> {
    let before = held.h.sysroot.layer_digests().unwrap();
    let other = ImageBuilder::new(&held.h.sysroot.dir.path().join("other-images")).unwrap();
    other.build("o1", &[], &BTreeMap::new()).await.unwrap();
    let mut opts: HashMap<&'static str, Variant<'static>> = HashMap::from([("transport", Variant::from("oci"))]);
    opts.insert("download-only", Variant::from(true));
    let fetched = run_job(&held.conn, "Switch", &(other.oci_name().as_str(), opts)).await.unwrap();
    assert_eq!(fetched.state, "succeeded", "{fetched:?}");
    let brought: BTreeSet<String> = held.h.sysroot.layer_digests().unwrap().difference(&before).cloned().collect();
    assert!(!brought.is_empty(), "the download-only switch fetched layers");
    brought
}

/// Whether every layer of `layers` is (`true`) or none is (`false`) in the repo.
fn layers_present(h: &OfflineHost, layers: &BTreeSet<String>) -> Option<bool> {
    let present = h.sysroot.layer_digests().unwrap();
    if layers.is_subset(&present) {
        Some(true)
    } else if layers.is_disjoint(&present) {
        Some(false)
    } else {
        None
    }
}

#[tokio::test]
async fn cancel_before_and_in_the_middle_of_a_prune_ends_the_job_cancelled_and_prunes_nothing() {
    for point in [points::PRUNE, points::MID_PRUNE] {
        let held = held_at(point).await;
        let unused = fetch_an_image_no_deployment_uses(&held).await;
        let before = held.h.sysroot.deployment_checksums().unwrap();

        let watch = held.start_until_held("Cleanup", &[], point).await;
        held.cancel_within_limit(watch).await;
        held.unchanged(&before).await;
        assert_eq!(layers_present(&held.h, &unused), Some(true), "{point}: the cancelled cleanup removed layers");

        held.release();
        let retry = run_job(&held.conn, "Cleanup", &(options(&[]),)).await.unwrap();
        assert_eq!(retry.state, "succeeded", "{retry:?}");
        assert_eq!(layers_present(&held.h, &unused), Some(false), "{point}: the cleanup after it removes them");
    }
}

#[tokio::test]
async fn hostd_killed_at_each_point_of_an_upgrade_or_cleanup_leaves_the_host_consistent() {
    for (point, method) in [
        (points::AFTER_PULL, "Upgrade"),
        (points::DEPLOY_WRITE, "Upgrade"),
        (points::PRUNE, "Cleanup"),
        (points::MID_PRUNE, "Cleanup"),
    ] {
        let held = held_at(point).await;
        if method == "Cleanup" {
            fetch_an_image_no_deployment_uses(&held).await;
        }
        let before = held.h.sysroot.deployment_checksums().unwrap();
        let _watch = held.start_until_held(method, &[], point).await;
        held.release();
        held.unchanged(&before).await;
        let retry = run_job(&held.conn, method, &(options(&[]),)).await.unwrap();
        assert_eq!(retry.state, "succeeded", "{point}: {retry:?}\n{}", held.machine.log());
        if method == "Upgrade" {
            assert_eq!(deployed(&held.conn).await[0], vd(&held.v2), "{point}");
        }
    }
}

#[tokio::test]
async fn the_time_limit_reaches_a_job_held_at_the_deployment_write() {
    let held = held_at(points::DEPLOY_WRITE).await;
    held.machine.set_config_dropin("limit.toml", Some("[daemon]\njob_timeout_secs = 3\n")).unwrap();
    held.proxy.reload_config().await.unwrap();
    let before = held.h.sysroot.deployment_checksums().unwrap();
    let watch = held.start_until_held("Upgrade", &[], points::DEPLOY_WRITE).await;
    let end = tokio::time::timeout(Duration::from_secs(3) + CANCEL_LIMIT, watch.finish())
        .await
        .unwrap_or_else(|_| panic!("the time limit did not end the job\n{}", held.machine.log()))
        .unwrap();
    assert_eq!((end.state.as_str(), end.error_name.as_str()), ("cancelled", "org.hostd.Host1.Error.Cancelled"), "{end:?}");
    assert!(end.error_message.contains("time limit of 3s"), "{end:?}");
    held.unchanged(&before).await;
}
