//! OS images built the way users build theirs: `podman build` of a
//! Containerfile `FROM` the deployed fixture base, then pushed to a registry,
//! saved to an archive (`podman save`), or switched to straight from
//! podman's storage (`--transport containers-storage`).
//!
//! podman re-compresses the base's layers when it pushes or saves, so their
//! compressed digests are not the deployed image's: what is fetched is
//! asserted from the job's accounting (`BytesTotal`, `LayersTotal`, the
//! `Layers` plan) and from the registry's access log.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use hostd_tests::jobs::{run_job, JobRecord};
use hostd_tests::machine::TestMachine;
use hostd_tests::offline::{host_with_v1, status, text, OfflineHost};
use hostd_tests::podman::{build_derived, Podman, BASE};
use hostd_tests::registry::{registry_layers, TestRegistry};
use zbus::{Connection, Variant};

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

/// The layers `podman build` of `hostd_tests::podman::containerfile` adds.
const DERIVED_LAYERS: usize = 3;

type Opts<'a> = HashMap<&'a str, Variant<'a>>;

fn transport(t: &str) -> Opts<'_> {
    HashMap::from([("transport", Variant::from(t))])
}

/// The deployed host with podman's storage holding the fixture base.
async fn host_and_podman() -> (OfflineHost, Podman) {
    let h = host_with_v1("1g", &[]).await;
    let podman = Podman::new().unwrap();
    podman.load_oci(&h.builder.oci_name(), BASE).unwrap();
    (h, podman)
}

/// The default deployment's directory.
async fn default_deployment(conn: &Connection, sysroot: &Path) -> PathBuf {
    let host = status(conn).await;
    let entry = host.entries().next().expect("a deployment");
    let d = entry.ostree.as_ref().expect("an ostree deployment");
    sysroot.join(format!("ostree/deploy/{}/deploy/{}.{}", d.stateroot, d.checksum, d.deploy_serial))
}

/// What the Containerfile put in the deployed tree: the tool of `version`
/// under /usr, the /etc default (kept as /usr/etc by ostree), the kargs.d
/// file, whose kernel argument is on the default boot entry.
async fn assert_built_content(conn: &Connection, sysroot: &Path, version: &str) {
    let entry = hostd_tests::booted::bls::default_entry(sysroot).unwrap();
    assert!(entry.options.split_whitespace().any(|a| a == "podman.built=1"), "{}", entry.options);
    let deployment = default_deployment(conn, sysroot).await;
    let tool = std::fs::read_to_string(deployment.join("usr/bin/hostd-test-tool")).unwrap();
    assert_eq!(tool, format!("#!/bin/sh\necho tool {version}\n"));
    let motd = std::fs::read_to_string(deployment.join("usr/etc/motd")).unwrap();
    assert!(motd.starts_with("built with podman"), "{motd}");
    assert!(deployment.join("usr/lib/bootc/kargs.d/60-podman.toml").is_file());
    let host = status(conn).await;
    let booted = host.entries().next().unwrap();
    assert_eq!(booted.image.as_ref().unwrap().version.as_deref(), Some(version), "{booted:?}");
}

/// The job's last byte total and layer total: what it fetched.
fn fetched(job: &JobRecord) -> (u64, u32) {
    (job.bytes.last().map_or(0, |b| b.1), job.layers_total)
}

