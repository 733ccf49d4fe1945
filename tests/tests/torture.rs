//! Crash torture: start an operation, `kill -9` hostd (and its skopeo) at a
//! random moment, let the next call activate a new hostd, and check the host
//! is exactly as before or exactly as after the operation, never in between;
//! then the same operation, retried, must succeed.
//!
//! `HOSTD_TORTURE_TRIALS` trials per operation (default 5; `make torture`
//! runs 50), `HOSTD_TORTURE_SEED` fixes the random sequence.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use hostd_interface::proxy::Host1Proxy;
use hostd_tests::consistency::{check_host, RebootMarker};
use hostd_tests::fixture::{BuiltImage, ImageBuilder};
use hostd_tests::jobs::run_job;
use hostd_tests::machine::TestMachine;
use hostd_tests::offline::{host_with_v1, status, OfflineHost};
use hostd_tests::registry::oci_layer_digests;
use zbus::{Connection, Variant};

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

/// Components every new version changes: 3 MiB each of incompressible
/// payload, so a pull takes long enough to be interrupted in its middle.
const CHANGED: [&str; 2] = ["tools", "data"];
const CHANGED_SIZE: usize = 3 << 20;

/// The operations tortured, and the longest random delay before the kill:
/// a little longer than the operation takes on a tmpfs (a 6 MiB pull from
/// an `oci:` directory about 200 ms, a rollback about 15 ms), so kills land
/// in every phase and some after the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Upgrade,
    Switch,
    Rollback,
    Cleanup,
}

impl Operation {
    fn max_delay(self) -> Duration {
        match self {
            Operation::Upgrade | Operation::Switch => Duration::from_millis(300),
            Operation::Rollback => Duration::from_millis(25),
            Operation::Cleanup => Duration::from_millis(10),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Operation::Upgrade => "upgrade",
            Operation::Switch => "switch",
            Operation::Rollback => "rollback",
            Operation::Cleanup => "cleanup",
        }
    }
}

/// xorshift64: enough randomness for kill timing, reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn trials() -> usize {
    std::env::var("HOSTD_TORTURE_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(5)
}

fn base_seed() -> u64 {
    std::env::var("HOSTD_TORTURE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        now.as_nanos() as u64 | 1
    })
}

/// An offline host with v1 deployed, a second image to switch to, and a
/// hostd to kill.
struct Rig {
    h: OfflineHost,
    /// A second image (own `oci:` directory) for Switch and Cleanup.
    other: ImageBuilder,
    machine: TestMachine,
    conn: Connection,
    proxy: Host1Proxy<'static>,
    marker: RebootMarker,
    /// The version number the next build gets (always growing: no downgrades).
    next_version: u32,
    /// Whether the last Switch went to `other`.
    on_other: bool,
}

impl Rig {
    async fn start() -> Rig {
        let marker = RebootMarker::observe();
        let sizes: Vec<(&'static str, usize)> = CHANGED.iter().map(|c| (*c, CHANGED_SIZE)).collect();
        let h = host_with_v1("1g", &sizes).await;
        let mut other = ImageBuilder::new(&h.sysroot.dir.path().join("other")).unwrap();
        other.sizes.extend(sizes);
        let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
        let (conn, proxy) = machine.manager().await.unwrap();
        Rig { h, other, machine, conn, proxy, marker, next_version: 2, on_other: false }
    }

    async fn build(&mut self, on_other: bool) -> BuiltImage {
        let version = format!("v{}", self.next_version);
        self.next_version += 1;
        let builder = if on_other { &self.other } else { &self.h.builder };
        builder.build(&version, &CHANGED, &BTreeMap::new()).await.unwrap()
    }

    /// Run a job to success, untorn (set-up steps).
    async fn succeed(&self, method: &str, body: &(impl serde::Serialize + zbus::zvariant::DynamicType)) {
        let job = run_job(&self.conn, method, body).await.unwrap();
        assert_eq!(job.state, "succeeded", "{method}: {job:?}\n{}", self.machine.log());
    }
}

fn no_options() -> HashMap<&'static str, Variant<'static>> {
    HashMap::new()
}

fn oci_switch_options() -> HashMap<&'static str, Variant<'static>> {
    HashMap::from([("transport", Variant::from("oci"))])
}

/// What one trial found wrong; empty when nothing.
#[derive(Debug, Default)]
struct Verdict {
    inconsistent: Vec<String>,
    data_lost: Vec<String>,
}

/// The operation about to be tortured: how to call it and what it may leave.
struct Attempt {
    method: &'static str,
    image: Option<String>,
    options: HashMap<&'static str, Variant<'static>>,
    /// For pulls: the layers of the image being pulled.
    target_layers: Option<BTreeSet<String>>,
    /// For Cleanup: the layers that must be gone after it.
    to_prune: BTreeSet<String>,
}

impl Attempt {
    async fn call(&self, proxy: &Host1Proxy<'_>) -> Result<(), hostd_interface::Error> {
        let options = self.options.iter().map(|(k, v)| (*k, v.try_clone().unwrap())).collect();
        match (self.method, &self.image) {
            ("Upgrade", _) => proxy.upgrade(options).await,
            ("Switch", Some(image)) => proxy.switch(image, options).await,
            ("Rollback", _) => proxy.rollback(options).await,
            _ => proxy.cleanup(options).await,
        }
        .map(drop)
    }

