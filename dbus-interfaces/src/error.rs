//! Error names of the hostd API, mapped once for daemon and client.

/// Every error hostd replies with, named `org.hostd.Host1.Error.<Variant>`.
///
/// The string is a human-readable message; the name is the stable part that
/// callers match on.
#[derive(zbus::DBusError, Debug, Clone, PartialEq)]
#[zbus(prefix = "org.hostd.Host1.Error")]
pub enum Error {
    /// A transport-level failure talking to the bus (client side only).
    #[zbus(error)]
    ZBus(zbus::Error),
    /// Another mutating job runs; the message names its object path.
    Busy(String),
    /// polkit denied the call; the message names the action id.
    NotAuthorized(String),
    /// Malformed arguments: bad image reference, unknown option, wrong type.
    InvalidArgument(String),
    /// The sysroot is not an ostree/bootc system.
    NotImageBased(String),
    /// The image's manifest, repository name, tag or local path does not
    /// exist at its source.
    ImageNotFound(String),
    /// The registry could not be reached, the connection failed or timed
    /// out, or the registry answered with a server error (5xx) or asked to
    /// slow down (429).
    Network(String),
    /// The registry wants credentials (HTTP 401) and hostd has none, or
    /// they were refused; the message names the registry and the files
    /// credentials are read from.
    AuthenticationRequired(String),
    /// The registry refused access to the image (HTTP 403, `DENIED`).
    AccessDenied(String),
    /// The image is not an ostree/bootc image, so no host can boot it.
    NotBootable(String),
    /// The signature policy rejected the image.
    SignatureRejected(String),
    /// Not enough free space for the update.
    NoSpace(String),
    /// `Stage` found no downloaded update to queue.
    NothingToStage(String),
    /// A deployment's package database (dpkg's status file) cannot be
    /// read: malformed, too large, or not UTF-8; the message names the
    /// commit, the file and the line.
    MalformedPackageDatabase(String),
    /// The job was cancelled.
    Cancelled(String),
    /// Anything else; the message carries the cause chain.
    Failed(String),
}

impl Error {
    /// The short name without the prefix, e.g. `Busy`.
    pub fn short_name(&self) -> &'static str {
        match self {
            Error::ZBus(_) => "ZBus",
            Error::Busy(_) => "Busy",
            Error::NotAuthorized(_) => "NotAuthorized",
            Error::InvalidArgument(_) => "InvalidArgument",
            Error::NotImageBased(_) => "NotImageBased",
            Error::ImageNotFound(_) => "ImageNotFound",
            Error::Network(_) => "Network",
            Error::AuthenticationRequired(_) => "AuthenticationRequired",
            Error::AccessDenied(_) => "AccessDenied",
            Error::NotBootable(_) => "NotBootable",
            Error::SignatureRejected(_) => "SignatureRejected",
            Error::NoSpace(_) => "NoSpace",
            Error::NothingToStage(_) => "NothingToStage",
            Error::MalformedPackageDatabase(_) => "MalformedPackageDatabase",
            Error::Cancelled(_) => "Cancelled",
            Error::Failed(_) => "Failed",
        }
    }

    /// The human-readable message.
    pub fn message(&self) -> String {
        match self {
            Error::ZBus(e) => e.to_string(),
            Error::Busy(m)
            | Error::NotAuthorized(m)
            | Error::InvalidArgument(m)
            | Error::NotImageBased(m)
            | Error::ImageNotFound(m)
            | Error::Network(m)
            | Error::AuthenticationRequired(m)
            | Error::AccessDenied(m)
            | Error::NotBootable(m)
            | Error::SignatureRejected(m)
            | Error::NoSpace(m)
            | Error::NothingToStage(m)
            | Error::MalformedPackageDatabase(m)
            | Error::Cancelled(m)
            | Error::Failed(m) => m.clone(),
        }
    }

    /// Rebuild an error from a job's `ErrorName`/`ErrorMessage` properties.
    pub fn from_name(name: &str, message: String) -> Error {
        let short = name.rsplit('.').next().unwrap_or(name);
        match short {
            "Busy" => Error::Busy(message),
            "NotAuthorized" => Error::NotAuthorized(message),
            "InvalidArgument" => Error::InvalidArgument(message),
            "NotImageBased" => Error::NotImageBased(message),
            "ImageNotFound" => Error::ImageNotFound(message),
            "Network" => Error::Network(message),
            "AuthenticationRequired" => Error::AuthenticationRequired(message),
            "AccessDenied" => Error::AccessDenied(message),
            "NotBootable" => Error::NotBootable(message),
            "SignatureRejected" => Error::SignatureRejected(message),
            "NoSpace" => Error::NoSpace(message),
            "NothingToStage" => Error::NothingToStage(message),
            "MalformedPackageDatabase" => Error::MalformedPackageDatabase(message),
            "Cancelled" => Error::Cancelled(message),
            _ => Error::Failed(message),
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError;

    #[test]
    fn names_carry_the_prefix() {
        assert_eq!(
            Error::Busy("x".into()).name().as_str(),
            "org.hostd.Host1.Error.Busy"
        );
        assert_eq!(
            Error::InvalidArgument("x".into()).name().as_str(),
            "org.hostd.Host1.Error.InvalidArgument"
        );
    }

    #[test]
    fn from_name_round_trips_every_variant() {
        for e in [
            Error::Busy("m".into()),
            Error::NotAuthorized("m".into()),
            Error::InvalidArgument("m".into()),
            Error::NotImageBased("m".into()),
            Error::ImageNotFound("m".into()),
            Error::Network("m".into()),
            Error::AuthenticationRequired("m".into()),
            Error::AccessDenied("m".into()),
            Error::NotBootable("m".into()),
            Error::SignatureRejected("m".into()),
            Error::NoSpace("m".into()),
            Error::NothingToStage("m".into()),
            Error::MalformedPackageDatabase("m".into()),
            Error::Cancelled("m".into()),
            Error::Failed("m".into()),
        ] {
            assert_eq!(Error::from_name(e.name().as_str(), e.message()), e);
        }
    }
}