#[tokio::test]
async fn a_podman_pushed_derived_image_fetches_only_its_own_layers_and_a_rebuild_only_the_changed_one() {
    let (h, podman) = host_and_podman().await;
    build_derived(&podman, "localhost/myos:latest", "v2").unwrap();
    let registry = TestRegistry::start().unwrap();
    let image = format!("{}/myos:latest", registry.host());
    podman.push("localhost/myos:latest", &image).unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&registry.host()).unwrap();
    let conn = machine.connect().await.unwrap();

    // The base is deployed: only the three layers the Containerfile added
    // are fetched, although podman pushed every base layer re-compressed.
    let layers = registry_layers(&image).unwrap();
    let derived: Vec<_> = layers[layers.len() - DERIVED_LAYERS..].to_vec();
    let base_digests: BTreeSet<_> = layers[..layers.len() - DERIVED_LAYERS].iter().map(|l| l.0.clone()).collect();
    let fixture_digests: BTreeSet<_> = hostd_tests::registry::oci_layer_digests(&h.builder.oci_dir, "latest").unwrap().into_iter().collect();
    assert!(base_digests.is_disjoint(&fixture_digests), "podman re-compressed the base layers: {base_digests:?}");
    let switch = run_job(&conn, "Switch", &(image.as_str(), HashMap::<&str, Variant>::new())).await.unwrap();
    assert_eq!(switch.state, "succeeded", "{switch:?}\n{}", machine.log());
    let derived_bytes: u64 = derived.iter().map(|l| l.1).sum();
    assert_eq!(fetched(&switch), (derived_bytes, DERIVED_LAYERS as u32), "{switch:?}");
    let served: BTreeSet<_> = registry.blob_fetches().into_iter().filter(|d| !d.is_empty()).collect();
    let layer_fetches: BTreeSet<_> = served.iter().filter(|d| layers.iter().any(|l| &l.0 == *d)).cloned().collect();
    let derived_digests: BTreeSet<_> = derived.iter().map(|l| l.0.clone()).collect();
    assert_eq!(layer_fetches, derived_digests, "the registry served only the derived layers");
    assert_built_content(&conn, h.sysroot.path(), "v2").await;

    // A rebuild changing the tool: the upgrade fetches that one layer.
    build_derived(&podman, "localhost/myos:latest", "v3").unwrap();
    podman.push("localhost/myos:latest", &image).unwrap();
    let before = registry.blob_fetches().len();
    let upgrade = run_job(&conn, "Upgrade", &(HashMap::<&str, Variant>::new(),)).await.unwrap();
    assert_eq!(upgrade.state, "succeeded", "{upgrade:?}\n{}", machine.log());
    let v3_layers = registry_layers(&image).unwrap();
    let changed = v3_layers.last().unwrap().clone();
    assert_eq!(fetched(&upgrade), (changed.1, 1), "{upgrade:?}");
    let new_fetches: Vec<_> = registry.blob_fetches()[before..].iter().filter(|d| v3_layers.iter().any(|l| &l.0 == *d)).cloned().collect();
    assert_eq!(new_fetches, [changed.0], "the registry served only the changed layer");
    assert_built_content(&conn, h.sysroot.path(), "v3").await;
}

#[tokio::test]
async fn podman_save_archives_deploy_with_their_transport() {
    let (h, podman) = host_and_podman().await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    for (version, format, transport_name) in [("v2", None, "docker-archive"), ("v3", Some("oci-archive"), "oci-archive")] {
        build_derived(&podman, "localhost/myos:latest", version).unwrap();
        let archive = h.sysroot.dir.path().join(format!("myos-{version}.tar"));
        podman.save("localhost/myos:latest", format, &archive).unwrap();
        let archive = archive.display().to_string();
        let out = machine.hostctl(None, &["switch", "--transport", transport_name, &archive]);
        assert_eq!(out.status.code(), Some(0), "{transport_name}: {}\n{}", text(&out), machine.log());
        assert_built_content(&conn, h.sysroot.path(), version).await;
        let host = status(&conn).await;
        let tracked = host.spec.image.as_ref().unwrap();
        assert_eq!((tracked.transport.as_str(), tracked.image.as_str()), (transport_name, archive.as_str()));
        let yaml = String::from_utf8(machine.hostctl(None, &["status"]).stdout).unwrap();
        assert!(yaml.contains(&format!("transport: {transport_name}")), "{yaml}");
    }
}

