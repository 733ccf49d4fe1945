//! Logically bound images on offline sysroots, through `hostctl`: an image
//! that binds an application image through `/usr/lib/bootc/bound-images.d`
//! gets it pulled from a real registry (Debian's docker-registry on
//! 127.0.0.1) into `<sysroot>/ostree/bootc/storage` before its deployment
//! is written; a pull that fails or a malformed entry fails the job with a
//! named error and deploys nothing; bound images no deployment references
//! are removed, those of the rollback deployment kept.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hostd_tests::bound::{self, binding, image_file, stored_names};
use hostd_tests::fixture::ImageBuilder;
use hostd_tests::jobs::{run_job, JobWatch};
use hostd_tests::machine::{children_of, TestMachine};
use hostd_tests::offline::{deployed, host_with_v1, status, text, vd, OfflineHost};
use hostd_tests::registry::{free_port, TestRegistry};
use hostd_tests::standin_registry::SilentRegistry;
use zbus::Variant;

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

/// The names in the store hostd pulls into.
fn stored(h: &OfflineHost) -> Vec<String> {
    stored_names(&h.sysroot.path().join("ostree/bootc/storage")).unwrap()
}

/// Run hostctl as root and insist it succeeds; its stdout and stderr.
fn hostctl(machine: &TestMachine, args: &[&str]) -> String {
    let out = machine.hostctl(None, args);
    assert!(out.status.success(), "hostctl {args:?}: {}\n{}", text(&out), machine.log());
    text(&out)
}

/// A registry serving the application image as `app:<tag>` for each tag.
fn registry_with_app(h: &OfflineHost, tags: &[&str]) -> TestRegistry {
    let registry = TestRegistry::start().unwrap();
    for tag in tags {
        let oci = bound::app_image(&h.sysroot.dir.path().join("app-oci"), tag).unwrap();
        registry.push(&oci, &format!("app:{tag}")).unwrap();
    }
    registry
}

/// Build `version` binding each `(entry name, quadlet content)`: the file
/// in /usr/share/containers/systemd and its link in bound-images.d. The
/// links of earlier builds are dropped first.
async fn build_binding(h: &mut OfflineHost, version: &str, files: &[(&str, String)]) -> hostd_tests::fixture::BuiltImage {
    h.builder.symlinks.clear();
    let mut extra = BTreeMap::new();
    for (name, content) in files {
        let (file, link, target) = binding(name);
        extra.insert(file, content.clone());
        h.builder.symlinks.insert(link, target);
    }
    h.builder.build(version, &["data"], &extra).await.unwrap()
}

#[tokio::test]
async fn an_upgrade_pulls_the_bound_image_before_deploying_and_status_lists_it() {
    let mut h = host_with_v1("512m", &[]).await;
    let registry = registry_with_app(&h, &["v1"]);
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&registry.host()).unwrap();
    let conn = machine.connect().await.unwrap();
    let app = format!("{}/app:v1", registry.host());
    let v2 = build_binding(&mut h, "v2", &[("app.image", image_file(&app, None)), ("web.container", bound::container_file(&app))]).await;

    let said = hostctl(&machine, &["upgrade"]);
    assert!(said.contains("bound-images"), "the job passes the bound-images phase: {said}");
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&h.v1)]);
    assert_eq!(stored(&h), std::slice::from_ref(&app), "pulled into the bound-image store");
    let host = status(&conn).await;
    let entries: Vec<_> = host.entries().collect();
    let bound: Vec<(&str, &str)> = entries[0].bound_images.iter().map(|b| (b.image.as_str(), b.file.as_str())).collect();
    assert_eq!(bound, [(app.as_str(), "app.image"), (app.as_str(), "web.container")]);
    assert!(entries[1].bound_images.is_empty(), "v1 binds nothing");
    let text_status = hostctl(&machine, &["status", "--format", "humanreadable"]);
    assert!(text_status.contains(&format!("Bound images: {app} (app.image)")), "{text_status}");

    // Present already: the next deployment binding it needs no registry.
    drop(registry);
    let v3 = build_binding(&mut h, "v3", &[("app.image", image_file(&app, None))]).await;
    hostctl(&machine, &["upgrade"]);
    assert_eq!(deployed(&conn).await, [vd(&v3), vd(&v2)]);
    assert_eq!(stored(&h), [app]);
}

