//! `hostctl edit` on an offline sysroot: a spec with a new image switches,
//! `bootOrder: rollback` rolls back, the same spec again changes nothing, a
//! document with a status section is refused, each change needs its own
//! authorization, and without `--filename` the spec goes through `$EDITOR`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hostd_interface::edit::spec_document;
use hostd_interface::host::{BootOrder, Transport};
use hostd_tests::fixture::ImageBuilder;
use hostd_tests::machine::{TestMachine, ADMIN, USER};
use hostd_tests::offline::{deployed, host_with_v1, status, status_json, text, vd};
use hostd_tests::{binary, repo_root};

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

/// A directory every test user can read, for documents and the editor.
struct Shared(tempfile::TempDir);

impl Shared {
    fn new() -> Shared {
        let dir = tempfile::Builder::new().prefix("hostd-edit-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Shared(dir)
    }

    fn write(&self, name: &str, content: &str, mode: u32) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }
}

fn edit(machine: &TestMachine, uid: u32, file: &Path) -> std::process::Output {
    machine.hostctl(Some(uid), &["--no-ask-password", "edit", "--filename", file.to_str().unwrap()])
}

fn edit_with_editor(machine: &TestMachine, editor: &Path) -> std::process::Output {
    machine
        .command(binary("hostctl"), Some(ADMIN.1))
        .args(["--no-ask-password", "edit"])
        .env("EDITOR", editor)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test]
async fn an_edited_spec_switches_rolls_back_or_changes_nothing() {
    let h = host_with_v1("512m", &[]).await;
    let other = ImageBuilder::new(&h.sysroot.dir.path().join("other-images")).unwrap();
    let v2 = other.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let rules = std::fs::read_to_string(repo_root().join("polkit-rules/50-hostd.rules")).unwrap();
    machine.add_polkit_rule("50-hostd.rules", &rules).unwrap();
    let conn = machine.connect().await.unwrap();
    let shared = Shared::new();

    let mut host = status(&conn).await;
    let v1_image = host.spec.image.clone().unwrap();
    assert_eq!(v1_image.transport, Transport::Oci);
    let mut wanted = host.clone();
    wanted.spec.image.as_mut().unwrap().image = other.oci_name();
    let switch_doc = shared.write("switch.yaml", &spec_document(&wanted), 0o644);

    // Each change needs its own action: a plain user may do neither.
    let out = edit(&machine, USER.1, &switch_doc);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("org.hostd.host1.switch"), "{}", text(&out));
    host.spec.boot_order = BootOrder::Rollback;
    let rollback_doc = shared.write("rollback.yaml", &spec_document(&host), 0o644);
    let out = edit(&machine, USER.1, &rollback_doc);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("org.hostd.host1.rollback"), "{}", text(&out));
    assert_eq!(deployed(&conn).await, [vd(&h.v1)]);

    // A new image: switched to and tracked.
    let out = edit(&machine, ADMIN.1, &switch_doc);
    assert!(out.status.success(), "{}\n{}", text(&out), machine.log());
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&h.v1)]);
    assert_eq!(status(&conn).await.spec.image.unwrap().image, other.oci_name());

    // The same spec again: nothing to do, nothing done.
    let before = h.sysroot.deployment_checksums().unwrap();
    let out = edit(&machine, ADMIN.1, &switch_doc);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already matches the spec"), "{}", text(&out));
    assert_eq!(h.sysroot.deployment_checksums().unwrap(), before);

    // The same spec on standard input (`--filename -`), as JSON.
    let same = status(&conn).await;
    let json = serde_json::json!({"apiVersion": same.api_version, "kind": same.kind, "spec": same.spec}).to_string();
    let mut child = machine
        .command(binary("hostctl"), Some(ADMIN.1))
        .args(["--no-ask-password", "edit", "--filename", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), json.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already matches the spec"), "{json}: {}", text(&out));
    assert_eq!(h.sysroot.deployment_checksums().unwrap(), before);

    // A whole Host document, status included, is refused and changes nothing.
    let mut full: serde_json::Value = serde_json::from_str(&status_json(&conn).await).unwrap();
    full["spec"]["image"]["image"] = v1_image.image.clone().into();
    let with_status = shared.write("with-status.json", &full.to_string(), 0o644);
    let out = edit(&machine, ADMIN.1, &with_status);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(text(&out).contains("status section"), "{}", text(&out));
    assert_eq!(h.sysroot.deployment_checksums().unwrap(), before);

    // bootOrder: rollback rolls back.
    let mut now = status(&conn).await;
    now.spec.boot_order = BootOrder::Rollback;
    let doc = shared.write("now-rollback.yaml", &spec_document(&now), 0o644);
    let out = edit(&machine, ADMIN.1, &doc);
    assert!(out.status.success(), "{}\n{}", text(&out), machine.log());
    assert_eq!(deployed(&conn).await, [vd(&h.v1), vd(&v2)]);

    // Through $EDITOR: an editor that changes nothing changes nothing, one
    // that fails changes nothing, one that sets bootOrder rolls back.
    let before = h.sysroot.deployment_checksums().unwrap();
    let out = edit_with_editor(&machine, &shared.write("keep.sh", "#!/bin/sh\nexit 0\n", 0o755));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not changed"), "{}", text(&out));
    let out = edit_with_editor(
        &machine,
        &shared.write("fail.sh", "#!/bin/sh\nsed -i 's/bootOrder: default/bootOrder: rollback/' \"$1\"\nexit 3\n", 0o755),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(h.sysroot.deployment_checksums().unwrap(), before);
    let editor = shared.write(
        "editor.sh",
        "#!/bin/sh\ngrep -q '^kind: BootcHost$' \"$1\" || exit 9\nsed -i 's/bootOrder: default/bootOrder: rollback/' \"$1\"\n",
        0o755,
    );
    let out = edit_with_editor(&machine, &editor);
    assert!(out.status.success(), "{}\n{}", text(&out), machine.log());
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&h.v1)]);
    h.sysroot.fsck().unwrap();
}
