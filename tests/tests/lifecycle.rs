//! The other half of the lifecycle on offline sysroots: rollback, pinning,
//! `apply` where there is nothing to reboot, and the journal trail. The
//! reboot itself (logind, inhibitors, /run/reboot-required) needs a booted
//! system: see booted.rs.

use std::collections::BTreeMap;
use std::path::Path;

use hostd_tests::consistency;
use hostd_tests::journal::{message_id, JournalSocket};
use hostd_tests::machine::{TestMachine, ADMIN, USER};
use hostd_tests::offline::{deployed, host_with_v1, status, text, vd};
use hostd_tests::repo_root;

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

/// The project's example rules: wheel members may do everything.
fn install_wheel_rules(machine: &TestMachine) {
    let rules = std::fs::read_to_string(repo_root().join("polkit-rules/50-hostd.rules")).unwrap();
    machine.add_polkit_rule("50-hostd.rules", &rules).unwrap();
}

/// Run hostctl as the wheel member and insist it succeeds; its stdout.
fn admin(machine: &TestMachine, args: &[&str]) -> String {
    let out = machine.hostctl(Some(ADMIN.1), args);
    assert!(out.status.success(), "hostctl {args:?}: {}\n{}", text(&out), machine.log());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn bls_default_checksum(sysroot: &Path) -> String {
    consistency::bls_default_checksum(sysroot).unwrap()
}

#[tokio::test]
async fn rollback_on_an_offline_sysroot_swaps_the_default_and_a_second_one_swaps_it_back() {
    let h = host_with_v1("512m", &[]).await;
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let journal = JournalSocket::bind().unwrap();
    let machine = TestMachine::start_with_journal(h.sysroot.path(), CONFIG, &journal).unwrap();
    install_wheel_rules(&machine);
    let conn = machine.connect().await.unwrap();
    admin(&machine, &["upgrade"]);
    let [c2, c1] = <[String; 2]>::try_from(h.sysroot.deployment_checksums().unwrap()).unwrap();
    assert_eq!(bls_default_checksum(h.sysroot.path()), c2);

    let staged = journal.single(message_id::STAGED).unwrap();
    assert_eq!(staged["NEW_CHECKSUM"], c2);
    assert_eq!(staged["OLD_CHECKSUM"], c1);
    assert_eq!(staged["INITIATOR_UID"], ADMIN.1.to_string());
    assert!(staged["IMAGE"].contains(&h.builder.oci_name()), "{staged:?}");
    assert!(staged["MESSAGE"].starts_with("Deployed v2"), "{staged:?}");

    let said = admin(&machine, &["rollback"]);
    assert!(said.contains(&format!("{c1}.0 is now the default deployment")), "{said}");
    assert_eq!(deployed(&conn).await, [vd(&h.v1), vd(&v2)], "v1 first, v2 still listed");
    assert_eq!(h.sysroot.deployment_checksums().unwrap(), [c1.clone(), c2.clone()]);
    assert_eq!(bls_default_checksum(h.sysroot.path()), c1, "the boot entries follow");
    assert!(!status(&conn).await.status.rollback_queued, "nothing is booted, so nothing is queued");
    let rolled_back = journal.single(message_id::ROLLED_BACK).unwrap();
    assert_eq!((rolled_back["OLD_CHECKSUM"].as_str(), rolled_back["NEW_CHECKSUM"].as_str()), (c2.as_str(), c1.as_str()));
    assert_eq!(rolled_back["INITIATOR_UID"], ADMIN.1.to_string());

    admin(&machine, &["rollback"]);
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&h.v1)]);
    assert_eq!(bls_default_checksum(h.sysroot.path()), c2);
    let both = journal.entries(message_id::ROLLED_BACK);
    assert_eq!(both.len(), 2);
    assert_eq!(both[1]["NEW_CHECKSUM"], c2);
    h.sysroot.fsck().unwrap();
}

#[tokio::test]
async fn a_pinned_deployment_survives_two_upgrades_and_a_cleanup() {
    let h = host_with_v1("512m", &[]).await;
    let journal = JournalSocket::bind().unwrap();
    let machine = TestMachine::start_with_journal(h.sysroot.path(), CONFIG, &journal).unwrap();
    install_wheel_rules(&machine);
    let conn = machine.connect().await.unwrap();
    let c1 = h.sysroot.deployment_checksums().unwrap().remove(0);

    for (who, args, code, says) in [
        (Some(USER.1), vec!["pin", "0"], 5, "org.hostd.host1.cleanup"),
        (Some(ADMIN.1), vec!["pin", "7"], 7, "no deployment at index 7"),
        (Some(ADMIN.1), vec!["pin", "v1"], 7, "neither a deployment index nor a checksum"),
    ] {
        let out = machine.hostctl(who, &args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
    assert!(!status(&conn).await.status.other_deployments[0].pinned, "refused pins change nothing");

    admin(&machine, &["pin", "0"]);
    assert!(status(&conn).await.status.other_deployments[0].pinned);
    let shown = admin(&machine, &["status", "--format", "humanreadable"]);
    assert!(shown.contains("[pinned]"), "{shown}");

    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    admin(&machine, &["upgrade"]);
    let v3 = h.builder.build("v3", &["tools"], &BTreeMap::new()).await.unwrap();
    admin(&machine, &["upgrade"]);
    assert_eq!(deployed(&conn).await, [vd(&v3), vd(&v2), vd(&h.v1)], "v1 is kept by its pin");
    admin(&machine, &["cleanup"]);
    let after = status(&conn).await;
    assert_eq!(after.entries().count(), 3);
    assert!(after.status.other_deployments[2].pinned);
    h.sysroot.fsck().unwrap();
    let cleaned = journal.single(message_id::CLEANED_UP).unwrap();
    assert_eq!(cleaned["INITIATOR_UID"], ADMIN.1.to_string());
    assert!(cleaned["MESSAGE"].starts_with("Removed "), "{cleaned:?}");

    // Without the pin, the next upgrade lets v1 go: the pin was what kept it.
    admin(&machine, &["unpin", &format!("{c1}.0")]);
    let v4 = h.builder.build("v4", &["docs"], &BTreeMap::new()).await.unwrap();
    admin(&machine, &["upgrade"]);
    assert_eq!(deployed(&conn).await, [vd(&v4), vd(&v3)]);
}

#[tokio::test]
async fn apply_is_refused_when_the_sysroot_is_not_the_booted_system() {
    let h = host_with_v1("256m", &[]).await;
    h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    install_wheel_rules(&machine);
    let conn = machine.connect().await.unwrap();
    for args in [&["upgrade", "--apply"][..], &["rollback", "--apply"], &["stage", "--apply"]] {
        let out = machine.hostctl(Some(ADMIN.1), args);
        assert_eq!(out.status.code(), Some(7), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("is not the booted sysroot"), "{args:?}: {}", text(&out));
    }
    assert_eq!(deployed(&conn).await, [vd(&h.v1)], "nothing was fetched or deployed");
}
