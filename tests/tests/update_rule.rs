//! What counts as an update, through `hostctl` against the test registry:
//! a tag moved to an image built before the deployed one is a downgrade
//! (reported as such, never installed by a check or an unattended run), and
//! a tag moved back to the deployed image leaves no update anywhere. The
//! rule itself is tested by table in `daemon/src/sysroot/update_rule.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use hostd_interface::manager::CachedUpdate;
use hostd_interface::proxy::Host1Proxy;
use hostd_tests::fixture::BuiltImage;
use hostd_tests::machine::TestMachine;
use hostd_tests::offline::{deployed, host_with_v1, status, text, vd, OfflineHost};
use hostd_tests::registry::TestRegistry;
use zbus::Connection;

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";
const TAG: &str = "hostd/os:stable";

/// v1 deployed and tracked as `<registry>/hostd/os:stable`; v1 is also
/// kept in the registry as `hostd/os:v1`.
struct Tracking {
    h: OfflineHost,
    registry: TestRegistry,
    machine: TestMachine,
    conn: Connection,
    host: Host1Proxy<'static>,
}

async fn tracking_v1() -> Tracking {
    let h = host_with_v1("512m", &[]).await;
    let registry = TestRegistry::start().unwrap();
    registry.push(&h.builder.oci_name(), TAG).unwrap();
    registry.push(&h.builder.oci_name(), "hostd/os:v1").unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&registry.host()).unwrap();
    let (conn, host) = machine.manager().await.unwrap();
    let image = format!("{}/{TAG}", registry.host());
    let out = machine.hostctl(None, &["switch", &image]);
    assert!(out.status.success(), "{}\n{}", text(&out), machine.log());
    assert_eq!(deployed(&conn).await[0], vd(&h.v1));
    Tracking { h, registry, machine, conn, host }
}

impl Tracking {
    /// Build `version` (its build time follows its number, `created_for`)
    /// and move the tracked tag to it.
    async fn move_tag_to_new(&self, version: &str) -> BuiltImage {
        let image = self.h.builder.build(version, &["data"], &BTreeMap::new()).await.unwrap();
        self.registry.push(&self.h.builder.oci_name(), TAG).unwrap();
        image
    }

