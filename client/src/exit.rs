//! Exit codes and turning errors into hints.

use hostd_interface::Error;

use crate::output::errln;

/// Distinct exit codes scripts can rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Done.
    Success = 0,
    /// Anything else went wrong.
    Failure = 1,
    /// hostd could not be reached on the system bus.
    Unreachable = 3,
    /// The host is not image-based.
    NotImageBased = 4,
    /// polkit said no.
    NotAuthorized = 5,
    /// Another job runs.
    Busy = 6,
    /// Bad argument.
    InvalidArgument = 7,
    /// The job was cancelled.
    Cancelled = 8,
    /// Interrupted; the job was left running.
    Detached = 9,
    /// The registry wants credentials hostd does not have.
    AuthenticationRequired = 10,
    /// The registry refused access to the image.
    AccessDenied = 11,
    /// The image is not an ostree/bootc image.
    NotBootable = 12,
    /// `upgrade --check`: an update is available.
    UpdateAvailable = 100,
}

impl From<Code> for std::process::ExitCode {
    fn from(c: Code) -> std::process::ExitCode {
        std::process::ExitCode::from(c as u8)
    }
}

/// The bus says nobody provides or could start org.hostd.Host1.
fn names_missing_service(e: &zbus::Error) -> bool {
    let text = e.to_string();
    ["ServiceUnknown", "NameHasNoOwner", "org.freedesktop.DBus.Error.Spawn"]
        .iter()
        .any(|name| text.contains(name))
}

/// Print an error with a hint and pick the exit code.
pub fn report(e: &Error) -> Code {
    let (code, hint) = code_and_hint(e);
    let message = match e {
        Error::ZBus(z) => format!("cannot talk to hostd: {z}"),
        other => format!("{}: {}", other.short_name(), other.message()),
    };
    errln!("hostctl: {message}");
    if let Some(h) = hint {
        errln!("Hint: {h}");
    }
    code
}

/// The exit code for `e`, and what to do about it if there is advice.
fn code_and_hint(e: &Error) -> (Code, Option<&'static str>) {
    match e {
        Error::ZBus(z) if names_missing_service(z) => {
            (Code::Unreachable, Some("hostd is not installed or could not be started"))
        }
        Error::ZBus(zbus::Error::InputOutput(_)) | Error::ZBus(zbus::Error::Address(_)) => {
            (Code::Unreachable, Some("is the system bus running?"))
        }
        Error::ZBus(_) => (Code::Unreachable, None),
        Error::NotImageBased(_) => (Code::NotImageBased, Some("this host does not boot an ostree/bootc image")),
        Error::NotAuthorized(_) => (Code::NotAuthorized, Some("ask an administrator, or run with sudo")),
        Error::Busy(_) => (Code::Busy, Some("wait for it, or `hostctl cancel`")),
        Error::InvalidArgument(_) => (Code::InvalidArgument, None),
        Error::Cancelled(_) => (Code::Cancelled, None),
        Error::NoSpace(_) => (Code::Failure, Some("free space, or run `hostctl cleanup`")),
        Error::Network(_) => (Code::Failure, Some("check the network and the registry")),
        Error::ImageNotFound(_) => (Code::Failure, Some("check the image name, tag and transport")),
        Error::AuthenticationRequired(_) => (
            Code::AuthenticationRequired,
            Some("store credentials for the registry in /etc/ostree/auth.json, e.g. `skopeo login --authfile /etc/ostree/auth.json <registry>`"),
        ),
        Error::AccessDenied(_) => {
            (Code::AccessDenied, Some("the registry does not let the credentials in /etc/ostree/auth.json (or anonymous access, without them) read this image; check them, or ask the registry's owner"))
        }
        Error::NotBootable(_) => (Code::NotBootable, Some("an image must be built FROM a bootc base image, with well-formed /usr/lib/bootc/kargs.d files: fix what the message names and rebuild it")),
        _ => (Code::Failure, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_and_image_errors_have_their_own_exit_codes_and_hints() {
        let code = |e: Error| code_and_hint(&e);
        assert_eq!(code(Error::AuthenticationRequired("m".into())).0 as u8, 10);
        assert!(code(Error::AuthenticationRequired("m".into())).1.unwrap().contains("/etc/ostree/auth.json"));
        assert_eq!(code(Error::AccessDenied("m".into())).0 as u8, 11);
        assert_eq!(code(Error::NotBootable("m".into())).0 as u8, 12);
        assert!(code(Error::NotBootable("m".into())).1.unwrap().contains("bootc base image"));
        assert_eq!(code(Error::ImageNotFound("m".into())), (Code::Failure, Some("check the image name, tag and transport")));
        assert_eq!(code(Error::Network("m".into())).0, Code::Failure);
    }
}
