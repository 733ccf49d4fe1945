//! Signature enforcement bound to the bytes deployed: images signed as
//! publishers sign them (a GPG key made here with `gpg`, signatures in a
//! lookaside directory; a cosign-format key, sigstore signatures attached in
//! the registry), pushed with `skopeo copy --sign-by…` to Debian's
//! `docker-registry` on 127.0.0.1, and evaluated by the host's
//! `/etc/containers/policy.json` through skopeo, on a real bus with real
//! polkitd. One stand-in, named as such: a relay that moves a tag between
//! two requests, which no real registry can be told to do.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hostd_interface::proxy::Host1Proxy;
use hostd_tests::fixture::BuiltImage;
use hostd_tests::jobs::{run_job, JobRecord};
use hostd_tests::journal::JournalSocket;
use hostd_tests::machine::TestMachine;
use hostd_tests::offline::{deployed, host_with_v1, status, text, vd, OfflineHost};
use hostd_tests::registry::{oci_layer_digests, TestRegistry};
use hostd_tests::signing::{push_signed, write_registries_d, GpgKey, Signer, SigstoreKey};
use hostd_tests::standin_registry::MovingTagRegistry;
use serde_json::json;
use zbus::{Connection, Variant};

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

type Opts<'a> = HashMap<&'a str, Variant<'a>>;

fn enforced() -> Opts<'static> {
    HashMap::from([("enforce-container-sigpolicy", Variant::Bool(true))])
}

fn expect_rejected(record: &JobRecord) -> String {
    let e = record.error().unwrap_or_else(|| panic!("the job should fail with SignatureRejected: {record:?}"));
    assert_eq!(e.short_name(), "SignatureRejected", "{record:?}");
    e.message()
}

/// v1 deployed from an `oci:` directory; v2 and v3 built beside it (each
/// with its own `data` layer), a registry, and a GPG publisher key.
struct Signed {
    h: OfflineHost,
    v2: BuiltImage,
    v3: BuiltImage,
    registry: TestRegistry,
    /// registries.d for pushing (signatures written to the lookaside).
    push_config: std::path::PathBuf,
    lookaside: std::path::PathBuf,
}

async fn signed_setup() -> Signed {
    let h = host_with_v1("512m", &[]).await;
    // Each build is tagged `latest`; a tag per version keeps them apart.
    let keep_tag = |version: &str| {
        let dir = h.builder.oci_dir.display();
        hostd_tests::run(std::process::Command::new("skopeo").args(["copy", "--quiet"]).arg(format!("oci:{dir}:latest")).arg(format!("oci:{dir}:{version}")))
            .unwrap();
    };
    keep_tag("v1");
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    keep_tag("v2");
    let v3 = h.builder.build("v3", &["data"], &BTreeMap::new()).await.unwrap();
    keep_tag("v3");
    let registry = TestRegistry::start().unwrap();
    let push_config = h.sysroot.dir.path().join("push-registries.d");
    let lookaside = h.sysroot.dir.path().join("lookaside");
    write_registries_d(&push_config, &registry.host(), &lookaside).unwrap();
    Signed { h, v2, v3, registry, push_config, lookaside }
}

impl Signed {
    fn oci(&self, image: &BuiltImage) -> String {
        format!("{}:{}", self.h.builder.oci_dir.display(), image.version)
    }

    /// Push `image` as `name`, signed by `signer` (or unsigned).
    fn push(&self, image: &BuiltImage, name: &str, signer: Option<Signer<'_>>) {
        match signer {
            Some(signer) => push_signed(&self.registry, &self.oci(image), name, signer, None, &self.push_config).unwrap(),
            None => self.registry.push(&self.oci(image), name).unwrap(),
        }
    }

    /// The host's containers configuration: `requirement` for the test
    /// registry (and `extra_hosts`), everything else rejected; where the
    /// signatures of those registries are.
    fn configure_host(&self, machine: &TestMachine, requirement: serde_json::Value, extra_hosts: &[String]) {
        let mut scopes = serde_json::Map::new();
        for host in std::iter::once(self.registry.host()).chain(extra_hosts.iter().cloned()) {
            machine.trust_registry(&host).unwrap();
            write_registries_d(&machine.etc().join("containers/registries.d"), &host, &self.lookaside).unwrap();
            scopes.insert(host, json!([requirement.clone()]));
        }
        machine
            .set_containers_policy(&json!({"default": [{"type": "reject"}], "transports": {"docker": scopes}}))
            .unwrap();
    }