    /// Move the tracked tag back to v1, as a registry admin withdrawing a
    /// release does (same manifest, same digest).
    fn move_tag_back_to_v1(&self) {
        let reg = self.registry.host();
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests"])
            .arg(format!("docker://{reg}/hostd/os:v1"))
            .arg(format!("docker://{reg}/{TAG}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }

    fn set_policy(&self, policy: &str) {
        let dropin = format!("[updates]\npolicy = \"{policy}\"\n");
        self.machine.set_config_dropin("50-policy.toml", Some(&dropin)).unwrap();
        let out = self.machine.hostctl(None, &["reload"]);
        assert!(out.status.success(), "reload: {}", text(&out));
    }

    /// `hostctl upgrade --auto` (the update timer), which must succeed.
    fn auto_run(&self) -> String {
        let out = self.machine.hostctl(None, &["upgrade", "--auto"]);
        assert!(out.status.success(), "upgrade --auto: {}\n{}", text(&out), self.machine.log());
        text(&out)
    }

    /// The cached update of the deployment updates build on, in the Host
    /// document (validated against bootc's schema).
    async fn document_cached_update(&self) -> Option<String> {
        let doc = status(&self.conn).await;
        let merge = doc.status.other_deployments.first().expect("a deployment");
        merge.cached_update.as_ref().map(|u| u.image_digest.clone())
    }

    fn status_text(&self) -> String {
        let out = self.machine.hostctl(None, &["status", "--format", "humanreadable"]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the host has: deployments and layers.
    fn on_disk(&self) -> (Vec<String>, BTreeSet<String>) {
        (self.h.sysroot.deployment_checksums().unwrap(), self.h.sysroot.layer_digests().unwrap())
    }

    /// What a downgrade to `older` looks like everywhere after a check.
    async fn assert_downgrade_reported(&self, older: &BuiltImage) {
        let cached = self.host.cached_update().await.unwrap();
        let expected = CachedUpdate {
            digest: Some(older.digest.clone()),
            downgrade: Some(true),
            version: Some(older.version.clone()),
            timestamp: cached.timestamp.clone(),
            // The image's description labels, which a GUI shows with it.
            labels: Some([("org.opencontainers.image.version".to_string(), older.version.clone())].into()),
            ..CachedUpdate::default()
        };
        assert_eq!(cached, expected, "CachedUpdate names the older image as a downgrade");
        assert!(cached.timestamp.is_some());
        assert_eq!(self.document_cached_update().await, None, "the Host document's cachedUpdate names updates only");
        let shown = self.status_text();
        assert!(!shown.contains("Update available"), "{shown}");
        let line = format!("Downgrade available, not installed: v0 ({}) was built before the deployed image", older.digest);
        assert!(shown.contains(&line), "{shown}");
        let result = self.host.last_check_result().await.unwrap();
        assert!(result.starts_with("Downgrade available, not installed: v0 ("), "{result}");
        assert!(result.contains(&older.digest), "{result}");
    }
}

#[tokio::test]
async fn policy_check_reports_a_tag_moved_to_an_older_image_as_a_downgrade() {
    let t = tracking_v1().await;
    let before = t.on_disk();
    let v0 = t.move_tag_to_new("v0").await;

    // --check: no "update available" exit code, the job says what it is.
    let out = t.machine.hostctl(None, &["upgrade", "--check", "--exit-code"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), t.machine.log());
    assert!(text(&out).contains("Downgrade available, not installed"), "{}", text(&out));
    t.assert_downgrade_reported(&v0).await;

    // The timer under policy check: the same, every run, and nothing fetched.
    t.set_policy("check");
    for _ in 0..2 {
        t.auto_run();
        t.assert_downgrade_reported(&v0).await;
    }
    assert_eq!(t.on_disk(), before, "a check fetches and deploys nothing");

    // A restarted hostd (no LastCheckResult yet) reads the same from the
    // sysroot: the status read applies the rule to ostree-ext's cache.
    t.machine.kill_hostd();
    assert_eq!(t.document_cached_update().await, None, "Status waits for the first read");
    let cached = t.host.cached_update().await.unwrap();
    assert_eq!((cached.digest.as_deref(), cached.downgrade), (Some(v0.digest.as_str()), Some(true)));
    let shown = t.status_text();
    assert!(shown.contains("Downgrade available, not installed: v0") && !shown.contains("Update available"), "{shown}");

    // An explicit upgrade refuses it, before fetching; allow-downgrade installs it.
    let out = t.machine.hostctl(None, &["upgrade"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(text(&out).contains("allow-downgrade"), "{}", text(&out));
    assert_eq!(t.on_disk(), before);
    let out = t.machine.hostctl(None, &["upgrade", "--allow-downgrade"]);
    assert!(out.status.success(), "{}\n{}", text(&out), t.machine.log());
    assert_eq!(deployed(&t.conn).await[0], vd(&v0));
    assert_eq!(t.host.cached_update().await.unwrap(), CachedUpdate::default(), "v0 runs: nothing cached");
}

#[tokio::test]
async fn policy_stage_does_not_install_a_downgrade_and_its_runs_do_not_fail() {
    let t = tracking_v1().await;
    let before = t.on_disk();
    let v0 = t.move_tag_to_new("v0").await;

    t.set_policy("stage");
    for _ in 0..2 {
        let said = t.auto_run();
        assert!(said.contains("Downgrade available, not installed"), "{said}");
        assert_eq!(t.on_disk(), before, "nothing fetched, nothing staged: {said}");
        t.assert_downgrade_reported(&v0).await;
    }
    t.set_policy("download");
    t.auto_run();
    assert_eq!(t.on_disk(), before, "download neither");

    // An update after the withdrawn one is installed as usual.
    let v2 = t.move_tag_to_new("v2").await;
    t.set_policy("stage");
    t.auto_run();
    assert_eq!(deployed(&t.conn).await[0], vd(&v2));
    assert!(t.host.last_check_result().await.unwrap().starts_with("Deployed v2"));
}

#[tokio::test]
async fn a_check_after_the_tag_moved_back_clears_the_cached_update_everywhere() {
    let t = tracking_v1().await;
    let v2 = t.move_tag_to_new("v2").await;
    let out = t.machine.hostctl(None, &["upgrade", "--check", "--exit-code"]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
    assert_eq!(t.host.cached_update().await.unwrap().digest.as_deref(), Some(v2.digest.as_str()));
    assert_eq!(t.document_cached_update().await.as_deref(), Some(v2.digest.as_str()));
    assert!(t.status_text().contains("Update available"));

    // v2 is withdrawn: the tag names the deployed image again.
    t.move_tag_back_to_v1();
    let out = t.machine.hostctl(None, &["upgrade", "--check", "--exit-code"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), t.machine.log());
    assert!(text(&out).contains("No update available."), "{}", text(&out));
    assert_eq!(t.host.cached_update().await.unwrap(), CachedUpdate::default());
    assert_eq!(t.document_cached_update().await, None);
    let shown = t.status_text();
    assert!(!shown.contains("Update available") && !shown.contains(&v2.digest), "{shown}");

    // The same after a daemon restart: the sysroot no longer says otherwise.
    t.machine.kill_hostd();
    assert_eq!(t.document_cached_update().await, None);

    // An unattended run that finds nothing new clears it too.
    t.move_tag_to_new("v3").await;
    let out = t.machine.hostctl(None, &["upgrade", "--check", "--exit-code"]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
    t.move_tag_back_to_v1();
    t.set_policy("stage");
    let said = t.auto_run();
    assert!(said.contains("No update available."), "{said}");
    assert_eq!(t.host.cached_update().await.unwrap(), CachedUpdate::default());
    assert_eq!(t.document_cached_update().await, None);
    assert_eq!(deployed(&t.conn).await[0], vd(&t.h.v1));
}
