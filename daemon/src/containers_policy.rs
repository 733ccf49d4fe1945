//! Whether the host's containers policy (`/etc/containers/policy.json`)
//! actually verifies signatures for an image. `enforce-container-sigpolicy`
//! hands verification to that policy, so a policy that accepts anything
//! would turn the option into a silent no-op: such a request is refused.

use std::collections::HashMap;
use std::path::Path;

use hostd_interface::host::{ImageReference, Transport};
use serde::Deserialize;

/// Where skopeo reads the policy.
pub const POLICY_PATH: &str = "/etc/containers/policy.json";

#[derive(Debug, Deserialize)]
struct Policy {
    #[serde(default)]
    default: Vec<Requirement>,
    #[serde(default)]
    transports: HashMap<String, HashMap<String, Vec<Requirement>>>,
}

#[derive(Debug, Deserialize)]
struct Requirement {
    #[serde(rename = "type")]
    kind: String,
}

/// Why `enforce-container-sigpolicy` cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("cannot read the containers policy {}: {source}", path.display())]
    Unreadable {
        /// The policy file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The policy file is not a valid policy.
    #[error("the containers policy {} is not valid: {source}", path.display())]
    Invalid {
        /// The policy file.
        path: std::path::PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// The policy accepts the image unverified.
    #[error(
        "{} accepts {image} without a signature, so enforce-container-sigpolicy would verify nothing; \
         configure a signedBy or sigstoreSigned requirement for it",
        path.display()
    )]
    AcceptsAnything {
        /// The policy file.
        path: std::path::PathBuf,
        /// The image as given.
        image: String,
    },
}

type Error = PolicyError;

/// Refuse `image` unless the policy at `path` requires signatures for it
/// (or rejects it outright).
pub fn ensure_enforcing(path: &Path, image: &ImageReference) -> Result<(), Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| PolicyError::Unreadable { path: path.to_path_buf(), source })?;
    let policy: Policy = serde_json::from_str(&text)
        .map_err(|source| PolicyError::Invalid { path: path.to_path_buf(), source })?;
    if requirements_for(&policy, image).iter().any(|r| r.kind != "insecureAcceptAnything") {
        return Ok(());
    }
    Err(PolicyError::AcceptsAnything { path: path.to_path_buf(), image: image.image.clone() })
}

/// The requirements that apply: the most specific scope of the image's
/// transport, else the transport's default (""), else the global default.
/// Registry scopes are looked up as containers-image looks them up
/// ([`docker_scopes`]); path scopes of local transports by directory.
fn requirements_for<'a>(policy: &'a Policy, image: &ImageReference) -> &'a [Requirement] {
    let transport = match image.transport {
        Transport::Registry => "docker",
        Transport::Oci => "oci",
        Transport::OciArchive => "oci-archive",
        Transport::Dir => "dir",
        Transport::DockerArchive => "docker-archive",
        Transport::ContainersStorage => "containers-storage",
    };
    let Some(scopes) = policy.transports.get(transport) else {
        return &policy.default;
    };
    let specific = match image.transport {
        Transport::Registry => docker_scopes(&image.image).into_iter().find_map(|scope| scopes.get(&scope)),
        _ => scopes
            .iter()
            .filter(|(scope, _)| !scope.is_empty() && path_scope_matches(scope, &image.image))
            .max_by_key(|(scope, _)| scope.len())
            .map(|(_, reqs)| reqs),
    };
    specific.or_else(|| scopes.get("")).map_or(&policy.default, |reqs| reqs.as_slice())
}

/// The scopes a registry image is looked up under, most specific first, as
/// containers-image's docker transport lists them
/// (containers-policy.json(5), "docker"): the reference itself
/// (`host[:port]/path:tag`), the repository, each parent namespace up to
/// `host[:port]`, then the host's wildcard domains without the port
/// (`*.example.com`, `*.com`). Short names are expanded as Docker Hub's
/// (`fedora` → `docker.io/library/fedora`).
fn docker_scopes(image: &str) -> Vec<String> {
    let full = normalized_docker_name(image);
    let mut scopes = vec![full.clone()];
    // The repository: without the tag or digest.
    let mut name = full.split_once('@').map_or(full.as_str(), |(n, _)| n);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    if let Some(colon) = name[last_slash..].rfind(':') {
        name = &name[..last_slash + colon];
    }
    loop {
        if scopes.last().map(String::as_str) != Some(name) {
            scopes.push(name.to_string());
        }
        match name.rfind('/') {
            Some(i) => name = &name[..i],
            None => break,
        }
    }
    let mut host = name.split_once(':').map_or(name, |(h, _)| h);
    while let Some((_, rest)) = host.split_once('.') {
        scopes.push(format!("*.{rest}"));
        host = rest;
    }
    scopes
}