    /// Layers of `image` that v1 and the other image do not share: present
    /// in the repo only if `image` itself was fetched.
    fn own_layers(&self, image: &BuiltImage) -> BTreeSet<String> {
        let layers = |tag: &str| -> BTreeSet<String> {
            oci_layer_digests(&self.h.builder.oci_dir, tag).unwrap().into_iter().collect()
        };
        let others: BTreeSet<String> = ["v1", "v2", "v3"]
            .into_iter()
            .filter(|t| *t != image.version)
            .flat_map(&layers)
            .collect();
        let own: BTreeSet<String> = layers(&image.version).difference(&others).cloned().collect();
        assert!(!own.is_empty(), "{} must have a layer of its own", image.version);
        own
    }

    fn fetched_any_of(&self, layers: &BTreeSet<String>) -> bool {
        !self.h.sysroot.layer_digests().unwrap().is_disjoint(layers)
    }
}

fn signed_by(key: &GpgKey) -> serde_json::Value {
    json!({"type": "signedBy", "keyType": "GPGKeys", "keyPath": key.public_key})
}

fn sigstore_signed(key: &SigstoreKey) -> serde_json::Value {
    json!({"type": "sigstoreSigned", "keyPath": key.public_key})
}

/// Switch to `image` with the policy enforced.
async fn switch_enforced(conn: &Connection, image: &str) -> JobRecord {
    run_job(conn, "Switch", &(image, enforced())).await.unwrap()
}

/// The message of an enforced Switch to `image` that is `SignatureRejected`
/// by the call itself (a policy file that plainly requires no signature) or
/// by its job.
async fn enforced_switch_refused(conn: &Connection, image: &str) -> String {
    match run_job(conn, "Switch", &(image, enforced())).await {
        Err(e) => {
            assert_eq!(e.short_name(), "SignatureRejected", "{e:?}");
            e.message()
        }
        Ok(job) => expect_rejected(&job),
    }
}

/// The whole story for one kind of key: what the publisher signed deploys;
/// an unsigned image and one signed by another key are rejected with the
/// reason, nothing of them is fetched beyond metadata, nothing changes.
async fn only_the_publishers_images_deploy(s: &Signed, requirement: serde_json::Value, publisher: Signer<'_>, stranger: Signer<'_>) {
    s.push(&s.v2, "hostd/os:signed", Some(publisher));
    s.push(&s.v3, "hostd/unsigned:latest", None);
    s.push(&s.v3, "hostd/stranger:latest", Some(stranger));
    let machine = TestMachine::start(s.h.sysroot.path(), CONFIG).unwrap();
    s.configure_host(&machine, requirement, &[]);
    let conn = machine.connect().await.unwrap();
    let v3_layers = s.own_layers(&s.v3);

    for (name, reason) in [("hostd/unsigned:latest", "no signature exists"), ("hostd/stranger:latest", "ignature")] {
        let before = s.h.sysroot.deployment_checksums().unwrap();
        let image = format!("{}/{name}", s.registry.host());
        let message = expect_rejected(&switch_enforced(&conn, &image).await);
        assert!(message.contains(&image) && message.contains(&s.v3.digest), "names the image and its digest: {message}");
        assert!(message.contains(reason), "gives the policy's reason: {message}");
        assert!(message.contains("/etc/containers/policy.json"), "names the policy: {message}");
        assert_eq!(s.h.sysroot.deployment_checksums().unwrap(), before, "{name}: nothing deployed");
        assert!(!s.fetched_any_of(&v3_layers), "{name}: no layer of the rejected image was fetched");
    }

    let image = format!("{}/hostd/os:signed", s.registry.host());
    let job = switch_enforced(&conn, &image).await;
    assert_eq!(job.state, "succeeded", "{job:?}\n{}", machine.log());
    assert_eq!(deployed(&conn).await, [vd(&s.v2), vd(&s.h.v1)]);
    let tracked = status(&conn).await.spec.image.expect("a tracked image");
    assert_eq!(tracked.image, image);
    assert_eq!(serde_json::to_value(&tracked.signature).unwrap(), json!("containerPolicy"), "tracked as verified");
}