#[tokio::test]
async fn a_bound_image_that_cannot_be_pulled_fails_the_upgrade_by_name_and_nothing_is_deployed() {
    let mut h = host_with_v1("512m", &[]).await;
    let registry = registry_with_app(&h, &["v1"]);
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&registry.host()).unwrap();
    let closed = format!("127.0.0.1:{}", free_port().unwrap());
    machine.trust_registry(&closed).unwrap();
    let conn = machine.connect().await.unwrap();
    let cases = [
        (format!("{closed}/app:v1"), "Network", 1),
        (format!("{}/app:missing", registry.host()), "ImageNotFound", 1),
        (format!("{}/nothing:v1", registry.host()), "ImageNotFound", 1),
    ];
    for (n, (image, name, code)) in cases.iter().enumerate() {
        build_binding(&mut h, &format!("v{}", n + 2), &[("app.image", image_file(image, None))]).await;
        let out = machine.hostctl(None, &["upgrade"]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(*code), "{image}: {said}");
        assert!(said.contains(name), "{image}: {said}");
        assert!(said.contains(image.as_str()) && said.contains("/usr/lib/bootc/bound-images.d/app.image"), "names the image and its file: {said}");
        assert_eq!(deployed(&conn).await, [vd(&h.v1)], "nothing deployed");
        assert!(stored(&h).is_empty(), "nothing stored");
    }
}

#[tokio::test]
async fn credentials_come_from_the_image_files_auth_file_and_without_them_the_registry_says_so() {
    let mut h = host_with_v1("512m", &[]).await;
    let registry = TestRegistry::start_with_htpasswd("app", "secret").unwrap();
    let oci = bound::app_image(&h.sysroot.dir.path().join("app-oci"), "v1").unwrap();
    registry.push(&oci, "app:v1").unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&registry.host()).unwrap();
    let conn = machine.connect().await.unwrap();
    let app = format!("{}/app:v1", registry.host());
    let auth = format!(r#"{{"auths":{{"{}":{{"auth":"YXBwOnNlY3JldA=="}}}}}}"#, registry.host());
    std::fs::write(machine.etc().join("app-auth.json"), auth).unwrap();

    build_binding(&mut h, "v2", &[("app.image", image_file(&app, None))]).await;
    let out = machine.hostctl(None, &["upgrade"]);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    assert!(text(&out).contains("AuthenticationRequired"), "{}", text(&out));
    assert_eq!(deployed(&conn).await, [vd(&h.v1)]);

    let v3 = build_binding(&mut h, "v3", &[("app.image", image_file(&app, Some("/etc/app-auth.json")))]).await;
    hostctl(&machine, &["upgrade"]);
    assert_eq!(deployed(&conn).await, [vd(&v3), vd(&h.v1)]);
    assert_eq!(stored(&h), [app]);
}

#[tokio::test]
async fn a_malformed_bound_images_entry_refuses_the_image_naming_the_file_and_nothing_is_deployed() {
    let mut h = host_with_v1("512m", &[]).await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    let quadlet = bound::QUADLET_DIR;
    let dir = bound::BOUND_IMAGES_DIR;
    // (link name → target, files, the reason hostd gives)
    type Case<'a> = (&'a str, &'a str, Vec<(String, String)>, &'a str);
    let cases: [Case<'_>; 6] = [
        ("app.image", "/usr/share/containers/systemd/app.image", vec![(format!("{quadlet}/app.image"), "[Image]\n".into())], "has no Image="),
        ("app.image", "/usr/share/containers/systemd/app.image", vec![(format!("{quadlet}/app.image"), "[Image]\nImage=quay.io/%u/app\n".into())], "specifiers"),
        ("app.image", "/usr/share/containers/systemd/gone.image", vec![], "which the image does not have"),
        ("app.txt", "/usr/share/containers/systemd/app.image", vec![(format!("{quadlet}/app.image"), "[Image]\nImage=a\n".into())], "only .image and .container"),
        ("app.container", "../../../share/containers/systemd/app.container", vec![(format!("{quadlet}/app.container"), "[Container]\nImage=app.image\n".into())], "names a quadlet unit"),
        ("x.image", "", vec![(format!("{dir}/x.image"), "[Image]\nImage=quay.io/org/x\n".into())], "not a symbolic link"),
    ];
    for (n, (link, target, files, reason)) in cases.iter().enumerate() {
        h.builder.symlinks.clear();
        if !target.is_empty() {
            h.builder.symlinks.insert(format!("{dir}/{link}"), target.to_string());
        }
        let extra: BTreeMap<String, String> = files.iter().cloned().collect();
        h.builder.build(&format!("v{}", n + 2), &["data"], &extra).await.unwrap();
        let out = machine.hostctl(None, &["upgrade"]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(12), "{link}: {said}");
        assert!(said.contains("NotBootable"), "{said}");
        assert!(said.contains(&format!("/{dir}/{link} is malformed: ")), "{said}");
        assert!(said.contains(reason), "{link}: {said}");
        assert_eq!(deployed(&conn).await, [vd(&h.v1)], "nothing deployed");
    }
    // The refused image does not wait to be staged.
    let stage = machine.hostctl(None, &["stage"]);
    assert!(text(&stage).contains("NothingToStage"), "{}", text(&stage));
}

