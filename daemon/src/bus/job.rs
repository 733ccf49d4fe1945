//! `org.hostd.Host1.Job` objects: their properties, `Cancel`, and the
//! `PropertiesChanged` the job runner asks for.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use hostd_interface::names::JOB_INTERFACE;
use hostd_interface::Error;
use zbus::message::Header;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, Variant};

use crate::auth::{Action, Authorizer};
use crate::jobs::state::JobProps;
use crate::jobs::JobShared;

/// The bus object of one job.
pub struct JobObject {
    job: Arc<JobShared>,
}

impl JobObject {
    /// The object for `job`.
    pub fn new(job: Arc<JobShared>) -> JobObject {
        JobObject { job }
    }
}

#[zbus::interface(name = "org.hostd.Host1.Job")]
impl JobObject {
    /// Cancel: stop at the next safe point. Allowed to the uid that started
    /// the job; others need org.hostd.host1.cancel.
    async fn cancel(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let auth = Authorizer::new(conn.clone());
        let caller = auth.caller(&header).await?;
        if caller.uid != self.job.initiator.uid {
            let details = HashMap::from([("verb", "cancel".to_string())]);
            auth.authorize(&header, &caller, &[Action::Cancel], &details).await?;
        }
        if !self.job.props().is_finished() {
            tracing::info!(job = self.job.id, uid = caller.uid, "cancel requested");
            self.job.cancel.cancel();
        }
        Ok(())
    }

    /// The job id.
    #[zbus(property)]
    fn id(&self) -> u64 {
        self.job.id
    }

    /// check | upgrade | switch | stage | rollback | cleanup
    #[zbus(property)]
    fn kind(&self) -> &str {
        self.job.request.kind.as_str()
    }

    /// running | succeeded | failed | cancelled
    #[zbus(property)]
    fn state(&self) -> &str {
        self.job.props().state().name()
    }

    /// checking | pulling | importing | staging | cleanup | rebooting
    #[zbus(property)]
    fn phase(&self) -> &str {
        self.job.props().phase().as_str()
    }

    /// Bytes fetched so far.
    #[zbus(property)]
    fn bytes_done(&self) -> u64 {
        self.job.props().bytes_done()
    }

    /// Bytes to fetch in all.
    #[zbus(property)]
    fn bytes_total(&self) -> u64 {
        self.job.props().bytes_total()
    }

    /// Layers fetched so far.
    #[zbus(property)]
    fn layers_done(&self) -> u32 {
        self.job.props().layers_done()
    }

    /// Layers to fetch in all.
    #[zbus(property)]
    fn layers_total(&self) -> u32 {
        self.job.props().layers_total()
    }

    /// 0..1
    #[zbus(property)]
    fn progress(&self) -> f64 {
        self.job.props().progress()
    }

    /// What the job is doing, or its result.
    #[zbus(property)]
    fn message(&self) -> String {
        self.job.props().message()
    }

    /// org.hostd.Host1.Error.* when failed or cancelled, else empty.
    #[zbus(property)]
    fn error_name(&self) -> String {
        error_name(&self.job.props())
    }

    /// The error message when failed or cancelled, else empty.
    #[zbus(property)]
    fn error_message(&self) -> String {
        error_message(&self.job.props())
    }
}

/// `PropertiesChanged` on the job object with what differs between `old` and `new`.
pub async fn emit_changes(conn: &Connection, job: &JobShared, old: &JobProps, new: &JobProps) {
    let emitter = match SignalEmitter::new(conn, job.path.clone()) {
        Ok(e) => e,
        Err(e) => return tracing::warn!("job emitter: {e}"),
    };
    let changed = changed_properties(old, new);
    if changed.is_empty() {
        return;
    }
    let iface = InterfaceName::from_static_str_unchecked(JOB_INTERFACE);
    if let Err(e) = zbus::fdo::Properties::properties_changed(&emitter, iface, changed, Cow::Borrowed(&[])).await {
        tracing::warn!("publishing job properties: {e}");
    }
}

/// `ErrorName`: `org.hostd.Host1.Error.*` when failed or cancelled, else empty.
fn error_name(props: &JobProps) -> String {
    props.error().map(|e| zbus::DBusError::name(e).to_string()).unwrap_or_default()
}

/// `ErrorMessage`: the error's message when failed or cancelled, else empty.
fn error_message(props: &JobProps) -> String {
    props.error().map(|e| e.message()).unwrap_or_default()
}

fn changed_properties(old: &JobProps, new: &JobProps) -> HashMap<&'static str, Variant<'static>> {
    let mut m = HashMap::new();
    if old.state().name() != new.state().name() {
        m.insert("State", Variant::from(new.state().name()));
    }
    if old.phase() != new.phase() {
        m.insert("Phase", Variant::from(new.phase().as_str()));
    }
    if old.bytes_done() != new.bytes_done() {
        m.insert("BytesDone", Variant::U64(new.bytes_done()));
    }
    if old.bytes_total() != new.bytes_total() {
        m.insert("BytesTotal", Variant::U64(new.bytes_total()));
    }
    if old.layers_done() != new.layers_done() {
        m.insert("LayersDone", Variant::U32(new.layers_done()));
    }
    if old.layers_total() != new.layers_total() {
        m.insert("LayersTotal", Variant::U32(new.layers_total()));
    }
    if old.progress() != new.progress() {
        m.insert("Progress", Variant::F64(new.progress()));
    }
    if old.message() != new.message() {
        m.insert("Message", Variant::from(new.message()));
    }
    if error_name(old) != error_name(new) {
        m.insert("ErrorName", Variant::from(error_name(new)));
    }
    if error_message(old) != error_message(new) {
        m.insert("ErrorMessage", Variant::from(error_message(new)));
    }
    m
}