#[tokio::test]
async fn signed_by_a_gpg_key_only_the_publishers_images_deploy() {
    let s = signed_setup().await;
    let keys = s.h.sysroot.dir.path();
    let (publisher, stranger) = (GpgKey::generate(keys, "publisher").unwrap(), GpgKey::generate(keys, "stranger").unwrap());
    only_the_publishers_images_deploy(&s, signed_by(&publisher), Signer::Gpg(&publisher), Signer::Gpg(&stranger)).await;
}

/// sigstoreSigned with a cosign-format key pair. Where the installed
/// skopeo can create sigstore signatures, the whole story runs as for GPG.
/// Debian 12's skopeo 1.9.3 is built without sigstore ("Debian-local change:
/// sigstore disabled"): it can neither create nor verify such signatures,
/// so there the test shows that a sigstoreSigned requirement fails closed,
/// every image rejected and nothing deployed (docs/security.md states the
/// limitation).
#[tokio::test]
async fn sigstore_signed_with_a_cosign_key_only_the_publishers_images_deploy_or_nothing_does() {
    let s = signed_setup().await;
    let keys = s.h.sysroot.dir.path();
    let (publisher, stranger) = (SigstoreKey::generate(keys, "publisher").unwrap(), SigstoreKey::generate(keys, "stranger").unwrap());
    let requirement = sigstore_signed(&publisher);
    let probe = push_signed(&s.registry, &s.oci(&s.v2), "hostd/probe:latest", Signer::Sigstore(&publisher), None, &s.push_config);
    if probe.is_ok() {
        only_the_publishers_images_deploy(&s, requirement, Signer::Sigstore(&publisher), Signer::Sigstore(&stranger)).await;
        return;
    }
    assert!(format!("{:#}", probe.unwrap_err()).contains("sigstore disabled"), "skopeo failed to sign for another reason");
    s.push(&s.v2, "hostd/os:latest", None);
    let machine = TestMachine::start(s.h.sysroot.path(), CONFIG).unwrap();
    s.configure_host(&machine, requirement, &[]);
    let conn = machine.connect().await.unwrap();
    let before = s.h.sysroot.deployment_checksums().unwrap();
    let image = format!("{}/hostd/os:latest", s.registry.host());
    let message = expect_rejected(&switch_enforced(&conn, &image).await);
    assert!(message.contains(&s.v2.digest), "{message}");
    assert_eq!(s.h.sysroot.deployment_checksums().unwrap(), before, "nothing deployed");
    assert!(!s.fetched_any_of(&s.own_layers(&s.v2)), "nothing fetched");
}

/// The signed v2 as `hostd/os:signed` (signed for the name hosts pull it
/// by through the stand-in) and the unsigned v3 as `hostd/os:unsigned`,
/// behind a stand-in that serves `first` for the first `moves_after`
/// requests for `hostd/os:latest` and `then` after; the enforced Switch to
/// it and the stand-in, on a host whose policy trusts the publisher.
async fn switch_through_a_moving_tag(s: &Signed, first: &str, then: &str, moves_after: usize) -> (JobRecord, MovingTagRegistry) {
    let publisher = GpgKey::generate(s.h.sysroot.dir.path(), "publisher").unwrap();
    let relay = MovingTagRegistry::start(s.registry.port, "hostd/os", "latest", first, then, moves_after).unwrap();
    let image = format!("{}/hostd/os:latest", relay.host());
    push_signed(&s.registry, &s.oci(&s.v2), "hostd/os:signed", Signer::Gpg(&publisher), Some(&image), &s.push_config).unwrap();
    s.push(&s.v3, "hostd/os:unsigned", None);
    let machine = TestMachine::start(s.h.sysroot.path(), CONFIG).unwrap();
    s.configure_host(&machine, signed_by(&publisher), &[relay.host()]);
    let conn = machine.connect().await.unwrap();
    let job = switch_enforced(&conn, &image).await;
    (job, relay)
}

