//! `hostctl etc-diff` on an offline sysroot: the default deployment's /etc
//! against its /usr/etc, after files were edited, deleted and added there.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use hostd_interface::etc_diff::{EtcChangeKind, EtcDiff, EtcFileType};
use hostd_tests::fixture::ImageBuilder;
use hostd_tests::machine::{TestMachine, ADMIN, USER};
use hostd_tests::offline::text;
use hostd_tests::repo_root;
use hostd_tests::sysroot::TestSysroot;

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";
const SECRET: &str = "not-for-the-caller-to-see";

fn admin(machine: &TestMachine, args: &[&str]) -> String {
    let out = machine.hostctl(Some(ADMIN.1), args);
    assert!(out.status.success(), "hostctl {args:?}: {}\n{}", text(&out), machine.log());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn edited_deleted_and_added_files_are_listed_with_their_kinds_and_nothing_else() {
    let sysroot = TestSysroot::new("256m").unwrap();
    let builder = ImageBuilder::new(&sysroot.dir.path().join("images")).unwrap();
    let defaults = BTreeMap::from([
        ("usr/etc/motd".to_string(), "welcome\n".to_string()),
        ("usr/etc/issue".to_string(), "hostd fixture\n".to_string()),
    ]);
    let v1 = builder.build("v1", &[], &defaults).await.unwrap();
    sysroot.deploy_image(&v1.reference).await.unwrap();
    let checksum = sysroot.deployment_checksums().unwrap().remove(0);
    let deployment = format!("{checksum}.0");
    let etc = sysroot.path().join("ostree/deploy/default/deploy").join(&deployment).join("etc");
    let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();
    let rules = std::fs::read_to_string(repo_root().join("polkit-rules/50-hostd.rules")).unwrap();
    machine.add_polkit_rule("50-hostd.rules", &rules).unwrap();

    let untouched = admin(&machine, &["etc-diff"]);
    assert_eq!(untouched, format!("/etc of {deployment} matches the image's defaults.\n"));

    std::fs::write(etc.join("hostd-fixture.conf"), format!("setting={SECRET}\n")).unwrap();
    std::fs::remove_file(etc.join("motd")).unwrap();
    std::fs::write(etc.join("added.conf"), format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(etc.join("added.conf"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let json = admin(&machine, &["etc-diff", "--json"]);
    assert!(!json.contains(SECRET), "contents are never sent: {json}");
    let diff: EtcDiff = serde_json::from_str(&json).unwrap();
    assert_eq!(diff.deployment, deployment);
    let listed: Vec<_> = diff.changes.iter().map(|c| (c.path.as_str(), c.kind, c.file_type, c.content_changed)).collect();
    assert_eq!(
        listed,
        [
            ("/etc/added.conf", EtcChangeKind::Added, EtcFileType::File, false),
            ("/etc/hostd-fixture.conf", EtcChangeKind::Modified, EtcFileType::File, true),
            ("/etc/motd", EtcChangeKind::Removed, EtcFileType::File, false),
        ]
    );
    assert_eq!(diff.changes[0].mode, "0600");
    assert_eq!(diff.changes[1].previous_mode, None, "only the content of the edited file changed");

    assert_eq!(
        admin(&machine, &["etc-diff"]),
        "A  /etc/added.conf  (file 0600)\nM  /etc/hostd-fixture.conf  (content)\nD  /etc/motd  (file 0644)\n"
    );

    // A mode change alone is a change.
    std::fs::set_permissions(etc.join("issue"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let shown = admin(&machine, &["etc-diff"]);
    assert!(shown.contains("M  /etc/issue  (mode 0644 -> 0640)\n"), "{shown}");

    // A plain user (not at the machine's seat) is not told the names.
    let out = machine.hostctl(Some(USER.1), &["--no-ask-password", "etc-diff"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("org.hostd.host1.etc-diff"), "{}", text(&out));
    assert!(!text(&out).contains("added.conf"), "{}", text(&out));

    // Nothing is staged on a sysroot that is not booted.
    let out = machine.hostctl(Some(ADMIN.1), &["etc-diff", "--deployment", "staged"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(text(&out).contains("is not the booted sysroot"), "{}", text(&out));
}

/// Names that would forge or blur a line, and a tree deeper than any thread
/// stack would hold by recursion: each name is listed exactly, once, on one
/// line, and the deep tree gets an answer while hostd stays up.
#[tokio::test]
async fn odd_names_are_quoted_and_a_tree_of_any_depth_is_answered() {
    use std::os::unix::ffi::OsStrExt;
    let sysroot = TestSysroot::new("256m").unwrap();
    let builder = ImageBuilder::new(&sysroot.dir.path().join("images")).unwrap();
    let defaults = BTreeMap::from([("usr/etc/issue".to_string(), "hostd fixture\n".to_string())]);
    let v1 = builder.build("v1", &[], &defaults).await.unwrap();
    sysroot.deploy_image(&v1.reference).await.unwrap();
    let checksum = sysroot.deployment_checksums().unwrap().remove(0);
    let root = sysroot.path().join("ostree/deploy/default/deploy").join(format!("{checksum}.0"));
    let etc = root.join("etc");
    std::fs::write(etc.join("a\nM  forged  (content)"), "x").unwrap();
    for bytes in [&b"bad\xffname"[..], &b"bad\xfename"[..]] {
        std::fs::write(etc.join(std::ffi::OsStr::from_bytes(bytes)), "x").unwrap();
    }
    // The same deep tree in the image's defaults and in /etc: it is walked.
    for base in [root.join("usr/etc"), etc.clone()] {
        let deep: std::path::PathBuf = std::iter::once(base.join("deep")).chain((0..700).map(|_| "d".into())).collect();
        std::fs::create_dir_all(&deep).unwrap();
    }
    let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();
    let rules = std::fs::read_to_string(repo_root().join("polkit-rules/50-hostd.rules")).unwrap();
    machine.add_polkit_rule("50-hostd.rules", &rules).unwrap();

    let out = machine.hostctl(Some(ADMIN.1), &["etc-diff"]);
    assert!(machine.hostd_running(), "hostd is still up: {}\n{}", text(&out), machine.log());
    assert!(out.status.success(), "{}\n{}", text(&out), machine.log());
    let shown = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(
        lines,
        [
            "A  /etc/a\\nM  forged  (content)  (file 0644)",
            "A  /etc/bad\\xfename  (file 0644)",
            "A  /etc/bad\\xffname  (file 0644)",
        ],
        "{shown}"
    );
}
