//! `hostctl diff` on an offline sysroot: the test OS images (Debian, with
//! dpkg's own status files; v2 installs one more package than v1) deployed
//! and downloaded, and a fixture image whose status file is malformed.

use std::collections::BTreeMap;
use std::process::Output;

use hostd_interface::diff::{Diff, PackageChangeKind, PackageDatabase};
use hostd_tests::booted::image::{test_os_images, RELEASE_KARG, V2_PACKAGE};
use hostd_tests::booted::{cache, oci};
use hostd_tests::fixture::ImageBuilder;
use hostd_tests::machine::{TestMachine, USER};
use hostd_tests::offline::text;
use hostd_tests::sysroot::TestSysroot;

const CONFIG: &str = "[daemon]\nidle_exit_secs = 300\n";

fn ok(machine: &TestMachine, user: Option<u32>, args: &[&str]) -> String {
    let out = machine.hostctl(user, args);
    assert!(out.status.success(), "hostctl {args:?}: {}\n{}", text(&out), machine.log());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn diff(machine: &TestMachine, args: &[&str]) -> Diff {
    let mut all = vec!["diff", "--json"];
    all.extend_from_slice(args);
    // Package lists are no secret: a plain user may ask, as for Status.
    serde_json::from_str(&ok(machine, Some(USER.1), &all)).unwrap()
}

fn exit_code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// (kind, name) of each package change.
fn packages(d: &Diff) -> Vec<(PackageChangeKind, String)> {
    d.packages.as_ref().expect("packages compared").iter().map(|c| (c.kind, c.name.clone())).collect()
}

#[tokio::test]
async fn diff_between_the_test_os_images_lists_exactly_the_package_v2_adds() {
    // Built (or taken from the cache) off the test's runtime: the build runs one of its own.
    let images = tokio::task::spawn_blocking(test_os_images).await.unwrap().unwrap();
    // A copy of the layout whose tag `stable` moves from v1 to v2, as a
    // registry's tag would.
    let scratch = cache::scratch_dir("diff").unwrap();
    let layout = scratch.path().join("oci");
    oci::copy_layout(&images.oci_dir, &layout).unwrap();
    oci::retag(&layout, "v1", "stable").unwrap();
    let sysroot = TestSysroot::new("3g").unwrap();
    sysroot.deploy_image(&format!("ostree-unverified-image:oci:{}:stable", layout.display())).await.unwrap();
    let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();

    // Nothing staged or downloaded: the default has nothing to compare.
    let out = machine.hostctl(Some(USER.1), &["diff"]);
    assert_eq!(exit_code(&out), Some(7), "{}", text(&out));
    assert!(text(&out).contains("nothing is staged"), "{}", text(&out));

    // The same deployment on both sides lists nothing.
    let same = diff(&machine, &["booted", "0"]);
    assert_eq!(same.from.package_database, PackageDatabase::Dpkg);
    assert!(same.from.packages.is_some_and(|n| n > 100), "the whole of v1's status file is read: {:?}", same.from.packages);
    assert!(same.is_empty(), "{same:?}");
    assert_eq!(same.packages, Some(vec![]));
    let shown = ok(&machine, Some(USER.1), &["diff", "booted", "0"]);
    assert!(shown.contains("Packages: no changes"), "{shown}");

    // Downloaded, not deployed: read from the image's commit.
    oci::retag(&layout, "v2", "stable").unwrap();
    ok(&machine, None, &["upgrade", "--quiet", "--download-only"]);
    let cached = diff(&machine, &[]);
    assert_eq!(cached.to.target, "cached");
    assert_eq!(cached.to.deployment, None, "not deployed");
    assert_eq!(cached.to.digest.as_deref(), Some(images.v2.digest.as_str()));
    assert_eq!(packages(&cached), [(PackageChangeKind::Added, V2_PACKAGE.to_string())]);
    let added = &cached.packages.as_ref().unwrap()[0];
    assert_eq!((added.from.as_deref(), added.architecture.as_str()), (None, "amd64"));
    assert!(added.to.as_deref().is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit())), "{added:?}");
    assert_eq!(cached.to.packages, cached.from.packages.map(|n| n + 1));
    assert!(!cached.kernel_changed, "v1 and v2 have the same kernel");
    // The installer gave v1 its own arguments, not v1's kargs.d, so v2's
    // kargs.d only adds; the prediction is checked against the real
    // deployment below.
    assert_eq!(cached.kargs.removed, Vec::<String>::new());
    assert_eq!(cached.kargs.added, [format!("{RELEASE_KARG}=v2")]);
    let text_out = ok(&machine, Some(USER.1), &["diff", "booted", "cached"]);
    assert!(text_out.contains(&format!("Added:\n  + {V2_PACKAGE} ")), "{text_out}");
    assert!(!text_out.contains("Removed:") && !text_out.contains("Upgraded:"), "{text_out}");

    // Deployed: the same change between the two deployments, and its
    // reverse the other way round.
    ok(&machine, None, &["stage", "--quiet"]);
    let deployed = diff(&machine, &["1", "0"]);
    assert!(deployed.to.deployment.is_some());
    assert_eq!(deployed.to.version.as_deref(), Some("v2"));
    assert_eq!(deployed.to.labels.get("org.opencontainers.image.version").map(String::as_str), Some("v2"));
    assert_eq!(packages(&deployed), [(PackageChangeKind::Added, V2_PACKAGE.to_string())]);
    assert_eq!(deployed.kargs, cached.kargs, "the downloaded update's kargs were predicted right");
    assert_eq!(deployed.to.kargs, cached.to.kargs);
    // The same labels in the Deployments property, for a GUI that lists
    // deployments without asking for a comparison.
    let conn = machine.connect().await.unwrap();
    let entries = hostd_interface::proxy::Host1Proxy::new(&conn).await.unwrap().deployments().await.unwrap();
    let labels = entries[0].labels.clone().unwrap_or_default();
    assert_eq!(labels.get("org.opencontainers.image.version").map(String::as_str), Some("v2"), "{entries:?}");
    let back = diff(&machine, &["0", "1"]);
    assert_eq!(packages(&back), [(PackageChangeKind::Removed, V2_PACKAGE.to_string())]);
    assert!(diff(&machine, &["0", "0"]).is_empty());

    // Strictly parsed arguments: a named error, nothing else.
    for bad in [&["01"][..], &["booted", "9"], &["Booted"], &["staged"]] {
        let mut args = vec!["diff"];
        args.extend_from_slice(bad);
        let out = machine.hostctl(Some(USER.1), &args);
        assert_eq!(exit_code(&out), Some(7), "{bad:?}: {}", text(&out));
        assert!(text(&out).contains("InvalidArgument"), "{bad:?}: {}", text(&out));
    }
}