/// The stand-in serves the signed v2 to the first request for
/// `hostd/os:latest` and the unsigned v3 to every later one: what the
/// import read first is verified against what the tag names when it is
/// evaluated, so the move fails the job; nothing of v3 is fetched.
#[tokio::test]
async fn a_tag_that_moves_after_its_first_request_never_deploys_the_unsigned_image() {
    let s = signed_setup().await;
    let before = s.h.sysroot.deployment_checksums().unwrap();
    let (job, relay) = switch_through_a_moving_tag(&s, "signed", "unsigned", 1).await;
    assert!(relay.tag_requests.load(std::sync::atomic::Ordering::SeqCst) >= 2, "the tag was read twice through the stand-in");
    let message = expect_rejected(&job);
    assert!(message.contains("moved") && message.contains(&s.v2.digest) && message.contains(&s.v3.digest), "{message}");
    assert_eq!(s.h.sysroot.deployment_checksums().unwrap(), before, "nothing deployed");
    assert!(!s.fetched_any_of(&s.own_layers(&s.v3)), "nothing of the unsigned image was fetched");
}

/// The other way round: the stand-in serves the unsigned v3 to the pull
/// and to a first look at the tag, and the signed v2 to every request
/// after. The policy accepts what it was shown, but that is not the image
/// the import read: refused, nothing of v3 fetched.
#[tokio::test]
async fn a_signed_image_shown_only_to_the_evaluation_does_not_let_the_pulled_one_in() {
    let s = signed_setup().await;
    let before = s.h.sysroot.deployment_checksums().unwrap();
    let (job, _relay) = switch_through_a_moving_tag(&s, "unsigned", "signed", 2).await;
    let message = expect_rejected(&job);
    assert!(message.contains(&s.v3.digest) && message.contains("another image"), "{message}");
    assert_eq!(s.h.sysroot.deployment_checksums().unwrap(), before, "nothing deployed");
    assert!(!s.fetched_any_of(&s.own_layers(&s.v3)), "nothing of the pulled image was fetched");
}

/// The publisher signed v3 only as `os:debug`; the registry then serves it
/// as `os:stable`, which the host tracks. The signature names another tag,
/// so it does not verify `os:stable` (as `podman pull` judges it), and the
/// upgrade is refused.
#[tokio::test]
async fn a_signature_for_another_tag_of_the_repository_does_not_verify_the_tracked_tag() {
    let s = signed_setup().await;
    let publisher = GpgKey::generate(s.h.sysroot.dir.path(), "publisher").unwrap();
    s.push(&s.v2, "hostd/os:stable", Some(Signer::Gpg(&publisher)));
    let machine = TestMachine::start(s.h.sysroot.path(), CONFIG).unwrap();
    s.configure_host(&machine, signed_by(&publisher), &[]);
    let conn = machine.connect().await.unwrap();
    let image = format!("{}/hostd/os:stable", s.registry.host());
    assert_eq!(switch_enforced(&conn, &image).await.state, "succeeded");
    let before = s.h.sysroot.deployment_checksums().unwrap();

    s.push(&s.v3, "hostd/os:debug", Some(Signer::Gpg(&publisher)));
    s.push(&s.v3, "hostd/os:stable", None);
    let no_options: Opts<'_> = HashMap::new();
    let message = expect_rejected(&run_job(&conn, "Upgrade", &(no_options,)).await.unwrap());
    assert!(message.contains(&s.v3.digest) && message.contains("hostd/os:debug"), "names the signature's identity: {message}");
    assert_eq!(s.h.sysroot.deployment_checksums().unwrap(), before, "nothing deployed");
    assert!(!s.fetched_any_of(&s.own_layers(&s.v3)));
}

