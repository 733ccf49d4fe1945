//! Strict parsing of the image references callers hand to `Switch`.
//!
//! The reference ends up in skopeo's image proxy and in the origin file, so
//! anything that could be read as an option, a second transport or a path
//! outside what the caller named is refused before any work starts.

use std::path::{Component, Path};
use std::str::FromStr;

use hostd_interface::host::{ImageReference, ImageSignature, Transport};
use hostd_interface::Error;
use ostree_ext::oci_spec::distribution::Reference;

/// Longest accepted image reference.
pub const MAX_IMAGE_LEN: usize = 1024;

/// Parse `image` for `transport`; `enforce_sigpolicy` selects verification by
/// the host's containers policy instead of none.
pub fn parse(image: &str, transport: Transport, enforce_sigpolicy: bool) -> Result<ImageReference, Error> {
    check_common(image)?;
    match transport {
        Transport::Registry => check_registry(image)?,
        Transport::ContainersStorage => check_containers_storage(image)?,
        Transport::Oci | Transport::OciArchive | Transport::Dir => check_path(image, transport)?,
    }
    Ok(ImageReference {
        image: image.to_string(),
        transport,
        signature: Some(if enforce_sigpolicy {
            ImageSignature::ContainerPolicy
        } else {
            ImageSignature::Insecure
        }),
    })
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

fn check_common(image: &str) -> Result<(), Error> {
    if image.is_empty() {
        return Err(invalid("the image reference is empty".into()));
    }
    if image.len() > MAX_IMAGE_LEN {
        return Err(invalid(format!("the image reference is longer than {MAX_IMAGE_LEN} bytes")));
    }
    if let Some(c) = image.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(format!(
            "the image reference contains the character {:?}",
            c
        )));
    }
    if image.starts_with('-') {
        return Err(invalid("the image reference must not start with '-'".into()));
    }
    Ok(())
}

fn check_registry(image: &str) -> Result<(), Error> {
    if image.contains("://") {
        return Err(invalid(format!(
            "'{image}' has a URL scheme; give the registry reference alone (e.g. quay.io/org/os:tag)"
        )));
    }
    let parsed = Reference::from_str(image).map_err(|e| {
        invalid(format!("'{image}' is not a valid registry image reference: {e}"))
    })?;
    // The parser accepts some inputs it normalizes; insist on a round trip of
    // the repository part so what is stored is what was asked.
    if !image.contains(parsed.repository()) {
        return Err(invalid(format!("'{image}' is not a canonical image reference")));
    }
    Ok(())
}

fn check_containers_storage(image: &str) -> Result<(), Error> {
    let is_image_id = image.len() == 64 && image.bytes().all(|b| b.is_ascii_hexdigit());
    if is_image_id || image.starts_with('[') {
        // `[store-spec]name` selects another storage root: not something a
        // caller of a root daemon may point at.
        if image.starts_with('[') {
            return Err(invalid("containers-storage references with a [store] prefix are not accepted".into()));
        }
        return Ok(());
    }
    check_registry(image)
}

fn check_path(image: &str, transport: Transport) -> Result<(), Error> {
    // oci: and oci-archive: take an optional ":tag" after the path.
    let path = match transport {
        Transport::Oci | Transport::OciArchive => image.split_once(':').map_or(image, |(p, _)| p),
        _ => image,
    };
    if !path.starts_with('/') {
        return Err(invalid(format!("the {transport} path '{path}' must be absolute")));
    }
    if Path::new(path).components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(invalid(format!("the {transport} path '{path}' must not contain '..'")));
    }
    if let Some((_, tag)) = image.split_once(':') {
        if transport == Transport::Dir || tag.is_empty() || tag.contains(':') {
            return Err(invalid(format!("'{image}' has a malformed tag")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(image: &str, t: Transport) {
        parse(image, t, false).unwrap_or_else(|e| panic!("{image}: {e:?}"));
    }
    fn bad(image: &str, t: Transport) -> String {
        match parse(image, t, false) {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("{image} should be invalid, got {other:?}"),
        }
    }

    #[test]
    fn registry_references() {
        ok("quay.io/fedora/fedora-bootc:41", Transport::Registry);
        ok("127.0.0.1:5000/os:latest", Transport::Registry);
        ok("quay.io/org/os@sha256:0000000000000000000000000000000000000000000000000000000000000000", Transport::Registry);
        assert!(bad("docker://quay.io/x", Transport::Registry).contains("URL scheme"));
        assert!(bad("Quay.io/UPPER/Case", Transport::Registry).contains("not a valid"));
        bad("quay.io/x:tag with space", Transport::Registry);
        bad("--authfile=/etc/shadow", Transport::Registry);
        bad("", Transport::Registry);
        bad("a\0b", Transport::Registry);
        bad(&"a".repeat(MAX_IMAGE_LEN + 1), Transport::Registry);
    }

    #[test]
    fn local_paths() {
        ok("/var/lib/images/os", Transport::Oci);
        ok("/var/lib/images/os:latest", Transport::Oci);
        ok("/srv/os.tar", Transport::OciArchive);
        ok("/srv/os-dir", Transport::Dir);
        assert!(bad("images/os", Transport::Oci).contains("absolute"));
        assert!(bad("/srv/../etc", Transport::Dir).contains(".."));
        bad("/srv/os:a:b", Transport::Oci);
        bad("/srv/os:tag", Transport::Dir);
    }

    #[test]
    fn containers_storage() {
        ok("localhost/os:latest", Transport::ContainersStorage);
        ok(&"a".repeat(64), Transport::ContainersStorage);
        bad("[overlay@/tmp/x]os", Transport::ContainersStorage);
    }

    #[test]
    fn signature_policy() {
        let r = parse("quay.io/a/b", Transport::Registry, true).unwrap();
        assert_eq!(r.signature, Some(ImageSignature::ContainerPolicy));
    }
}