/// An archive or directory given with a transport that does not read it
/// is refused before anything is fetched, naming what the path holds and
/// the transport that reads it; nothing is deployed.
#[tokio::test]
async fn an_image_given_with_the_wrong_transport_is_refused_naming_its_format() {
    let (h, podman) = host_and_podman().await;
    build_derived(&podman, "localhost/myos:latest", "v2").unwrap();
    let dir = h.sysroot.dir.path();
    let docker_archive = dir.join("myos.tar");
    let oci_archive = dir.join("myos-oci.tar");
    podman.save("localhost/myos:latest", None, &docker_archive).unwrap();
    podman.save("localhost/myos:latest", Some("oci-archive"), &oci_archive).unwrap();
    let not_an_archive = dir.join("notes.txt");
    std::fs::write(&not_an_archive, "not an image\n").unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    let deployments = h.sysroot.deployment_checksums().unwrap();
    let oci_dir = h.builder.oci_dir.display().to_string();
    let cases = [
        (docker_archive.display().to_string(), "oci-archive", "it is a docker-archive (what podman save writes by default); give --transport docker-archive"),
        (oci_archive.display().to_string(), "docker-archive", "it is an OCI archive; give --transport oci-archive"),
        (oci_dir.clone(), "docker-archive", "it is an OCI layout directory; give --transport oci"),
        (oci_dir, "oci-archive", "it is an OCI layout directory; give --transport oci"),
        (docker_archive.display().to_string(), "oci", "it is a docker-archive (what podman save writes by default); give --transport docker-archive"),
        (not_an_archive.display().to_string(), "docker-archive", "it is a file that is no tar archive"),
    ];
    for (image, transport_name, says) in cases {
        let job = run_job(&conn, "Switch", &(image.as_str(), transport(transport_name))).await.unwrap();
        assert_eq!(job.state, "failed", "{image} as {transport_name}: {job:?}");
        assert_eq!(job.error_name, "org.hostd.Host1.Error.InvalidArgument", "{image} as {transport_name}: {job:?}");
        assert!(job.error_message.contains(says), "{image} as {transport_name}: {}", job.error_message);
        assert!(!job.phases.iter().any(|p| p == "pulling"), "nothing fetched: {job:?}");
    }
    // hostctl: the same, with the error's name and exit code.
    let out = machine.hostctl(None, &["switch", "--transport", "oci-archive", &docker_archive.display().to_string()]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --transport docker-archive"), "{}", text(&out));
    assert_eq!(h.sysroot.deployment_checksums().unwrap(), deployments, "nothing deployed");
}

/// Debian 12's skopeo (image proxy protocol 0.2.3) cannot read
/// containers-storage through its proxy: the image is copied once into a
/// temporary layout on the sysroot's file system, which is gone afterwards,
/// and the host tracks `containers-storage:<ref>`, as bootc does.
#[tokio::test]
async fn a_switch_from_podmans_storage_deploys_tracks_the_storage_reference_and_upgrades_from_it() {
    let (h, podman) = host_and_podman().await;
    build_derived(&podman, "localhost/myos:latest", "v2").unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    // The storage podman wrote, as the host's storage.conf names it.
    std::fs::write(machine.etc().join("containers/storage.conf"), podman.storage_conf_text()).unwrap();
    let conn = machine.connect().await.unwrap();
    let repo_tmp = h.sysroot.path().join("ostree/repo/tmp");
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(&repo_tmp)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("hostd-copied-image-")).collect())
            .unwrap_or_default()
    };

    let out = machine.hostctl(None, &["switch", "--transport", "containers-storage", "localhost/myos:latest"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), machine.log());
    assert_built_content(&conn, h.sysroot.path(), "v2").await;
    let host = status(&conn).await;
    let tracked = host.spec.image.as_ref().unwrap();
    assert_eq!((tracked.transport.as_str(), tracked.image.as_str()), ("containers-storage", "localhost/myos:latest"));
    let booted_image = &host.entries().next().unwrap().image.as_ref().unwrap().image;
    assert_eq!((booted_image.transport.as_str(), booted_image.image.as_str()), ("containers-storage", "localhost/myos:latest"));
    let yaml = String::from_utf8(machine.hostctl(None, &["status"]).stdout).unwrap();
    assert!(yaml.contains("image: localhost/myos:latest") && yaml.contains("transport: containers-storage"), "{yaml}");
    assert_eq!(leftovers(), Vec::<String>::new(), "the temporary layout is removed");

    // A rebuild in the storage: Upgrade re-reads it, fetching (copying)
    // the changed layer only into the repository.
    build_derived(&podman, "localhost/myos:latest", "v3").unwrap();
    let check = machine.hostctl(None, &["upgrade", "--check"]);
    let said = text(&check);
    assert!(check.status.success() && said.contains("v3") && said.contains("1 of"), "the check finds v3, one layer to fetch: {said}");
    assert_eq!(leftovers(), Vec::<String>::new());
    let upgrade = run_job(&conn, "Upgrade", &(HashMap::<&str, Variant>::new(),)).await.unwrap();
    assert_eq!(upgrade.state, "succeeded", "{upgrade:?}\n{}", machine.log());
    assert_eq!(upgrade.layers_total, 1, "only the changed layer is imported: {upgrade:?}\n{}", machine.log());
    assert_built_content(&conn, h.sysroot.path(), "v3").await;
    assert_eq!(leftovers(), Vec::<String>::new());

    // Nothing new in the storage: nothing to do.
    let again = run_job(&conn, "Upgrade", &(HashMap::<&str, Variant>::new(),)).await.unwrap();
    assert_eq!(again.state, "succeeded", "{again:?}");
    assert_eq!(again.layers_total, 0, "{again:?}");
    assert_eq!(leftovers(), Vec::<String>::new());

    // An image not in the storage fails the job and leaves nothing behind.
    let deployments = h.sysroot.deployment_checksums().unwrap();
    let missing = run_job(&conn, "Switch", &("localhost/absent:latest", transport("containers-storage"))).await.unwrap();
    assert_eq!(missing.state, "failed", "{missing:?}");
    assert!(missing.error_message.contains("localhost/absent:latest"), "{missing:?}");
    assert_eq!(h.sysroot.deployment_checksums().unwrap(), deployments);
    assert_eq!(leftovers(), Vec::<String>::new());
}

