//! Kernel arguments from the images' `/usr/lib/bootc/kargs.d` on offline
//! sysroots, through `hostctl`: the difference between the old and the new
//! image's set is applied to the boot entry the new deployment inherits,
//! arguments the admin set or removed stay as the admin has them, and a
//! malformed file refuses the image. The boot entry's `options` line is what
//! a bootloader would hand the kernel; each test reads it.
//!
//! The installer (`TestSysroot::deploy_image`) writes `rw console=ttyS0`.

use std::collections::BTreeMap;
use std::process::Command;

use hostd_tests::booted::bls;
use hostd_tests::fixture::{BuiltImage, ImageBuilder};
use hostd_tests::machine::TestMachine;
use hostd_tests::offline::{deployed, host_with_v1, text, vd, OfflineHost};
use hostd_tests::run;

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";
const KARGS_D: &str = "usr/lib/bootc/kargs.d";

/// The image k1: a flag, a key=value and a quoted value with spaces.
const K1: &str = "kargs = [\"quiet\", \"a=1\", \"dyndbg=\\\"file foo.c +p\\\"\"]\n";
/// k2: only `a=2`.
const K2: &str = "kargs = [\"a=2\"]\n";

/// `files` (name under kargs.d → content) as the `extra` files of a build.
fn kargs_d(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files.iter().map(|(name, content)| (format!("{KARGS_D}/{name}"), content.to_string())).collect()
}

/// The default boot entry's options, with the `ostree=` argument (which
/// names a deployment) written `ostree=…`.
fn options(h: &OfflineHost) -> String {
    let entry = bls::default_entry(h.sysroot.path()).unwrap();
    let ostree = entry.options.split_whitespace().find(|a| a.starts_with("ostree=")).expect("an ostree= argument");
    entry.options.replace(ostree, "ostree=…")
}

/// Run hostctl as root and insist it succeeds; its stdout.
fn hostctl(machine: &TestMachine, args: &[&str]) -> String {
    let out = machine.hostctl(None, args);
    assert!(out.status.success(), "hostctl {args:?}: {}\n{}", text(&out), machine.log());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A second image, in its own OCI directory, to switch to.
async fn other_image(h: &OfflineHost, version: &str, files: &[(&str, &str)]) -> (ImageBuilder, BuiltImage) {
    let builder = ImageBuilder::new(&h.sysroot.dir.path().join("other-images")).unwrap();
    let built = builder.build(version, &["data"], &kargs_d(files)).await.unwrap();
    (builder, built)
}

/// `ostree admin instutil set-kargs` on the sysroot, as an admin changes the
/// arguments of the current deployment by hand (ostree 2022.7 has no other
/// command for it).
fn set_kargs(h: &OfflineHost, args: &[&str]) {
    run(Command::new("ostree")
        .args(["admin", "instutil", "set-kargs"])
        .arg(format!("--sysroot={}", h.sysroot.path().display()))
        .args(args))
    .unwrap();
}

#[tokio::test]
async fn switching_to_k1_then_k2_leaves_only_k2s_arguments_and_the_quoted_one_goes() {
    let h = host_with_v1("512m", &[]).await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    assert_eq!(options(&h), "rw console=ttyS0 ostree=…");

    let (builder, k1) = other_image(&h, "v2", &[("10-k.toml", K1)]).await;
    hostctl(&machine, &["switch", "--transport", "oci", &builder.oci_name()]);
    assert_eq!(deployed(&conn).await, [vd(&k1), vd(&h.v1)]);
    assert_eq!(options(&h), "rw console=ttyS0 ostree=… quiet a=1 dyndbg=\"file foo.c +p\"");

    let k2 = builder.build("v3", &["data"], &kargs_d(&[("10-k.toml", K2)])).await.unwrap();
    hostctl(&machine, &["upgrade"]);
    assert_eq!(deployed(&conn).await, [vd(&k2), vd(&k1)]);
    assert_eq!(options(&h), "rw console=ttyS0 ostree=… a=2", "the quoted argument is gone too");

    // Rollback boots k1's entry as it was written.
    hostctl(&machine, &["rollback"]);
    assert_eq!(options(&h), "rw console=ttyS0 ostree=… quiet a=1 dyndbg=\"file foo.c +p\"");
}

#[tokio::test]
async fn arguments_the_admin_set_or_removed_stay_as_the_admin_has_them() {
    let h = host_with_v1("512m", &[]).await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    let k1 = h.builder.build("v2", &["data"], &kargs_d(&[("10-k.toml", K1)])).await.unwrap();
    hostctl(&machine, &["upgrade"]);
    assert_eq!(options(&h), "rw console=ttyS0 ostree=… quiet a=1 dyndbg=\"file foo.c +p\"");

    // The admin adds an argument with spaces of their own, drops `quiet`
    // and overrides the image's a=1 with a=7.
    set_kargs(&h, &["rw", "console=ttyS0", "a=7", "dyndbg=\"file foo.c +p\"", "local=\"x y\""]);
    let edited = options(&h);
    assert!(edited.contains("local=\"x y\"") && !edited.contains("quiet"), "{edited}");

    // k2 keeps quiet, drops a=1 and the dyndbg argument, adds a=2 and b.
    let k2 = h.builder.build("v3", &["data"], &kargs_d(&[("10-k.toml", "kargs = [\"quiet\", \"a=2\", \"b\"]\n")])).await.unwrap();
    hostctl(&machine, &["upgrade"]);
    assert_eq!(deployed(&conn).await, [vd(&k2), vd(&k1)]);
    let after = options(&h);
    assert_eq!(
        after,
        edited.replace(" dyndbg=\"file foo.c +p\"", "") + " a=2 b",
        "local=\"x y\" and a=7 stay, quiet stays removed, the dropped argument goes"
    );
}

#[tokio::test]
async fn only_files_for_this_architecture_count_and_stage_applies_them_too() {
    let h = host_with_v1("512m", &[]).await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    // bootc images name architectures as the kernel does (`uname -m`).
    let here = run(Command::new("uname").arg("-m")).unwrap().trim().to_string();
    let elsewhere = if here == "s390x" { "aarch64" } else { "s390x" };
    let v2 = h
        .builder
        .build(
            "v2",
            &["data"],
            &kargs_d(&[
                ("10-all.toml", "kargs = [\"all=1\"]\n"),
                ("20-here.toml", &format!("kargs = [\"here=1\"]\nmatch-architectures = [\"{elsewhere}\", \"{here}\"]\n")),
                ("30-elsewhere.toml", &format!("kargs = [\"elsewhere=1\"]\nmatch-architectures = [\"{elsewhere}\"]\n")),
                ("README", "not a toml file: ignored\n"),
            ]),
        )
        .await
        .unwrap();
    hostctl(&machine, &["upgrade", "--download-only"]);
    assert_eq!(deployed(&conn).await, [vd(&h.v1)]);
    hostctl(&machine, &["stage"]);
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&h.v1)]);
    assert_eq!(options(&h), "rw console=ttyS0 ostree=… all=1 here=1");
}

