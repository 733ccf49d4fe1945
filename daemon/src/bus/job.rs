//! `org.hostd.Host1.Job` objects and a job's life on the bus: announced after
//! the creating call returned, properties published at a bounded rate with
//! the final state always delivered, then kept a while for late readers.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hostd_interface::names::{JOB_INTERFACE, MANAGER_PATH};
use hostd_interface::Error;
use zbus::message::Header;
use zbus::names::InterfaceName;
use zbus::object_server::{ResponseDispatchListener, SignalEmitter};
use zbus::{Connection, ObjectPath, Variant};

use super::guard::SignatureGuard;
use super::manager::Manager;
use crate::auth::{Action, Authorizer};
use crate::context::Context;
use crate::jobs::state::JobProps;
use crate::jobs::{worker, JobShared, JobState};
use crate::journal;
use crate::reboot::apply as reboot;

/// At most this many property updates per second per job.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(200);
/// Finished jobs stay on the bus this long.
const LINGER: Duration = Duration::from_secs(10);

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
        if self.job.props().state == JobState::Running {
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
        self.job.props().state.as_str()
    }

    /// checking | pulling | importing | staging | cleanup | rebooting
    #[zbus(property)]
    fn phase(&self) -> &str {
        self.job.props().phase.as_str()
    }

    /// Bytes fetched so far.
    #[zbus(property)]
    fn bytes_done(&self) -> u64 {
        self.job.props().bytes_done
    }

    /// Bytes to fetch in all.
    #[zbus(property)]
    fn bytes_total(&self) -> u64 {
        self.job.props().bytes_total
    }

    /// Layers fetched so far.
    #[zbus(property)]
    fn layers_done(&self) -> u32 {
        self.job.props().layers_done
    }

    /// Layers to fetch in all.
    #[zbus(property)]
    fn layers_total(&self) -> u32 {
        self.job.props().layers_total
    }

    /// 0..1
    #[zbus(property)]
    fn progress(&self) -> f64 {
        self.job.props().progress()
    }

    /// What the job is doing, or its result.
    #[zbus(property)]
    fn message(&self) -> String {
        self.job.props().message
    }

    /// org.hostd.Host1.Error.* when failed or cancelled, else empty.
    #[zbus(property)]
    fn error_name(&self) -> String {
        self.job.props().error_name
    }

    /// The error message when failed or cancelled, else empty.
    #[zbus(property)]
    fn error_message(&self) -> String {
        self.job.props().error_message
    }
}

/// Run a job from the moment its creating call has been answered to its removal.
pub async fn drive(
    ctx: Arc<Context>,
    conn: Connection,
    job: Arc<JobShared>,
    reply_sent: ResponseDispatchListener,
) {
    let unpublished = ctx.jobs.unpublished();
    reply_sent.await;
    let path = ObjectPath::try_from(job.path.as_str()).expect("valid job path").into_owned();
    let manager_emitter = SignalEmitter::new(&conn, MANAGER_PATH).expect("valid manager path");
    if let Err(e) = Manager::job_new(&manager_emitter, job.id, path.clone(), job.request.kind.as_str()).await {
        tracing::warn!("emitting JobNew: {e}");
    }
    super::announce_job_change(&conn).await;
    // Taken before the worker starts, so every later change is published.
    let initial = job.props();
    let publisher = tokio::spawn(publish(conn.clone(), job.clone(), initial));

    let result = worker::run(ctx.sysroot.clone(), job.clone(), ctx.config().job_timeout).await;
    if job.request.kind == crate::jobs::JobKind::Check {
        if let Ok(outcome) = &result {
            ctx.record_check(outcome.update.clone());
        }
    }
    if job.request.kind == crate::jobs::JobKind::Check || job.request.options.auto {
        match &result {
            Ok(outcome) => ctx.record_check_result(&outcome.message),
            Err(e) => ctx.record_check_result(&format!("{}: {}", e.short_name(), e.message())),
        }
    }
    tracing::debug!(job = job.id, "the work is done; re-reading the sysroot");
    // Readers who see the job end must also see the sysroot it left behind.
    let loaded = ctx.status.refresh().await;
    let result = match result {
        Ok(outcome) => {
            if let Some(change) = &outcome.change {
                journal::record(change, &job.initiator, job.id, &outcome.message);
            }
            if job.request.options.apply {
                reboot::apply(&ctx, &conn, &job, &loaded, outcome.message).await
            } else {
                Ok(outcome.message)
            }
        }
        Err(e) => Err(e),
    };
    match &result {
        Ok(message) => tracing::info!(job = job.id, "job succeeded: {message}"),
        Err(e) => tracing::warn!(job = job.id, "job ended: {}: {}", e.short_name(), e.message()),
    }
    // Free the slot first: whoever sees the job end finds the manager idle.
    ctx.jobs.release(job.id);
    job.finish(&result);
    let _ = publisher.await;
    drop(unpublished);
    ctx.idle.touch();
    super::announce_job_change(&conn).await;
    let final_state = job.props().state;
    if let Err(e) = Manager::job_removed(&manager_emitter, job.id, path, final_state.as_str()).await {
        tracing::warn!("emitting JobRemoved: {e}");
    }
    tokio::time::sleep(LINGER).await;
    let _ = conn.object_server().remove::<SignatureGuard<JobObject>, _>(job.path.as_str()).await;
}

