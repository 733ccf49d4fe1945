//! The update pipeline end to end: Check, Upgrade, Switch, Stage, Cleanup as
//! jobs on a real bus with real polkitd, pulling through skopeo's image proxy
//! from `oci:` directories and a real registry on 127.0.0.1 into real ostree
//! sysroots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Command, Stdio};

use hostd_interface::manager::CachedUpdate;
use hostd_interface::Error;
use hostd_tests::fixture::{payload, BuiltImage, ImageBuilder};
use hostd_tests::jobs::{run_job, JobRecord, JobWatch};
use hostd_tests::machine::TestMachine;
use hostd_tests::offline::{deployed, host_with_v1, status, status_json, text, vd, OfflineHost};
use hostd_tests::registry::{oci_layer_digests, SlowLink, TestRegistry};
use hostd_tests::schema;
use hostd_tests::sysroot::TestSysroot;
use hostd_tests::binary;
use zbus::{Connection, Variant};

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

type Opts<'a> = HashMap<&'a str, Variant<'a>>;

fn no_options() -> Opts<'static> {
    HashMap::new()
}

fn expect_error(result: Result<impl std::fmt::Debug, Error>, name: &str) -> String {
    match result {
        Err(e) if e.short_name() == name => e.message(),
        other => panic!("expected {name}, got {other:?}"),
    }
}

fn expect_job_error(record: &JobRecord, name: &str) {
    assert_eq!(
        record.error().map(|e| e.short_name()),
        Some(name),
        "job should fail with {name}: {record:?}"
    );
}

#[tokio::test]
async fn upgrade_from_an_oci_dir_deploys_v2_keeps_v1_and_then_finds_nothing_new() {
    let h = host_with_v1("512m", &[]).await;
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    assert_eq!(deployed(&conn).await, [vd(&h.v1)]);

    let progress = h.sysroot.dir.path().join("progress.jsonl");
    let out = machine
        .command(binary("hostctl"), None)
        .args(["upgrade", "--progress-fd", "3"])
        .stdin(Stdio::null())
        .fd3_to(&progress)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), machine.log());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Deployed v2"), "{}", text(&out));
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&h.v1)], "v2 is the default, v1 the rollback");

    let events: Vec<serde_json::Value> = std::fs::read_to_string(&progress)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "Start");
    for e in &events {
        schema::validate("bootc-progress-v0.schema.json", e).unwrap();
    }
    let last_bytes = events.iter().rfind(|e| e["type"] == "ProgressBytes").expect("byte events");
    assert_eq!(last_bytes["bytes"], last_bytes["bytesTotal"]);

    let out = machine.hostctl(None, &["upgrade", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("--json prints one JSON object per line"))
        .collect();
    let last = events.last().expect("at least the final event");
    assert_eq!((last["state"].as_str(), last["message"].as_str()), (Some("succeeded"), Some("No update available.")));
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&h.v1)]);
}

