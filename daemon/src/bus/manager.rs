//! `org.hostd.Host1` on `/org/hostd/Host1`.
//!
//! Every job-creating handler follows the same order: parse options →
//! validate → authorize (polkit, interactive flag from the message) →
//! reserve the job slot → register the job object → reply → start work.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostd_interface::diff::DiffTarget;
use hostd_interface::etc_diff::EtcDiffTarget;
use hostd_interface::host::{FilesystemOverlayPersistence, Transport};
use hostd_interface::job::JobStatus;
use hostd_interface::manager::{
    CachedUpdate, DeploymentEntry, LastJob, ManagerProperties, ManagerState, UpdatePolicy, UpdateStrategy,
};
use hostd_interface::names::{MANAGER_INTERFACE, MANAGER_PATH};
use hostd_interface::options::{Method, Options};
use hostd_interface::settings::{self, Settings};
use hostd_interface::Error;
use zbus::message::Header;
use zbus::object_server::{ResponseDispatchListener, ResponseDispatchNotifier, SignalEmitter};
use zbus::{Connection, ObjectPath, ObjectServer, OwnedObjectPath, OwnedVariant};

use super::guard::SignatureGuard;
use super::job::{self, JobObject};
use super::properties;
use crate::auth::{actions_for, details_for, options_summary, Action, Authorizer};
use crate::config::Config;
use crate::context::Context;
use crate::jobs::records;
use crate::jobs::runner::{Course, JobEvents, Runner};
use crate::jobs::state::JobProps;
use crate::jobs::worker::Worker;
use crate::jobs::{Initiator, JobKind, JobRequest, JobShared, Reservation};
use crate::reboot::apply::Logind;
use crate::settings::Edit as SettingsEdit;
use crate::sysroot::local_source::{self, Trust};
use crate::sysroot::{diff, discard, etc_diff, pin};
use crate::{containers_policy, edit, errors, image_ref, journal};

/// The manager object as registered (behind its signature guard).
pub type ManagerObject = SignatureGuard<Manager>;

/// The longest `Diff` takes before it answers `Failed`: reading two
/// package databases of a few MiB each takes well under a second.
const DIFF_TIME_LIMIT: Duration = Duration::from_secs(60);

/// One comparison at a time, whoever asks: `Diff` is open to every local
/// user, and each one reads two package databases (rpm's through a copy and
/// a process). The slot is held by the work itself, so a call that gave up
/// at its deadline still occupies it until its comparison really ends; a
/// call waiting for the slot waits within the same deadline.
static DIFF_SLOT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Finished jobs stay on the bus this long, for late readers.
const LINGER: Duration = Duration::from_secs(10);

/// The manager object.
#[derive(Debug)]
pub struct Manager {
    ctx: Arc<Context>,
    /// The signalled properties as clients were last told them; held while
    /// announcing, so changes go out in order and each once.
    announced: tokio::sync::Mutex<ManagerProperties>,
}

/// How long a call that pre-empted another user's change waits for it to
/// give up the slot.
const PREEMPTED_END_LIMIT: Duration = Duration::from_secs(30);

/// An authorized caller of a job-creating call.
#[derive(Debug, Clone)]
struct Authorized {
    initiator: Initiator,
    /// Root, or granted `switch` (see `JobShared::may_choose_image`).
    may_choose_image: bool,
}

/// A job path handed back once the reply is out.
type JobReply = ResponseDispatchNotifier<OwnedObjectPath>;

impl Manager {
    /// The manager over the daemon state.
    pub fn new(ctx: Arc<Context>) -> Manager {
        let announced = tokio::sync::Mutex::new(properties::current(&ctx));
        Manager { ctx, announced }
    }

    /// Tell clients what changed since the last announcement: one
    /// `PropertiesChanged` with the signalled properties whose value
    /// differs from what was last announced (nothing when none does), and
    /// `UpdateAvailable` when `CachedUpdate` names an update never
    /// announced before.
    async fn announce(&self, emitter: &SignalEmitter<'_>) {
        let mut announced = self.announced.lock().await;
        let now = properties::current(&self.ctx);
        let changed = ManagerProperties::changes(&announced, &now);
        if !changed.is_empty() {
            let invalidated: &[&str] = &[];
            let body = (MANAGER_INTERFACE, &changed, invalidated);
            if let Err(e) = emitter.emit(job::PROPERTIES_INTERFACE, "PropertiesChanged", &body).await {
                tracing::warn!("announcing manager properties: {e}");
            }
        }
        *announced = now;
        let update = announced.cached_update.as_ref().filter(|u| !u.is_downgrade());
        if let Some((digest, version)) = update.and_then(|u| Some((u.digest.clone()?, u.version.clone()))) {
            if self.ctx.records.announce_update(&digest) {
                let version = version.unwrap_or_default();
                if let Err(e) = Manager::update_available(emitter, &digest, &version).await {
                    tracing::warn!("emitting UpdateAvailable: {e}");
                }
                self.ctx.records.persist().await;
            }
        }
    }