/// Publish property changes until the job's final state is out.
async fn publish(conn: Connection, job: Arc<JobShared>, initial: JobProps) {
    let emitter = match SignalEmitter::new(&conn, job.path.clone()) {
        Ok(e) => e,
        Err(e) => return tracing::warn!("job emitter: {e}"),
    };
    let mut published = initial;
    let mut manager_state = published.phase;
    loop {
        job.changed().await;
        let now = job.props();
        for snapshot in job.take_phase_ends().iter().chain([&now]) {
            emit_changes(&emitter, &published, snapshot).await;
            published = snapshot.clone();
        }
        job.mark_published(published.phase);
        if now.phase != manager_state {
            manager_state = now.phase;
            super::announce_job_change(&conn).await;
        }
        if now.state != JobState::Running {
            return;
        }
        // Progress at most once an interval; the end at once, since
        // callers wait for it.
        tokio::select! {
            _ = tokio::time::sleep(PUBLISH_INTERVAL) => {}
            _ = job.ended() => {}
        }
    }
}

async fn emit_changes(emitter: &SignalEmitter<'_>, old: &JobProps, new: &JobProps) {
    let changed = changed_properties(old, new);
    if changed.is_empty() {
        return;
    }
    let iface = InterfaceName::from_static_str_unchecked(JOB_INTERFACE);
    if let Err(e) = zbus::fdo::Properties::properties_changed(emitter, iface, changed, Cow::Borrowed(&[])).await {
        tracing::warn!("publishing job properties: {e}");
    }
}

fn changed_properties<'a>(old: &'a JobProps, new: &'a JobProps) -> HashMap<&'static str, Variant<'a>> {
    let mut m = HashMap::new();
    if old.state != new.state {
        m.insert("State", Variant::from(new.state.as_str()));
    }
    if old.phase != new.phase {
        m.insert("Phase", Variant::from(new.phase.as_str()));
    }
    if old.bytes_done != new.bytes_done {
        m.insert("BytesDone", Variant::U64(new.bytes_done));
    }
    if old.bytes_total != new.bytes_total {
        m.insert("BytesTotal", Variant::U64(new.bytes_total));
    }
    if old.layers_done != new.layers_done {
        m.insert("LayersDone", Variant::U32(new.layers_done));
    }
    if old.layers_total != new.layers_total {
        m.insert("LayersTotal", Variant::U32(new.layers_total));
    }
    if old.progress() != new.progress() {
        m.insert("Progress", Variant::F64(new.progress()));
    }
    if old.message != new.message {
        m.insert("Message", Variant::from(new.message.as_str()));
    }
    if old.error_name != new.error_name {
        m.insert("ErrorName", Variant::from(new.error_name.as_str()));
    }
    if old.error_message != new.error_message {
        m.insert("ErrorMessage", Variant::from(new.error_message.as_str()));
    }
    m
}