#[tokio::test]
async fn a_malformed_status_file_is_a_named_error_and_a_tree_without_one_is_not_compared() {
    let sysroot = TestSysroot::new("256m").unwrap();
    let builder = ImageBuilder::new(&sysroot.dir.path().join("images")).unwrap();
    let v1 = builder.build("v1", &[], &BTreeMap::new()).await.unwrap();
    sysroot.deploy_image(&v1.reference).await.unwrap();
    let status = b"Package: hello\nStatus: install ok installed\nnot a field\n".to_vec();
    let v2 = builder.derive(&v1, "v2", &[("var/lib/dpkg/status", status)]).unwrap();
    sysroot.deploy_image(&v2.reference).await.unwrap();
    let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();

    let out = machine.hostctl(Some(USER.1), &["diff", "1", "0"]);
    assert_eq!(exit_code(&out), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("MalformedPackageDatabase"), "{said}");
    assert!(said.contains("/usr/share/factory/var/lib/dpkg/status") && said.contains("line 3"), "{said}");

    // The deployment of the fixture's v1 has no package database: kernel
    // and kargs are still compared, packages are not, and the text says
    // why. (Which index it has is libostree's business: the other one is
    // v2, malformed.)
    let mut seen = Vec::new();
    for index in ["0", "1"] {
        let out = machine.hostctl(Some(USER.1), &["diff", index, index]);
        if text(&out).contains("MalformedPackageDatabase") {
            seen.push("malformed");
            continue;
        }
        let shown = ok(&machine, Some(USER.1), &["diff", index, index]);
        assert!(shown.contains(&format!("Packages: not compared ({index} has no package database hostd knows)")), "{shown}");
        let none = diff(&machine, &[index, index]);
        assert_eq!(none.from.package_database, PackageDatabase::None);
        assert_eq!(none.packages, None);
        seen.push("not compared");
    }
    seen.sort();
    assert_eq!(seen, ["malformed", "not compared"]);
    assert!(machine.hostd_running(), "hostd survived the malformed file:\n{}", machine.log());
}
