//! `hostctl diff` on an offline sysroot: the test OS images (Debian, with
//! dpkg's own status files; v2 installs one more package than v1) deployed
//! and downloaded, a fixture image whose status file is malformed, and
//! fixture images with rpm databases made by Debian's rpm and rpmbuild.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use hostd_interface::diff::{Diff, PackageChangeKind, PackageDatabase};
use hostd_tests::booted::image::{test_os_images, RELEASE_KARG, V2_PACKAGE};
use hostd_tests::booted::{cache, oci};
use hostd_tests::fixture::{ImageBuilder, LayerFile};
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

/// `cmd`, which must succeed.
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
}

/// An rpm database (rpm 4.18's sqlite `rpmdb.sqlite`) holding `packages`
/// (name, epoch, version, release), each a noarch package built by
/// rpmbuild from a spec written here and recorded with `rpm -i --justdb`.
fn rpm_database(work: &Path, db: &str, packages: &[(&str, Option<u32>, &str, &str)]) -> Vec<u8> {
    let top = work.join("rpmbuild");
    let mut files = Vec::new();
    for (name, epoch, version, release) in packages {
        let spec = work.join(format!("{name}-{version}-{release}.spec"));
        let epoch = epoch.map(|e| format!("Epoch: {e}\n")).unwrap_or_default();
        std::fs::write(
            &spec,
            format!(
                "Name: {name}\nVersion: {version}\nRelease: {release}\n{epoch}Summary: diff test package\n\
                 License: MIT\nBuildArch: noarch\n%description\nA package of hostd's diff test.\n%files\n"
            ),
        )
        .unwrap();
        run(Command::new("rpmbuild")
            .env("HOME", work)
            .args(["--quiet", "-bb", "--define"])
            .arg(format!("_topdir {}", top.display()))
            .arg(&spec));
        let evr = version.to_string() + "-" + release;
        files.push(top.join(format!("RPMS/noarch/{name}-{evr}.noarch.rpm")));
    }
    let dbpath = work.join(db);
    std::fs::create_dir_all(&dbpath).unwrap();
    run(Command::new("rpm").env("HOME", work).arg("--dbpath").arg(&dbpath).arg("--initdb"));
    run(Command::new("rpm")
        .env("HOME", work)
        .arg("--dbpath")
        .arg(&dbpath)
        .args(["-i", "--justdb", "--nodeps", "--noscripts"])
        .args(&files));
    // rpm checkpoints its write-ahead log when it closes the database.
    let wal = dbpath.join("rpmdb.sqlite-wal");
    assert!(std::fs::metadata(&wal).map_or(true, |m| m.len() == 0), "{} is not empty", wal.display());
    std::fs::read(dbpath.join("rpmdb.sqlite")).unwrap()
}

