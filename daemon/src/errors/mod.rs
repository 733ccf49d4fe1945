//! Naming errors for the API, once, where results of the code below the bus
//! leave for a job or a method reply.
//!
//! Names come from typed causes, looked for along the whole cause chain: the
//! errno of a failed system call, the domain and code of a GLib error, the
//! image proxy's error variant and the method that failed, and the typed
//! conditions the sysroot code decides itself. Only what a registry answers
//! is read as text, in [`registry`]. What none of these names is `Failed`
//! with the cause chain.

pub mod registry;

use hostd_interface::Error as Named;
use nix::errno::Errno;
use ostree_ext::containers_image_proxy::Error as ProxyError;
use ostree_ext::{gio, glib};

use crate::sysroot::local_source::Unsafe;
use crate::sysroot::{self, ImageFailure};
use registry::RegistryAnswer;

/// Where credentials for a registry are read, first found wins (the files
/// ostree-ext hands to skopeo).
pub const AUTH_FILES: [&str; 3] = ["/etc/ostree/auth.json", "/run/ostree/auth.json", "/usr/lib/ostree/auth.json"];

/// How a job or reply reports a lost image proxy; tests and docs quote it.
pub const SKOPEO_STOPPED: &str = "skopeo stopped unexpectedly (it crashed or was killed)";

impl From<sysroot::Error> for Named {
    fn from(e: sysroot::Error) -> Named {
        name(&e)
    }
}

impl From<crate::image_ref::InvalidReference> for Named {
    fn from(e: crate::image_ref::InvalidReference) -> Named {
        Named::InvalidArgument(e.0)
    }
}

impl From<crate::containers_policy::PolicyError> for Named {
    /// The request asked for verification the policy cannot give.
    fn from(e: crate::containers_policy::PolicyError) -> Named {
        Named::SignatureRejected(e.to_string())
    }
}

/// [`name`], for `map_err`.
pub fn name_owned(e: sysroot::Error) -> Named {
    name(&e)
}

/// The API's name and message for a sysroot error.
pub fn name(e: &sysroot::Error) -> Named {
    use sysroot::Error as E;
    match e {
        E::Refused(m) => Named::InvalidArgument(m.clone()),
        E::NotImageBased(m) => Named::NotImageBased(m.clone()),
        E::NothingToStage(m) => Named::NothingToStage(m.clone()),
        E::MalformedPackageDatabase(m) => Named::MalformedPackageDatabase(m.clone()),
        E::LockHeld(m) => Named::Busy(m.clone()),
        E::NotEnoughSpace(m) => Named::NoSpace(m.clone()),
        E::SignatureRejected(m) => Named::SignatureRejected(m.clone()),
        E::Cancelled(m) => Named::Cancelled(m.clone()),
        E::ProgramMissing(m) => Named::Failed(m.clone()),
        E::NotAuthorized(m) => Named::NotAuthorized(m.clone()),
        E::Image { image, from_registry, failure } => name_image_failure(image, *from_registry, failure),
        E::Other(e) => name_step_failure(e),
    }
}

/// A failed step that is not an image read: only conditions of the host
/// itself can be named.
fn name_step_failure(e: &anyhow::Error) -> Named {
    let text = format!("{e:#}");
    match typed_cause(e) {
        Some(Cause::NoSpace) => Named::NoSpace(text),
        Some(Cause::Cancelled) => Named::Cancelled(text),
        Some(Cause::ProxyStopped) => Named::Failed(format!("{SKOPEO_STOPPED}: {text}")),
        Some(Cause::ProxyAnswered { .. }) | None => Named::Failed(text),
    }
}

