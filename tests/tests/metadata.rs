//! Image metadata as registries and build tools leave it (empty labels,
//! disagreeing versions, build times in other formats), through hostd into
//! every place that shows it: the Host document (schema-validated),
//! `hostctl status` text and JSON, the `Deployments` and `CachedUpdate`
//! properties and the job messages. The rules are in docs/dbus-api.md,
//! "Image metadata"; `daemon/src/sysroot/metadata.rs` has the table tests.

use std::process::Output;

use hostd_interface::manager::DeploymentEntry;
use hostd_tests::fixture::{BuiltImage, MetadataEdit};
use hostd_tests::journal::{message_id, JournalSocket};
use hostd_tests::machine::TestMachine;
use hostd_tests::offline::{host_with_v1, status, text, OfflineHost};
use hostd_tests::schema;
use zbus::Connection;

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";
const OCI_VERSION: &str = "org.opencontainers.image.version";
const OCI_CREATED: &str = "org.opencontainers.image.created";
const HOST_SCHEMA: &str = "bootc-host-v1.schema.json";

/// One image as a registry might serve it, and what hostd must show for it.
struct Case {
    name: &'static str,
    /// Config labels set (`Some`) or removed (`None`).
    labels: &'static [(&'static str, Option<&'static str>)],
    /// Manifest annotations set or removed.
    annotations: &'static [(&'static str, Option<&'static str>)],
    /// The config's `created`.
    created: Option<&'static str>,
    version: Option<&'static str>,
    timestamp: Option<&'static str>,
}

const BUILT: &str = "2026-01-01T00:00:00Z";

/// Version labels the fixture's encapsulation writes, all removed unless a case sets them.
const NO_VERSION: [(&str, Option<&str>); 3] = [(OCI_VERSION, None), ("version", None), (OCI_CREATED, None)];

const CASES: &[Case] = &[
    Case {
        name: "empty-version-label",
        labels: &[(OCI_VERSION, Some(""))],
        annotations: &[],
        created: Some(BUILT),
        version: None,
        timestamp: Some(BUILT),
    },
    Case {
        name: "blank-oci-label-and-version-label",
        labels: &[(OCI_VERSION, Some("  ")), ("version", Some("7.0"))],
        annotations: &[],
        created: Some(BUILT),
        version: Some("7.0"),
        timestamp: Some(BUILT),
    },
    Case {
        name: "version-label-only",
        labels: &[("version", Some("41.20260101.0"))],
        annotations: &[],
        created: Some(BUILT),
        version: Some("41.20260101.0"),
        timestamp: Some(BUILT),
    },
    Case {
        name: "labels-disagree",
        labels: &[(OCI_VERSION, Some("2.0")), ("version", Some("1.0"))],
        annotations: &[(OCI_VERSION, Some("3.0"))],
        created: Some(BUILT),
        version: Some("2.0"),
        timestamp: Some(BUILT),
    },
    Case {
        name: "annotation-version-only",
        labels: &[],
        annotations: &[(OCI_VERSION, Some("a1"))],
        created: None,
        version: Some("a1"),
        timestamp: None,
    },
    Case {
        name: "annotation-created-wins",
        labels: &[(OCI_VERSION, Some("c1"))],
        annotations: &[(OCI_CREATED, Some("2026-03-01T12:00:00+02:00"))],
        created: Some(BUILT),
        version: Some("c1"),
        timestamp: Some("2026-03-01T10:00:00Z"),
    },
    Case {
        name: "created-annotation-not-rfc3339",
        labels: &[(OCI_VERSION, Some("c2"))],
        annotations: &[(OCI_CREATED, Some("2026-03-01 12:00:00 +0000 UTC"))],
        created: Some(BUILT),
        version: Some("c2"),
        timestamp: Some(BUILT),
    },
    Case {
        name: "created-not-rfc3339-and-no-config-time",
        labels: &[(OCI_VERSION, Some("c3"))],
        annotations: &[(OCI_CREATED, Some("yesterday"))],
        created: None,
        version: Some("c3"),
        timestamp: None,
    },
    Case {
        name: "empty-created",
        labels: &[(OCI_VERSION, Some("c4"))],
        annotations: &[(OCI_CREATED, Some(""))],
        created: None,
        version: Some("c4"),
        timestamp: None,
    },
];

