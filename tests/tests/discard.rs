//! `Discard` / `hostctl discard` on offline sysroots: an update fetched with
//! `download-only` (an offline sysroot's pending update: it has no staged
//! deployments, which only a booted host has; booted.rs drops those) is
//! dropped, the deployments and their order stay, `Stage` then has nothing
//! to queue, and the journal says who did it. Nothing pending is a no-op.

use std::collections::BTreeMap;

use hostd_interface::manager::CachedUpdate;
use hostd_tests::consistency;
use hostd_tests::journal::{message_id, JournalSocket};
use hostd_tests::machine::{TestMachine, ADMIN, USER};
use hostd_tests::offline::{deployed, host_with_v1, text, vd};
use hostd_tests::repo_root;

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

fn install_wheel_rules(machine: &TestMachine) {
    let rules = std::fs::read_to_string(repo_root().join("polkit-rules/50-hostd.rules")).unwrap();
    machine.add_polkit_rule("50-hostd.rules", &rules).unwrap();
}

/// `hostctl ARGS` as `uid`, insisting on exit code `code`; what it printed.
fn hostctl(machine: &TestMachine, uid: Option<u32>, args: &[&str], code: i32) -> String {
    let out = machine.hostctl(uid, &[&["--no-ask-password"], args].concat());
    assert_eq!(out.status.code(), Some(code), "hostctl {args:?}: {}\n{}", text(&out), machine.log());
    text(&out)
}

#[tokio::test]
async fn discard_drops_a_downloaded_update_and_keeps_the_deployments_in_their_order() {
    let h = host_with_v1("512m", &[]).await;
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let journal = JournalSocket::bind().unwrap();
    let machine = TestMachine::start_with_journal(h.sysroot.path(), CONFIG, &journal).unwrap();
    install_wheel_rules(&machine);
    let conn = machine.connect().await.unwrap();
    let (_, host) = machine.manager().await.unwrap();

    // Two deployments, v2 the default, and v3 downloaded for later.
    hostctl(&machine, Some(ADMIN.1), &["upgrade"], 0);
    let v3 = h.builder.build("v3", &["tools"], &BTreeMap::new()).await.unwrap();
    hostctl(&machine, Some(ADMIN.1), &["upgrade", "--download-only"], 0);
    let order = h.sysroot.deployment_checksums().unwrap();
    let boot_default = consistency::bls_default_checksum(h.sysroot.path()).unwrap();
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&h.v1)]);
    let waiting = host.cached_update().await.unwrap();
    assert_eq!((waiting.digest.as_deref(), waiting.downloaded), (Some(v3.digest.as_str()), Some(true)));

    // A user who may not stage may not drop it either.
    let out = hostctl(&machine, Some(USER.1), &["discard"], 5);
    assert!(out.contains("NotAuthorized: org.hostd.host1.stage"), "{out}");
    assert_eq!(host.cached_update().await.unwrap().downloaded, Some(true), "still downloaded");

    let said = hostctl(&machine, Some(ADMIN.1), &["discard"], 0);
    assert!(said.contains(&format!("Discarded the downloaded update {}", v3.digest)), "{said}");
    assert_eq!(h.sysroot.deployment_checksums().unwrap(), order, "the deployments and their order stay");
    assert_eq!(consistency::bls_default_checksum(h.sysroot.path()).unwrap(), boot_default);
    let after: CachedUpdate = host.cached_update().await.unwrap();
    assert_ne!(after.downloaded, Some(true), "nothing downloaded waits: {after:?}");
    assert!(!host.reboot_required().await.unwrap());
    let out = hostctl(&machine, Some(ADMIN.1), &["stage"], 1);
    assert!(out.contains("NothingToStage"), "Stage has nothing to queue: {out}");
    let entry = journal.single(message_id::DISCARDED).unwrap();
    assert_eq!(entry["NEW_CHECKSUM"], order[0], "what boots next");
    assert_eq!(entry["INITIATOR_UID"], ADMIN.1.to_string());
    assert!(entry["IMAGE"].contains(&h.builder.oci_name()), "{entry:?}");
    assert!(entry["MESSAGE"].starts_with("Discarded the downloaded update"), "{entry:?}");

    // Nothing pending: a no-op, as `rpm-ostree cleanup -p`; no job, no entry.
    let said = hostctl(&machine, Some(ADMIN.1), &["discard"], 0);
    assert_eq!(said.trim(), "No update is staged or downloaded; nothing to discard.");
    let path = host.discard(Default::default()).await.unwrap();
    assert_eq!(path.as_str(), "/");
    assert_eq!(journal.entries(message_id::DISCARDED).len(), 1);
    // After an offline rollback the other deployment's image is deployed,
    // not waiting: nothing to discard either.
    hostctl(&machine, Some(ADMIN.1), &["rollback"], 0);
    let order = h.sysroot.deployment_checksums().unwrap();
    assert_eq!(host.discard(Default::default()).await.unwrap().as_str(), "/");
    assert_eq!(h.sysroot.deployment_checksums().unwrap(), order);
    hostctl(&machine, Some(ADMIN.1), &["rollback"], 0);

    // The update can be fetched again afterwards.
    hostctl(&machine, Some(ADMIN.1), &["upgrade"], 0);
    assert_eq!(deployed(&conn).await, [vd(&v3), vd(&v2)]);
    h.sysroot.fsck().unwrap();
}

#[tokio::test]
async fn discard_takes_no_options_and_needs_an_image_based_sysroot() {
    let h = host_with_v1("256m", &[]).await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let (_, host) = machine.manager().await.unwrap();
    let options = std::collections::HashMap::from([("apply", zbus::Variant::Bool(true))]);
    let e = host.discard(options).await.unwrap_err();
    assert_eq!(
        e,
        hostd_interface::Error::InvalidArgument("Discard: unknown option 'apply' (this method takes no options)".into())
    );
    let not_a_sysroot = tempfile::tempdir().unwrap();
    let other = TestMachine::start(not_a_sysroot.path(), CONFIG).unwrap();
    let out = other.hostctl(None, &["discard"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
}