fn name_image_failure(image: &str, from_registry: bool, failure: &ImageFailure) -> Named {
    match failure {
        ImageFailure::LocalPath { source, .. } => match source.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ENOENT | Errno::ENOTDIR) => Named::ImageNotFound(format!("{image}: {failure}")),
            Some(Errno::EACCES | Errno::EPERM) => Named::AccessDenied(format!("{image}: {failure}")),
            _ => Named::Failed(format!("{image}: {failure}")),
        },
        ImageFailure::TagMissing { .. } => Named::ImageNotFound(format!("{image}: {failure}")),
        ImageFailure::Unsafe(unsafe_source) => match unsafe_source {
            Unsafe::NotRegular { .. } | Unsafe::WrongFormat { .. } | Unsafe::MalformedArchive { .. } => {
                Named::InvalidArgument(format!("{image}: {failure}"))
            }
            _ => Named::AccessDenied(format!("{image}: {failure}")),
        },
        ImageFailure::NotBootable { .. } => Named::NotBootable(format!(
            "{image}: {failure}; a host can only boot an image built from a bootc base image"
        )),
        // The image itself is broken: no host can boot it as it is.
        ImageFailure::MalformedKargs(_) => Named::NotBootable(format!("{image}: {failure}")),
        ImageFailure::MalformedBoundImages(_) => Named::NotBootable(format!("{image}: {failure}")),
        // Named as a pull of the OS image would be: the user acts on the
        // registry's answer the same way.
        ImageFailure::BoundImage { .. } => name_proxy_answer(image, from_registry, None, &failure.to_string()),
        ImageFailure::SkopeoSaid(said) => name_proxy_answer(image, from_registry, None, said),
        ImageFailure::Read(e) => match typed_cause(e) {
            Some(Cause::NoSpace) => Named::NoSpace(format!("{image}: {e:#}")),
            Some(Cause::Cancelled) => Named::Cancelled(format!("{image}: {e:#}")),
            Some(Cause::ProxyStopped) => Named::Failed(format!("{SKOPEO_STOPPED} while reading {image}: {e:#}")),
            Some(Cause::ProxyAnswered { method, message }) => {
                name_proxy_answer(image, from_registry, Some(&method), &message)
            }
            None => Named::Failed(format!("{image}: {e:#}")),
        },
    }
}

/// What skopeo answered when `method` of its image proxy (or `skopeo copy`,
/// `None`) failed for `image`. Only a registry's answers are read: a local
/// file cut short ("unexpected EOF") is no network failure.
fn name_proxy_answer(image: &str, from_registry: bool, method: Option<&str>, message: &str) -> Named {
    let registry = registry_of(image);
    let answer = if from_registry { registry::classify(message) } else { None };
    match answer {
        Some(RegistryAnswer::Unauthorized) => Named::AuthenticationRequired(format!(
            "{image}: the registry {registry} requires authentication ({message}); hostd reads credentials from \
             the first of {} that exists",
            AUTH_FILES.join(", ")
        )),
        Some(RegistryAnswer::Denied) => Named::AccessDenied(format!("{image}: the registry {registry} denied access: {message}")),
        Some(RegistryAnswer::NotFound) => Named::ImageNotFound(format!("{image}: not found: {message}")),
        Some(RegistryAnswer::Unavailable) => {
            Named::Network(format!("{image}: the registry {registry} could not serve the request: {message}"))
        }
        Some(RegistryAnswer::Unreachable) => Named::Network(format!("{image}: the connection failed: {message}")),
        None => match method {
            Some(ProxyMethod::GET_BLOB | ProxyMethod::FINISH_PIPE) => {
                Named::Failed(format!("{image}: failed mid-transfer: {message}"))
            }
            Some(_) => Named::Failed(format!("could not open {image}: {message}")),
            None => Named::Failed(format!("{image}: {message}")),
        },
    }
}

/// The registry part of a registry reference (`quay.io` of
/// `quay.io/org/os:1`); local references are named whole.
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((host, _)) if !host.ends_with(':') && (host.contains(['.', ':']) || host == "localhost") => host,
        _ => image,
    }
}

/// Names of the image proxy's methods hostd distinguishes.
struct ProxyMethod;

impl ProxyMethod {
    const GET_BLOB: &'static str = "GetBlob";
    const FINISH_PIPE: &'static str = "FinishPipe";
}

/// A cause found on the chain that decides the name.
#[derive(Debug, PartialEq, Eq)]
enum Cause {
    /// ENOSPC/EDQUOT, or GLib's `G_IO_ERROR_NO_SPACE`.
    NoSpace,
    /// GLib's `G_IO_ERROR_CANCELLED`.
    Cancelled,
    /// skopeo's image proxy went away or stopped speaking its protocol.
    ProxyStopped,
    /// skopeo answered `method` with an error.
    ProxyAnswered { method: String, message: String },
}