    async fn start_job(
        &self,
        request: JobRequest,
        header: &Header<'_>,
        conn: &Connection,
        server: &ObjectServer,
    ) -> Result<JobReply, Error> {
        let authorized = self.authorize(&request, header, conn).await?;
        match self.launch(request.clone(), authorized.clone(), conn, server).await {
            Err(Error::Busy(busy)) if request.kind != JobKind::Check => {
                self.preempt_unstarted_change(&request, &authorized, header, conn).await.map_err(|_| Error::Busy(busy))?;
                self.launch(request, authorized, conn, server).await
            }
            other => other,
        }
    }

    /// Stop another user's `Upgrade` or `Switch` that has fetched nothing
    /// yet, for a change by a caller allowed to stop other users' jobs (root
    /// or `cancel`), and wait (at most [`PREEMPTED_END_LIMIT`]) until it has
    /// given up the slot. `Err` when there is no such job or the caller may
    /// not stop it: the call is then `Busy`. Without this, a user looping
    /// `hostctl upgrade` (which `upgrade`, granted to desktop users, allows)
    /// would keep an administrator's and the timer's jobs `Busy`.
    async fn preempt_unstarted_change(
        &self,
        request: &JobRequest,
        authorized: &Authorized,
        header: &Header<'_>,
        conn: &Connection,
    ) -> Result<(), Error> {
        let uid = authorized.initiator.uid;
        let running = self.ctx.jobs.unstarted_change_of_another(uid).ok_or(Error::Busy(String::new()))?;
        if uid != 0 {
            let auth = Authorizer::new(conn.clone());
            let caller = auth.caller(header).await?;
            let details = HashMap::from([("verb", "cancel".to_string())]);
            auth.authorize(header, &caller, &[Action::Cancel], &details).await?;
        }
        tracing::info!(job = running.id, uid, "pre-empting another user's {} for a {}", running.request.kind.as_str(), request.kind.as_str());
        running.preempt(format!(
            "the {} was pre-empted by a {} of uid {uid}, who may stop other users' jobs",
            running.request.kind.as_str(),
            request.kind.as_str()
        ));
        // Cancelling kills its skopeo, so it ends within moments.
        let _ = tokio::time::timeout(PREEMPTED_END_LIMIT, running.ended()).await;
        Ok(())
    }

    /// Check with polkit that the caller may make `request`; who it is.
    ///
    /// An `Upgrade` of a local image path others can write needs `switch`
    /// too: re-reading that path installs whatever its writers put there
    /// (docs/security.md, "Local image paths"). An unattended run
    /// (`auto`) never installs from such a path, even started by root.
    async fn authorize(
        &self,
        request: &JobRequest,
        header: &Header<'_>,
        conn: &Connection,
    ) -> Result<Authorized, Error> {
        self.ctx.idle.touch();
        let auth = Authorizer::new(conn.clone());
        let caller = auth.caller(header).await?;
        let mut actions = actions_for(request);
        let mut untrusted_source = None;
        if request.kind == JobKind::Upgrade && caller.uid != 0 && !actions.contains(&Action::Switch) {
            if let Some(Trust::Untrusted(why)) = self.tracked_source_trust().await {
                actions.push(Action::Switch);
                untrusted_source = Some(why);
            }
        }
        auth.authorize(header, &caller, &actions, &details_for(request)).await.map_err(|e| match (e, &untrusted_source) {
            (Error::NotAuthorized(m), Some(why)) => Error::NotAuthorized(format!(
                "{m}: the tracked image's path is not root's alone ({why}), so upgrading from it is choosing an image"
            )),
            (e, _) => e,
        })?;
        Ok(Authorized {
            // An unattended run chooses nothing, whoever starts it.
            may_choose_image: !request.options.auto && (caller.uid == 0 || actions.contains(&Action::Switch)),
            initiator: Initiator { uid: caller.uid, unit: caller.unit },
        })
    }

    /// The trust of the tracked image's local path; `None` when it is no
    /// local path (or nothing is tracked).
    async fn tracked_source_trust(&self) -> Option<Trust> {
        let loaded = self.ctx.status.current().await;
        let tracked = (*loaded).as_ref().ok()?.host.spec.image.clone()?;
        local_source::trust_of(&crate::sysroot::image::reference_from_api(&tracked)).await
    }