#[tokio::test]
async fn bound_images_stay_while_a_deployment_references_them_and_go_after() {
    let mut h = host_with_v1("512m", &[]).await;
    let registry = registry_with_app(&h, &["v1", "v2"]);
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&registry.host()).unwrap();
    let conn = machine.connect().await.unwrap();
    let app1 = format!("{}/app:v1", registry.host());
    let app2 = format!("{}/app:v2", registry.host());

    let v2 = build_binding(&mut h, "v2", &[("app.image", image_file(&app1, None))]).await;
    hostctl(&machine, &["upgrade"]);
    let v3 = build_binding(&mut h, "v3", &[("app.image", image_file(&app2, None))]).await;
    hostctl(&machine, &["upgrade"]);
    assert_eq!(deployed(&conn).await, [vd(&v3), vd(&v2)]);
    assert_eq!(stored(&h), [app1.clone(), app2.clone()], "v2, the rollback deployment, still references app:v1");
    hostctl(&machine, &["cleanup"]);
    assert_eq!(stored(&h), [app1, app2.clone()], "cleanup keeps what the rollback deployment references");

    // v4 binds nothing: v2 is gone with its reference, v3 is the rollback.
    let v4 = build_binding(&mut h, "v4", &[]).await;
    hostctl(&machine, &["upgrade"]);
    assert_eq!(deployed(&conn).await, [vd(&v4), vd(&v3)]);
    assert_eq!(stored(&h), std::slice::from_ref(&app2), "the automatic cleanup after the deployment removed app:v1");
    let said = hostctl(&machine, &["cleanup"]);
    assert!(said.contains("0 bound images"), "{said}");
    assert_eq!(stored(&h), [app2]);
}

#[tokio::test]
async fn a_bound_image_pull_that_hangs_is_ended_by_cancel_and_nothing_is_deployed() {
    let mut h = host_with_v1("512m", &[]).await;
    // A stand-in: a real registry cannot be told to never answer.
    let silent = SilentRegistry::start().unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&silent.host()).unwrap();
    let conn = machine.connect().await.unwrap();
    build_binding(&mut h, "v2", &[("app.image", image_file(&format!("{}/app:v1", silent.host()), None))]).await;

    let no_options: HashMap<&str, Variant<'_>> = HashMap::new();
    let mut watch = JobWatch::start(&conn, "Upgrade", &(no_options,)).await.unwrap();
    let seen = watch.until(|r| r.phases.iter().any(|p| p == "bound-images")).await.unwrap().clone();
    assert_eq!(seen.phases.last().map(String::as_str), Some("bound-images"), "{seen:?}");
    assert!(seen.phases.iter().any(|p| p == "pulling"), "the OS image was fetched first: {seen:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = machine.hostd_pid().expect("hostd runs");
    assert!(children_of(pid).iter().any(|c| std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == "skopeo")), "skopeo waits on the registry");
    let cancelled = Instant::now();
    watch.cancel().await.unwrap();
    let job = watch.finish().await.unwrap();
    assert!(cancelled.elapsed() < Duration::from_secs(10), "Cancel took {:?}", cancelled.elapsed());
    assert_eq!((job.state.as_str(), job.error_name.as_str()), ("cancelled", "org.hostd.Host1.Error.Cancelled"), "{job:?}");
    assert_eq!((job.layers_done, job.layers_total), (0, 1), "no bound image pulled of one");
    assert!(!children_of(pid).iter().any(|c| std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == "skopeo")), "no skopeo left");
    assert_eq!(deployed(&conn).await, [vd(&h.v1)], "nothing deployed");
}

