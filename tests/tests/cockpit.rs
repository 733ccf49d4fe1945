//! hostd's Cockpit page (client/cockpit/) in a real Cockpit and a real
//! Chromium: cockpit-ws and cockpit-bridge from Debian serve it against the
//! test machine's bus and polkitd, and tests/cockpit/page.py clicks through
//! it headless. Each scenario leaves a screenshot and the page's text in
//! target/cockpit-artifacts/<test>/ when it fails (see tests/src/cockpit.rs).
//!
//! The host is an offline sysroot with v1 deployed from a registry reached
//! through a rate-limited link (so a download takes seconds and its
//! progress bar can be watched); v1 and v2 carry dpkg status files, v2 adds
//! `hello` and upgrades `libfoo`, for the package diff.

use std::collections::{BTreeMap, HashMap};

use hostd_interface::manager::UpdatePolicy;
use hostd_tests::cockpit::CockpitWs;
use hostd_tests::fixture::ImageBuilder;
use hostd_tests::jobs::run_job;
use hostd_tests::machine::{grant, TestMachine, CHECKER, USER};
use hostd_tests::offline::host_with_v1;
use hostd_tests::registry::{SlowLink, TestRegistry};
use hostd_tests::sysroot::TestSysroot;
use zbus::Variant;

const CONFIG: &str = "[daemon]\nidle_exit_secs = 300\n";

/// A dpkg status file listing `packages` (name, version).
fn dpkg_status(packages: &[(&str, &str)]) -> BTreeMap<String, String> {
    let text: String = packages
        .iter()
        .map(|(name, version)| {
            format!("Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\n\n")
        })
        .collect();
    // Where ostree-ext keeps an image's /var/lib/dpkg, which Diff reads.
    BTreeMap::from([("usr/share/factory/var/lib/dpkg/status".to_string(), text)])
}

const V1_PACKAGES: &[(&str, &str)] = &[("base-files", "12.4"), ("libfoo", "1.0-1")];
const V2_PACKAGES: &[(&str, &str)] = &[("base-files", "12.4"), ("hello", "2.10-3"), ("libfoo", "1.1-1")];

/// 1 MiB/s: the 4 MiB of changed layers take about four seconds.
const LINK_RATE: usize = 1 << 20;

#[tokio::test]
async fn the_page_checks_downloads_updates_rolls_back_and_follows_jobs_and_errors() {
    let sysroot = TestSysroot::new("512m").unwrap();
    let mut builder = ImageBuilder::new(&sysroot.dir.path().join("images")).unwrap();
    builder.sizes.extend([("tools", 2 << 20), ("data", 2 << 20)]);
    let v1 = builder.build("v1", &[], &dpkg_status(V1_PACKAGES)).await.unwrap();
    sysroot.deploy_image(&v1.reference).await.unwrap();
    let mut registry = TestRegistry::start().unwrap();
    registry.push(&builder.oci_name(), "hostd/os:stable").unwrap();
    let link = SlowLink::start(registry.port, LINK_RATE).unwrap();
    let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&link.host()).unwrap();
    let conn = machine.connect().await.unwrap();
    let image = format!("{}/hostd/os:stable", link.host());
    let no_options: HashMap<&str, Variant<'_>> = HashMap::new();
    let switch = run_job(&conn, "Switch", &(image.as_str(), no_options)).await.unwrap();
    assert_eq!(switch.state, "succeeded", "{switch:?}");
    builder.build("v2", &["tools", "data"], &dpkg_status(V2_PACKAGES)).await.unwrap();
    registry.push(&builder.oci_name(), "hostd/os:stable").unwrap();

    // As root, as with Cockpit's administrative access on.
    let ws = CockpitWs::start(&machine, None, "lifecycle").unwrap();
    for scenario in ["booted", "check", "download", "discard", "update", "rollback", "pin-and-clean-up"] {
        ws.scenario(&machine, scenario);
    }
    // A job started elsewhere: hostctl downloads v3 while the page watches.
    builder.build("v3", &["tools", "data"], &dpkg_status(V2_PACKAGES)).await.unwrap();
    registry.push(&builder.oci_name(), "hostd/os:stable").unwrap();
    ws.scenario(&machine, "job-elsewhere");
    // The registry dies: Check fails with Network, shown as a sentence.
    registry.kill();
    ws.scenario(&machine, "dead-registry");
}

#[tokio::test]
async fn the_page_changes_the_policy_for_a_user_allowed_to_and_says_why_others_cannot() {
    let h = host_with_v1("256m", &[]).await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    machine.add_polkit_rule("50-configure.rules", &grant("configure", USER.0)).unwrap();

    let allowed = CockpitWs::start(&machine, Some(USER.1), "configure").unwrap();
    allowed.scenario(&machine, "configure");
    let (_conn, manager) = machine.manager().await.unwrap();
    assert_eq!(manager.automatic_update_policy().await.unwrap(), UpdatePolicy::Check, "the page's choice is in force");
    allowed.scenario(&machine, "dark");
    drop(allowed);

    // CHECKER has no rule for configure (nor an active session).
    let plain = CockpitWs::start(&machine, Some(CHECKER.1), "plain-user").unwrap();
    plain.scenario(&machine, "plain-user");
    assert_eq!(manager.automatic_update_policy().await.unwrap(), UpdatePolicy::Check, "nothing changed");
    drop(plain);

    // hostd uninstalled: its name cannot be activated any more.
    machine.remove_activation().unwrap();
    machine.kill_hostd();
    let ws = CockpitWs::start(&machine, None, "not-installed").unwrap();
    ws.scenario(&machine, "not-installed");
    drop(ws);
    drop(machine);

    // A directory that is no ostree sysroot: Status is NotImageBased.
    let plain = tempfile::tempdir().unwrap();
    let machine = TestMachine::start(plain.path(), CONFIG).unwrap();
    let ws = CockpitWs::start(&machine, None, "not-image-based").unwrap();
    ws.scenario(&machine, "not-image-based");
}