fn edit(case: &Case) -> impl FnOnce(MetadataEdit<'_>) + '_ {
    move |m: MetadataEdit<'_>| {
        for (key, _) in NO_VERSION {
            m.labels.remove(key);
            m.annotations.remove(key);
        }
        for (target, pairs) in [(&mut *m.labels, case.labels), (&mut *m.annotations, case.annotations)] {
            for (key, value) in pairs {
                match value {
                    Some(v) => target.insert(key.to_string(), v.to_string()),
                    None => target.remove(*key),
                };
            }
        }
        *m.created = case.created.map(str::to_string);
    }
}

fn build(host: &OfflineHost, case: &Case) -> BuiltImage {
    host.builder
        .with_metadata(case.name, case.version.unwrap_or("none"), edit(case))
        .unwrap()
}

fn hostctl_ok(machine: &TestMachine, args: &[&str]) -> Output {
    let out = machine.hostctl(None, args);
    assert!(out.status.success(), "hostctl {args:?}: {}\n{}", text(&out), machine.log());
    out
}

async fn deployments(conn: &Connection) -> Vec<DeploymentEntry> {
    hostd_interface::proxy::Host1Proxy::new(conn).await.unwrap().deployments().await.unwrap()
}

/// The journal entry of the `index`th switch (the socket's reader thread may lag a little).
fn nth_switch_entry(journal: &JournalSocket, index: usize) -> hostd_tests::journal::Entry {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Some(entry) = journal.entries(message_id::SWITCHED).get(index) {
            return entry.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no journal entry for switch {index}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The `Version:` line `hostctl status` prints for the default deployment.
fn version_line(case: &Case) -> String {
    let version = case.version.unwrap_or("(none)");
    match case.timestamp {
        Some(t) => format!("Version: {version} ({t})"),
        None => format!("Version: {version}\n"),
    }
}

#[tokio::test]
async fn every_place_shows_the_normalized_version_and_build_time() {
    let host = host_with_v1("512m", &[]).await;
    let journal = JournalSocket::bind().unwrap();
    let machine = TestMachine::start_with_journal(host.sysroot.path(), CONFIG, &journal).unwrap();
    let conn = machine.connect().await.unwrap();
    let oci = host.builder.oci_dir.display().to_string();
    for (index, case) in CASES.iter().enumerate() {
        let image = build(&host, case);
        let name = format!("{oci}:{}", case.name);
        let out = hostctl_ok(&machine, &["switch", "--transport", "oci", &name]);
        // The job's message, and the journal entry of the change.
        let deployed_as = format!("Deployed {} ({})", case.version.unwrap_or("no version"), image.digest);
        let said = text(&out);
        assert!(said.contains(&deployed_as), "{}: {said}", case.name);
        let entry = nth_switch_entry(&journal, index);
        assert!(entry["MESSAGE"].starts_with(&deployed_as), "{}: {entry:?}", case.name);

        // The Host document over the bus (validated by `status`).
        let doc = status(&conn).await;
        let deployed = doc.status.other_deployments[0].image.as_ref().unwrap();
        assert_eq!(deployed.image_digest, image.digest, "{}", case.name);
        assert_eq!(deployed.version.as_deref(), case.version, "{}", case.name);
        assert_eq!(deployed.timestamp.as_deref(), case.timestamp, "{}", case.name);

        // `hostctl status --json`: valid, `null` where unknown, never "".
        let out = hostctl_ok(&machine, &["status", "--json"]);
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        schema::validate(HOST_SCHEMA, &value).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let shown = &value["status"]["otherDeployments"][0]["image"];
        assert_eq!(shown["version"], serde_json::json!(case.version), "{}", case.name);
        assert_eq!(shown["timestamp"], serde_json::json!(case.timestamp), "{}", case.name);

        // `hostctl status` text.
        let out = hostctl_ok(&machine, &["status", "--format", "humanreadable"]);
        let shown = String::from_utf8_lossy(&out.stdout);
        let default = &shown[shown.find("Default image").expect("default deployment")..];
        assert!(default.contains(&version_line(case)), "{}: {shown}", case.name);

        // `Deployments`: absent keys where unknown.
        let first = &deployments(&conn).await[0];
        assert_eq!(first.digest.as_deref(), Some(image.digest.as_str()), "{}", case.name);
        assert_eq!(first.version.as_deref(), case.version, "{}", case.name);
        assert_eq!(first.timestamp.as_deref(), case.timestamp, "{}", case.name);
    }
}

#[tokio::test]
async fn a_check_shows_the_normalized_metadata_of_the_update() {
    let host = host_with_v1("512m", &[]).await;
    let machine = TestMachine::start(host.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    let tracked = format!("{}:tracked", host.builder.oci_dir.display());
    let plain = Case {
        name: "tracked",
        labels: &[(OCI_VERSION, Some("1"))],
        annotations: &[],
        created: Some(BUILT),
        version: Some("1"),
        timestamp: Some(BUILT),
    };
    build(&host, &plain);
    hostctl_ok(&machine, &["switch", "--transport", "oci", &tracked]);
    // The tag moves to an image whose labels and times are as a careless
    // build leaves them: an empty OCI version label beside `version`, a
    // created annotation that is no RFC 3339 time, a later config time.
    let update = Case {
        name: "tracked",
        labels: &[(OCI_VERSION, Some("")), ("version", Some(" 2 "))],
        annotations: &[(OCI_CREATED, Some("Sun, 01 Feb 2026 00:00:00 GMT"))],
        created: Some("2026-02-01T01:00:00+01:00"),
        version: Some("2"),
        timestamp: Some("2026-02-01T00:00:00Z"),
    };
    let image = build(&host, &update);
    let out = machine.hostctl(None, &["upgrade", "--check", "--exit-code"]);
    assert_eq!(out.status.code(), Some(100), "{}\n{}", text(&out), machine.log());
    assert!(text(&out).contains(&format!("Update available: 2 ({})", image.digest)), "{}", text(&out));

    let doc = status(&conn).await;
    let cached = doc.status.other_deployments[0].cached_update.as_ref().expect("cachedUpdate");
    assert_eq!(cached.image_digest, image.digest);
    assert_eq!(cached.version.as_deref(), update.version);
    assert_eq!(cached.timestamp.as_deref(), update.timestamp);
    let property = hostd_interface::proxy::Host1Proxy::new(&conn).await.unwrap().cached_update().await.unwrap();
    assert_eq!(property.version.as_deref(), update.version);
    assert_eq!(property.timestamp.as_deref(), update.timestamp);
    let out = hostctl_ok(&machine, &["status", "--format", "humanreadable"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains(&format!("Update available: 2 ({})", image.digest)), "{shown}");
    let out = hostctl_ok(&machine, &["status", "--json"]);
    schema::validate(HOST_SCHEMA, &serde_json::from_slice(&out.stdout).unwrap()).unwrap();
}

#[tokio::test]
async fn status_booted_text_and_json_agree_on_an_offline_sysroot() {
    let host = host_with_v1("512m", &[]).await;
    let machine = TestMachine::start(host.sysroot.path(), CONFIG).unwrap();
    let out = hostctl_ok(&machine, &["status", "--booted", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // A whole Host document, filtered to the booted entry: there is none offline.
    schema::validate(HOST_SCHEMA, &value).unwrap();
    assert_eq!(value["kind"], "BootcHost");
    assert!(value["status"]["booted"].is_null(), "{value}");
    assert!(value["status"]["staged"].is_null() && value["status"]["rollback"].is_null(), "{value}");
    assert_eq!(value["status"]["otherDeployments"], serde_json::json!([]), "{value}");
    // The tracked image is still the spec.
    assert!(value["spec"]["image"]["image"].as_str().unwrap().ends_with(":latest"), "{value}");
    // The text says the same: no deployment, and why.
    let out = hostctl_ok(&machine, &["status", "--booted", "--format", "humanreadable"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        shown,
        "No booted deployment: the sysroot is offline (not booted). `hostctl status` lists its deployments in boot order.\n"
    );
    assert!(!shown.contains(&host.v1.digest), "{shown}");
    // Without --booted both list the deployment.
    let out = hostctl_ok(&machine, &["status", "--format", "humanreadable"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&host.v1.digest));
}