#[tokio::test]
async fn a_downloaded_update_names_its_bound_images_and_stage_pulls_them() {
    let mut h = host_with_v1("512m", &[]).await;
    let registry = registry_with_app(&h, &["v1"]);
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&registry.host()).unwrap();
    let (conn, proxy) = machine.manager().await.unwrap();
    let app = format!("{}/app:v1", registry.host());
    let v2 = build_binding(&mut h, "v2", &[("app.image", image_file(&app, None))]).await;

    // A check reads no layer: it cannot know.
    let check = machine.hostctl(None, &["upgrade", "--check", "--exit-code"]);
    assert_eq!(check.status.code(), Some(100), "{}", text(&check));
    let cached = proxy.cached_update().await.unwrap();
    assert_eq!((cached.downloaded, cached.bound_images.clone()), (Some(false), None), "{cached:?}");

    hostctl(&machine, &["upgrade", "--download-only"]);
    let cached = proxy.cached_update().await.unwrap();
    assert_eq!((cached.downloaded, cached.bound_images.clone()), (Some(true), Some(vec![app.clone()])), "{cached:?}");
    assert!(stored(&h).is_empty(), "an offline download-only fetch deploys nothing and pulls nothing");

    hostctl(&machine, &["stage"]);
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&h.v1)]);
    assert_eq!(stored(&h), [app], "Stage pulled the bound image before it deployed v2");
}

#[tokio::test]
async fn a_switch_pulls_the_bound_images_of_the_image_it_switches_to() {
    let h = host_with_v1("512m", &[]).await;
    let registry = registry_with_app(&h, &["v1"]);
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&registry.host()).unwrap();
    let conn = machine.connect().await.unwrap();
    let app = format!("{}/app:v1", registry.host());
    // Another image, in an OCI directory of its own.
    let mut other = ImageBuilder::new(&h.sysroot.dir.path().join("other-images")).unwrap();
    let (file, link, target) = binding("app.container");
    other.symlinks.insert(link, target);
    let extra = BTreeMap::from([(file, bound::container_file(&app))]);
    let built = other.build("v5", &["data"], &extra).await.unwrap();

    let options: HashMap<&str, Variant<'_>> = HashMap::from([("transport", Variant::from("oci"))]);
    let job = run_job(&conn, "Switch", &(other.oci_name().as_str(), options)).await.unwrap();
    assert_eq!(job.state, "succeeded", "{job:?}");
    let at = job.phases.iter().position(|p| p == "bound-images").expect("a bound-images phase");
    assert_eq!(job.phases[at + 1], "staging", "{job:?}");
    assert_eq!(deployed(&conn).await, [vd(&built), vd(&h.v1)]);
    assert_eq!(stored(&h), std::slice::from_ref(&app));
    // Progress: one image of one, its bytes those of its manifest.
    let manifest: serde_json::Value = serde_json::from_str(
        &hostd_tests::run(std::process::Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{app}")))
            .unwrap(),
    )
    .unwrap();
    let size = manifest["config"]["size"].as_u64().unwrap()
        + manifest["layers"].as_array().unwrap().iter().map(|l| l["size"].as_u64().unwrap()).sum::<u64>();
    assert_eq!((job.layers_done, job.layers_total), (1, 1), "{job:?}");
    // The job's bytes go on from the OS image's: "(N layers, <os> bytes fetched)".
    let os: u64 = job.message.split(" bytes fetched").next().and_then(|m| m.rsplit(' ').next()).unwrap().parse().unwrap();
    assert_eq!(job.bytes.last(), Some(&(os + size, os + size)), "{job:?}");
}

#[tokio::test]
async fn a_deployment_whose_entries_cannot_be_read_makes_cleanup_keep_every_bound_image_with_a_warning() {
    let mut h = host_with_v1("512m", &[]).await;
    let registry = registry_with_app(&h, &["v1"]);
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&registry.host()).unwrap();
    let app = format!("{}/app:v1", registry.host());
    build_binding(&mut h, "v2", &[("app.image", image_file(&app, None))]).await;
    hostctl(&machine, &["upgrade"]);
    // Another tool deploys an image hostd would refuse (an entry that is no
    // link), which no longer binds the application image.
    h.builder.symlinks.clear();
    let extra = BTreeMap::from([(format!("{}/x.image", bound::BOUND_IMAGES_DIR), "[Image]\nImage=quay.io/org/x\n".to_string())]);
    let v3 = h.builder.build("v3", &["data"], &extra).await.unwrap();
    h.sysroot.deploy_image(&v3.reference).await.unwrap();

    let said = hostctl(&machine, &["cleanup"]);
    assert!(said.contains("and no bound image (see the warning)"), "{said}");
    assert!(said.contains("Warning: bound images no deployment references were not removed") && said.contains("x.image is malformed"), "{said}");
    assert_eq!(stored(&h), [app], "nothing removed while a deployment's bound images are unknown");
}