    /// Reserve the job slot for an authorized request (joining the running
    /// job, pre-empting a running check, or answering a check from the last
    /// one's result) and start the job once the reply is out.
    async fn launch(
        &self,
        request: JobRequest,
        authorized: Authorized,
        conn: &Connection,
        server: &ObjectServer,
    ) -> Result<JobReply, Error> {
        let Authorized { initiator, may_choose_image } = authorized;
        let mut request = request;
        // `[updates] require_signatures`: every image a job deploys, the
        // tracked one included, must be accepted by the containers policy.
        // Every job starts here, so none can skip it.
        request.options.enforce_container_sigpolicy |= self.ctx.config().require_signatures;
        let uid = initiator.uid;
        let answer = self.recorded_answer(&request, &initiator);
        let (job, course) = match self.ctx.jobs.reserve(request, initiator, answer)? {
            Reservation::Existing(job) => {
                let (reply, _) = ResponseDispatchNotifier::new(object_path(&job.path));
                return Ok(reply);
            }
            Reservation::New { job, preempted } => (job, Course::Work { preempted }),
            Reservation::Answered(job) => (job, Course::Answered),
        };
        if may_choose_image {
            job.allow_image_choice();
        }
        let kind = job.request.kind.as_str();
        match &course {
            Course::Work { preempted: None } => tracing::info!(job = job.id, uid, kind, "job created"),
            Course::Work { preempted: Some(check) } => {
                tracing::info!(job = job.id, uid, kind, "job created; it pre-empts the check {}", check.path)
            }
            // Not worth a journal line each: a loop of these is what the answer is for.
            Course::Answered => tracing::debug!(job = job.id, uid, kind, "check answered with the last check's result"),
        }
        let object = SignatureGuard::new(JobObject::new(job.clone()));
        if let Err(e) = server.at(job.path.as_str(), object).await {
            self.ctx.jobs.release(job.id);
            return Err(Error::Failed(format!("registering {}: {e}", job.path)));
        }
        let (reply, sent) = ResponseDispatchNotifier::new(object_path(&job.path));
        tokio::spawn(run_job(self.ctx.clone(), conn.clone(), job, course, sent));
        Ok(reply)
    }

    /// The last check's result, when it answers `request` instead of a new
    /// check (`Records::check_answer`).
    fn recorded_answer(&self, request: &JobRequest, initiator: &Initiator) -> Option<Result<String, Error>> {
        let sysroot_now = self.ctx.status.peek().and_then(|loaded| records::sysroot_state(&loaded));
        let interval = self.ctx.config().check_interval;
        self.ctx.records.check_answer(request, initiator, interval, sysroot_now.as_deref(), Instant::now())
    }
}

/// Run `job` through the job runner once `reply_sent` fires, with the bus
/// as its events, the worker thread as its operation and logind for `apply`.
async fn run_job(
    ctx: Arc<Context>,
    conn: Connection,
    job: Arc<JobShared>,
    course: Course,
    reply_sent: ResponseDispatchListener,
) {
    let config = ctx.config();
    let events = BusEvents { conn: conn.clone() };
    let operation = Worker { sysroot: ctx.sysroot.clone(), time_limit: config.job_timeout };
    let reboot = Logind { conn, config };
    let runner = Runner {
        jobs: &ctx.jobs,
        records: &ctx.records,
        status: &ctx.status,
        idle: &ctx.idle,
        events: &events,
        operation: &operation,
        reboot: &reboot,
    };
    runner.run(job, course, reply_sent).await;
}

/// The job runner's events as signals: `JobNew`/`JobRemoved` and the
/// manager's properties here, the job's own properties on its object.
#[derive(Debug)]
struct BusEvents {
    conn: Connection,
}

impl BusEvents {
    fn manager_emitter(&self) -> SignalEmitter<'static> {
        SignalEmitter::new(&self.conn, MANAGER_PATH).expect("valid manager path")
    }
}

impl JobEvents for BusEvents {
    async fn job_new(&self, job: &JobShared) {
        let kind = job.request.kind;
        if let Err(e) = Manager::job_new(&self.manager_emitter(), job.id, object_path(&job.path).into(), kind).await {
            tracing::warn!("emitting JobNew: {e}");
        }
    }

    async fn job_changed(&self, job: &JobShared, old: &JobProps, new: &JobProps) {
        job::emit_changes(&self.conn, job, old, new).await;
    }

    async fn manager_changed(&self) {
        announce(&self.conn).await;
    }

    async fn job_removed(&self, job: &JobShared) {
        let result = job.props().state().status();
        if let Err(e) = Manager::job_removed(&self.manager_emitter(), job.id, object_path(&job.path).into(), result).await {
            tracing::warn!("emitting JobRemoved: {e}");
        }
        let conn = self.conn.clone();
        let path = job.path.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            let _ = conn.object_server().remove::<SignatureGuard<JobObject>, _>(path.as_str()).await;
        });
    }
}

/// `/`: no job (as `ActiveJob` when idle; `Upgrade({auto})` under policy none).
fn no_job() -> OwnedObjectPath {
    OwnedObjectPath::from(ObjectPath::from_static_str_unchecked("/"))
}

fn object_path(path: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(path.to_string()).expect("job paths are valid object paths")
}

#[zbus::interface(name = "org.hostd.Host1")]
impl Manager {
    /// Status: the Host JSON document (bootc `org.containers.bootc/v1` compatible).
    /// Takes no options yet; unknown keys are InvalidArgument.
    async fn status(&self, options: HashMap<String, OwnedVariant>) -> Result<String, Error> {
        self.ctx.idle.touch();
        Options::parse(Method::Status, &options)?;
        match &*self.ctx.status.current().await {
            Ok(snapshot) => Ok(snapshot.json.clone()),
            Err(e) => Err(errors::name(e)),
        }
    }