/// `image` with Docker Hub's defaults filled in where its first component
/// is no host (no `.` or `:`, not `localhost`).
fn normalized_docker_name(image: &str) -> String {
    let (first, rest) = image.split_once('/').unwrap_or(("", image));
    let is_host = !first.is_empty() && (first.contains(['.', ':']) || first == "localhost");
    match (is_host, first.is_empty()) {
        (true, _) => image.to_string(),
        (false, true) => format!("docker.io/library/{rest}"),
        (false, false) => format!("docker.io/{image}"),
    }
}

/// `scope` names the local image path itself or a directory holding it.
fn path_scope_matches(scope: &str, image: &str) -> bool {
    image == scope
        || image
            .strip_prefix(scope)
            .is_some_and(|rest| rest.starts_with(['/', ':', '@']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostd_interface::host::ImageSignature;

    fn check(policy: &str, transport: Transport, image: &str) -> Result<(), Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        std::fs::write(&path, policy).unwrap();
        let image = ImageReference {
            image: image.into(),
            transport,
            signature: Some(ImageSignature::ContainerPolicy),
        };
        ensure_enforcing(&path, &image)
    }

    const DEBIAN_DEFAULT: &str = r#"{"default": [{"type": "insecureAcceptAnything"}]}"#;
    const SIGNED_QUAY: &str = r#"{
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {
            "quay.io/org": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k"}],
            "quay.io/org/open": [{"type": "insecureAcceptAnything"}]
        }}
    }"#;

    #[test]
    fn accept_anything_cannot_be_enforced() {
        let e = check(DEBIAN_DEFAULT, Transport::Registry, "quay.io/org/os:1").unwrap_err();
        assert!(matches!(e, PolicyError::AcceptsAnything { .. }), "{e:?}");
        assert!(e.to_string().contains("verify nothing"), "{e:?}");
    }

    #[test]
    fn the_most_specific_scope_decides() {
        check(SIGNED_QUAY, Transport::Registry, "quay.io/org/os:1").unwrap();
        check(SIGNED_QUAY, Transport::Registry, "quay.io/org/open:1").unwrap_err();
        check(SIGNED_QUAY, Transport::Registry, "quay.io/organisation/os").unwrap_err();
        check(SIGNED_QUAY, Transport::Oci, "/srv/os").unwrap_err();
    }

    #[test]
    fn registry_scopes_are_looked_up_as_containers_image_does() {
        assert_eq!(
            docker_scopes("127.0.0.1:5000/hostd/os:stable"),
            [
                "127.0.0.1:5000/hostd/os:stable",
                "127.0.0.1:5000/hostd/os",
                "127.0.0.1:5000/hostd",
                "127.0.0.1:5000",
                "*.0.0.1",
                "*.0.1",
                "*.1"
            ]
        );
        assert_eq!(docker_scopes("fedora")[..2], ["docker.io/library/fedora", "docker.io/library"]);
        assert_eq!(docker_scopes("quay.io/org/os@sha256:00")[1], "quay.io/org/os");
        // A scope without the port does not hold the image on that port.
        let host_only = r#"{"default": [{"type": "insecureAcceptAnything"}],
            "transports": {"docker": {"127.0.0.1": [{"type": "reject"}]}}}"#;
        check(host_only, Transport::Registry, "127.0.0.1:5000/os:1").unwrap_err();
        // Wildcard domains count, below more specific scopes.
        let wildcard = r#"{"default": [{"type": "insecureAcceptAnything"}],
            "transports": {"docker": {"*.example.com": [{"type": "reject"}],
                                      "open.example.com/os": [{"type": "insecureAcceptAnything"}]}}}"#;
        check(wildcard, Transport::Registry, "registry.example.com:443/os:1").unwrap();
        check(wildcard, Transport::Registry, "open.example.com/os:1").unwrap_err();
        // A tag's own scope decides for that tag.
        let tagged = r#"{"default": [{"type": "reject"}],
            "transports": {"docker": {"q.io/os": [{"type": "insecureAcceptAnything"}],
                                      "q.io/os:stable": [{"type": "reject"}]}}}"#;
        check(tagged, Transport::Registry, "q.io/os:stable").unwrap();
        check(tagged, Transport::Registry, "q.io/os:testing").unwrap_err();
    }

    #[test]
    fn reject_counts_as_enforcing_and_bad_files_are_refused() {
        check(r#"{"default": [{"type": "reject"}]}"#, Transport::Dir, "/srv/os").unwrap();
        assert!(matches!(check("{", Transport::Dir, "/srv/os").unwrap_err(), PolicyError::Invalid { .. }));
    }
}