#[tokio::test]
async fn a_malformed_kargs_file_refuses_the_image_naming_the_file_and_nothing_is_deployed() {
    let h = host_with_v1("512m", &[]).await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    let entries = bls::entries(h.sysroot.path()).unwrap();
    let cases = [
        ("kargs = [\"quiet\"", "line 1, column 17: invalid array; expected `]`"),
        ("kargs = \"quiet\"", "line 1, column 9: invalid type: string \"quiet\", expected a sequence"),
        ("kargs = [\"quiet\"]\nmatch-architecture = [\"x86_64\"]", "unknown field `match-architecture`"),
        ("kargs = [\"dyndbg=\\\"file foo.c\"]", "unpaired double quote"),
    ];
    for (n, (content, reason)) in cases.iter().enumerate() {
        let version = format!("v{}", n + 2);
        h.builder.build(&version, &["data"], &kargs_d(&[("10-ok.toml", K2), ("20-bad.toml", content)])).await.unwrap();
        let out = machine.hostctl(None, &["upgrade"]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(12), "{content:?}: {said}");
        assert!(said.contains("NotBootable"), "{said}");
        assert!(said.contains("/usr/lib/bootc/kargs.d/20-bad.toml is malformed: "), "{said}");
        assert!(said.contains(reason), "{content:?}: {said}");
        assert!(said.contains(&format!("oci:{}", h.builder.oci_name())), "names the image: {said}");
        assert_eq!(deployed(&conn).await, [vd(&h.v1)], "nothing deployed");
        assert_eq!(bls::entries(h.sysroot.path()).unwrap(), entries, "boot entries unchanged");
    }
    // The same image with the file fixed deploys; the refused ones did not
    // stand in for the deployed image meanwhile: a check reports the fixed
    // one as an update (exit 100), and before it Stage finds nothing to stage.
    let stage = machine.hostctl(None, &["stage"]);
    assert!(text(&stage).contains("NothingToStage"), "a refused image is not waiting to be staged: {}", text(&stage));
    let fixed = h.builder.build("v9", &["data"], &kargs_d(&[("10-ok.toml", K2)])).await.unwrap();
    let check = machine.hostctl(None, &["upgrade", "--check", "--exit-code"]);
    assert_eq!(check.status.code(), Some(100), "{}", text(&check));
    assert!(text(&check).contains(&fixed.digest), "{}", text(&check));
    hostctl(&machine, &["upgrade"]);
    assert_eq!(deployed(&conn).await, [vd(&fixed), vd(&h.v1)]);
    assert_eq!(options(&h), "rw console=ttyS0 ostree=… a=2");
}