/// A skopeo whose image proxy does not answer (a stand-in: the real skopeo
/// for everything else, as where `experimental-image-proxy` is missing or
/// broken) can neither read podman's storage nor be asked whether it can:
/// the job fails before it reads anything, saying so and what to do, and
/// copies and deploys nothing.
#[tokio::test]
async fn containers_storage_without_a_usable_image_proxy_fails_before_reading_saying_what_to_do() {
    let (h, podman) = host_and_podman().await;
    build_derived(&podman, "localhost/myos:latest", "v2").unwrap();
    let standin = tempfile::Builder::new().prefix("hostd-no-proxy-skopeo-").tempdir().unwrap();
    let script = standin.path().join("skopeo");
    std::fs::write(&script, "#!/bin/sh\n# Stand-in: skopeo without a working image proxy.\n[ \"$1\" = experimental-image-proxy ] && exit 1\nexec /usr/bin/skopeo \"$@\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = ("PATH", format!("{}:/usr/bin:/usr/sbin:/bin:/sbin", standin.path().display()));
    let extras = hostd_tests::machine::Extras { hostd_env: vec![path], ..Default::default() };
    let machine = TestMachine::start_with(h.sysroot.path(), CONFIG, extras).unwrap();
    std::fs::write(machine.etc().join("containers/storage.conf"), podman.storage_conf_text()).unwrap();
    let conn = machine.connect().await.unwrap();
    let deployments = h.sysroot.deployment_checksums().unwrap();

    let job = run_job(&conn, "Switch", &("localhost/myos:latest", transport("containers-storage"))).await.unwrap();
    assert_eq!(job.state, "failed", "{job:?}");
    assert_eq!(job.error_name, "org.hostd.Host1.Error.Failed", "{job:?}\n{}", machine.log());
    assert!(job.error_message.contains("did not tell its image proxy's protocol"), "{}", job.error_message);
    assert!(job.error_message.contains("--transport docker-archive"), "says what to do instead: {}", job.error_message);
    assert!(!job.phases.iter().any(|p| p == "pulling"), "nothing fetched: {job:?}");
    assert_eq!(h.sysroot.deployment_checksums().unwrap(), deployments);
    let repo_tmp = h.sysroot.path().join("ostree/repo/tmp");
    let copies = std::fs::read_dir(repo_tmp).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("hostd-copied-image-")).count();
    assert_eq!(copies, 0, "nothing copied");
}

