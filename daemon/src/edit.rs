//! What an edited Host spec (`Edit`) asks of the host: nothing, a switch to
//! another image, or a rollback. A pure function of the current and the
//! wanted spec, so the rules are tested without a sysroot.
//!
//! - `image` differs (name or transport, or a stated `signature`): switch to
//!   it; `signature: containerPolicy` asks for `enforce-container-sigpolicy`.
//! - `bootOrder` differs: roll back (`rollback` queues the rollback
//!   deployment, `default` undoes a queued rollback). On an offline sysroot
//!   nothing is booted, so its spec always says `default`: `rollback` there
//!   swaps the first two deployments each time it is sent.
//! - both differ: refused, one change at a time (the switch would make a
//!   new default, and which deployment the rollback then means is ambiguous).
//! - neither: nothing to do.

use hostd_interface::host::{BootOrder, HostSpec, ImageReference, ImageSignature, Transport};
use hostd_interface::Error;

/// The operation that brings the host to the wanted spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The host already matches.
    Nothing,
    /// Switch to this image (`Switch`), enforcing the containers policy or not.
    Switch {
        /// The image name.
        image: String,
        /// Its transport.
        transport: Transport,
        /// `signature: containerPolicy` was asked for.
        enforce_container_sigpolicy: bool,
    },
    /// Make the other deployment the default (`Rollback`).
    Rollback,
}

/// The operation that takes the host from `current` to `wanted`.
pub fn plan(current: &HostSpec, wanted: &HostSpec) -> Result<Plan, Error> {
    let image_change = match (&current.image, &wanted.image) {
        (_, None) if current.image.is_some() => {
            return Err(Error::InvalidArgument(
                "the spec has no image: a host cannot be switched to no image".into(),
            ))
        }
        (_, None) => None,
        (_, Some(ImageReference { signature: Some(ImageSignature::OstreeRemote(remote)), .. })) => {
            return Err(Error::InvalidArgument(format!(
                "signature ostreeRemote '{remote}': hostd verifies images by the containers policy \
                 (signature: containerPolicy) or not at all (insecure)"
            )))
        }
        (Some(now), Some(want)) if same_image(now, want) => None,
        (_, Some(want)) => Some(want),
    };
    let order_change = current.boot_order != wanted.boot_order;
    match (image_change, order_change) {
        (None, false) => Ok(Plan::Nothing),
        (Some(_), true) => Err(Error::InvalidArgument(format!(
            "the spec changes both the image and bootOrder (to {}); change one at a time",
            boot_order_name(wanted.boot_order)
        ))),
        (Some(want), false) => Ok(Plan::Switch {
            image: want.image.clone(),
            transport: want.transport,
            enforce_container_sigpolicy: want.signature == Some(ImageSignature::ContainerPolicy),
        }),
        (None, true) => Ok(Plan::Rollback),
    }
}

/// Same name and transport, and the same signature check where the edit
/// states one (a spec without `signature` keeps the current one).
fn same_image(now: &ImageReference, want: &ImageReference) -> bool {
    now.image == want.image
        && now.transport == want.transport
        && want.signature.as_ref().is_none_or(|s| Some(s) == now.signature.as_ref())
}

fn boot_order_name(order: BootOrder) -> &'static str {
    match order {
        BootOrder::Default => "default",
        BootOrder::Rollback => "rollback",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(image: Option<(&str, Option<ImageSignature>)>, boot_order: BootOrder) -> HostSpec {
        HostSpec {
            image: image.map(|(name, signature)| ImageReference {
                image: name.into(),
                transport: Transport::Registry,
                signature,
            }),
            boot_order,
        }
    }

    #[test]
    fn the_plan_follows_what_differs() {
        let insecure = Some(ImageSignature::Insecure);
        let now = spec(Some(("example/os:1", insecure.clone())), BootOrder::Default);
        assert_eq!(plan(&now, &now), Ok(Plan::Nothing));
        assert_eq!(plan(&now, &spec(Some(("example/os:1", None)), BootOrder::Default)), Ok(Plan::Nothing));
        assert_eq!(
            plan(&now, &spec(Some(("example/os:2", None)), BootOrder::Default)),
            Ok(Plan::Switch { image: "example/os:2".into(), transport: Transport::Registry, enforce_container_sigpolicy: false })
        );
        assert_eq!(
            plan(&now, &spec(Some(("example/os:1", Some(ImageSignature::ContainerPolicy))), BootOrder::Default)),
            Ok(Plan::Switch { image: "example/os:1".into(), transport: Transport::Registry, enforce_container_sigpolicy: true })
        );
        assert_eq!(plan(&now, &spec(Some(("example/os:1", None)), BootOrder::Rollback)), Ok(Plan::Rollback));
        let queued = spec(Some(("example/os:1", insecure)), BootOrder::Rollback);
        assert_eq!(plan(&queued, &now), Ok(Plan::Rollback), "default again undoes a queued rollback");
    }

    #[test]
    fn no_image_a_remote_signature_or_two_changes_are_refused() {
        let now = spec(Some(("example/os:1", None)), BootOrder::Default);
        for (wanted, says) in [
            (spec(None, BootOrder::Default), "no image"),
            (spec(Some(("example/os:1", Some(ImageSignature::OstreeRemote("r".into())))), BootOrder::Default), "ostreeRemote"),
            (spec(Some(("example/os:2", None)), BootOrder::Rollback), "one at a time"),
        ] {
            match plan(&now, &wanted) {
                Err(Error::InvalidArgument(m)) => assert!(m.contains(says), "{m}"),
                other => panic!("{wanted:?}: {other:?}"),
            }
        }
        assert_eq!(plan(&spec(None, BootOrder::Default), &spec(None, BootOrder::Default)), Ok(Plan::Nothing));
    }
}