/// Policies that would let the unsigned image in through a scope hostd
/// must read as containers-image does: a requirement on the tag itself
/// applies; a scope without the registry's port or a wildcard domain that
/// accepts anything means enforcing verifies nothing, which is refused.
#[tokio::test]
async fn a_policy_that_accepts_the_image_unsigned_is_refused_however_its_scopes_are_written() {
    let s = signed_setup().await;
    let publisher = GpgKey::generate(s.h.sysroot.dir.path(), "publisher").unwrap();
    let registry = s.registry.host();
    s.push(&s.v3, "hostd/os:stable", None);
    let machine = TestMachine::start(s.h.sysroot.path(), CONFIG).unwrap();
    s.configure_host(&machine, json!({"type": "reject"}), &[]);
    let conn = machine.connect().await.unwrap();
    let image = format!("{registry}/hostd/os:stable");
    let before = s.h.sysroot.deployment_checksums().unwrap();
    let cases = [
        (
            json!({"default": [{"type": "reject"}], "transports": {"docker": {
                format!("{registry}/hostd/os"): [{"type": "insecureAcceptAnything"}],
                image.clone(): [signed_by(&publisher)]}}}),
            "no signature exists",
        ),
        (
            json!({"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": {
                "127.0.0.1": [signed_by(&publisher)]}}}),
            "verify nothing",
        ),
        (
            json!({"default": [{"type": "reject"}], "transports": {"docker": {
                "*.0.0.1": [{"type": "insecureAcceptAnything"}]}}}),
            "verify nothing",
        ),
    ];
    for (policy, reason) in &cases {
        machine.set_containers_policy(policy).unwrap();
        let message = enforced_switch_refused(&conn, &image).await;
        assert!(message.contains(reason), "{policy}: {message}");
        assert_eq!(s.h.sysroot.deployment_checksums().unwrap(), before, "{policy}: nothing deployed");
        assert!(!s.fetched_any_of(&s.own_layers(&s.v3)), "{policy}: nothing fetched");
    }

    // A host already tracking a signed image whose policy is then loosened
    // the same ways: the job asks containers-image itself, with no
    // signature location known, and refuses.
    s.push(&s.v2, "hostd/os:signed", Some(Signer::Gpg(&publisher)));
    machine.set_containers_policy(&json!({"default": [{"type": "reject"}], "transports": {"docker": {
        registry.clone(): [signed_by(&publisher)]}}})).unwrap();
    assert_eq!(switch_enforced(&conn, &format!("{registry}/hostd/os:signed")).await.state, "succeeded");
    s.push(&s.v3, "hostd/os:signed", None);
    let before = s.h.sysroot.deployment_checksums().unwrap();
    for (policy, _) in &cases[1..] {
        machine.set_containers_policy(policy).unwrap();
        let no_options: Opts<'_> = HashMap::new();
        let message = expect_rejected(&run_job(&conn, "Upgrade", &(no_options,)).await.unwrap());
        assert!(message.contains("without a signature") && message.contains(&s.v3.digest), "{policy}: {message}");
        assert_eq!(s.h.sysroot.deployment_checksums().unwrap(), before, "{policy}: nothing deployed");
        assert!(!s.fetched_any_of(&s.own_layers(&s.v3)), "{policy}: nothing fetched");
    }
}

/// `hostctl upgrade --auto` (what the timer runs) on a host tracking a
/// signed image: the tag moves to an unsigned image, and the unattended
/// upgrade refuses it, saying why in `LastCheckResult` and the journal.
#[tokio::test]
async fn the_timers_upgrade_of_a_signed_host_refuses_an_unsigned_update() {
    let s = signed_setup().await;
    let publisher = GpgKey::generate(s.h.sysroot.dir.path(), "publisher").unwrap();
    s.push(&s.v2, "hostd/os:stable", Some(Signer::Gpg(&publisher)));
    let journal = JournalSocket::bind().unwrap();
    let machine = TestMachine::start_with_journal(s.h.sysroot.path(), CONFIG, &journal).unwrap();
    s.configure_host(&machine, signed_by(&publisher), &[]);
    let conn = machine.connect().await.unwrap();
    let image = format!("{}/hostd/os:stable", s.registry.host());
    assert_eq!(switch_enforced(&conn, &image).await.state, "succeeded");
    let before = s.h.sysroot.deployment_checksums().unwrap();

    s.push(&s.v3, "hostd/os:stable", None);
    machine.set_config_dropin("50-policy.toml", Some("[updates]\npolicy = \"stage\"\n")).unwrap();
    assert!(machine.hostctl(None, &["reload"]).status.success());
    let out = machine.hostctl(None, &["upgrade", "--auto"]);
    assert!(!out.status.success(), "the unattended upgrade must fail: {}", text(&out));
    assert!(text(&out).contains("SignatureRejected"), "{}", text(&out));

    assert_eq!(s.h.sysroot.deployment_checksums().unwrap(), before, "nothing deployed");
    assert!(!s.fetched_any_of(&s.own_layers(&s.v3)));
    let host = Host1Proxy::new(&conn).await.unwrap();
    let result = host.last_check_result().await.unwrap();
    assert!(result.contains("SignatureRejected") && result.contains(&s.v3.digest), "LastCheckResult: {result}");
    let logged = journal.received().messages();
    assert!(
        logged.iter().any(|m| m.contains(&s.v3.digest) && m.contains("rejected")),
        "the journal says why: {logged:#?}"
    );
}