/// The temporary layout of a copied image goes with the job: a job
/// cancelled while it holds one (held at the `after-copy` failpoint, live in
/// the test build) leaves none behind, and one left by a hostd killed at
/// that moment is removed by the next copy, which then succeeds.
#[tokio::test]
async fn a_copy_cancelled_or_cut_short_by_a_crash_leaves_no_temporary_layout() {
    use hostd::failpoint::{held_message, points};
    let (h, podman) = host_and_podman().await;
    build_derived(&podman, "localhost/myos:latest", "v2").unwrap();
    let extras = hostd_tests::machine::Extras { hostd_env: vec![("FAILPOINTS", format!("{}=return", points::AFTER_COPY))], ..Default::default() };
    let machine = TestMachine::start_with(h.sysroot.path(), CONFIG, extras).unwrap();
    std::fs::write(machine.etc().join("containers/storage.conf"), podman.storage_conf_text()).unwrap();
    let conn = machine.connect().await.unwrap();
    let deployments = h.sysroot.deployment_checksums().unwrap();
    let repo_tmp = h.sysroot.path().join("ostree/repo/tmp");
    let copies = || {
        std::fs::read_dir(&repo_tmp).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("hostd-copied-image-")).count()
    };
    let held = held_message(points::AFTER_COPY);
    let args = ("localhost/myos:latest", transport("containers-storage"));
    let switch = || hostd_tests::jobs::JobWatch::start(&conn, "Switch", &args);

    // Cancelled while the copy is there.
    let mut watch = switch().await.unwrap();
    let record = watch.until(|r| r.message == held).await.unwrap().clone();
    assert_eq!(record.state, "running", "never held at {} (a build without hostd/failpoints?): {record:?}\n{}", points::AFTER_COPY, machine.log());
    assert_eq!(copies(), 1, "the layout exists while the job holds it");
    watch.cancel().await.unwrap();
    let end = watch.finish().await.unwrap();
    assert_eq!((end.state.as_str(), end.error_name.as_str()), ("cancelled", "org.hostd.Host1.Error.Cancelled"), "{end:?}");
    assert_eq!(copies(), 0, "a cancelled job leaves no layout");
    assert_eq!(h.sysroot.deployment_checksums().unwrap(), deployments);

    // hostd killed while the copy is there: the next copy removes it.
    let mut watch = switch().await.unwrap();
    watch.until(|r| r.message == held).await.unwrap();
    machine.kill_hostd();
    assert_eq!(copies(), 1, "a killed hostd cannot remove its layout");
    machine.set_hostd_env(&[]).unwrap();
    let retry = run_job(&conn, "Switch", &("localhost/myos:latest", transport("containers-storage"))).await.unwrap();
    assert_eq!(retry.state, "succeeded", "{retry:?}\n{}", machine.log());
    assert_eq!(copies(), 0, "the stale layout is gone");
    assert_built_content(&conn, h.sysroot.path(), "v2").await;
}

