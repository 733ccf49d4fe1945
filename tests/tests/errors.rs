//! What a user sees when an image cannot be had: each case through
//! `hostctl`, asserting the error name, the exit code, and that the message
//! names the image as the user wrote it, once. Real servers where one can
//! fail as needed (docker-registry with htpasswd auth, `oci:` layouts); a
//! stand-in registry (`hostd_tests::standin_registry`) for answers a real
//! registry cannot be told to give.

use std::process::Output;

use hostd_tests::fixture::plain_image;
use hostd_tests::machine::TestMachine;
use hostd_tests::offline::{deployed, host_with_v1, text, vd, OfflineHost};
use hostd_tests::registry::TestRegistry;
use hostd_tests::standin_registry::{ManifestFailure, StandInRegistry};
use zbus::Connection;

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

/// hostctl's exit codes (client/src/exit.rs) for the cases here.
const EXIT_FAILURE: i32 = 1;
const EXIT_INVALID_ARGUMENT: i32 = 7;
const EXIT_AUTHENTICATION_REQUIRED: i32 = 10;
const EXIT_ACCESS_DENIED: i32 = 11;
const EXIT_NOT_BOOTABLE: i32 = 12;

/// An offline host with v1 deployed and a machine serving it.
struct Host {
    h: OfflineHost,
    machine: TestMachine,
    conn: Connection,
}

impl Host {
    async fn start() -> Host {
        let h = host_with_v1("512m", &[]).await;
        let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
        let conn = machine.connect().await.unwrap();
        Host { h, machine, conn }
    }

    /// Nothing was deployed, and no job is left running.
    async fn unchanged(&self) {
        assert_eq!(deployed(&self.conn).await, [vd(&self.h.v1)]);
        let (_, proxy) = self.machine.manager().await.unwrap();
        assert_eq!(proxy.active_job().await.unwrap().as_str(), "/");
    }
}

/// `hostctl` failed with exit `code`, printed `hostctl: <name>: …`, and its
/// error line names `image` exactly once.
fn assert_failed(out: &Output, code: i32, name: &str, image: &str) -> String {
    let all = text(out);
    assert_eq!(out.status.code(), Some(code), "{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("hostctl: {name}: ")))
        .unwrap_or_else(|| panic!("no {name} error line in:\n{all}"));
    assert_eq!(line.matches(image).count(), 1, "the image once in: {line}");
    assert!(!line.contains("ostree-unverified"), "no internal reference syntax: {line}");
    line.to_string()
}

#[tokio::test]
async fn a_registry_wanting_credentials_is_authentication_required_and_with_them_the_switch_succeeds() {
    let host = Host::start().await;
    let registry = TestRegistry::start_with_htpasswd("builder", "s3cret").unwrap();
    registry.push(&host.h.builder.oci_name(), "hostd/os:latest").unwrap();
    host.machine.trust_registry(&registry.host()).unwrap();
    let image = format!("{}/hostd/os:latest", registry.host());

    let out = host.machine.hostctl(None, &["switch", &image]);
    let line = assert_failed(&out, EXIT_AUTHENTICATION_REQUIRED, "AuthenticationRequired", &image);
    for names in [registry.host().as_str(), "/etc/ostree/auth.json", "/run/ostree/auth.json", "/usr/lib/ostree/auth.json"] {
        assert!(line.contains(names), "{names} in: {line}");
    }
    host.unchanged().await;

    let encoded = base64(b"builder:s3cret");
    let auth_json = serde_json::json!({ "auths": { registry.host(): { "auth": encoded } } });
    std::fs::create_dir_all(host.machine.etc().join("ostree")).unwrap();
    std::fs::write(host.machine.etc().join("ostree/auth.json"), auth_json.to_string()).unwrap();
    let out = host.machine.hostctl(None, &["switch", &image]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), host.machine.log());
    let tracked = hostd_tests::offline::status(&host.conn).await.spec.image.expect("an image is tracked");
    assert_eq!(tracked.image, image);
}

#[tokio::test]
async fn an_oci_layout_without_the_tag_is_image_not_found_said_once() {
    let host = Host::start().await;
    let image = format!("{}:nope", host.h.builder.oci_name().trim_end_matches(":latest"));
    let out = host.machine.hostctl(None, &["switch", "--transport", "oci", &image]);
    let line = assert_failed(&out, EXIT_FAILURE, "ImageNotFound", &image);
    assert!(line.contains(&format!("oci:{image}")), "with its transport: {line}");
    assert!(line.contains("no image tagged \"nope\""), "{line}");
    host.unchanged().await;
}

#[tokio::test]
async fn a_reference_with_tag_and_digest_is_refused_by_the_method() {
    let host = Host::start().await;
    let digest = host.h.v1.digest.clone();
    let image = format!("127.0.0.1:5000/hostd/os:v2@{digest}");
    let out = host.machine.hostctl(None, &["switch", &image]);
    let line = assert_failed(&out, EXIT_INVALID_ARGUMENT, "InvalidArgument", &image);
    assert!(line.contains("127.0.0.1:5000/hostd/os:v2)") && line.contains(&format!("127.0.0.1:5000/hostd/os@{digest})")), "{line}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("/org/hostd/Host1/job/"), "no job: {}", text(&out));
    host.unchanged().await;
}

#[tokio::test]
async fn a_plain_container_image_is_not_bootable() {
    let host = Host::start().await;
    let layout = host.h.sysroot.dir.path().join("plain");
    let image = plain_image(&layout, "latest").unwrap();
    let out = host.machine.hostctl(None, &["switch", "--transport", "oci", &image]);
    let line = assert_failed(&out, EXIT_NOT_BOOTABLE, "NotBootable", &image);
    assert!(line.contains("bootc base image"), "{line}");
    host.unchanged().await;
}

/// A stand-in registry failing manifest requests, and what the user sees.
#[tokio::test]
async fn registry_failures_of_a_stand_in_are_network_access_denied_network_and_network() {
    let host = Host::start().await;
    let cases = [
        (ManifestFailure::ServerError, EXIT_FAILURE, "Network", "500"),
        (ManifestFailure::Denied, EXIT_ACCESS_DENIED, "AccessDenied", "denied"),
        (ManifestFailure::TooManyRequests, EXIT_FAILURE, "Network", "toomanyrequests"),
        // Not ImageNotFound, although it happens "reading manifest".
        (ManifestFailure::Reset, EXIT_FAILURE, "Network", "connection reset by peer"),
    ];
    for (failure, code, name, detail) in cases {
        let standin = StandInRegistry::start(failure).unwrap();
        host.machine.trust_registry(&standin.host()).unwrap();
        let image = format!("{}/hostd/os:latest", standin.host());
        let out = host.machine.hostctl(None, &["switch", &image]);
        let line = assert_failed(&out, code, name, &image);
        assert!(line.contains(detail), "{failure:?}: {line}");
        host.unchanged().await;
    }
}

/// Standard base64, for an auth.json entry.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_is_standard() {
    assert_eq!(base64(b"builder:s3cret"), "YnVpbGRlcjpzM2NyZXQ=");
    assert_eq!(base64(b"ab"), "YWI=");
}
