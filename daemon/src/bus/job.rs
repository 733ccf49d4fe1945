//! `org.hostd.Host1.Job` objects: their properties, `Cancel`, and the
//! `PropertiesChanged` the job runner asks for.

use std::collections::HashMap;
use std::sync::Arc;

use hostd_interface::job::{JobKind, JobProperties, JobStatus, Layer, Phase};
use hostd_interface::names::JOB_INTERFACE;
use hostd_interface::Error;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

use crate::auth::{Action, Authorizer};
use crate::jobs::state::JobProps;
use crate::jobs::JobShared;

/// The standard interface whose `PropertiesChanged` announces new values.
pub(crate) const PROPERTIES_INTERFACE: &str = "org.freedesktop.DBus.Properties";

/// The bus object of one job.
#[derive(Debug)]
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
    fn kind(&self) -> JobKind {
        self.job.request.kind
    }

    /// running | succeeded | failed | cancelled
    #[zbus(property)]
    fn state(&self) -> JobStatus {
        self.job.props().state().status()
    }

    /// checking | pulling | importing | staging | cleanup | rebooting
    #[zbus(property)]
    fn phase(&self) -> Phase {
        self.job.props().phase()
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

    /// The image reference the job fetches or looks at, as a caller writes
    /// it; empty until known and for jobs without one.
    #[zbus(property)]
    fn image(&self) -> String {
        self.job.props().image().to_string()
    }

    /// Every layer of that image (digest, kind chunk | derived, size,
    /// cached), in fetching order; empty until known.
    #[zbus(property)]
    fn layers(&self) -> Vec<Layer> {
        self.job.props().layers().to_vec()
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

    /// What the user must know about the result (e.g. image content the
    /// host does not deploy); empty when none.
    #[zbus(property)]
    fn warnings(&self) -> Vec<String> {
        self.job.props().warnings().to_vec()
    }

    /// When the job was created, µs since the epoch.
    #[zbus(property)]
    fn start_time(&self) -> u64 {
        self.job.props().start_time()
    }

    /// The recent fetching rate in bytes per second; 0 while unknown (not
    /// fetching, too early to tell) and once the job has ended.
    #[zbus(property)]
    fn bytes_per_second(&self) -> u64 {
        self.job.props().bytes_per_second()
    }

    /// Estimated seconds until the fetch is done at the recent rate;
    /// 18446744073709551615 (UINT64_MAX) while unknown, 0 once the job has ended.
    #[zbus(property)]
    fn seconds_left(&self) -> u64 {
        self.job.props().seconds_left()
    }
}

/// `PropertiesChanged` on the job object with what differs between `old` and `new`.
pub async fn emit_changes(conn: &Connection, job: &JobShared, old: &JobProps, new: &JobProps) {
    let changed = JobProperties::changes(&wire_properties(job, old), &wire_properties(job, new));
    if changed.is_empty() {
        return;
    }
    let emitter = match SignalEmitter::new(conn, job.path.clone()) {
        Ok(e) => e,
        Err(e) => return tracing::warn!("job emitter: {e}"),
    };
    let invalidated: &[&str] = &[];
    let body = (JOB_INTERFACE, changed, invalidated);
    if let Err(e) = emitter.emit(PROPERTIES_INTERFACE, "PropertiesChanged", &body).await {
        tracing::warn!("publishing job properties: {e}");
    }
}

/// Every property of `job` as it is in `props`.
fn wire_properties(job: &JobShared, props: &JobProps) -> JobProperties {
    JobProperties {
        id: Some(job.id),
        kind: Some(job.request.kind),
        state: Some(props.state().status()),
        phase: Some(props.phase()),
        bytes_done: Some(props.bytes_done()),
        bytes_total: Some(props.bytes_total()),
        layers_done: Some(props.layers_done()),
        layers_total: Some(props.layers_total()),
        progress: Some(props.progress()),
        image: Some(props.image().to_string()),
        layers: Some(props.layers().to_vec()),
        message: Some(props.message()),
        error_name: Some(error_name(props)),
        error_message: Some(error_message(props)),
        warnings: Some(props.warnings().to_vec()),
        start_time: Some(props.start_time()),
        bytes_per_second: Some(props.bytes_per_second()),
        seconds_left: Some(props.seconds_left()),
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