/// `sha256:` digest of `bytes`, by coreutils' `sha256sum`.
fn sha256(bytes: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    format!("sha256:{}", String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap())
}

/// The path of `digest`'s blob in the OCI layout `dir`.
fn oci_blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())
}

/// The manifest and config of the only image of the OCI layout `dir`.
fn oci_image(dir: &Path) -> (serde_json::Value, serde_json::Value) {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(oci_blob(dir, manifest_digest)).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config = serde_json::from_slice(&std::fs::read(oci_blob(dir, config_digest)).unwrap()).unwrap();
    (manifest, config)
}

/// Replace the config of the only image of the OCI layout `dir` by
/// `config`, rewriting the manifest and index to name it.
fn rewrite_oci_config(dir: &Path, mut manifest: serde_json::Value, config: &serde_json::Value) {
    let config_bytes = serde_json::to_vec(config).unwrap();
    let config_digest = sha256(&config_bytes);
    std::fs::write(oci_blob(dir, &config_digest), &config_bytes).unwrap();
    manifest["config"]["digest"] = config_digest.into();
    manifest["config"]["size"] = config_bytes.len().into();
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = sha256(&manifest_bytes);
    std::fs::write(oci_blob(dir, &manifest_digest), &manifest_bytes).unwrap();
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"] = manifest_digest.into();
    index["manifests"][0]["size"] = manifest_bytes.len().into();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A diff_id is only a claim of the image's config: an image stored in the
/// repository but not deployed (a download-only `Switch`) whose config
/// claims the uncompressed digest of another image's layer, for other
/// content, does not get its content deployed when the host switches to
/// that other image. The layer is fetched and the deployed file is the
/// real one.
#[tokio::test]
async fn a_stored_image_claiming_another_layer_s_diff_id_does_not_replace_that_layer() {
    let (h, podman) = host_and_podman().await;
    let dir = h.sysroot.dir.path();
    build_derived(&podman, "localhost/myos:real", "v2").unwrap();
    // The same Containerfile with another tool: the last layer differs.
    build_derived(&podman, "localhost/myos:claim", "planted").unwrap();
    let (real_dir, claim_dir) = (dir.join("real-oci"), dir.join("claim-oci"));
    for (name, layout) in [("localhost/myos:real", &real_dir), ("localhost/myos:claim", &claim_dir)] {
        let dest = format!("oci:{}:latest", layout.display());
        podman.run(&["push", "--quiet", name, &dest]).unwrap();
    }
    let (_, real_config) = oci_image(&real_dir);
    let (claim_manifest, mut claim_config) = oci_image(&claim_dir);
    let real_tool = real_config["rootfs"]["diff_ids"].as_array().unwrap().last().unwrap().clone();
    let claimed = claim_config["rootfs"]["diff_ids"].as_array_mut().unwrap().last_mut().unwrap();
    assert_ne!(*claimed, real_tool, "the tool layers differ");
    *claimed = real_tool;
    rewrite_oci_config(&claim_dir, claim_manifest, &claim_config);

    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    let claim = format!("{}:latest", claim_dir.display());
    let mut opts = transport("oci");
    opts.insert("download-only", Variant::from(true));
    let stored = run_job(&conn, "Switch", &(claim.as_str(), opts)).await.unwrap();
    assert_eq!(stored.state, "succeeded", "{stored:?}\n{}", machine.log());
    let deployments = h.sysroot.deployment_checksums().unwrap();
    assert_eq!(deployments.len(), 1, "the claiming image is stored, not deployed");

    let real = format!("{}:latest", real_dir.display());
    let switch = run_job(&conn, "Switch", &(real.as_str(), transport("oci"))).await.unwrap();
    assert_eq!(switch.state, "succeeded", "{switch:?}\n{}", machine.log());
    assert_built_content(&conn, h.sysroot.path(), "v2").await;
}
