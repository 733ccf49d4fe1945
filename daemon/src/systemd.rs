//! The parts of systemd's D-Bus API hostd calls: starting units (the
//! finalization of a staged deployment, the `/usr` overlay helper), the
//! end of their jobs, and a unit's state.

use std::collections::HashMap;

use zbus::names::InterfaceName;
use zbus::{Connection, ObjectPath, OwnedObjectPath, OwnedVariant, Variant};

/// systemd's bus name.
const SYSTEMD: &str = "org.freedesktop.systemd1";
/// The interface every unit object has.
const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";

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
    /// The object path of unit `name`, loading it if needed.
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// The units in one of `states` (name, description, load, active, sub,
    /// following, path, job id, job type, job path).
    #[allow(clippy::type_complexity)]
    fn list_units_filtered(
        &self,
        states: &[&str],
    ) -> zbus::Result<Vec<(String, String, String, String, String, String, OwnedObjectPath, u32, String, OwnedObjectPath)>>;
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
    /// "loaded", "not-found", "masked", …
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    /// The unit type's own state ("running", "exited", "failed", …).
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    /// The unit's pending job (id, path); id 0 when none.
    #[zbus(property)]
    fn job(&self) -> zbus::Result<(u32, OwnedObjectPath)>;
}

/// A unit's state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnitState {
    /// "loaded", "not-found", "masked", …
    pub load: String,
    /// "active", "activating", "inactive", "failed", …
    pub active: String,
    /// The unit type's own state ("running", "exited", "dead", …).
    pub sub: String,
    /// Whether a job (start, stop, …) is queued or running for the unit.
    pub job_pending: bool,
}

/// Read the state of the unit at `path` with one `GetAll`, which systemd
/// answers from a single moment of its (single-threaded) manager.
/// Separate `Get`s of `ActiveState` and `Job` can straddle the end of a
/// start job and pair the state from before it ("inactive") with the
/// absence of a job after it, which reads as a unit that did not start.
pub(crate) async fn unit_state(conn: &Connection, path: &ObjectPath<'_>) -> zbus::Result<UnitState> {
    let properties = zbus::fdo::PropertiesProxy::builder(conn)
        .destination(SYSTEMD)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let all = properties.get_all(InterfaceName::from_static_str_unchecked(UNIT_INTERFACE)).await?;
    let (job_id, _path): (u32, OwnedObjectPath) = property(&all, "Job")?;
    Ok(UnitState {
        load: property(&all, "LoadState")?,
        active: property(&all, "ActiveState")?,
        sub: property(&all, "SubState")?,
        job_pending: job_id != 0,
    })
}

/// Property `name` of a `GetAll` answer, as `T`.
fn property<T>(all: &HashMap<String, OwnedVariant>, name: &str) -> zbus::Result<T>
where
    T: TryFrom<OwnedVariant>,
    T::Error: Into<zbus::Error>,
{
    let value = all.get(name).ok_or_else(|| zbus::Error::Failure(format!("systemd sent no {name} property")))?;
    T::try_from(value.try_clone()?).map_err(Into::into)
}