#[tokio::test]
async fn rpm_databases_are_compared_by_rpms_rules_and_a_malformed_one_is_a_named_error() {
    let sysroot = TestSysroot::new("512m").unwrap();
    let work = sysroot.dir.path().join("rpm");
    std::fs::create_dir_all(&work).unwrap();
    let r1 = rpm_database(
        &work,
        "r1",
        &[
            ("t-same", None, "1.0", "1"),
            ("t-gone", None, "1.0", "1"),
            ("t-up", None, "1.0", "1.fc41"),
            ("t-epoch", Some(2), "1.0", "1"),
            ("t-epochup", None, "5.0", "1"),
            ("t-tilde", None, "2.0", "1"),
            ("t-caret", None, "1.0", "1"),
        ],
    );
    let r2 = rpm_database(
        &work,
        "r2",
        &[
            ("t-same", None, "1.0", "1"),
            // Releases compare as numbers: 10 is after 9.
            ("t-up", None, "1.0", "10.fc41"),
            // No epoch is epoch 0: below epoch 2 whatever the version.
            ("t-epoch", None, "9.0", "1"),
            ("t-epochup", Some(1), "0.5", "1"),
            // A pre-release sorts before its release.
            ("t-tilde", None, "2.0~rc1", "1"),
            // A snapshot after a release sorts after it.
            ("t-caret", None, "1.0^git1", "1"),
            ("t-new", None, "0.1", "1"),
        ],
    );
    let builder = ImageBuilder::new(&sysroot.dir.path().join("images")).unwrap();
    let base = builder.build("v1", &[], &BTreeMap::new()).await.unwrap();
    const DB: &str = "usr/lib/sysimage/rpm/rpmdb.sqlite";
    // An installer keeps two deployments: two images at a time.
    let deploy = |pair: [(&'static str, &'static str, Vec<u8>); 2]| {
        let (sysroot, builder, base) = (&sysroot, &builder, &base);
        async move {
            for (version, path, content) in pair {
                let image = builder.derive_files(base, version, &[LayerFile::plain(path, &content)]).unwrap();
                sysroot.deploy_image(&image.reference).await.unwrap();
            }
            let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();
            // hostd's own TMPDIR, as its unit's PrivateTmp gives it one:
            // rpm's scratch directories go there, and must be gone after
            // each call.
            let tmp = tempfile::Builder::new().prefix("hostd-diff-tmp-").tempdir_in("/tmp").unwrap();
            std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            machine.set_hostd_env(&[("TMPDIR", tmp.path().display().to_string())]).unwrap();
            // Which index each image has is libostree's business: ask each.
            let mut index: BTreeMap<String, String> = BTreeMap::new();
            for i in ["0", "1"] {
                let out = machine.hostctl(Some(USER.1), &["diff", "--json", i, i]);
                if text(&out).contains("MalformedPackageDatabase") {
                    index.insert("bad".into(), i.into());
                    continue;
                }
                let d: Diff = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
                index.insert(d.from.version.clone().unwrap(), i.into());
            }
            (machine, tmp, index)
        }
    };
    let (machine, tmp, index) = deploy([("r1", DB, r1), ("r2", DB, r2)]).await;
    let (r1, r2) = (&index["r1"], &index["r2"]);

    // The same database on both sides lists nothing.
    let same = diff(&machine, &[r1, r1]);
    assert_eq!(same.from.package_database, PackageDatabase::Rpm);
    assert_eq!(same.from.packages, Some(7));
    assert_eq!(same.packages, Some(vec![]));
    assert!(same.is_empty(), "{same:?}");
    assert!(ok(&machine, Some(USER.1), &["diff", r1, r1]).contains("Packages: no changes"));

    // Exactly the packages that differ, ordered by rpm's rules.
    let changed = diff(&machine, &[r1, r2]);
    assert_eq!(changed.to.packages, Some(7));
    let shown: Vec<String> = changed
        .packages
        .as_ref()
        .expect("packages compared")
        .iter()
        .map(|c| format!("{} {}.{} {:?} {:?}", c.kind, c.name, c.architecture, c.from.as_deref(), c.to.as_deref()))
        .collect();
    assert_eq!(
        shown,
        [
            "upgraded t-caret.noarch Some(\"1.0-1\") Some(\"1.0^git1-1\")",
            "downgraded t-epoch.noarch Some(\"2:1.0-1\") Some(\"9.0-1\")",
            "upgraded t-epochup.noarch Some(\"5.0-1\") Some(\"1:0.5-1\")",
            "removed t-gone.noarch Some(\"1.0-1\") None",
            "added t-new.noarch None Some(\"0.1-1\")",
            "downgraded t-tilde.noarch Some(\"2.0-1\") Some(\"2.0~rc1-1\")",
            "upgraded t-up.noarch Some(\"1.0-1.fc41\") Some(\"1.0-10.fc41\")",
        ]
    );
    let back = diff(&machine, &[r2, r1]);
    let kinds: Vec<_> = packages(&back).into_iter().map(|(k, _)| k).collect();
    use PackageChangeKind::{Added, Downgraded, Removed, Upgraded};
    assert_eq!(kinds, [Downgraded, Upgraded, Downgraded, Added, Removed, Upgraded, Downgraded]);
    let shown = ok(&machine, Some(USER.1), &["diff", r1, r2]);
    assert!(shown.contains("Downgraded:\n  ↓ t-epoch 2:1.0-1 -> 9.0-1\n"), "{shown}");
    assert!(shown.contains("Added:\n  + t-new 0.1-1\n"), "{shown}");

    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "{left:?}");
    drop(machine);

    let (machine, tmp, index) = deploy([
        ("bad", DB, b"SQLite format 3\0 but not a database".to_vec()),
        // rpm before 4.16: Berkeley DB, not read.
        ("bdb", "usr/share/rpm/Packages", b"\0\x06\x15\x61".to_vec()),
    ])
    .await;
    let (bad, bdb) = (&index["bad"], &index["bdb"]);
    // A database rpm cannot read: a named error naming the directory.
    let out = machine.hostctl(Some(USER.1), &["diff", bdb, bad]);
    assert_eq!(exit_code(&out), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("MalformedPackageDatabase") && said.contains("/usr/lib/sysimage/rpm of commit"), "{said}");

    // An older database is recognized, not compared.
    let old = diff(&machine, &[bdb, bdb]);
    assert_eq!((old.from.package_database, old.from.packages, old.packages), (PackageDatabase::Rpm, None, None));
    let shown = ok(&machine, Some(USER.1), &["diff", bdb, bdb]);
    assert!(shown.contains("older than rpm 4.16's sqlite one"), "{shown}");

    // rpm ran in scratch directories that are gone again.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(machine.hostd_running(), "{}", machine.log());
}
