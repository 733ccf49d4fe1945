//! Local image paths root reads for callers who are not root: a path its
//! writers control is not "the image the administrator chose" (an
//! `Upgrade` from it needs `switch`, judged again when the job opens it),
//! and nothing in an image directory makes root read, or show, files
//! outside it.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hostd_tests::consistency::{check_host, RebootMarker};
use hostd_tests::inject::OstreeAdminHoldingTheLock;
use hostd_tests::jobs::{run_job, JobWatch};
use hostd_tests::machine::{grant, TestMachine, CHECKER, USER};
use hostd_tests::offline::{deployed, host_with_v1, vd, OfflineHost};
use hostd_tests::{binary, run};
use hostd_interface::proxy::Host1Proxy;
use zbus::{Connection, Variant};

/// Every check of a user really runs (no answer from the last result), so
/// each case is judged afresh.
const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\ncheck_interval_secs = 0\n";

fn no_options() -> HashMap<&'static str, Variant<'static>> {
    HashMap::new()
}


fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A host tracking a copy of its image in a shared directory under
/// `/var/tmp` (root's, 0755), as an administrator's `Switch` to removable
/// media or a shared directory leaves it. USER may `upgrade` and CHECKER
/// may `check`, as an active desktop user may by default.
struct SharedImageHost {
    h: OfflineHost,
    machine: TestMachine,
    conn: Connection,
    proxy: Host1Proxy<'static>,
    marker: RebootMarker,
    /// Where the tracked layout lives when it is on a medium.
    media: Option<NosuidMount>,
    shared: tempfile::TempDir,
    before: Vec<String>,
}

impl SharedImageHost {
    async fn start() -> SharedImageHost {
        SharedImageHost::start_on(false).await
    }

    /// Like [`SharedImageHost::start`], with the layout on a medium
    /// mounted the way udisks mounts one (before the machine starts, so its
    /// mount namespace has it).
    async fn start_on(media: bool) -> SharedImageHost {
        let marker = RebootMarker::observe();
        let h = host_with_v1("512m", &[]).await;
        let shared = tempfile::Builder::new().prefix("hostd-shared-").tempdir_in("/var/tmp").unwrap();
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let media = media.then(|| NosuidMount::at(shared.path().join("media")));
        let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
        let (conn, proxy) = machine.manager().await.unwrap();
        let host = SharedImageHost { h, machine, conn, proxy, marker, media, shared, before: Vec::new() };
        host.copy_layout();
        let switch = run_job(&host.conn, "Switch", &(host.image().as_str(), HashMap::from([("transport", Variant::from("oci"))])))
            .await
            .unwrap();
        assert_eq!(switch.state, "succeeded", "{switch:?}");
        host.machine.add_polkit_rule("60-user-upgrades.rules", &grant("upgrade", USER.0)).unwrap();
        host.machine.add_polkit_rule("60-checker-checks.rules", &grant("check", CHECKER.0)).unwrap();
        SharedImageHost { before: host.h.sysroot.deployment_checksums().unwrap(), ..host }
    }

    fn layout(&self) -> PathBuf {
        self.media.as_ref().map_or(self.shared.path(), |m| m.0.as_path()).join("os")
    }

    /// `<layout>:latest`, for `Switch` with the `oci` transport.
    fn image(&self) -> String {
        format!("{}:latest", self.layout().display())
    }

    /// Copy the builder's layout (its `latest` tag) over the shared one.
    fn copy_layout(&self) {
        let _ = std::fs::remove_dir_all(self.layout());
        run(Command::new("cp").arg("-a").arg(&self.h.builder.oci_dir).arg(self.layout())).unwrap();
    }

    /// Give the layout to `uid`, as a directory a user may write.
    fn give_layout_to(&self, uid: u32) {
        run(Command::new("chown").arg("-R").arg(uid.to_string()).arg(self.layout())).unwrap();
    }

    fn hostctl_as(&self, uid: u32, args: &[&str]) -> Output {
        self.machine
            .command(binary("hostctl"), Some(uid))
            .arg("--no-ask-password")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    async fn unchanged(&self) {
        let same = |found: &[String]| found == self.before;
        check_host(&self.h.sysroot, &self.proxy, &same, &self.marker)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.machine.log()));
    }

    async fn last_check_result(&self) -> String {
        self.proxy.last_check_result().await.unwrap()
    }
}