/// Wait for the running job to end.
async fn wait_until_idle(proxy: &hostd_interface::proxy::Host1Proxy<'_>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while proxy.active_job().await.unwrap().as_str() != "/" {
        assert!(std::time::Instant::now() < deadline, "the job never ended");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Spawn with descriptor 3 writing to a file.
trait Fd3 {
    fn fd3_to(&mut self, path: &std::path::Path) -> &mut Self;
}

impl Fd3 for Command {
    fn fd3_to(&mut self, path: &std::path::Path) -> &mut Self {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let file = std::fs::File::create(path).unwrap();
        // SAFETY: dup2 is async-signal-safe; the file outlives the fork.
        #[allow(unsafe_code)]
        unsafe {
            self.pre_exec(move || {
                let fd = file.as_raw_fd();
                if fd == 3 {
                    // dup2 onto itself would keep close-on-exec set.
                    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
                        .map_err(std::io::Error::from)?;
                } else {
                    nix::unistd::dup2(fd, 3).map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
        self
    }
}

/// Layers in `new` that `old` does not have (from the OCI manifests).
fn changed_layers(builder: &ImageBuilder, old_tag_copy: &[String]) -> BTreeSet<String> {
    let new: BTreeSet<String> = oci_layer_digests(&builder.oci_dir, "latest").unwrap().into_iter().collect();
    new.into_iter().filter(|d| !old_tag_copy.contains(d)).collect()
}

/// Compressed size of a layer, from the OCI directory.
fn blob_size(builder: &ImageBuilder, digest: &str) -> u64 {
    std::fs::metadata(builder.oci_dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:")))
        .unwrap()
        .len()
}

async fn cached_update(conn: &Connection) -> CachedUpdate {
    let proxy = hostd_interface::proxy::Host1Proxy::new(conn).await.unwrap();
    proxy.cached_update().await.unwrap()
}

/// An app layer derived from the fixture base, as a `COPY` in a Containerfile would add.
fn app_layer(version: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![("usr/share/hostd-app/data", payload(&format!("app-{version}"), 256 << 10))]
}

#[tokio::test]
async fn registry_check_then_upgrade_fetches_only_the_changed_layer() {
    let sysroot = TestSysroot::new("512m").unwrap();
    let builder = ImageBuilder::new(&sysroot.dir.path().join("images")).unwrap();
    let base = builder.build("base1", &[], &BTreeMap::new()).await.unwrap();
    let v1 = builder.derive(&base, "v1", &app_layer("v1")).unwrap();
    sysroot.deploy_image(&v1.reference).await.unwrap();
    let registry = TestRegistry::start().unwrap();
    registry.push(&builder.oci_name(), "hostd/os:stable").unwrap();
    let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&registry.host()).unwrap();
    let conn = machine.connect().await.unwrap();
    let image = format!("{}/hostd/os:stable", registry.host());

    // Start tracking the registry copy of v1: nothing to fetch but metadata.
    let out = machine.hostctl(None, &["switch", &image]);
    assert!(out.status.success(), "{}\n{}", text(&out), machine.log());
    let host = status(&conn).await;
    let tracked = host.spec.image.as_ref().unwrap();
    assert_eq!((tracked.image.as_str(), tracked.transport.as_str()), (image.as_str(), "registry"));
    assert_eq!(deployed(&conn).await, [vd(&v1), vd(&v1)]);

    let v1_layers = oci_layer_digests(&builder.oci_dir, "latest").unwrap();
    let v2 = builder.derive(&base, "v2", &app_layer("v2")).unwrap();
    registry.push(&builder.oci_name(), "hostd/os:stable").unwrap();
    let changed = changed_layers(&builder, &v1_layers);
    assert_eq!(changed.len(), 1, "v2 differs from v1 in its app layer only");
    assert!(v1_layers.len() > 3, "the image has several layers: {v1_layers:?}");
    let layers_before = sysroot.layer_digests().unwrap();

    // --check: metadata only, exit 100, the update shows in status.
    let out = machine.hostctl(None, &["upgrade", "--check", "--exit-code"]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
    assert_eq!(sysroot.layer_digests().unwrap(), layers_before, "--check fetched no layer");
    let cached = cached_update(&conn).await;
    assert_eq!(cached.version.as_deref(), Some("v2"));
    assert_eq!(cached.digest.as_deref(), Some(v2.digest.as_str()));
    assert_eq!(cached.layers_to_fetch, Some(1));
    let changed_size = blob_size(&builder, changed.iter().next().unwrap());
    assert_eq!(cached.download_bytes, Some(changed_size));
    assert!(cached.timestamp.is_some());
    let out = machine.hostctl(None, &["status", "--format", "humanreadable"]);
    let shown = text(&out);
    assert!(shown.contains("Update available") && shown.contains(&v2.digest), "{shown}");
    assert_eq!(status(&conn).await.status.other_deployments[0].cached_update.as_ref().unwrap().image_digest, v2.digest);

    // Upgrade, watched by a subscribed client.
    let job = run_job(&conn, "Upgrade", &(no_options(),)).await.unwrap();
    assert_eq!(job.state, "succeeded", "{job:?}\n{}", machine.log());
    let order = ["checking", "pulling", "importing", "staging", "cleanup"];
    let positions: Vec<usize> = job.phases.iter().map(|p| order.iter().position(|o| o == p).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "phases out of order: {:?}", job.phases);
    for phase in ["checking", "pulling", "staging"] {
        assert!(job.phases.iter().any(|p| p == phase), "phase {phase} not seen: {:?}", job.phases);
    }
    assert!(job.bytes.windows(2).all(|w| w[0].0 <= w[1].0), "BytesDone went back: {:?}", job.bytes);
    let changed_layer = changed.iter().next().unwrap();
    assert_eq!(job.bytes.last().copied(), Some((blob_size(&builder, changed_layer), blob_size(&builder, changed_layer))));
    assert_eq!((job.layers_done, job.layers_total), (1, 1), "{job:?}");

    let fetched: BTreeSet<String> =
        sysroot.layer_digests().unwrap().difference(&layers_before).cloned().collect();
    assert_eq!(fetched, changed, "exactly the changed layer was imported");
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&v1)]);
    assert_eq!(cached_update(&conn).await, CachedUpdate::default(), "no update is pending after the upgrade");

    let out = machine.hostctl(None, &["upgrade"]);
    assert!(out.status.success() && text(&out).contains("No update available."), "{}", text(&out));
    let out = machine.hostctl(None, &["upgrade", "--check", "--exit-code"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// v1 deployed from an OCI dir whose `tools` and `data` layers are 2 MiB,
/// tracked through a rate-limited link to a registry that holds v2.
struct SlowUpdate {
    h: OfflineHost,
    registry: TestRegistry,
    link: SlowLink,
    machine: TestMachine,
    conn: Connection,
    v2: BuiltImage,
}

const LINK_RATE: usize = 1 << 20;

async fn slow_update(config: &str) -> SlowUpdate {
    let h = host_with_v1("512m", &[("tools", 2 << 20), ("data", 2 << 20)]).await;
    let registry = TestRegistry::start().unwrap();
    registry.push(&h.builder.oci_name(), "hostd/os:stable").unwrap();
    let link = SlowLink::start(registry.port, LINK_RATE).unwrap();
    let machine = TestMachine::start(h.sysroot.path(), config).unwrap();
    machine.trust_registry(&link.host()).unwrap();
    let conn = machine.connect().await.unwrap();
    let image = format!("{}/hostd/os:stable", link.host());
    let switch = run_job(&conn, "Switch", &(image.as_str(), no_options())).await.unwrap();
    assert_eq!(switch.state, "succeeded", "{switch:?}");
    let v2 = h.builder.build("v2", &["tools", "data"], &BTreeMap::new()).await.unwrap();
    registry.push(&h.builder.oci_name(), "hostd/os:stable").unwrap();
    SlowUpdate { h, registry, link, machine, conn, v2 }
}

#[tokio::test]
async fn cancel_mid_pull_changes_nothing_and_a_retry_reuses_fetched_layers() {
    let s = slow_update(CONFIG).await;
    let before = s.h.sysroot.deployment_checksums().unwrap();
    let layers_before = s.h.sysroot.layer_digests().unwrap();

    let mut watch = JobWatch::start(&s.conn, "Upgrade", &(no_options(),)).await.unwrap();
    assert_eq!(watch.record.layers_total, 0);

    // While it pulls: an identical call joins, a different one is Busy, and
    // Status keeps answering.
    let other = s.machine.connect().await.unwrap();
    let (_, proxy) = s.machine.manager().await.unwrap();
    assert_eq!(proxy.upgrade(HashMap::new()).await.unwrap().as_str(), watch.record.path);
    let busy = expect_error(proxy.switch("/srv/os", HashMap::from([("transport", Variant::from("oci"))])).await, "Busy");
    assert!(busy.contains(&watch.record.path), "{busy}");
    for _ in 0..50 {
        assert!(status_json(&other).await.contains("BootcHost"));
    }
    assert_eq!(proxy.state().await.unwrap(), "fetching");

    // Cancel with one layer in and more than a second of transfer to go.
    let record = watch
        .until(|r| r.layers_done >= 1 && r.bytes.last().is_some_and(|(done, total)| total - done > LINK_RATE as u64))
        .await
        .unwrap()
        .clone();
    assert_eq!(record.state, "running", "the pull ended before it could be cancelled: {record:?}");
    watch.cancel().await.unwrap();
    let cancelled = watch.finish().await.unwrap();
    assert_eq!(cancelled.state, "cancelled", "{cancelled:?}");
    expect_job_error(&cancelled, "Cancelled");
    assert_eq!(proxy.state().await.unwrap(), "idle");
    assert_eq!(s.h.sysroot.deployment_checksums().unwrap(), before, "deployments unchanged");
    s.h.sysroot.fsck().unwrap();
    let kept: BTreeSet<String> = s.h.sysroot.layer_digests().unwrap().difference(&layers_before).cloned().collect();
    assert!(!kept.is_empty(), "layers fetched before the cancel stay");

    s.link.set_rate(16 << 20);
    let retry = run_job(&s.conn, "Upgrade", &(no_options(),)).await.unwrap();
    assert_eq!(retry.state, "succeeded", "{retry:?}");
    assert_eq!(
        retry.layers_total as usize,
        record.layers_total as usize - kept.len(),
        "the retry fetches only the layers still missing: {retry:?}"
    );
    assert_eq!(deployed(&s.conn).await[0], vd(&s.v2));
    s.h.sysroot.fsck().unwrap();
    drop(s.registry);
}

#[tokio::test]
async fn a_job_outlives_its_caller_and_one_over_the_time_limit_is_cancelled() {
    let s = slow_update(CONFIG).await;
    let before = s.h.sysroot.deployment_checksums().unwrap();
    let (_, proxy) = s.machine.manager().await.unwrap();

    // A job over its time limit is cancelled and changes nothing.
    s.machine.set_config_dropin("limit.toml", Some("[daemon]\njob_timeout_secs = 2\n")).unwrap();
    proxy.reload_config().await.unwrap();
    let job = run_job(&s.conn, "Upgrade", &(no_options(),)).await.unwrap();
    assert_eq!(job.state, "cancelled", "{job:?}");
    assert!(job.error_message.contains("time limit"), "{job:?}");
    assert_eq!(s.h.sysroot.deployment_checksums().unwrap(), before);
    s.machine.set_config_dropin("limit.toml", None).unwrap();
    proxy.reload_config().await.unwrap();

    // The caller disconnects while the job runs: the job still completes.
    let mut caller = s
        .machine
        .command(binary("hostctl"), None)
        .args(["upgrade"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while proxy.active_job().await.unwrap().as_str() == "/" {
        assert!(std::time::Instant::now() < deadline, "the job did not start");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    caller.kill().unwrap();
    caller.wait().unwrap();
    s.link.set_rate(16 << 20);
    wait_until_idle(&proxy).await;
    assert_eq!(deployed(&s.conn).await[0], vd(&s.v2), "{}", s.machine.log());
}

/// A method call that must be refused before any job exists.
async fn refused<B>(conn: &Connection, method: &str, body: &B) -> Error
where
    B: serde::ser::Serialize + zbus::zvariant::DynamicType,
{
    match JobWatch::start(conn, method, body).await {
        Err(e) => e,
        Ok(w) => panic!("{method} should have been refused, got job {:?}", w.record),
    }
}

#[tokio::test]
async fn bad_inputs_get_their_named_error_and_change_nothing() {
    let h = host_with_v1("512m", &[]).await;
    let registry = TestRegistry::start().unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&registry.host()).unwrap();
    let conn = machine.connect().await.unwrap();
    let (_, proxy) = machine.manager().await.unwrap();
    let deployments = h.sysroot.deployment_checksums().unwrap();
    let layers = h.sysroot.layer_digests().unwrap();
    let unchanged = || async {
        assert_eq!(h.sysroot.deployment_checksums().unwrap(), deployments);
        assert_eq!(h.sysroot.layer_digests().unwrap(), layers);
        assert_eq!(proxy.state().await.unwrap(), "idle");
    };
    let oci = |t: &'static str| HashMap::from([("transport", Variant::from(t))]);

    // Refused by the call itself.
    let cases: Vec<(&str, Error)> = vec![
        ("malformed registry reference", refused(&conn, "Switch", &("Quay.io/UPPER/os", no_options())).await),
        ("URL instead of a reference", refused(&conn, "Switch", &("docker://quay.io/org/os", no_options())).await),
        ("option injection", refused(&conn, "Switch", &("--src-creds=x:y", no_options())).await),
        ("unknown transport", refused(&conn, "Switch", &("quay.io/org/os", oci("ftp"))).await),
        ("relative oci path", refused(&conn, "Switch", &("images/os:latest", oci("oci"))).await),
        ("dotdot in a dir path", refused(&conn, "Switch", &("/srv/../etc", oci("dir"))).await),
        (
            "download-only with apply",
            refused(
                &conn,
                "Upgrade",
                &(HashMap::from([("download-only", Variant::Bool(true)), ("apply", Variant::Bool(true))]),),
            )
            .await,
        ),
        (
            "wrong option type",
            refused(&conn, "Upgrade", &(HashMap::from([("download-only", Variant::from("yes"))]),)).await,
        ),
        ("unknown option", refused(&conn, "Upgrade", &(HashMap::from([("force", Variant::Bool(true))]),)).await),
        ("wrong argument types", refused(&conn, "Switch", &(42u32,)).await),
    ];
    for (what, e) in cases {
        assert_eq!(e.short_name(), "InvalidArgument", "{what}: {e:?}");
        assert!(!e.message().is_empty(), "{what} has a message");
    }
    unchanged().await;
    assert_eq!(refused(&conn, "Stage", &(no_options(),)).await.short_name(), "NothingToStage");
    unchanged().await;

    // Found out by trying: the job fails with a named error.
    let missing_dir = format!("{}/nothing-here:latest", h.sysroot.dir.path().display());
    let job = run_job(&conn, "Switch", &(missing_dir.as_str(), oci("oci"))).await.unwrap();
    expect_job_error(&job, "ImageNotFound");
    assert!(job.error_message.starts_with(&format!("oci:{missing_dir}: ")), "{job:?}");
    assert_eq!(job.error_message.matches(&missing_dir).count(), 1, "{job:?}");
    unchanged().await;
    let missing_image = format!("{}/hostd/absent:latest", registry.host());
    let job = run_job(&conn, "Switch", &(missing_image.as_str(), no_options())).await.unwrap();
    expect_job_error(&job, "ImageNotFound");
    assert_eq!(job.error_message.matches(&missing_image).count(), 1, "{job:?}");
    assert!(job.error_message.contains("manifest unknown"), "{job:?}");
    unchanged().await;
    let dead = hostd_tests::registry::free_port().unwrap();
    machine.trust_registry(&format!("127.0.0.1:{dead}")).unwrap();
    let down = format!("127.0.0.1:{dead}/hostd/os:latest");
    let job = run_job(&conn, "Switch", &(down.as_str(), no_options())).await.unwrap();
    expect_job_error(&job, "Network");
    unchanged().await;

    // hostctl: usage errors exit 2, refused arguments 7, failed jobs 1.
    let code = |args: &[&str]| machine.hostctl(None, args).status.code();
    assert_eq!(code(&["switch", "--transport", "ftp", "quay.io/org/os"]), Some(2));
    assert_eq!(code(&["upgrade", "--download-only", "--apply"]), Some(2));
    assert_eq!(code(&["upgrade", "--bogus"]), Some(2));
    assert_eq!(code(&["switch", "Quay.io/UPPER/os"]), Some(7));
    let out = machine.hostctl(None, &["switch", &down]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("Network"), "{}", text(&out));
    unchanged().await;
}

#[tokio::test]
async fn an_update_larger_than_the_free_space_fails_with_no_space_before_filling_the_disk() {
    let mut h = host_with_v1("64m", &[]).await;
    h.builder.sizes.insert("data", 40 << 20);
    h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    let deployments = h.sysroot.deployment_checksums().unwrap();
    let free = h.sysroot.free_bytes().unwrap();

    let job = run_job(&conn, "Upgrade", &(no_options(),)).await.unwrap();
    expect_job_error(&job, "NoSpace");
    assert!(job.error_message.contains("free space"), "{job:?}");
    assert_eq!(h.sysroot.deployment_checksums().unwrap(), deployments);
    assert!(h.sysroot.free_bytes().unwrap() + (1 << 20) >= free, "the pull did not start filling the disk");
    let out = machine.hostctl(None, &["upgrade"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("NoSpace") && text(&out).contains("hostctl cleanup"), "{}", text(&out));
}

#[tokio::test]
async fn download_only_then_stage_and_cleanup_on_an_offline_sysroot() {
    let h = host_with_v1("512m", &[]).await;
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    let layers_v1 = h.sysroot.layer_digests().unwrap();

    // download-only fetches but deploys nothing; Stage deploys it offline.
    let out = machine.hostctl(None, &["upgrade", "--download-only"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Stage deploys it"), "{}", text(&out));
    assert_eq!(deployed(&conn).await, [vd(&h.v1)]);
    assert!(h.sysroot.layer_digests().unwrap().len() > layers_v1.len(), "v2's layers are in the repo");
    let out = machine.hostctl(None, &["status", "--format", "humanreadable"]);
    assert!(text(&out).contains("downloaded"), "{}", text(&out));

    std::fs::remove_dir_all(&h.builder.oci_dir).unwrap(); // Stage must not need the source.
    let out = machine.hostctl(None, &["stage", "--json"]);
    assert!(out.status.success(), "{}\n{}", text(&out), machine.log());
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&h.v1)]);
    let last: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["image"], format!("oci:{}", h.builder.oci_name()).as_str(), "the job names the image it stages: {last}");
    let out = machine.hostctl(None, &["stage"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("NothingToStage"), "{}", text(&out));

    // Cleanup keeps what deployments use and removes the rest.
    let h2 = ImageBuilder::new(&h.sysroot.dir.path().join("images-2")).unwrap();
    let other = h2.build("v9", &["data", "tools"], &BTreeMap::new()).await.unwrap();
    let other_name = h2.oci_name();
    let out = machine.hostctl(None, &["switch", "--transport", "oci", "--download-only", &other_name]);
    assert!(out.status.success(), "{}", text(&out));
    let with_download = h.sysroot.layer_digests().unwrap();
    let job = run_job(&conn, "Cleanup", &(no_options(),)).await.unwrap();
    assert_eq!(job.state, "succeeded", "{job:?}");
    assert!(job.message.starts_with("Removed 1 images"), "{job:?}");
    let after = h.sysroot.layer_digests().unwrap();
    assert!(after.len() < with_download.len(), "the downloaded image's layers are gone");
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&h.v1)]);
    h.sysroot.fsck().unwrap();
    drop(other);
}

#[tokio::test]
async fn switch_reads_oci_archive_and_dir_transports() {
    let h = host_with_v1("512m", &[]).await;
    let v2 = h.builder.build("v2", &["docs"], &BTreeMap::new()).await.unwrap();
    let archive = h.sysroot.dir.path().join("os.tar");
    let dir = h.sysroot.dir.path().join("os-dir");
    for dest in [format!("oci-archive:{}", archive.display()), format!("dir:{}", dir.display())] {
        hostd_tests::run(Command::new("skopeo").args(["copy", "--quiet"]).arg(format!("oci:{}", h.builder.oci_name())).arg(dest))
            .unwrap();
    }
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    for (transport, image) in [("oci-archive", archive.display().to_string()), ("dir", dir.display().to_string())] {
        let out = machine.hostctl(None, &["switch", "--transport", transport, "--retain", &image]);
        assert!(out.status.success(), "{transport}: {}\n{}", text(&out), machine.log());
        let host = status(&conn).await;
        let tracked = host.spec.image.as_ref().unwrap();
        assert_eq!((tracked.transport.as_str(), tracked.image.as_str()), (transport, image.as_str()));
        assert_eq!(deployed(&conn).await[0], vd(&v2));
    }
    assert_eq!(deployed(&conn).await.len(), 3, "--retain kept the earlier deployments");
}

#[tokio::test]
async fn enforced_signature_policy_rejects_unsigned_images() {
    let h = host_with_v1("512m", &[]).await;
    let registry = TestRegistry::start().unwrap();
    h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    registry.push(&h.builder.oci_name(), "hostd/os:signed").unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&registry.host()).unwrap();
    let conn = machine.connect().await.unwrap();
    let deployments = h.sysroot.deployment_checksums().unwrap();
    let image = format!("{}/hostd/os:signed", registry.host());
    let enforce = HashMap::from([("enforce-container-sigpolicy", Variant::Bool(true))]);

    // A policy that accepts anything cannot be enforced: refused up front.
    let e = refused(&conn, "Switch", &(image.as_str(), enforce.clone())).await;
    assert_eq!(e.short_name(), "SignatureRejected", "{e:?}");

    // A policy that requires a signature rejects the unsigned image.
    let key = h.sysroot.dir.path().join("key.gpg");
    std::fs::write(&key, b"").unwrap();
    machine
        .set_containers_policy(&serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {registry.host(): [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": key}]}}
        }))
        .unwrap();
    let job = run_job(&conn, "Switch", &(image.as_str(), enforce)).await.unwrap();
    expect_job_error(&job, "SignatureRejected");
    assert!(job.error_message.contains("signature was required"), "{job:?}");
    assert_eq!(h.sysroot.deployment_checksums().unwrap(), deployments);

    // Without enforcement the same image is accepted (the origin says so).
    let job = run_job(&conn, "Switch", &(image.as_str(), no_options())).await.unwrap();
    assert_eq!(job.state, "succeeded", "{job:?}");
}

/// `hostctl upgrade` on a terminal: Ctrl-C once the bar shows, then `answer`.
fn interrupt_on_a_terminal(s: &SlowUpdate, answer: &str) -> std::process::Output {
    s.machine
        .command("python3", None)
        .arg(hostd_tests::repo_root().join("tests/env/pty-session.py"))
        .args(["--expect", "pulling", "--send", "\\x03", "--expect", "Cancel the upgrade", "--send", &format!("{answer}\\r"), "--"])
        .arg(binary("hostctl"))
        .arg("upgrade")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test]
async fn ctrl_c_on_a_terminal_asks_whether_to_cancel_the_job() {
    let s = slow_update(CONFIG).await;
    let (_, proxy) = s.machine.manager().await.unwrap();
    let before = s.h.sysroot.deployment_checksums().unwrap();

    let out = interrupt_on_a_terminal(&s, "y");
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(8), "{shown}");
    assert!(shown.contains("layers") && shown.contains("ETA"), "a progress bar was drawn: {shown}");
    assert!(shown.contains(" layers to fetch (") && shown.contains(" cached)"), "{shown}");
    let checking = shown.split(" pulling ").next().unwrap();
    assert!(checking.contains("checking") && !checking.contains("[="), "no bar while checking: {checking}");
    assert!(!shown.contains("0 B/0 B"), "no empty bar drawn full: {shown}");
    let image = format!("{}/hostd/os:stable", s.link.host());
    assert!(shown.contains(&format!("Cancel the upgrade of {image}? [y/N]")), "the operation is named: {shown}");
    assert!(!shown.contains("/org/hostd/Host1/job"), "no D-Bus path: {shown}");
    assert!(shown.contains("Cancelled"), "{shown}");
    assert_eq!(proxy.state().await.unwrap(), "idle");
    assert_eq!(s.h.sysroot.deployment_checksums().unwrap(), before);

    let out = interrupt_on_a_terminal(&s, "n");
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    assert!(text(&out).contains("keeps running in hostd; `hostctl watch` follows it again"), "{}", text(&out));
    assert_ne!(proxy.active_job().await.unwrap().as_str(), "/", "the job was left running");
    s.link.set_rate(16 << 20);
    wait_until_idle(&proxy).await;
    assert_eq!(deployed(&s.conn).await[0], vd(&s.v2));
}
