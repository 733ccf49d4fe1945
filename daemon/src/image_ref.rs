//! Strict parsing of the image references callers hand to `Switch`.
//!
//! The reference ends up in skopeo's image proxy and in the origin file, so
//! anything that could be read as an option, a second transport or a path
//! outside what the caller named is refused before any work starts.

use std::path::{Component, Path};
use std::str::FromStr;

use hostd_interface::host::{ImageReference, ImageSignature, Transport};
use ostree_ext::oci_spec::distribution::Reference;

/// Why a reference was refused; the message says what to give instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidReference(pub String);

type Error = InvalidReference;

/// Longest accepted image reference.
pub const MAX_IMAGE_LEN: usize = 1024;

/// Parse `image` for `transport`; `enforce_sigpolicy` selects verification by
/// the host's containers policy instead of none.
pub fn parse(image: &str, transport: Transport, enforce_sigpolicy: bool) -> Result<ImageReference, Error> {
    check_common(image)?;
    match transport {
        Transport::Registry => check_registry(image)?,
        Transport::ContainersStorage => check_containers_storage(image)?,
        Transport::Oci | Transport::OciArchive | Transport::Dir | Transport::DockerArchive => check_path(image, transport)?,
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
    InvalidReference(msg)
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
    if let Some(transport) = transport_prefix(image) {
        return Err(invalid(format!(
            "'{image}' names its transport ({transport}:) in the reference; give the transport separately \
             (hostctl switch --transport {transport}, the Switch option 'transport') and the rest as the image"
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
    // skopeo 1.9 cannot open such a reference, and a tag (followed by later
    // upgrades) and a digest (one image, for good) ask for different things.
    if let (Some(tag), Some(digest)) = (parsed.tag(), parsed.digest()) {
        let name = format!("{}/{}", parsed.registry(), parsed.repository());
        let name = if image.starts_with(&name) { name } else { parsed.repository().to_string() };
        return Err(invalid(format!(
            "'{image}' has both a tag and a digest; give either the tag to track it ({name}:{tag}) \
             or the digest to pin that image ({name}@{digest})"
        )));
    }
    Ok(())
}

/// The transport a registry reference starts with as in bootc's or skopeo's
/// `transport:rest` syntax (`oci:/srv/os`), which `Switch` takes apart.
/// What follows a registry reference's first colon is a tag (no `/`:
/// `registry:latest` is Docker Hub's image) or a port (digits:
/// `registry:5000/os`), never a path.
fn transport_prefix(image: &str) -> Option<&'static str> {
    let (head, rest) = image.split_once(':')?;
    if !rest.contains('/') || rest.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Transport::ALL.iter().map(|t| t.as_str()).chain(["docker"]).find(|t| *t == head)
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
        // A docker-archive's `:name` or `:@index` suffix selects one of
        // several saved images; hostd reads archives of one image.
        if transport == Transport::DockerArchive {
            return Err(invalid(format!(
                "'{image}': give the docker-archive's path alone; hostd reads archives holding one image (podman save IMAGE)"
            )));
        }
        if transport == Transport::Dir || !is_tag(tag) {
            return Err(invalid(format!("'{image}' has a malformed tag")));
        }
    }
    Ok(())
}

/// An OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_')
        && tag.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(image: &str, t: Transport) {
        parse(image, t, false).unwrap_or_else(|e| panic!("{image}: {e:?}"));
    }
    fn bad(image: &str, t: Transport) -> String {
        match parse(image, t, false) {
            Err(InvalidReference(m)) => m,
            other => panic!("{image} should be invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_transport_written_into_a_registry_reference_is_explained() {
        for image in ["oci:/srv/os:latest", "containers-storage:localhost/os", "docker-archive:/media/os.tar"] {
            let e = parse(image, Transport::Registry, false).unwrap_err();
            assert!(e.0.contains("--transport"), "{image}: {e:?}");
        }
        // Hosts that happen to share a transport's name, with their port.
        assert!(parse("registry:5000/os:1", Transport::Registry, false).is_ok());
        assert!(parse("oci:5000/os", Transport::Registry, false).is_ok());
        // A short name with a tag is no transport either (it is refused as
        // not canonical, for its own reason).
        for short in ["registry:latest", "dir:v1"] {
            let e = parse(short, Transport::Registry, false).unwrap_err();
            assert!(!e.0.contains("--transport"), "{short}: {e:?}");
        }
    }

    #[test]
    fn registry_references() {
        ok("quay.io/fedora/fedora-bootc:41", Transport::Registry);
        ok("127.0.0.1:5000/os:latest", Transport::Registry);
        ok("quay.io/org/os@sha256:0000000000000000000000000000000000000000000000000000000000000000", Transport::Registry);
        assert!(bad("docker://quay.io/x", Transport::Registry).contains("URL scheme"));
        let digest = format!("sha256:{}", "0".repeat(64));
        let both = bad(&format!("127.0.0.1:5000/os:v2@{digest}"), Transport::Registry);
        assert!(both.contains("both a tag and a digest"), "{both}");
        assert!(both.contains("(127.0.0.1:5000/os:v2)") && both.contains(&format!("(127.0.0.1:5000/os@{digest})")), "{both}");
        assert!(bad(&format!("localhost/os:v2@{digest}"), Transport::ContainersStorage).contains("both a tag"));
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
        ok("/media/usb/myos.tar", Transport::DockerArchive);
        assert!(bad("/media/usb/myos.tar:localhost/myos:latest", Transport::DockerArchive).contains("path alone"));
        assert!(bad("myos.tar", Transport::DockerArchive).contains("absolute"));
        assert!(bad("images/os", Transport::Oci).contains("absolute"));
        assert!(bad("/srv/../etc", Transport::Dir).contains(".."));
        bad("/srv/os:a:b", Transport::Oci);
        bad("/srv/os:tag", Transport::Dir);
        // Found by the property test: a "tag" that is really a path.
        bad("/://..", Transport::Oci);
        bad("/srv/os:-tag", Transport::OciArchive);
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

    mod properties {
        //! Seeded and bounded in `make test` (PROPTEST_RNG_SEED,
        //! PROPTEST_CASES); `make fuzz` runs them long. Failing inputs are
        //! kept in `proptest-regressions/` and replayed first.
        use super::*;
        use proptest::prelude::*;

        fn transport() -> impl Strategy<Value = Transport> {
            proptest::sample::select(Transport::ALL.to_vec())
        }

        /// Strings built from the characters that matter to the parser.
        fn tricky() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    Just("/".to_string()), Just(":".to_string()), Just("@".to_string()),
                    Just("..".to_string()), Just("-".to_string()), Just("[".to_string()),
                    Just("://".to_string()), Just(" ".to_string()), Just("\0".to_string()),
                    Just("sha256:".to_string()), "[a-zA-Z0-9._]{1,8}", any::<char>().prop_map(String::from),
                ],
                0..24,
            )
            .prop_map(|parts| parts.concat())
        }

        proptest! {
            #[test]
            fn accepted_references_keep_the_invariants(image in prop_oneof![tricky(), any::<String>()], t in transport()) {
                if let Ok(r) = parse(&image, t, false) {
                    prop_assert_eq!(&r.image, &image);
                    prop_assert!(!image.is_empty() && image.len() <= MAX_IMAGE_LEN);
                    prop_assert!(!image.starts_with('-'));
                    prop_assert!(!image.chars().any(|c| c.is_control() || c.is_whitespace()));
                    match t {
                        Transport::Oci | Transport::OciArchive | Transport::Dir | Transport::DockerArchive => {
                            prop_assert!(image.starts_with('/'));
                            prop_assert!(!image.split(['/', ':']).any(|c| c == ".."));
                        }
                        Transport::Registry => prop_assert!(!image.contains("://")),
                        Transport::ContainersStorage => prop_assert!(!image.starts_with('[')),
                    }
                }
            }

            #[test]
            fn well_formed_registry_references_are_accepted(
                host in "[a-z0-9]{1,12}(\\.[a-z]{2,6})?(:[0-9]{2,5})?",
                path in "[a-z0-9]{1,10}(/[a-z0-9]{1,10}){0,2}",
                tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}",
            ) {
                let image = format!("{host}/{path}:{tag}");
                prop_assert!(parse(&image, Transport::Registry, false).is_ok(), "{}", image);
            }

            #[test]
            fn absolute_paths_are_accepted(dirs in proptest::collection::vec("[a-zA-Z0-9_][a-zA-Z0-9._-]{0,12}", 1..5)) {
                let path = format!("/{}", dirs.join("/"));
                prop_assume!(!dirs.iter().any(|d| d == ".."));
                for t in [Transport::Oci, Transport::OciArchive, Transport::Dir, Transport::DockerArchive] {
                    prop_assert!(parse(&path, t, false).is_ok(), "{} {}", t, path);
                }
            }
        }
    }
}