/// `path` replaced by a symlink to `target`.
fn symlink_over(path: &Path, target: &str) {
    std::fs::remove_file(path).unwrap();
    std::os::unix::fs::symlink(target, path).unwrap();
}

#[tokio::test]
async fn a_user_allowed_only_upgrade_cannot_install_an_image_put_in_a_path_they_write() {
    let host = SharedImageHost::start().await;
    // The user rewrites the tag in the directory they can write.
    let v2 = host.h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    host.copy_layout();
    host.give_layout_to(USER.1);

    let out = host.hostctl_as(USER.1, &["upgrade"]);
    assert_eq!(out.status.code(), Some(5), "NotAuthorized: {}", text(&out));
    assert!(text(&out).contains("org.hostd.host1.switch"), "names the action needed: {}", text(&out));
    assert!(text(&out).contains(&host.layout().display().to_string()), "names the path: {}", text(&out));
    host.unchanged().await;

    // The same directory given back to root alone is the administrator's choice again.
    host.give_layout_to(0);
    let out = host.hostctl_as(USER.1, &["upgrade"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(deployed(&host.conn).await[0], vd(&v2));
}

#[tokio::test]
async fn a_path_that_becomes_writable_by_others_after_the_call_is_refused_when_the_job_opens_it() {
    let host = SharedImageHost::start().await;
    host.h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    host.copy_layout();
    // Authorized while the path is root's alone; the job then waits for the lock.
    let holder = OstreeAdminHoldingTheLock::start(&host.h.sysroot).unwrap();
    // The call is made as USER through hostctl in the background.
    let upgrade = host
        .machine
        .command(binary("hostctl"), Some(USER.1))
        .args(["--no-ask-password", "upgrade"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while host.proxy.active_job().await.unwrap().as_str() == "/" {
        assert!(std::time::Instant::now() < deadline, "the upgrade did not start");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    std::fs::set_permissions(host.layout(), std::fs::Permissions::from_mode(0o777)).unwrap();
    drop(holder);
    let out = upgrade.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5), "NotAuthorized when the job opens the path: {}", text(&out));
    assert!(text(&out).contains("org.hostd.host1.switch") && text(&out).contains("is writable by"), "{}", text(&out));
    host.unchanged().await;
}

#[tokio::test]
async fn symlinks_out_of_an_image_directory_are_not_followed_and_nothing_read_is_shown() {
    let host = SharedImageHost::start().await;
    host.give_layout_to(USER.1);
    let index = host.layout().join("index.json");
    let index_bytes = std::fs::read(&index).unwrap();
    let blob = std::fs::read_dir(host.layout().join("blobs/sha256")).unwrap().next().unwrap().unwrap().path();

    for (file, target) in [(index.clone(), "/etc/shadow"), (blob.clone(), "/etc/shadow"), (index.clone(), "/root")] {
        let saved = std::fs::read(&file).unwrap_or_else(|_| index_bytes.clone());
        symlink_over(&file, target);
        let out = host.hostctl_as(CHECKER.1, &["upgrade", "--check"]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("AccessDenied") && text(&out).contains("symlink"), "{}", text(&out));
        let shown = host.last_check_result().await;
        assert!(shown.contains("symlink"), "{shown}");
        for leak in ["root:", "invalid character", "is a directory", "permission denied"] {
            assert!(!shown.to_lowercase().contains(leak) && !text(&out).to_lowercase().contains(leak), "{leak}: {shown}");
        }
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, saved).unwrap();
    }
    host.unchanged().await;
}

#[tokio::test]
async fn skopeo_reads_a_path_others_can_write_as_nobody() {
    let host = SharedImageHost::start().await;
    host.h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    host.copy_layout();
    host.give_layout_to(USER.1);
    // A blob only root may read, in the user's directory: the user could
    // have swapped it in after hostd looked, so skopeo must not read it.
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(host.layout().join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let manifest_blob = host.layout().join("blobs/sha256").join(&manifest);
    run(Command::new("chown").arg("0:0").arg(&manifest_blob)).unwrap();
    std::fs::set_permissions(&manifest_blob, std::fs::Permissions::from_mode(0o600)).unwrap();

    let check = run_job(&host.conn, "Check", &(no_options(),)).await.unwrap();
    assert_eq!(check.state, "failed", "root's skopeo would have read it: {check:?}");
    assert!(check.error_message.to_lowercase().contains("permission denied"), "{check:?}");

    // Readable by all, the same check finds the update.
    std::fs::set_permissions(&manifest_blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    let check = run_job(&host.conn, "Check", &(no_options(),)).await.unwrap();
    assert_eq!(check.state, "succeeded", "{check:?}");
    assert!(check.message.contains("Update available"), "{check:?}");
    host.unchanged().await;
}

#[tokio::test]
async fn a_fifo_blob_is_refused_by_name_without_blocking() {
    let host = SharedImageHost::start().await;
    let blob = std::fs::read_dir(host.layout().join("blobs/sha256")).unwrap().next().unwrap().unwrap().path();
    let saved = std::fs::read(&blob).unwrap();
    std::fs::remove_file(&blob).unwrap();
    nix::unistd::mkfifo(&blob, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let watch = JobWatch::start(&host.conn, "Check", &(no_options(),)).await.unwrap();
    let check = watch.finish().await.unwrap();
    assert_eq!((check.state.as_str(), check.error_name.as_str()), ("failed", "org.hostd.Host1.Error.InvalidArgument"), "{check:?}");
    assert!(check.error_message.contains("FIFO"), "{check:?}");
    std::fs::remove_file(&blob).unwrap();
    std::fs::write(&blob, saved).unwrap();
    host.unchanged().await;
}

#[tokio::test]
async fn an_unattended_run_never_installs_from_a_path_others_can_write_even_started_by_root() {
    let host = SharedImageHost::start().await;
    host.h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    host.copy_layout();
    host.give_layout_to(USER.1);
    host.machine.set_config_dropin("50-policy.toml", Some("[updates]\npolicy = \"stage\"\n")).unwrap();
    host.proxy.reload_config().await.unwrap();

    // What the fetch-apply timer runs, as root.
    let auto = run_job(&host.conn, "Upgrade", &(HashMap::from([("auto", Variant::from(true))]),)).await.unwrap();
    assert_eq!((auto.state.as_str(), auto.error_name.as_str()), ("failed", "org.hostd.Host1.Error.NotAuthorized"), "{auto:?}");
    assert!(auto.error_message.contains("unattended"), "{auto:?}");
    host.unchanged().await;

    // Root's own upgrade is root's choice.
    let upgrade = run_job(&host.conn, "Upgrade", &(no_options(),)).await.unwrap();
    assert_eq!(upgrade.state, "succeeded", "{upgrade:?}");
}

/// A tmpfs mounted `nosuid` at `path`, as udisks mounts removable media;
/// unmounted on drop.
struct NosuidMount(PathBuf);

impl NosuidMount {
    fn at(path: PathBuf) -> NosuidMount {
        std::fs::create_dir_all(&path).unwrap();
        run(Command::new("mount").args(["-t", "tmpfs", "-o", "nosuid,nodev,size=256m,mode=0755", "tmpfs"]).arg(&path)).unwrap();
        NosuidMount(path)
    }
}

impl Drop for NosuidMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.0).status();
    }
}

#[tokio::test]
async fn files_on_media_users_can_mount_are_not_trusted_whatever_owner_they_claim() {
    // The image root-owned and 0755/0644 throughout, on a medium mounted
    // nosuid as udisks mounts one, whose files claim any owner they like.
    let host = SharedImageHost::start_on(true).await;
    host.h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    host.copy_layout();

    let out = host.hostctl_as(USER.1, &["upgrade"]);
    assert_eq!(out.status.code(), Some(5), "NotAuthorized: {}", text(&out));
    assert!(text(&out).contains("org.hostd.host1.switch") && text(&out).contains("nosuid"), "{}", text(&out));
    host.unchanged().await;
}
