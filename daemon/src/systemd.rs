//! The parts of systemd's D-Bus API hostd calls: starting units (the
//! finalization of a staged deployment, the `/usr` overlay helper), the
//! end of their jobs, and a unit's state.

use zbus::{OwnedObjectPath, Variant};

/// `org.freedesktop.systemd1.Manager`, as much of it as hostd uses.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub(crate) trait Systemd1Manager {
    /// Start `name` in `mode` ("replace", "fail"); the job's path.
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// The object path of the loaded unit `name`.
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// Ask for the manager's signals (`JobRemoved`).
    fn subscribe(&self) -> zbus::Result<()>;
    /// Stop asking for them.
    fn unsubscribe(&self) -> zbus::Result<()>;
    /// Start a transient unit `name` with `properties` in `mode`.
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Variant<'_>)],
        aux: &[(&str, Vec<(&str, Variant<'_>)>)],
    ) -> zbus::Result<OwnedObjectPath>;
    /// A job ended, with its result ("done", "failed", …).
    #[zbus(signal)]
    fn job_removed(&self, id: u32, job: OwnedObjectPath, unit: String, result: String) -> zbus::Result<()>;
}

/// `org.freedesktop.systemd1.Unit`: a unit's state.
#[zbus::proxy(interface = "org.freedesktop.systemd1.Unit", default_service = "org.freedesktop.systemd1")]
pub(crate) trait Systemd1Unit {
    /// "active", "activating", "failed", …
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
}