/// The first typed cause along `e`'s chain.
fn typed_cause(e: &anyhow::Error) -> Option<Cause> {
    for cause in e.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error().map(Errno::from_raw), Some(Errno::ENOSPC | Errno::EDQUOT)) {
                return Some(Cause::NoSpace);
            }
        }
        if let Some(g) = cause.downcast_ref::<glib::Error>() {
            if g.matches(gio::IOErrorEnum::NoSpace) {
                return Some(Cause::NoSpace);
            }
            if g.matches(gio::IOErrorEnum::Cancelled) {
                return Some(Cause::Cancelled);
            }
        }
        if let Some(p) = cause.downcast_ref::<ProxyError>() {
            return proxy_cause(p);
        }
    }
    // ostree-ext reports a layer transfer that failed on both ends (its
    // `join_fetch`) with the proxy's error flattened into a context line.
    e.chain().find_map(|cause| flattened_proxy_cause(&cause.to_string()))
}

/// What an error of the image proxy means.
fn proxy_cause(e: &ProxyError) -> Option<Cause> {
    match e {
        ProxyError::RequestInitiationFailure { method, error } => Some(proxy_answer(method, error)),
        // Replies that could not be read, a child that exited, descriptors
        // that did not arrive: the proxy is gone or broken.
        ProxyError::Io(_) | ProxyError::SerDe(_) | ProxyError::Other(_) | ProxyError::RequestReturned(_) => {
            Some(Cause::ProxyStopped)
        }
        _ => None,
    }
}

/// A failed request: its transport failed (the proxy is gone), or skopeo
/// answered with an error. The crate wraps a failed request in a second
/// `RequestInitiationFailure` for the same method, so the prefix repeats.
fn proxy_answer(method: &str, error: &str) -> Cause {
    let prefix = format!("failed to invoke method {method}: ");
    let mut message = error;
    while let Some(inner) = message.strip_prefix(prefix.as_str()) {
        message = inner;
    }
    if lost_proxy_texts().iter().any(|t| t == message) {
        return Cause::ProxyStopped;
    }
    Cause::ProxyAnswered { method: method.to_string(), message: message.to_string() }
}

/// How the proxy crate prints its own transport failures (the `Display` of
/// its `Io`, `SerDe` and `Other` variants) once it has flattened them into
/// a string.
fn lost_proxy_texts() -> [String; 3] {
    let serde = serde_json::from_str::<()>("").expect_err("an empty document is not JSON");
    [
        ProxyError::Io(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).to_string(),
        ProxyError::SerDe(serde).to_string(),
        ProxyError::Other("".into()).to_string(),
    ]
}

