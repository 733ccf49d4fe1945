//! Jobs held at hostd's failpoints (`daemon/src/failpoint.rs`, live in the
//! test build only) and then cancelled or killed at exactly that moment, where
//! other tests can only aim with timing.
//!
//! A held job waits for its cancellation and then goes on into the libostree
//! call after the point with a cancelled `GCancellable`: if the cancellation
//! did not reach that call, the deployment would be written or the prune run,
//! and these tests would see it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hostd::failpoint::{held_message, points};
use hostd_interface::proxy::Host1Proxy;
use hostd_tests::consistency::{check_host, RebootMarker};
use hostd_tests::jobs::{run_job, JobWatch};
use hostd_tests::machine::{Extras, TestMachine};
use hostd_tests::offline::{deployed, host_with_v1, vd, OfflineHost};
use hostd_tests::registry::oci_layer_digests;
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
    /// The layers of v1's manifest.
    v1_layers: Vec<String>,
}

async fn held_at(point: &str) -> Held {
    let marker = RebootMarker::observe();
    let h = host_with_v1("512m", &[("data", 1 << 20)]).await;
    let v1_layers = oci_layer_digests(&h.builder.oci_dir, "latest").unwrap();
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let extras = Extras { hostd_env: vec![("FAILPOINTS", format!("{point}=return"))], ..Extras::default() };
    let machine = TestMachine::start_with(h.sysroot.path(), CONFIG, extras).unwrap();
    let (conn, proxy) = machine.manager().await.unwrap();
    Held { h, machine, conn, proxy, marker, v2, v1_layers }
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

/// Cleanup has something to remove: v2, fetched with `download-only` and
/// never deployed. Returns the layers only v2 has.
async fn fetch_v2_without_deploying(held: &Held) -> Vec<String> {
    let fetched = run_job(&held.conn, "Upgrade", &(options(&[("download-only", true)]),)).await.unwrap();
    assert_eq!(fetched.state, "succeeded", "{fetched:?}");
    let v2_layers = oci_layer_digests(&held.h.builder.oci_dir, "latest").unwrap();
    v2_layers.into_iter().filter(|l| !held.v1_layers.contains(l)).collect()
}

/// Whether the repo still holds ostree-ext's ref for a layer blob.
fn layer_ref_exists(h: &OfflineHost, digest: &str) -> bool {
    let escaped = digest.replace(':', "_3A_");
    h.sysroot.path().join("ostree/repo/refs/heads/ostree/container/blob").join(escaped).exists()
}

#[tokio::test]
async fn cancel_before_and_in_the_middle_of_a_prune_ends_the_job_cancelled_and_prunes_nothing() {
    for point in [points::PRUNE, points::MID_PRUNE] {
        let held = held_at(point).await;
        let only_v2 = fetch_v2_without_deploying(&held).await;
        assert!(!only_v2.is_empty());
        assert!(only_v2.iter().all(|l| layer_ref_exists(&held.h, l)), "v2's layers were fetched");
        let before = held.h.sysroot.deployment_checksums().unwrap();

        let watch = held.start_until_held("Cleanup", &[], point).await;
        held.cancel_within_limit(watch).await;
        held.unchanged(&before).await;
        assert!(only_v2.iter().all(|l| layer_ref_exists(&held.h, l)), "{point}: the cancelled cleanup removed v2's layers");

        held.release();
        let retry = run_job(&held.conn, "Cleanup", &(options(&[]),)).await.unwrap();
        assert_eq!(retry.state, "succeeded", "{retry:?}");
        assert!(only_v2.iter().all(|l| !layer_ref_exists(&held.h, l)), "{point}: the cleanup after it removes them");
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
            fetch_v2_without_deploying(&held).await;
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