    /// Check: fetch the manifest and config of the tracked image, no layers.
    async fn check(
        &self,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<JobReply, Error> {
        let request = self.tracked_request(JobKind::Check, &options).await?;
        self.start_job(request, &header, conn, server).await
    }

    /// Upgrade: fetch and queue the tracked image.
    /// Options: download-only b, apply b, allow-downgrade b, auto b (do what
    /// the configured policy allows; "/" when the policy is none),
    /// retry-failed b (install an image that failed its boot health checks).
    async fn upgrade(
        &self,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<JobReply, Error> {
        let request = self.tracked_request(JobKind::Upgrade, &options).await?;
        if !request.options.auto {
            return self.start_job(request, &header, conn, server).await;
        }
        match self.unattended_request().await {
            Some(unattended) => self.start_job(unattended, &header, conn, server).await,
            None => {
                self.authorize(&request, &header, conn).await?;
                Ok(ResponseDispatchNotifier::new(no_job()).0)
            }
        }
    }

    /// Switch: fetch and queue another image and track it from then on.
    /// Options: transport s, retain b, enforce-container-sigpolicy b, download-only b, apply b.
    async fn switch(
        &self,
        image: String,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<JobReply, Error> {
        let options = Options::parse(Method::Switch, &options)?;
        let request = self.switch_request(&image, options).await?;
        self.start_job(request, &header, conn, server).await
    }

    /// Edit: bring the host to the spec of a Host document (YAML or JSON,
    /// bootc's apiVersion and kind; status and unknown fields are
    /// InvalidArgument). A changed image runs a Switch job, a changed
    /// bootOrder a Rollback job, each needing its own authorization; a
    /// spec the host already has replies "/" and changes nothing. No options yet.
    async fn edit(
        &self,
        document: String,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<JobReply, Error> {
        self.ctx.idle.touch();
        Options::parse(Method::Edit, &options)?;
        let wanted = hostd_interface::edit::parse(&document)?;
        let loaded = self.ensure_image_based().await?;
        let current = loaded.as_ref().as_ref().map_err(errors::name)?.host.spec.clone();
        let request = match edit::plan(&current, &wanted)? {
            edit::Plan::Nothing => return Ok(ResponseDispatchNotifier::new(no_job()).0),
            edit::Plan::Switch { image, transport, enforce_container_sigpolicy } => {
                let options = Options { transport: Some(transport), enforce_container_sigpolicy, ..Options::default() };
                self.switch_request(&image, options).await?
            }
            edit::Plan::Rollback => JobRequest { kind: JobKind::Rollback, image: None, options: Options::default() },
        };
        tracing::info!(kind = request.kind.as_str(), "edit: the spec asks for a {}", request.kind.as_str());
        self.start_job(request, &header, conn, server).await
    }

    /// Stage: queue a downloaded (download-only) update for the next boot,
    /// without network access. Options: apply b (also "reboot into the
    /// update already queued": there is no separate Reboot method).
    async fn stage(
        &self,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<JobReply, Error> {
        let options = Options::parse(Method::Stage, &options)?;
        self.ensure_can_apply(&options).await?;
        let apply = options.apply;
        let request = JobRequest { kind: JobKind::Stage, image: None, options };
        // Authorized first, so the answer does not depend on who asks.
        let authorized = self.authorize(&request, &header, conn).await?;
        let snapshot = self.ctx.status.current().await;
        // With apply, an update queued already only needs the reboot.
        let stageable = matches!(&*snapshot, Ok(s) if s.has_downloaded_update() || (apply && s.reboot_required));
        if !stageable {
            return Err(Error::NothingToStage("no downloaded update is waiting to be staged".into()));
        }
        self.launch(request, authorized, conn, server).await
    }

    /// Rollback: make the rollback deployment the default; again to undo.
    /// Options: apply b.
    async fn rollback(
        &self,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<JobReply, Error> {
        let options = Options::parse(Method::Rollback, &options)?;
        self.ensure_can_apply(&options).await?;
        let request = JobRequest { kind: JobKind::Rollback, image: None, options };
        self.start_job(request, &header, conn, server).await
    }

    /// Discard: drop the update waiting for the next boot (the staged
    /// deployment, or an update downloaded with download-only) and leave
    /// the boot order otherwise as it is. "/" when there is none, as
    /// `rpm-ostree cleanup -p` changes nothing then. Needs `stage`. No options yet.
    async fn discard(
        &self,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<JobReply, Error> {
        let options = Options::parse(Method::Discard, &options)?;
        self.ensure_image_based().await?;
        let request = JobRequest { kind: JobKind::Discard, image: None, options };
        // Authorized first, so the answer does not depend on who asks.
        let authorized = self.authorize(&request, &header, conn).await?;
        let snapshot = self.ctx.status.current().await;
        if !matches!(&*snapshot, Ok(s) if discard::pending(s)) {
            return Ok(ResponseDispatchNotifier::new(no_job()).0);
        }
        self.launch(request, authorized, conn, server).await
    }

    /// Cleanup: prune images, layers and objects no deployment needs.
    async fn cleanup(
        &self,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<JobReply, Error> {
        let options = Options::parse(Method::Cleanup, &options)?;
        self.ensure_image_based().await?;
        let request = JobRequest { kind: JobKind::Cleanup, image: None, options };
        self.start_job(request, &header, conn, server).await
    }

    /// Pin: keep a deployment through new deployments and cleanups (pinned
    /// true) or let it go again (false). The deployment is its index in
    /// Deployments or its checksum, optionally with ".serial". Needs the
    /// cleanup authorization.
    async fn pin(
        &self,
        deployment: String,
        pinned: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        self.ctx.idle.touch();
        let selector = pin::Selector::parse(&deployment).map_err(errors::name_owned)?;
        self.ensure_image_based().await?;
        let auth = Authorizer::new(conn.clone());
        let caller = auth.caller(&header).await?;
        let verb = if pinned { "pin" } else { "unpin" };
        let details = HashMap::from([("verb", verb.to_string()), ("deployment", deployment.clone())]);
        auth.authorize(&header, &caller, &[Action::Cleanup], &details).await?;
        // A running check stops for it; the sysroot lock, which pinning
        // waits for, keeps the two apart until it has.
        self.ctx.jobs.make_way(|| format!("the check was pre-empted by {verb} (uid {})", caller.uid))?;
        let name = pin::set_pinned(&self.ctx.sysroot, selector, pinned).await.map_err(errors::name_owned)?;
        tracing::info!(uid = caller.uid, deployment = %name, pinned, "set pinned={pinned} on {name}");
        self.ctx.status.refresh().await;
        Ok(())
    }

    /// UsrOverlay: mount a writable overlay on the booted deployment's
    /// /usr, discarded at the next reboot. Options: persist b (keep it
    /// across reboots, a hotfix). Refused (InvalidArgument) on an offline
    /// sysroot and while an overlay is active. Needs `usr-overlay`.
    async fn usr_overlay(
        &self,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        self.ctx.idle.touch();
        let options = Options::parse(Method::UsrOverlay, &options)?;
        self.usr_overlay_possible().await?;
        let auth = Authorizer::new(conn.clone());
        let caller = auth.caller(&header).await?;
        let details = HashMap::from([("verb", "usr-overlay".to_string()), ("options", options_summary(&options))]);
        auth.authorize(&header, &caller, &[Action::UsrOverlay], &details).await?;
        // A running check stops for it; the sysroot lock, which the helper
        // waits for, keeps the two apart until it has.
        self.ctx.jobs.make_way(|| format!("the check was pre-empted by usr-overlay (uid {})", caller.uid))?;
        // One at a time: a call that waited for another finds its overlay.
        let _one_at_a_time = crate::usr_overlay::CALLS.lock().await;
        let booted = self.usr_overlay_possible().await?;
        let persistence = if options.persist {
            FilesystemOverlayPersistence::Persistent
        } else {
            FilesystemOverlayPersistence::Transient
        };
        crate::usr_overlay::mount_on_host(conn, persistence).await?;
        let initiator = Initiator { uid: caller.uid, unit: caller.unit };
        journal::record_usr_overlay(booted.as_deref(), persistence.as_str(), &initiator);
        self.ctx.status.refresh().await;
        Ok(())
    }

    /// EtcDiff: how a deployment's /etc differs from its image's /usr/etc
    /// (added, removed, modified paths with type and mode changes), as JSON.
    /// Paths and kinds only, never contents. Options: deployment s (booted,
    /// the default: on an offline sysroot its default deployment; staged).
    /// Needs the etc-diff authorization.
    async fn etc_diff(
        &self,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Error> {
        self.ctx.idle.touch();
        let options = Options::parse(Method::EtcDiff, &options)?;
        let target = options.deployment.unwrap_or(EtcDiffTarget::Booted);
        let loaded = self.ensure_image_based().await?;
        let snapshot = loaded.as_ref().as_ref().map_err(errors::name)?;
        let (name, dir) = etc_diff::deployment_of(snapshot, self.ctx.sysroot.path(), target).map_err(errors::name_owned)?;
        let auth = Authorizer::new(conn.clone());
        let caller = auth.caller(&header).await?;
        let details = HashMap::from([("verb", "etc-diff".to_string()), ("deployment", target.to_string())]);
        auth.authorize(&header, &caller, &[Action::EtcDiff], &details).await?;
        let diff = tokio::task::spawn_blocking(move || etc_diff::diff(name, &dir))
            .await
            .map_err(|e| Error::Failed(format!("comparing /etc: {e}")))?
            .map_err(errors::name_owned)?;
        serde_json::to_string(&diff).map_err(|e| Error::Failed(format!("serializing the /etc changes: {e}")))
    }

    /// Diff: what changes from one deployment to another (or to the
    /// downloaded update), as JSON: packages added, removed, upgraded and
    /// downgraded, kernel version and kernel arguments, the images'
    /// description labels. from and to: booted, staged, rollback, cached,
    /// an index into Deployments, or "" (from: booted; to: staged, else
    /// cached). Takes no options yet. Anyone may call it, like Status.
    async fn diff(&self, from: String, to: String, options: HashMap<String, OwnedVariant>) -> Result<String, Error> {
        self.ctx.idle.touch();
        Options::parse(Method::Diff, &options)?;
        let parse = |arg: &str, text: &str| {
            DiffTarget::parse(text).map_err(|e| Error::InvalidArgument(format!("{arg}: {e}")))
        };
        let (from, to) = (parse("from", &from)?, parse("to", &to)?);
        let loaded = self.ensure_image_based().await?;
        let snapshot = loaded.as_ref().as_ref().map_err(errors::name)?;
        let (from, to) = diff::resolve(snapshot, from, to).map_err(errors::name_owned)?;
        let sysroot = self.ctx.sysroot.path().to_path_buf();
        let too_long = || Error::Failed(format!("comparing the deployments took longer than {} s", DIFF_TIME_LIMIT.as_secs()));
        let deadline = tokio::time::Instant::now() + DIFF_TIME_LIMIT;
        let slot = tokio::time::timeout_at(deadline, DIFF_SLOT.acquire())
            .await
            .map_err(|_| too_long())?
            .map_err(|e| Error::Failed(format!("comparing the deployments: {e}")))?;
        let work = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            diff::diff(&sysroot, &from, &to)
        });
        let answer = tokio::time::timeout_at(deadline, work)
            .await
            .map_err(|_| too_long())?
            .map_err(|e| Error::Failed(format!("comparing the deployments: {e}")))?
            .map_err(errors::name_owned)?;
        serde_json::to_string(&answer).map_err(|e| Error::Failed(format!("serializing the comparison: {e}")))
    }

    /// ReloadConfig: re-read /etc/hostd/hostd.toml and drop-ins. A bad file is
    /// an InvalidArgument naming file and key; the previous settings stay.
    async fn reload_config(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), Error> {
        self.ctx.idle.touch();
        let auth = Authorizer::new(conn.clone());
        let caller = auth.caller(&header).await?;
        auth.authorize(&header, &caller, &[Action::Reload], &HashMap::new()).await?;
        let old = self.ctx.config();
        self.ctx.reload_config().await?;
        self.announce_config(&emitter, &old, &self.ctx.config()).await;
        Ok(())
    }

    /// Settings: the update settings in force, as SetSettings takes them
    /// (updates.policy s, updates.strategy s, updates.time_zone s,
    /// updates.window aa{sv}, updates.fleet_lock.url s,
    /// updates.fleet_lock.group s; the FleetLock keys only when a file sets
    /// them), and for each key a file set, that file. Anyone may call it.
    /// No options yet.
    #[zbus(out_args("settings", "sources"))]
    async fn settings(
        &self,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(HashMap<String, OwnedVariant>, HashMap<String, String>), Error> {
        self.ctx.idle.touch();
        Options::parse(Method::Settings, &options)?;
        let (settings, sources) = self.ctx.settings();
        Ok((settings.to_dict(), sources.into_iter().collect()))
    }

    /// SetSettings: set update settings (the keys of Settings, named as in
    /// hostd.toml) in /etc/hostd/hostd.d/90-settings.toml and apply them at
    /// once. Values are checked as the files' are; an invalid value, an
    /// unknown key, a wrong type, or a key a later drop-in overrides is
    /// InvalidArgument naming the key, and nothing is written. Needs
    /// `configure`. No options yet.
    async fn set_settings(
        &self,
        settings: HashMap<String, OwnedVariant>,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), Error> {
        self.ctx.idle.touch();
        Options::parse(Method::SetSettings, &options)?;
        let settings = Settings::parse(Method::SetSettings.name(), &settings)?;
        if settings.keys().is_empty() {
            return Err(Error::InvalidArgument("SetSettings: no setting given".into()));
        }
        self.configure(SettingsEdit::Set(settings), &header, conn, &emitter).await
    }

    /// ResetSettings: drop keys from /etc/hostd/hostd.d/90-settings.toml,
    /// so the other files (or the defaults) decide them again, and apply
    /// that. Unknown keys are InvalidArgument. Needs `configure`. No options yet.
    async fn reset_settings(
        &self,
        keys: Vec<String>,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), Error> {
        self.ctx.idle.touch();
        Options::parse(Method::ResetSettings, &options)?;
        let keys = settings::parse_keys(Method::ResetSettings.name(), &keys)?;
        self.configure(SettingsEdit::Reset(keys), &header, conn, &emitter).await
    }

    /// idle | checking | fetching | staging | rolling-back | cleaning | rebooting
    #[zbus(property)]
    async fn state(&self) -> ManagerState {
        properties::state(&self.ctx)
    }

    /// The running job's object path, `/` when idle.
    #[zbus(property)]
    async fn active_job(&self) -> OwnedObjectPath {
        properties::active_job(&self.ctx)
    }

    /// Deployments in boot order, each a dict: index u, role s (staged, booted,
    /// rollback, other), checksum s, serial u, stateroot s, pinned b,
    /// download-only b, incompatible b, for image deployments image s,
    /// transport s, digest s, version s, timestamp s, labels a{ss}, and once
    /// assessed health s (passed, failed) and health-failures as.
    #[zbus(property)]
    async fn deployments(&self) -> Vec<DeploymentEntry> {
        properties::current_deployments(&self.ctx)
    }

    /// The update the last check found: version s, digest s, timestamp s,
    /// downgrade b, downloaded b (already fetched, `Stage` deploys it), and
    /// from the check that found it (kept across restarts), download-bytes
    /// t, layers-to-fetch u, layers-total u. Empty when none, and once a
    /// deployment runs or is queued to run it.
    #[zbus(property)]
    async fn cached_update(&self) -> CachedUpdate {
        properties::cached_update(&self.ctx)
    }

    /// A queued deployment or rollback waits for a reboot.
    #[zbus(property)]
    async fn reboot_required(&self) -> bool {
        properties::reboot_required(&self.ctx)
    }

    /// The configured unattended update policy: none | check | download | stage | apply.
    #[zbus(property)]
    async fn automatic_update_policy(&self) -> UpdatePolicy {
        self.ctx.config().policy
    }

    /// When the last Check or unattended run ended, µs since the epoch; 0 when never.
    #[zbus(property)]
    async fn last_check_time(&self) -> u64 {
        self.ctx.records.last_check_time()
    }

    /// How the last Check or unattended run ended (its message, or the
    /// error name and message); empty when never.
    #[zbus(property)]
    async fn last_check_result(&self) -> String {
        self.ctx.records.last_check_result()
    }

    /// When unattended runs may reboot: immediate | periodic | fleet-lock.
    #[zbus(property)]
    async fn update_strategy(&self) -> UpdateStrategy {
        self.ctx.config().strategy.name()
    }

    /// When the next maintenance window opens (now, if one is open), µs
    /// since the epoch; 0 when no window is configured.
    #[zbus(property)]
    async fn next_maintenance_window(&self) -> u64 {
        let config = self.ctx.config();
        config
            .windows
            .next_open(chrono::Utc::now())
            .and_then(|t| u64::try_from(t.timestamp_micros()).ok())
            .unwrap_or(0)
    }

    /// Why a reboot is required, and why a requested one was postponed;
    /// empty when no reboot is required.
    #[zbus(property)]
    async fn reboot_pending_reason(&self) -> String {
        properties::reboot_pending_reason(&self.ctx)
    }

    /// How the last job of each kind ended, oldest end first (kept across
    /// restarts): kind s, result s, message s, error-name s, error-message s,
    /// start-time t and end-time t (µs since the epoch), image s, initiator-uid u.
    #[zbus(property)]
    async fn last_jobs(&self) -> Vec<LastJob> {
        self.ctx.records.last_jobs()
    }

    /// An update is available that was not announced before (digest s,
    /// version s, empty when the image has none): once per new digest, for
    /// notifications. A check finding the same update again does not repeat it.
    #[zbus(signal)]
    pub async fn update_available(emitter: &SignalEmitter<'_>, digest: &str, version: &str) -> zbus::Result<()>;

    /// A job was created; emitted after the call that created it returned.
    #[zbus(signal)]
    pub async fn job_new(
        emitter: &SignalEmitter<'_>,
        id: u64,
        job: ObjectPath<'_>,
        kind: JobKind,
    ) -> zbus::Result<()>;

    /// A job finished with result succeeded, failed or cancelled.
    #[zbus(signal)]
    pub async fn job_removed(
        emitter: &SignalEmitter<'_>,
        id: u64,
        job: ObjectPath<'_>,
        result: JobStatus,
    ) -> zbus::Result<()>;
}

impl Manager {
    /// `SetSettings` and `ResetSettings` after parsing: checked, then
    /// authorized (`configure`), written, applied and announced.
    async fn configure(
        &self,
        edit: SettingsEdit,
        header: &Header<'_>,
        conn: &Connection,
        emitter: &SignalEmitter<'_>,
    ) -> Result<(), Error> {
        let method = match edit {
            SettingsEdit::Set(_) => Method::SetSettings.name(),
            SettingsEdit::Reset(_) => Method::ResetSettings.name(),
        };
        self.ctx.check_settings(method, &edit).await?;
        let auth = Authorizer::new(conn.clone());
        let caller = auth.caller(header).await?;
        let details = HashMap::from([("verb", "configure".to_string()), ("settings", edit.keys().join(","))]);
        auth.authorize(header, &caller, &[Action::Configure], &details).await?;
        let (old, new) = self.ctx.change_settings(method, edit).await?;
        tracing::info!(uid = caller.uid, "{method} by uid {}", caller.uid);
        self.announce_config(emitter, &old, &new).await;
        Ok(())
    }

    /// Announce what new settings changed: the signalled properties
    /// (`AutomaticUpdatePolicy`, `UpdateStrategy`, …) through
    /// [`Manager::announce`], each once, and `NextMaintenanceWindow`, which
    /// moves with the clock and is otherwise not announced, when the
    /// windows changed from `old` to `new`.
    async fn announce_config(&self, emitter: &SignalEmitter<'_>, old: &Config, new: &Config) {
        self.announce(emitter).await;
        if old.windows != new.windows {
            if let Err(e) = self.next_maintenance_window_changed(emitter).await {
                tracing::warn!("announcing the new settings: {e}");
            }
        }
    }

    /// Whether `UsrOverlay` may mount an overlay: the sysroot is the booted
    /// one and its `/usr` has none yet. The booted commit when it may.
    async fn usr_overlay_possible(&self) -> Result<Option<String>, Error> {
        let loaded = self.ensure_image_based().await?;
        let snapshot = match &*loaded {
            Ok(s) => s,
            Err(e) => return Err(errors::name(e)),
        };
        if !snapshot.booted {
            return Err(Error::InvalidArgument(format!(
                "UsrOverlay changes /usr of the running system, but {} is not the booted sysroot",
                self.ctx.sysroot.path().display()
            )));
        }
        if let Some(active) = snapshot.host.status.usr_overlay {
            let until = match active.persistence {
                FilesystemOverlayPersistence::Transient => "the next reboot",
                FilesystemOverlayPersistence::Persistent => "this deployment is no longer booted",
            };
            return Err(Error::InvalidArgument(format!(
                "a /usr overlay is already active ({}, {}); it stays until {until}",
                active.access_mode, active.persistence
            )));
        }
        Ok(snapshot.host.status.booted.as_ref().and_then(|b| b.ostree.as_ref()).map(|o| o.checksum.clone()))
    }

    async fn ensure_image_based(&self) -> Result<crate::sysroot::cache::Loaded, Error> {
        let loaded = self.ctx.status.current().await;
        if let Err(e @ crate::sysroot::Error::NotImageBased(_)) = &*loaded {
            return Err(errors::name(e));
        }
        Ok(loaded)
    }

    /// `apply` reboots the running system into the sysroot's next
    /// deployment, which makes sense only when that sysroot is the running one.
    async fn ensure_can_apply(&self, options: &Options) -> Result<crate::sysroot::cache::Loaded, Error> {
        let loaded = self.ensure_image_based().await?;
        if options.apply && !matches!(&*loaded, Ok(s) if s.booted) {
            return Err(Error::InvalidArgument(format!(
                "'apply' reboots the running system, but {} is not the booted sysroot",
                self.ctx.sysroot.path().display()
            )));
        }
        Ok(loaded)
    }

    /// A validated `Switch` request for `image` (`Switch` and `Edit`).
    async fn switch_request(&self, image: &str, mut options: Options) -> Result<JobRequest, Error> {
        // Under `[updates] require_signatures` the image is tracked as
        // verified, so the policy is enforced on its updates too.
        options.enforce_container_sigpolicy |= self.ctx.config().require_signatures;
        let transport = options.transport.unwrap_or(Transport::Registry);
        let reference = image_ref::parse(image, transport, options.enforce_container_sigpolicy)?;
        if options.enforce_container_sigpolicy {
            containers_policy::ensure_enforcing(Path::new(containers_policy::POLICY_PATH), &reference)?;
        }
        self.ensure_can_apply(&options).await?;
        Ok(JobRequest { kind: JobKind::Switch, image: Some(reference), options })
    }

    /// What `Upgrade({auto})` does under the configured policy; `None` when
    /// the policy is none. Nothing runs from an offline sysroot, so there
    /// `apply` stages without rebooting.
    async fn unattended_request(&self) -> Option<JobRequest> {
        let booted = matches!(&*self.ctx.status.current().await, Ok(s) if s.booted);
        JobRequest::unattended(self.ctx.config().policy, booted)
    }

    /// A request about the tracked image: there must be one.
    async fn tracked_request(
        &self,
        kind: JobKind,
        options: &HashMap<String, OwnedVariant>,
    ) -> Result<JobRequest, Error> {
        let options = Options::parse(kind.method(), options)?;
        let loaded = self.ensure_can_apply(&options).await?;
        JobRequest::about_tracked_image(kind, options, &loaded)
    }
}

/// Take the properties as they are now as what clients know, without
/// announcing them: called before the bus name is taken, when no client
/// can have read anything, so a restarted daemon does not re-announce what
/// its predecessor did.
pub async fn take_as_announced(ctx: &Context, conn: &Connection) {
    match conn.object_server().interface::<_, ManagerObject>(MANAGER_PATH).await {
        Ok(iface) => *iface.get().await.inner().announced.lock().await = properties::current(ctx),
        Err(e) => tracing::warn!("manager properties: {e}"),
    }
}

/// Announce the manager's property changes ([`Manager::announce`]).
pub async fn announce(conn: &Connection) {
    match conn.object_server().interface::<_, ManagerObject>(MANAGER_PATH).await {
        Ok(iface) => iface.get().await.inner().announce(iface.signal_emitter()).await,
        Err(e) => tracing::warn!("announcing manager properties: {e}"),
    }
}

/// The host may look different (a new sysroot read): bring the records
/// in line with it, keep them, and announce what changed.
pub async fn host_changed(ctx: &Context, conn: &Connection) {
    let followed = match ctx.status.peek().as_deref() {
        Some(Ok(snapshot)) => ctx.records.follow_host(snapshot),
        _ => false,
    };
    if followed {
        ctx.records.persist().await;
    }
    announce(conn).await;
}

/// New sysroot reads, as the status cache publishes them.
pub type StatusReads = tokio::sync::watch::Receiver<Option<crate::sysroot::cache::Loaded>>;

/// Follow every new sysroot read with [`host_changed`]; `reads` was
/// subscribed before the manager took its first look, so none is missed.
pub fn follow_status_changes(ctx: Arc<Context>, conn: Connection, mut reads: StatusReads) {
    tokio::spawn(async move {
        while reads.changed().await.is_ok() {
            host_changed(&ctx, &conn).await;
        }
    });
}