/// ostree-ext's `proxy failure: <root cause of the proxy's error> and
/// client error` context, taken apart.
fn flattened_proxy_cause(context: &str) -> Option<Cause> {
    let inner = context.strip_prefix("proxy failure: ")?.strip_suffix(" and client error")?;
    if let Some(rest) = inner.strip_prefix("failed to invoke method ") {
        let (method, error) = rest.split_once(": ")?;
        return Some(proxy_answer(method, &format!("failed to invoke method {method}: {error}")));
    }
    lost_proxy_texts().iter().any(|t| t == inner).then_some(Cause::ProxyStopped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    /// A failed read of `image`, a registry reference unless it names its
    /// transport (`oci:/…`).
    fn image_read(image: &str, e: anyhow::Error) -> Named {
        let from_registry = !image.contains(":/");
        name(&sysroot::Error::Image { image: image.into(), from_registry, failure: ImageFailure::Read(e) })
    }

    fn open_failure(error: &str) -> anyhow::Error {
        let inner = ProxyError::RequestInitiationFailure { method: "OpenImage".into(), error: error.into() };
        let outer = ProxyError::RequestInitiationFailure { method: "OpenImage".into(), error: inner.to_string().into() };
        anyhow::Error::new(outer).context("Fetching manifest").context("Preparing import")
    }

    #[test]
    fn a_proxy_answer_is_named_once_with_the_callers_reference() {
        let e = image_read("oci:/srv/img:nope", open_failure("some new complaint"));
        assert_eq!(e.short_name(), "Failed");
        assert_eq!(e.message(), "could not open oci:/srv/img:nope: some new complaint");
    }

    #[test]
    fn only_a_registry_is_read_for_registry_answers() {
        let cut_short = || {
            let e = ProxyError::RequestInitiationFailure { method: "GetBlob".into(), error: "unexpected EOF".into() };
            anyhow::Error::new(e)
        };
        assert_eq!(image_read("oci-archive:/srv/os.tar", cut_short()).short_name(), "Failed");
        assert_eq!(image_read("127.0.0.1:5000/os:latest", cut_short()).short_name(), "Network");
    }

    #[test]
    fn a_lost_proxy_is_named_from_its_variants() {
        let serde = serde_json::from_str::<()>("").unwrap_err();
        let gone = ProxyError::RequestInitiationFailure { method: "FinishPipe".into(), error: ProxyError::SerDe(serde).to_string().into() };
        let e = image_read("127.0.0.1:5000/os:latest", anyhow::Error::new(gone).context("Importing"));
        assert_eq!(e.short_name(), "Failed");
        assert!(e.message().starts_with(SKOPEO_STOPPED), "{e:?}");
        let exited = ProxyError::Other("skopeo proxy unexpectedly exited during request method GetBlob: signal: 11".into());
        assert!(image_read("x", anyhow::Error::new(exited)).message().starts_with(SKOPEO_STOPPED));
        let both = anyhow::anyhow!("incomplete deflate stream").context("proxy failure: error and client error");
        assert!(image_read("x", both).message().starts_with(SKOPEO_STOPPED));
    }

    #[test]
    fn a_flattened_proxy_answer_keeps_its_method() {
        let reset = "proxy failure: failed to invoke method FinishPipe: failed to invoke method FinishPipe: \
                     read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer and client error";
        let e = image_read("127.0.0.1:2/os:latest", anyhow::anyhow!("unexpected EOF").context(reset));
        assert_eq!(e.short_name(), "Network", "{e:?}");
        let odd = "proxy failure: failed to invoke method GetBlob: something else and client error";
        let e = image_read("127.0.0.1:2/os:latest", anyhow::anyhow!("short read").context(odd));
        assert_eq!((e.short_name(), e.message().contains("failed mid-transfer")), ("Failed", true), "{e:?}");
    }

    #[test]
    fn host_conditions_are_named_from_errno_and_glib_codes() {
        let enospc = std::io::Error::from_raw_os_error(Errno::ENOSPC as i32);
        let e = name(&sysroot::Error::from(anyhow::Error::new(enospc).context("writing object")));
        assert_eq!(e.short_name(), "NoSpace");
        let g = glib::Error::new(gio::IOErrorEnum::NoSpace, "Error writing to file");
        assert_eq!(name(&sysroot::Error::from(anyhow::Error::new(g).context("commit"))).short_name(), "NoSpace");
        let c = glib::Error::new(gio::IOErrorEnum::Cancelled, "Operation was cancelled");
        assert_eq!(name(&sysroot::Error::from(anyhow::Error::new(c))).short_name(), "Cancelled");
        let enoent = std::io::Error::from_raw_os_error(Errno::ENOENT as i32);
        let e = name(&sysroot::Error::from(Err::<(), _>(enoent).context("writing /sysroot/x").unwrap_err()));
        assert_eq!(e.short_name(), "Failed", "an ENOENT that is not the image's path is no ImageNotFound");
    }

    #[test]
    fn local_paths_and_tags_are_named_from_facts() {
        let missing = ImageFailure::LocalPath {
            path: "/srv/absent".into(),
            source: std::io::Error::from_raw_os_error(Errno::ENOENT as i32),
        };
        let e = name(&sysroot::Error::Image { image: "oci:/srv/absent".into(), from_registry: false, failure: missing });
        assert_eq!(e.short_name(), "ImageNotFound");
        let untagged = ImageFailure::TagMissing { tag: "nope".into() };
        let e = name(&sysroot::Error::Image { image: "oci:/srv/img:nope".into(), from_registry: false, failure: untagged });
        assert_eq!((e.short_name(), e.message().matches("oci:/srv/img:nope").count()), ("ImageNotFound", 1), "{e:?}");
    }

    #[test]
    fn a_malformed_kargs_file_is_not_bootable_and_named() {
        let bad = crate::sysroot::kargs::Malformed { file: "20-x.toml".into(), reason: "missing field `kargs`".into() };
        let e = name(&sysroot::Error::Image {
            image: "oci:/srv/os:k3".into(),
            from_registry: false,
            failure: ImageFailure::MalformedKargs(bad),
        });
        assert_eq!(e.short_name(), "NotBootable");
        assert_eq!(
            e.message(),
            "oci:/srv/os:k3: /usr/lib/bootc/kargs.d/20-x.toml is malformed: missing field `kargs`"
        );
    }

    #[test]
    fn registries_are_found_in_references() {
        assert_eq!(registry_of("127.0.0.1:5000/os:latest"), "127.0.0.1:5000");
        assert_eq!(registry_of("quay.io/org/os"), "quay.io");
        assert_eq!(registry_of("oci:/srv/os"), "oci:/srv/os");
    }
}
