//! Status end to end: real bus, real polkitd, hostd activated by the bus,
//! real ostree sysroots with fixture images deployed by ostree-ext.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hostd_interface::host::Host;
use hostd_interface::Error;
use hostd_tests::fixture::{BuiltImage, ImageBuilder};
use hostd_tests::machine::TestMachine;
use hostd_tests::schema;
use hostd_tests::sysroot::TestSysroot;
use zbus::Variant;

const CONFIG: &str = "[daemon]\nidle_exit_secs = 30\n";

/// A sysroot with deployments of v1..vn (vn the default). ostree keeps the
/// new and the previous default, so from three on v1 is pinned first.
async fn sysroot_with(n: usize) -> (TestSysroot, Vec<BuiltImage>) {
    let sysroot = TestSysroot::new("512m").unwrap();
    let builder = ImageBuilder::new(&sysroot.dir.path().join("images")).unwrap();
    let mut built = Vec::new();
    for i in 1..=n {
        if i == 3 {
            sysroot.set_pinned(1, true).unwrap();
        }
        let version = format!("v{i}");
        let image = builder.build(&version, &["data"], &BTreeMap::new()).await.unwrap();
        sysroot.deploy_image(&image.reference).await.unwrap();
        built.push(image);
    }
    (sysroot, built)
}

async fn status(machine: &TestMachine) -> (serde_json::Value, Host) {
    let (_conn, host) = machine.manager().await.unwrap();
    let json = host.status(HashMap::new()).await.unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    schema::validate("bootc-host-v1.schema.json", &value).unwrap();
    (value, serde_json::from_str(&json).unwrap())
}

fn versions_and_digests(host: &Host) -> Vec<(String, String)> {
    host.status
        .other_deployments
        .iter()
        .map(|e| {
            let i = e.image.as_ref().expect("image deployment");
            (i.version.clone().unwrap_or_default(), i.image_digest.clone())
        })
        .collect()
}

#[tokio::test]
async fn status_reports_one_two_and_three_deployments_in_boot_order() {
    for n in 1..=3 {
        let (sysroot, built) = sysroot_with(n).await;
        let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();
        let (value, host) = status(&machine).await;
        assert_eq!(value["apiVersion"], "org.containers.bootc/v1");
        assert_eq!(value["kind"], "BootcHost");
        assert!(value["status"]["booted"].is_null(), "offline sysroot has no booted entry");
        let got = versions_and_digests(&host);
        let checksums = sysroot.deployment_checksums().unwrap();
        assert_eq!(checksums.len(), n);
        let expected: Vec<(String, String)> =
            built.iter().rev().map(|b| (b.version.clone(), b.digest.clone())).collect();
        assert_eq!(got, expected, "n = {n}");
        let listed: Vec<String> = host
            .status
            .other_deployments
            .iter()
            .map(|e| e.ostree.as_ref().unwrap().checksum.clone())
            .collect();
        assert_eq!(listed, checksums);
        assert_eq!(host.spec.image.as_ref().unwrap().image, built.last().unwrap().reference.trim_start_matches("ostree-unverified-image:oci:"));
        if n == 3 {
            let pinned: Vec<bool> = host.status.other_deployments.iter().map(|e| e.pinned).collect();
            assert_eq!(pinned, [false, false, true]);
        }
        let (_c, proxy) = machine.manager().await.unwrap();
        assert_eq!(proxy.deployments().await.unwrap().len(), checksums.len());
        assert_eq!(proxy.state().await.unwrap(), "idle");
        assert_eq!(proxy.active_job().await.unwrap().as_str(), "/");
        assert!(!proxy.reboot_required().await.unwrap());
    }
}

#[tokio::test]
async fn status_answers_while_another_process_holds_the_sysroot_lock() {
    let (sysroot, _) = sysroot_with(1).await;
    let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();
    let holder = sysroot.open().unwrap();
    holder.lock().unwrap();
    let started = Instant::now();
    let (_v, host) = status(&machine).await;
    assert_eq!(host.status.other_deployments.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(10));
    holder.unlock();
}

#[tokio::test]
async fn wrong_argument_types_and_unknown_options_are_invalid_argument() {
    let (sysroot, _) = sysroot_with(1).await;
    let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();
    let (conn, host) = machine.manager().await.unwrap();
    // A string where a{sv} belongs.
    let reply = conn
        .call_method(Some("org.hostd.Host1"), "/org/hostd/Host1", Some("org.hostd.Host1"), "Status", &("oops",))
        .await;
    let err = Error::from(reply.unwrap_err());
    assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("a{sv}")), "{err:?}");
    // An unknown key.
    let opts = HashMap::from([("frobnicate", Variant::Bool(true))]);
    let err = host.status(opts).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("frobnicate")), "{err:?}");
    // A known key of the wrong type on a mutating call.
    let opts = HashMap::from([("apply", Variant::from("yes"))]);
    let err = host.upgrade(opts).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("'apply'")), "{err:?}");
}