/// `[updates] require_signatures = true`: every image must be accepted by
/// the policy, also a Switch that does not ask for it, the Stage of an image
/// downloaded before it was required, and the Upgrade of an image tracked
/// unverified; an image a Switch gets accepted is tracked as verified.
#[tokio::test]
async fn require_signatures_refuses_every_unsigned_image() {
    let s = signed_setup().await;
    let publisher = GpgKey::generate(s.h.sysroot.dir.path(), "publisher").unwrap();
    s.push(&s.v2, "hostd/os:stable", None);
    let machine = TestMachine::start(s.h.sysroot.path(), CONFIG).unwrap();
    s.configure_host(&machine, signed_by(&publisher), &[]);
    let conn = machine.connect().await.unwrap();
    let no_options: Opts<'_> = HashMap::new();
    // Not yet required: an unsigned image deploys unverified.
    let job = run_job(&conn, "Switch", &(format!("{}/hostd/os:stable", s.registry.host()), no_options.clone())).await.unwrap();
    assert_eq!(job.state, "succeeded", "{job:?}");
    assert_eq!(deployed(&conn).await[0], vd(&s.v2));

    // Downloaded while nothing was required, then required: Stage refuses it.
    s.push(&s.v3, "hostd/os:stable", None);
    let download_only = HashMap::from([("download-only", Variant::Bool(true))]);
    assert_eq!(run_job(&conn, "Upgrade", &(download_only,)).await.unwrap().state, "succeeded");
    machine.set_config_dropin("60-signatures.toml", Some("[updates]\nrequire_signatures = true\n")).unwrap();
    assert!(machine.hostctl(None, &["reload"]).status.success());
    let before = s.h.sysroot.deployment_checksums().unwrap();
    let message = expect_rejected(&run_job(&conn, "Stage", &(no_options.clone(),)).await.unwrap());
    assert!(message.contains(&s.v3.digest), "{message}");
    assert_eq!(s.h.sysroot.deployment_checksums().unwrap(), before, "Stage deployed nothing");
    let message = expect_rejected(&run_job(&conn, "Upgrade", &(no_options.clone(),)).await.unwrap());
    assert!(message.contains(&s.v3.digest), "{message}");
    let local = format!("{}:v3", s.h.builder.oci_dir.display());
    let transport = HashMap::from([("transport", Variant::Str("oci".into()))]);
    let message = expect_rejected(&run_job(&conn, "Switch", &(local.as_str(), transport)).await.unwrap());
    assert!(message.contains("oci:"), "{message}");
    assert_eq!(s.h.sysroot.deployment_checksums().unwrap(), before, "nothing deployed");

    // A signed image deploys, tracked as verified without being asked to.
    s.push(&s.v3, "hostd/os:signed", Some(Signer::Gpg(&publisher)));
    let image = format!("{}/hostd/os:signed", s.registry.host());
    let job = run_job(&conn, "Switch", &(image.as_str(), no_options)).await.unwrap();
    assert_eq!(job.state, "succeeded", "{job:?}\n{}", machine.log());
    assert_eq!(deployed(&conn).await[0], vd(&s.v3));
    let tracked = status(&conn).await.spec.image.expect("a tracked image");
    assert_eq!(serde_json::to_value(&tracked.signature).unwrap(), json!("containerPolicy"));
}
