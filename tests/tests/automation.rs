//! Unattended updates on an offline sysroot tracking an image in the test
//! registry: `hostctl upgrade --auto` (what the update timer runs) does
//! exactly what `[updates] policy` allows. Rebooting under a strategy needs a
//! booted system: see booted.rs.

use std::collections::{BTreeMap, BTreeSet};

use hostd_interface::proxy::Host1Proxy;
use hostd_tests::machine::TestMachine;
use hostd_tests::offline::{deployed, host_with_v1, text, vd};
use hostd_tests::registry::TestRegistry;

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

/// Set `[updates] policy` through a drop-in and `hostctl reload`.
fn set_policy(machine: &TestMachine, policy: &str) {
    machine
        .set_config_dropin("50-policy.toml", Some(&format!("[updates]\npolicy = \"{policy}\"\n")))
        .unwrap();
    let out = machine.hostctl(None, &["reload"]);
    assert!(out.status.success(), "reload: {}", text(&out));
}

/// `hostctl upgrade --auto`, which must succeed; its stdout.
fn auto_run(machine: &TestMachine) -> String {
    let out = machine.hostctl(None, &["upgrade", "--auto"]);
    assert!(out.status.success(), "upgrade --auto: {}\n{}", text(&out), machine.log());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn cached_digest(host: &Host1Proxy<'_>) -> Option<(String, bool)> {
    let cached = host.cached_update().await.unwrap();
    Some((cached.digest?, cached.downloaded.expect("downloaded comes with digest")))
}

#[tokio::test]
async fn each_policy_does_exactly_what_it_documents() {
    let h = host_with_v1("512m", &[]).await;
    let registry = TestRegistry::start().unwrap();
    registry.push(&h.builder.oci_name(), "hostd/os:stable").unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&registry.host()).unwrap();
    let (conn, host) = machine.manager().await.unwrap();
    let image = format!("{}/hostd/os:stable", registry.host());
    let out = machine.hostctl(None, &["switch", &image]);
    assert!(out.status.success(), "{}", text(&out));
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    registry.push(&h.builder.oci_name(), "hostd/os:stable").unwrap();
    let tracking_v1 = deployed(&conn).await;
    let layers_v1: BTreeSet<String> = h.sysroot.layer_digests().unwrap();

    // none: no job at all.
    set_policy(&machine, "none");
    assert!(auto_run(&machine).contains("Automatic updates are off"));
    assert_eq!(host.last_check_time().await.unwrap(), 0);
    assert_eq!(cached_digest(&host).await, None);

    // check: CachedUpdate names v2, nothing fetched.
    set_policy(&machine, "check");
    auto_run(&machine);
    assert_eq!(cached_digest(&host).await, Some((v2.digest.clone(), false)));
    assert_eq!(h.sysroot.layer_digests().unwrap(), layers_v1, "check fetches no layer");
    assert_eq!(deployed(&conn).await, tracking_v1);
    assert!(host.last_check_time().await.unwrap() > 0);
    assert!(host.last_check_result().await.unwrap().starts_with("Update available: v2"));

    // download: the layers are fetched, nothing is deployed.
    set_policy(&machine, "download");
    auto_run(&machine);
    assert_eq!(cached_digest(&host).await, Some((v2.digest.clone(), true)));
    assert!(h.sysroot.layer_digests().unwrap().len() > layers_v1.len());
    assert_eq!(deployed(&conn).await, tracking_v1);

    // stage: v2 becomes the default deployment.
    set_policy(&machine, "stage");
    auto_run(&machine);
    assert_eq!(deployed(&conn).await[0], vd(&v2));

    // apply: the same on a sysroot nothing runs from; no reboot is asked for.
    let v3 = h.builder.build("v3", &["tools"], &BTreeMap::new()).await.unwrap();
    registry.push(&h.builder.oci_name(), "hostd/os:stable").unwrap();
    set_policy(&machine, "apply");
    let said = auto_run(&machine);
    assert_eq!(deployed(&conn).await[..2], [vd(&v3), vd(&v2)], "{said}");
    assert!(!host.reboot_required().await.unwrap());

    // --auto decides the flags itself.
    let out = machine.hostctl(None, &["upgrade", "--auto", "--download-only"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let shown = String::from_utf8_lossy(&machine.hostctl(None, &["status", "--format", "humanreadable"]).stdout).into_owned();
    assert!(shown.contains("Automatic updates: policy apply, strategy immediate"), "{shown}");
}