#[tokio::test]
async fn a_directory_that_is_not_a_sysroot_is_not_image_based() {
    let dir = tempfile::tempdir().unwrap();
    let machine = TestMachine::start(dir.path(), CONFIG).unwrap();
    let (_conn, host) = machine.manager().await.unwrap();
    let err = host.status(HashMap::new()).await.unwrap_err();
    assert!(matches!(err, Error::NotImageBased(_)), "{err:?}");
    let out = machine.hostctl(None, &["status", "--format", "humanreadable"]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotImageBased"));
}

#[tokio::test]
async fn hostd_exits_when_idle_and_the_next_call_activates_it_again() {
    let (sysroot, _) = sysroot_with(1).await;
    let machine = TestMachine::start(sysroot.path(), "[daemon]\nidle_exit_secs = 1\n").unwrap();
    let _ = status(&machine).await;
    let first_pid = machine.hostd_pid().expect("hostd runs after the first call");
    let deadline = Instant::now() + Duration::from_secs(15);
    while machine.hostd_running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!machine.hostd_running(), "hostd should exit after 1 s idle");
    let (_v, host) = status(&machine).await;
    assert_eq!(host.status.other_deployments.len(), 1);
    let second_pid = machine.hostd_pid().expect("re-activated");
    assert_ne!(first_pid, second_pid);
}

#[tokio::test]
async fn hostctl_status_prints_text_and_json() {
    let (sysroot, built) = sysroot_with(2).await;
    let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();
    let out = machine.hostctl(None, &["status", "--format", "humanreadable"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Offline sysroot"), "{text}");
    assert!(text.contains(&built[1].digest) && text.contains(&built[0].digest), "{text}");
    let default_at = text.find("Default image").unwrap();
    assert!(text[default_at..].find("Version: v2").is_some());
    let out = machine.hostctl(None, &["status", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    schema::validate("bootc-host-v1.schema.json", &value).unwrap();
    // Plain users may read status too.
    let out = machine.hostctl(Some(hostd_tests::machine::USER.1), &["status", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn status_follows_deployments_made_by_other_tools() {
    let (sysroot, _) = sysroot_with(1).await;
    let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();
    let (_v, host) = status(&machine).await;
    assert_eq!(host.status.other_deployments.len(), 1);
    // An installer (ostree-ext directly, not hostd) deploys v2 behind hostd's back.
    let builder = ImageBuilder::new(&sysroot.dir.path().join("images-2")).unwrap();
    let v2 = builder.build("v2", &["tools"], &BTreeMap::new()).await.unwrap();
    sysroot.deploy_image(&v2.reference).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_v, host) = status(&machine).await;
        let first = host.status.other_deployments[0].image.as_ref().unwrap();
        if first.image_digest == v2.digest {
            assert_eq!(host.status.other_deployments.len(), 2);
            break;
        }
        assert!(Instant::now() < deadline, "status did not pick up the new deployment");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn hostctl_exit_codes_tell_unreachable_daemon_apart() {
    let dir = tempfile::tempdir().unwrap();
    // No bus at all.
    let out = std::process::Command::new(hostd_tests::binary("hostctl"))
        .arg("status")
        .env("DBUS_SYSTEM_BUS_ADDRESS", format!("unix:path={}/none", dir.path().display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot talk to hostd"));
    // A bus where hostd is not installed: the activation file is removed.
    let machine = TestMachine::start(dir.path(), CONFIG).unwrap();
    machine.remove_activation().unwrap();
    let out = machine.hostctl(None, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Hint: hostd is not installed"), "{stderr}");
}

#[tokio::test]
async fn usr_overlay_is_refused_on_an_offline_sysroot_and_none_is_shown() {
    let (sysroot, _built) = sysroot_with(1).await;
    let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();
    let before = sysroot.deployment_checksums().unwrap();
    let out = machine.hostctl(None, &["--no-ask-password", "usr-overlay"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(7), "InvalidArgument's exit code: {said}");
    assert!(said.contains("is not the booted sysroot"), "{said}");
    // The option is checked before anything else, on the bus too.
    let (_conn, host) = machine.manager().await.unwrap();
    let options = HashMap::from([("persist", Variant::from("yes"))]);
    match host.usr_overlay(options).await {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("'persist' must be of type 'b'"), "{m}"),
        other => panic!("UsrOverlay with a string persist: {other:?}"),
    }
    let options = HashMap::from([("persist", Variant::from(true))]);
    match host.usr_overlay(options).await {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("is not the booted sysroot"), "{m}"),
        other => panic!("UsrOverlay on an offline sysroot: {other:?}"),
    }
    let (value, _) = status(&machine).await;
    assert_eq!(value["status"]["usrOverlay"], serde_json::Value::Null);
    assert_eq!(sysroot.deployment_checksums().unwrap(), before, "nothing was written");
}