    async fn retry(&self, rig: &Rig) -> hostd_tests::jobs::JobRecord {
        let options: HashMap<&str, Variant<'_>> = self.options.iter().map(|(k, v)| (*k, v.try_clone().unwrap())).collect();
        let job = match &self.image {
            Some(image) => run_job(&rig.conn, self.method, &(image.as_str(), options)).await,
            None => run_job(&rig.conn, self.method, &(options,)).await,
        };
        job.unwrap_or_else(|e| panic!("retrying {}: {e:?}\n{}", self.method, rig.machine.log()))
    }
}

/// Make the next trial of `op` meaningful: something new to pull, or a
/// fetched image to clean up.
async fn prepare(rig: &mut Rig, op: Operation) -> Attempt {
    let mut attempt = Attempt {
        method: "Rollback",
        image: None,
        options: no_options(),
        target_layers: None,
        to_prune: BTreeSet::new(),
    };
    match op {
        Operation::Upgrade => {
            rig.build(false).await;
            attempt.method = "Upgrade";
            attempt.target_layers = Some(layers_of(&rig.h.builder));
        }
        Operation::Switch => {
            let to_other = !rig.on_other;
            rig.build(to_other).await;
            let builder = if to_other { &rig.other } else { &rig.h.builder };
            rig.on_other = to_other;
            attempt.method = "Switch";
            attempt.image = Some(builder.oci_dir.display().to_string() + ":latest");
            attempt.options = oci_switch_options();
            attempt.target_layers = Some(layers_of(builder));
        }
        Operation::Rollback => {}
        Operation::Cleanup => {
            // A fetched image no deployment uses: what Cleanup removes.
            let kept = rig.h.sysroot.layer_digests().unwrap();
            rig.build(true).await;
            let image = rig.other.oci_name();
            let mut options = oci_switch_options();
            options.insert("download-only", Variant::from(true));
            rig.succeed("Switch", &(image.as_str(), options)).await;
            attempt.method = "Cleanup";
            attempt.to_prune = rig.h.sysroot.layer_digests().unwrap().difference(&kept).cloned().collect();
            assert!(!attempt.to_prune.is_empty(), "the download-only switch fetched layers");
        }
    }
    attempt
}

fn layers_of(builder: &ImageBuilder) -> BTreeSet<String> {
    oci_layer_digests(&builder.oci_dir, "latest").unwrap().into_iter().collect()
}

/// The deployment list after `op` completed on `before`, where knowable in
/// advance (a pull's new commit is not).
fn completed(op: Operation, before: &[String]) -> Option<Vec<String>> {
    match op {
        Operation::Rollback => Some(vec![before[1].clone(), before[0].clone()]),
        Operation::Cleanup => Some(before.to_vec()),
        Operation::Upgrade | Operation::Switch => None,
    }
}

/// A completed pull: one new deployment in front of the previous default.
fn is_pulled(before: &[String], found: &[String]) -> bool {
    found.len() == 2 && found[1] == before[0] && !before.contains(&found[0])
}

async fn trial(rig: &mut Rig, op: Operation, seed: u64) -> Verdict {
    let attempt = prepare(rig, op).await;
    let before = rig.h.sysroot.deployment_checksums().unwrap();
    let delay = Duration::from_millis(seed % op.max_delay().as_millis() as u64);
    attempt.call(&rig.proxy).await.unwrap_or_else(|e| panic!("{}: {e:?}", attempt.method));
    tokio::time::sleep(delay).await;
    let state_at_kill = rig.proxy.state().await.unwrap_or_default();
    let killed = rig.machine.kill_hostd();
    let mut verdict = Verdict::default();

    let after_op = completed(op, &before);
    let allowed = |found: &[String]| found == before || after_op.as_deref().map_or_else(|| is_pulled(&before, found), |a| a == found);
    let found = match check_host(&rig.h.sysroot, &rig.proxy, &allowed, &rig.marker).await {
        Ok(found) => found,
        Err(e) => {
            verdict.inconsistent.push(format!("after the kill: {e:#}"));
            rig.h.sysroot.deployment_checksums().unwrap()
        }
    };
    if !found.contains(&before[0]) {
        verdict.data_lost.push(format!("the previous default {} is gone: {found:?}", before[0]));
    }
    let outcome = if found == before { "old" } else { "new" };
    eprintln!("{} seed {seed} delay {delay:?} killed {killed:?} while {state_at_kill}: {outcome}", op.name());

    let layers_after_kill = rig.h.sysroot.layer_digests().unwrap();
    let retry = attempt.retry(rig).await;
    if retry.state != "succeeded" {
        verdict.inconsistent.push(format!("the retry did not succeed: {retry:?}"));
        return verdict;
    }
    if let Some(target) = &attempt.target_layers {
        let missing = target.difference(&layers_after_kill).count();
        if retry.layers_total as usize != missing {
            verdict.inconsistent.push(format!("the retry fetched {} layers, {missing} were missing", retry.layers_total));
        }
    }
    if op == Operation::Cleanup && rig.h.sysroot.layer_digests().unwrap().intersection(&attempt.to_prune).next().is_some() {
        verdict.inconsistent.push("the retried cleanup left the unused image's layers".into());
    }
    let after_retry = rig.h.sysroot.deployment_checksums().unwrap();
    let settled = |found: &[String]| found == after_retry;
    if let Err(e) = check_host(&rig.h.sysroot, &rig.proxy, &settled, &rig.marker).await {
        verdict.inconsistent.push(format!("after the retry: {e:#}"));
    }
    verdict
}

/// Run the trials of `op` and fail listing the seeds of bad ones.
async fn torture(op: Operation, setup: impl AsyncFnOnce(&mut Rig)) {
    let mut rig = Rig::start().await;
    setup(&mut rig).await;
    let seed = base_seed();
    eprintln!("{} base seed {seed}", op.name());
    let mut rng = Rng(seed);
    let (mut inconsistent, mut data_lost) = (Vec::new(), Vec::new());
    let n = trials();
    for _ in 0..n {
        let trial_seed = rng.next();
        let verdict = trial(&mut rig, op, trial_seed).await;
        if !verdict.inconsistent.is_empty() {
            inconsistent.push((trial_seed, verdict.inconsistent));
        }
        if !verdict.data_lost.is_empty() {
            data_lost.push((trial_seed, verdict.data_lost));
        }
    }
    println!("{}: trials {n}, inconsistent {}, data_lost {}", op.name(), inconsistent.len(), data_lost.len());
    assert!(
        inconsistent.is_empty() && data_lost.is_empty(),
        "{}: inconsistent {inconsistent:#?}\ndata lost {data_lost:#?}\n{}",
        op.name(),
        rig.machine.log()
    );
}

#[tokio::test]
async fn killing_hostd_during_upgrade_leaves_the_old_or_the_new_deployments() {
    torture(Operation::Upgrade, async |_| {}).await;
}

#[tokio::test]
async fn killing_hostd_during_switch_leaves_the_old_or_the_new_deployments() {
    torture(Operation::Switch, async |_| {}).await;
}

#[tokio::test]
async fn killing_hostd_during_rollback_leaves_the_old_or_the_swapped_order() {
    torture(Operation::Rollback, async |rig: &mut Rig| {
        rig.build(false).await;
        rig.succeed("Upgrade", &(no_options(),)).await;
        assert_eq!(status(&rig.conn).await.entries().count(), 2, "two deployments to swap");
    })
    .await;
}

#[tokio::test]
async fn killing_hostd_during_cleanup_keeps_the_deployments() {
    torture(Operation::Cleanup, async |_| {}).await;
}
