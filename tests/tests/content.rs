//! Image content the host does not deploy: a derived image that writes
//! outside `/usr`, `/etc` and `/var` deploys, and every reader of the result
//! is told what was left out (hostctl, the job's `Warnings` and `Message`,
//! the journal entry).

use std::collections::HashMap;
use std::path::PathBuf;

use hostd_tests::jobs::run_job;
use hostd_tests::journal::{message_id, JournalSocket};
use hostd_tests::machine::TestMachine;
use hostd_tests::offline::{deployed, host_with_v1, status, text, vd};
use zbus::Variant;

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

/// How ostree-ext records the tool left out: its top-level directory and
/// the number of tar entries below it.
const LEFT_OUT: &str = "/opt (1 path)";

/// What a Containerfile `FROM <bootc base>`, `COPY tool /opt/vendor/bin/`
/// and `COPY x /usr/share/x` adds; with a kargs.d file too, as vendor
/// images carry (reading kargs.d made GLib log a CRITICAL per file).
fn vendor_layer(version: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("opt/vendor/bin/tool", format!("#!/bin/sh\necho vendor tool {version}\n").into_bytes()),
        ("usr/share/x", format!("x {version}\n").into_bytes()),
        ("usr/lib/bootc/kargs.d/50-vendor.toml", b"kargs = [\"vendor.debug=1\"]\n".to_vec()),
    ]
}

/// The deployment directory of the default deployment.
async fn default_deployment(conn: &zbus::Connection, sysroot: &std::path::Path) -> PathBuf {
    let host = status(conn).await;
    let entry = host.entries().next().expect("a deployment");
    let d = entry.ostree.as_ref().expect("an ostree deployment");
    sysroot.join(format!("ostree/deploy/{}/deploy/{}.{}", d.stateroot, d.checksum, d.deploy_serial))
}

#[tokio::test]
async fn a_derived_image_writing_under_opt_deploys_with_a_warning_naming_what_was_left_out() {
    let h = host_with_v1("512m", &[]).await;
    let v2 = h.builder.derive(&h.v1, "v2", &vendor_layer("v2")).unwrap();
    let journal = JournalSocket::bind().unwrap();
    let machine = TestMachine::start_with_journal(h.sysroot.path(), CONFIG, &journal).unwrap();
    let conn = machine.connect().await.unwrap();

    // hostctl: the switch succeeds and says what it left out, on stderr
    // and in the result.
    let oci = h.builder.oci_name();
    let out = machine.hostctl(None, &["switch", "--transport", "oci", &oci]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), machine.log());
    assert!(stdout.contains("Deployed v2"), "{}", text(&out));
    let warning_line = stderr.lines().find(|l| l.starts_with("Warning: ")).unwrap_or_else(|| panic!("no warning: {}", text(&out)));
    assert!(warning_line.contains(LEFT_OUT), "{warning_line}");
    assert!(stdout.contains(&format!("Warning: {}", &warning_line["Warning: ".len()..])), "the result carries it: {stdout}");
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&h.v1)]);

    // What was deployed, and what was not.
    let deployment = default_deployment(&conn, h.sysroot.path()).await;
    assert_eq!(std::fs::read_to_string(deployment.join("usr/share/x")).unwrap(), "x v2\n");
    for place in ["opt/vendor/bin/tool", "usr/opt/vendor/bin/tool", "var/opt/vendor/bin/tool"] {
        assert!(!deployment.join(place).exists(), "{place} is in the deployment");
    }

    // The journal entry of the switch.
    let entry = journal.single(message_id::SWITCHED).unwrap();
    assert!(entry.get("WARNING").is_some_and(|w| w.contains(LEFT_OUT)), "{entry:#?}");
    assert!(entry["MESSAGE"].contains(LEFT_OUT), "{entry:#?}");

    // The job: Warnings and Message, over the bus (an upgrade to a v3 that
    // still ships the tool); and in hostctl's --json events.
    let v3 = h.builder.derive(&h.v1, "v3", &vendor_layer("v3")).unwrap();
    let no_options: HashMap<&str, Variant<'_>> = HashMap::new();
    let job = run_job(&conn, "Upgrade", &(no_options,)).await.unwrap();
    assert_eq!(job.state, "succeeded", "{job:?}");
    assert_eq!(job.warnings.len(), 1, "{job:?}");
    assert!(job.warnings[0].contains(LEFT_OUT), "{job:?}");
    assert!(job.message.contains(&format!("Warning: {}", job.warnings[0])), "{job:?}");
    assert_eq!(deployed(&conn).await[0], vd(&v3));

    let v4 = h.builder.derive(&h.v1, "v4", &vendor_layer("v4")).unwrap();
    let out = machine.hostctl(None, &["upgrade", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().expect("events")).unwrap();
    assert_eq!(last["state"], "succeeded", "{last}");
    let warnings = last["warnings"].as_array().expect("warnings in the event");
    assert!(warnings.len() == 1 && warnings[0].as_str().unwrap().contains(LEFT_OUT), "{last}");
    assert_eq!(deployed(&conn).await[0], vd(&v4));
}

#[tokio::test]
async fn an_image_with_everything_in_place_deploys_without_a_warning() {
    let h = host_with_v1("512m", &[]).await;
    let files = vec![("usr/share/x", b"x\n".to_vec()), ("etc/vendor.conf", b"a = 1\n".to_vec())];
    let v2 = h.builder.derive(&h.v1, "v2", &files).unwrap();
    let journal = JournalSocket::bind().unwrap();
    let machine = TestMachine::start_with_journal(h.sysroot.path(), CONFIG, &journal).unwrap();
    let conn = machine.connect().await.unwrap();

    let out = machine.hostctl(None, &["upgrade"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("Warning"), "{}", text(&out));
    assert_eq!(deployed(&conn).await[0], vd(&v2));
    let entry = journal.single(message_id::STAGED).unwrap();
    assert!(!entry.contains_key("WARNING"), "{entry:#?}");
}

#[tokio::test]
async fn a_download_only_fetch_and_the_stage_that_deploys_it_both_warn() {
    let h = host_with_v1("512m", &[]).await;
    let v2 = h.builder.derive(&h.v1, "v2", &vendor_layer("v2")).unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();

    for (args, deployed_now) in [(&["upgrade", "--download-only"][..], vd(&h.v1)), (&["stage"][..], vd(&v2))] {
        let out = machine.hostctl(None, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.lines().any(|l| l.starts_with("Warning: ") && l.contains(LEFT_OUT)),
            "{args:?}: {}",
            text(&out)
        );
        assert_eq!(deployed(&conn).await[0], deployed_now, "{args:?}");
    }
}
