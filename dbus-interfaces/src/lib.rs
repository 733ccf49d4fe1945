//! The D-Bus contract of hostd, shared by the daemon, `hostctl` and the tests.
//!
//! - [`names`]: bus name, object paths, interface names.
//! - [`error`]: the `org.hostd.Host1.Error.*` names as one typed enum.
//! - [`host`]: the Host JSON document returned by `Status` (bootc-compatible).
//! - [`etc_diff`]: what `EtcDiff` returns: `/etc` paths changed against the image's `/usr/etc`.
//! - [`edit`]: the Host document `Edit` takes (its `spec`), parsed strictly from YAML or JSON.
//! - [`proxy`]: typed client proxies for the manager and job objects.
//! - [`options`]: the option keys each method accepts.
//! - [`settings`]: the hostd.toml keys `SetSettings` changes and `Settings` shows.
//! - [`job`]: the job object's values (kind, state, phase) and its properties dictionary.
//! - [`manager`]: the manager's values (state, deployment role, policy, strategy) and
//!   the `Deployments` and `CachedUpdate` dictionaries.
//!
//! The normative interface text is `org.hostd.Host1.xml` next to this crate,
//! available as [`INTERFACE_XML`].

pub mod edit;
pub mod error;
pub mod etc_diff;
pub mod host;
pub mod job;
pub mod manager;
pub mod names;
pub mod options;
pub mod proxy;
pub mod settings;
mod wire_enum;

pub use error::Error;

/// The introspection XML of `org.hostd.Host1` and `org.hostd.Host1.Job`, as installed
/// under `/usr/share/dbus-1/interfaces/`.
pub const INTERFACE_XML: &str = include_str!("../org.hostd.Host1.xml");
