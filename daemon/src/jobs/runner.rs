//! A job's life from the moment its creating call has been answered to its
//! removal, free of the bus: run the operation, record what a check found,
//! re-read the sysroot, write the journal entry, settle `apply`'s reboot,
//! release the slot, publish the end, announce the removal.
//!
//! The runner talks to the outside through three traits, so the sequence is
//! tested without a bus or a sysroot: [`JobEvents`] (implemented by the bus
//! objects), [`Operation`] (the worker thread calling the sysroot) and
//! [`Reboot`] (logind, after a job with `apply`).
//!
//! Order that callers rely on (docs/ARCHITECTURE.md, "Request path"):
//! `JobNew` only after the reply; the status cache re-read before the final
//! state is set; the slot released before the final state and `JobRemoved`;
//! the final state always published; progress at a bounded rate.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostd_interface::job::JobStatus;
use hostd_interface::manager::LastJob;
use hostd_interface::names::ERROR_PREFIX;
use hostd_interface::Error;

use super::records::{self, CheckAnswer, Records};
use super::state::JobProps;
use super::{JobKind, JobShared, Jobs};
use crate::idle::Idle;
use crate::journal;
use crate::sysroot::cache::{Loaded, StatusCache};
use crate::sysroot::progress::Progress;
use crate::sysroot::{Outcome, UpdateSummary};

/// At most this many property updates per second per job.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(200);

/// How long a job waits for the check it pre-empted to end before it goes
/// on regardless: the sysroot lock still keeps the two apart, and a check
/// that does not stop must not hold up a change for longer.
pub const PREEMPTED_STOP_LIMIT: Duration = Duration::from_secs(30);

/// How a job from [`super::Jobs::reserve`] comes to its end.
#[derive(Debug)]
pub enum Course {
    /// Do the work, once the check it pre-empted (if any) has ended.
    Work {
        /// The check this job took the slot from.
        preempted: Option<Arc<JobShared>>,
    },
    /// Ended already, answered from the last check's result: only announce it.
    Answered,
}

/// What the runner tells the bus. Emission errors are the implementor's
/// to log: a job never fails because a signal could not be sent.
pub trait JobEvents: Send + Sync {
    /// The job exists (`JobNew`); called only after the creating call's reply is out.
    fn job_new(&self, job: &JobShared) -> impl Future<Output = ()> + Send;
    /// The job's properties went from `old` to `new`, which differ
    /// (`PropertiesChanged` on the job).
    fn job_changed(&self, job: &JobShared, old: &JobProps, new: &JobProps) -> impl Future<Output = ()> + Send;
    /// The manager's job-related properties (`State`, `ActiveJob`,
    /// `CachedUpdate`, `LastCheckTime`) may have changed.
    fn manager_changed(&self) -> impl Future<Output = ()> + Send;
    /// The job has ended and its end is published (`JobRemoved` with its
    /// final state); the job object may go after a while.
    fn job_removed(&self, job: &JobShared) -> impl Future<Output = ()> + Send;
}

/// The work of a job. In the daemon: `worker::Worker`, the job's
/// own thread calling the sysroot, with the time limit.
pub trait Operation: Send + Sync {
    /// Do what `job.request` asks, reporting progress to `job`.
    fn run(&self, job: Arc<JobShared>) -> impl Future<Output = Result<Outcome, Error>> + Send;
}

/// What `apply` did after a successful job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The job's final `Message`, saying whether the system reboots.
    pub message: String,
    /// Why a reboot was not started although one is needed (a sentence
    /// without full stop); `None` when it started or nothing is queued.
    pub postponed: Option<String>,
}

/// The reboot after a successful job with `apply`. In the daemon:
/// `reboot::apply::Logind`.
pub trait Reboot: Send + Sync {
    /// Reboot into what `loaded` shows queued, or say why not; `message`
    /// is the job's message so far.
    fn apply(&self, job: &JobShared, loaded: &Loaded, message: String)
        -> impl Future<Output = Result<Applied, Error>> + Send;
    /// When `loaded` shows a staged deployment, make sure the next
    /// shutdown finalizes it however soon it comes; why not otherwise.
    fn arm_finalization(&self, loaded: &Loaded) -> impl Future<Output = Result<(), String>> + Send;
}

/// One job's sequence, over the shared state it touches.
#[derive(Debug)]
pub struct Runner<'a, E, O, R> {
    /// The job slot, released when the work is done.
    pub jobs: &'a Jobs,
    /// Where check results and reboot postponements are kept.
    pub records: &'a Records,
    /// Re-read after the work, before the final state.
    pub status: &'a StatusCache,
    /// Touched when the job is over.
    pub idle: &'a Idle,
    /// The bus side.
    pub events: &'a E,
    /// The work.
    pub operation: &'a O,
    /// The reboot for `apply`.
    pub reboot: &'a R,
}

impl<E: JobEvents, O: Operation, R: Reboot> Runner<'_, E, O, R> {
    /// Run `job` once `reply_sent` resolves (the creating call's reply is out)
    /// until its removal has been announced.
    pub async fn run(&self, job: Arc<JobShared>, course: Course, reply_sent: impl Future<Output = ()>) {
        // Counted from before the reply, so shutdown waits for this job's end.
        let unpublished = self.jobs.unpublished();
        reply_sent.await;
        self.events.job_new(&job).await;
        let preempted = match course {
            Course::Work { preempted } => preempted,
            Course::Answered => {
                // It never held the slot: the manager's properties are
                // what they were.
                drop(unpublished);
                self.events.job_removed(&job).await;
                return;
            }
        };
        self.events.manager_changed().await;
        // Taken before the work starts, so every later change is published.
        let initial = job.props();
        tokio::join!(publish(self.events, &job, initial), self.work(&job, preempted));
        drop(unpublished);
        self.idle.touch();
        self.events.manager_changed().await;
        self.events.job_removed(&job).await;
    }

    /// From the operation to the job's final state.
    async fn work(&self, job: &Arc<JobShared>, preempted: Option<Arc<JobShared>>) {
        if let Some(check) = preempted {
            wait_for_preempted(job, &check).await;
        }
        let result = job.explain_cancel(self.operation.run(job.clone()).await);
        self.record_check(job, &result);
        tracing::debug!(job = job.id, "the work is done; re-reading the sysroot");
        // Readers who see the job end must also see the sysroot it left behind.
        let loaded = self.status.refresh().await;
        let result = match result {
            Ok(outcome) => self.conclude(job, &loaded, outcome).await,
            Err(e) => Err(e),
        };
        self.record_check_answer(job, &loaded, &result);
        if let Ok(snapshot) = &*loaded {
            // What this job deployed is no longer news, before anyone sees it end.
            self.records.follow_host(snapshot);
        }
        self.records.record_job(last_job(job, &result));
        // Saved before the end is published: a daemon killed right after
        // it still reports this job and check when it comes back.
        self.records.persist().await;
        match &result {
            Ok(message) => tracing::info!(job = job.id, "job succeeded: {message}"),
            Err(e) => tracing::warn!(job = job.id, "job ended: {}: {}", e.short_name(), e.message()),
        }
        // Free the slot first: whoever sees the job end finds the manager idle.
        self.jobs.release(job.id);
        job.finish(&result);
    }

    /// `Check` and unattended runs are what `LastCheckTime`/`LastCheckResult`
    /// report; a pre-empted check found nothing, so the last result stays.
    fn record_check(&self, job: &JobShared, result: &Result<Outcome, Error>) {
        if job.preempted_by().is_some() && matches!(result, Err(Error::Cancelled(_))) {
            return;
        }
        let kind = job.request.kind;
        if kind == JobKind::Check {
            if let Ok(outcome) = result {
                self.records.record_check(outcome.update.as_ref().map(UpdateSummary::cached_update));
            }
        }
        if kind == JobKind::Check || job.request.options.auto {
            match result {
                Ok(outcome) => self.records.record_check_result(&outcome.message),
                Err(e) => self.records.record_check_result(&format!("{}: {}", e.short_name(), e.message())),
            }
        }
    }

    /// A `Check` that reached a result answers the next checks for a while;
    /// kept before the slot is freed, so a check right after it is answered.
    fn record_check_answer(&self, job: &JobShared, loaded: &Loaded, result: &Result<String, Error>) {
        let reached_a_result = !matches!(result, Err(Error::Cancelled(_)));
        if job.request.kind != JobKind::Check || !reached_a_result {
            return;
        }
        if let Some(sysroot) = records::sysroot_state(loaded) {
            self.records.record_check_answer(CheckAnswer { ended: Instant::now(), result: result.clone(), sysroot });
        }
    }

    /// A successful operation: its journal entry, then `apply`'s reboot.
    /// The job's warnings end its message, so no reader of the result
    /// misses them.
    async fn conclude(&self, job: &JobShared, loaded: &Loaded, outcome: Outcome) -> Result<String, Error> {
        // ostree's path unit starts the finalization only once systemd
        // notices the staged deployment: a `systemctl reboot` right after
        // the job would otherwise boot the old deployment again.
        if outcome.change.is_some() || job.request.options.apply {
            if let Err(e) = self.reboot.arm_finalization(loaded).await {
                job.warning(&format!("{e}; the staged deployment is applied only if a shutdown finalizes it"));
            }
        }
        let warnings = job.props().warnings().to_vec();
        let message = with_warnings(outcome.message, &warnings);
        if let Some(change) = &outcome.change {
            journal::record_with_warnings(change, &job.initiator, job.id, &message, &warnings);
        }
        if !job.request.options.apply {
            return Ok(message);
        }
        let applied = self.reboot.apply(job, loaded, message).await?;
        self.records.set_reboot_postponed(applied.postponed);
        Ok(applied.message)
    }
}

/// How `job` ended with `result`, for `LastJobs`.
fn last_job(job: &JobShared, result: &Result<String, Error>) -> LastJob {
    let props = job.props();
    let (status, message, error_name, error_message) = match result {
        Ok(message) => (JobStatus::Succeeded, message.clone(), String::new(), String::new()),
        Err(e) => {
            let status = if matches!(e, Error::Cancelled(_)) { JobStatus::Cancelled } else { JobStatus::Failed };
            (status, e.message(), format!("{ERROR_PREFIX}.{}", e.short_name()), e.message())
        }
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    LastJob {
        kind: job.request.kind,
        result: status,
        message,
        error_name,
        error_message,
        start_time: props.start_time(),
        end_time: u64::try_from(now.as_micros()).unwrap_or(u64::MAX),
        image: props.image().to_string(),
        initiator_uid: job.initiator.uid,
    }
}

/// Wait until `check`, which `job` pre-empted, has ended, at most
/// [`PREEMPTED_STOP_LIMIT`] or until `job` itself is cancelled.
async fn wait_for_preempted(job: &JobShared, check: &JobShared) {
    job.message(&format!("waiting for the pre-empted check {} to stop", check.path));
    tokio::select! {
        _ = check.ended() => {}
        _ = job.cancel.cancelled() => {}
        _ = tokio::time::sleep(PREEMPTED_STOP_LIMIT) => {
            tracing::warn!(
                job = job.id,
                "the pre-empted check {} has not stopped within {}s; going on",
                check.path,
                PREEMPTED_STOP_LIMIT.as_secs()
            );
        }
    }
}

/// `message`, then each warning as `Warning: …`.
fn with_warnings(message: String, warnings: &[String]) -> String {
    warnings.iter().fold(message, |m, w| format!("{m} Warning: {w}"))
}

/// Publish property changes until the job's final state is out.
async fn publish(events: &impl JobEvents, job: &JobShared, initial: JobProps) {
    let mut published = initial;
    loop {
        job.changed().await;
        let now = job.props();
        let phase_before = published.phase();
        for snapshot in job.take_phase_ends().into_iter().chain([now.clone()]) {
            if snapshot != published {
                events.job_changed(job, &published, &snapshot).await;
                published = snapshot;
            }
        }
        job.mark_published(published.phase());
        if now.phase() != phase_before {
            // The manager's `State` follows the job's phase.
            events.manager_changed().await;
        }
        if now.is_finished() {
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use hostd_interface::options::Options;
    use tokio::sync::oneshot;

    use super::*;
    use crate::jobs::{Initiator, JobRequest, JobState, Reservation};
    use crate::sysroot::progress::{Phase, Progress};
    use crate::sysroot::SysrootPath;

    /// What the fake bus saw, with the shared state at that moment.
    #[derive(Debug, Clone, PartialEq)]
    enum Seen {
        JobNew,
        ManagerChanged { slot_taken: bool },
        JobChanged { state: JobStatus, phase: Phase, slot_taken: bool, status_read: bool, check_recorded: bool },
        JobRemoved { state: JobStatus, slot_taken: bool },
    }

    struct Shared {
        jobs: Jobs,
        records: Records,
        status: Arc<StatusCache>,
        idle: Idle,
        _dir: tempfile::TempDir,
    }

    impl Shared {
        fn new() -> Arc<Shared> {
            // An empty directory: reading it fails fast, which is all the
            // runner needs to show it re-read the sysroot.
            let dir = tempfile::tempdir().unwrap();
            Arc::new(Shared {
                jobs: Jobs::default(),
                records: Records::default(),
                status: StatusCache::new(SysrootPath::new(dir.path())),
                idle: Idle::new(None),
                _dir: dir,
            })
        }

        fn slot_taken(&self) -> bool {
            self.jobs.active().is_some()
        }
    }

    struct FakeBus {
        shared: Arc<Shared>,
        seen: Mutex<Vec<Seen>>,
    }

    impl FakeBus {
        fn push(&self, seen: Seen) {
            self.seen.lock().unwrap().push(seen);
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl JobEvents for FakeBus {
        async fn job_new(&self, _job: &JobShared) {
            self.push(Seen::JobNew);
        }

        async fn job_changed(&self, _job: &JobShared, _old: &JobProps, new: &JobProps) {
            self.push(Seen::JobChanged {
                state: new.state().status(),
                phase: new.phase(),
                slot_taken: self.shared.slot_taken(),
                status_read: self.shared.status.peek().is_some(),
                check_recorded: self.shared.records.last_check_time() > 0,
            });
        }

        async fn manager_changed(&self) {
            self.push(Seen::ManagerChanged { slot_taken: self.shared.slot_taken() });
        }

        async fn job_removed(&self, job: &JobShared) {
            self.push(Seen::JobRemoved { state: job.props().state().status(), slot_taken: self.shared.slot_taken() });
        }
    }

    /// Goes through pulling and staging, then returns `result`.
    struct FakeOperation {
        result: Result<Outcome, Error>,
    }

    impl Operation for FakeOperation {
        async fn run(&self, job: Arc<JobShared>) -> Result<Outcome, Error> {
            job.phase(Phase::Pulling, "pulling");
            job.bytes(10, 100);
            job.phase(Phase::Staging, "staging");
            self.result.clone()
        }
    }

    /// Postpones every reboot.
    struct FakeReboot {
        asked: Mutex<u32>,
    }

    impl Reboot for FakeReboot {
        async fn apply(&self, _job: &JobShared, _loaded: &Loaded, message: String) -> Result<Applied, Error> {
            *self.asked.lock().unwrap() += 1;
            Ok(Applied { message: format!("{message} postponed"), postponed: Some("inhibited".into()) })
        }

        async fn arm_finalization(&self, _loaded: &Loaded) -> Result<(), String> {
            Ok(())
        }
    }

    fn reserve(shared: &Shared, kind: JobKind, options: Options) -> Arc<JobShared> {
        let request = JobRequest { kind, image: None, options };
        match shared.jobs.reserve(request, Initiator { uid: 0, unit: None }, None).unwrap() {
            Reservation::New { job, preempted: None } => job,
            other => panic!("the slot was free: {other:?}"),
        }
    }

    /// Run `job` to its end; the reply is sent only after the runner had
    /// every chance to emit something before it.
    async fn run(shared: &Arc<Shared>, job: Arc<JobShared>, result: Result<Outcome, Error>) -> (Vec<Seen>, u32) {
        let bus = FakeBus { shared: shared.clone(), seen: Mutex::new(Vec::new()) };
        let operation = FakeOperation { result };
        let reboot = FakeReboot { asked: Mutex::new(0) };
        let runner = Runner {
            jobs: &shared.jobs,
            records: &shared.records,
            status: &shared.status,
            idle: &shared.idle,
            events: &bus,
            operation: &operation,
            reboot: &reboot,
        };
        let (reply, reply_sent) = oneshot::channel::<()>();
        let running = runner.run(job, Course::Work { preempted: None }, async {
            let _ = reply_sent.await;
        });
        tokio::pin!(running);
        tokio::select! {
            _ = &mut running => panic!("the job ran without its reply"),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        assert!(bus.seen().is_empty(), "nothing may be emitted before the reply: {:?}", bus.seen());
        reply.send(()).unwrap();
        running.await;
        let asked = *reboot.asked.lock().unwrap();
        (bus.seen(), asked)
    }

    fn changes(seen: &[Seen]) -> Vec<(JobStatus, Phase)> {
        seen.iter()
            .filter_map(|s| match s {
                Seen::JobChanged { state, phase, .. } => Some((*state, *phase)),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_job_is_announced_after_the_reply_and_removed_after_its_end() {
        let shared = Shared::new();
        let job = reserve(&shared, JobKind::Upgrade, Options::default());
        let (seen, reboots) = run(&shared, job.clone(), Ok(Outcome::message("done"))).await;

        assert_eq!(seen.first(), Some(&Seen::JobNew));
        assert_eq!(seen.get(1), Some(&Seen::ManagerChanged { slot_taken: true }));
        // Every phase is published, in order, and the end last.
        assert_eq!(
            changes(&seen),
            [
                (JobStatus::Running, Phase::Pulling),
                (JobStatus::Running, Phase::Staging),
                (JobStatus::Succeeded, Phase::Staging),
            ]
        );
        let Some(Seen::JobChanged { slot_taken, status_read, .. }) =
            seen.iter().rfind(|s| matches!(s, Seen::JobChanged { .. }))
        else {
            unreachable!()
        };
        assert!(!slot_taken, "the slot is free before the end is published");
        assert!(status_read, "the sysroot is re-read before the end is published");
        assert_eq!(
            &seen[seen.len() - 2..],
            [
                Seen::ManagerChanged { slot_taken: false },
                Seen::JobRemoved { state: JobStatus::Succeeded, slot_taken: false },
            ]
        );
        assert_eq!(reboots, 0, "no apply, no reboot");
        assert_eq!(job.props().message(), "done");
        assert!(!shared.jobs.busy(), "nothing left unpublished");
        // Only a Check or an unattended run counts as a check.
        assert_eq!(shared.records.last_check_time(), 0);
    }

    #[tokio::test]
    async fn a_check_is_recorded_before_its_end_is_published() {
        let shared = Shared::new();
        let job = reserve(&shared, JobKind::Check, Options::default());
        let update = UpdateSummary { digest: "sha256:1".into(), bytes_to_fetch: 5, ..Default::default() };
        let outcome = Outcome { message: "found v2".into(), update: Some(update.clone()), change: None };
        let (seen, _) = run(&shared, job, Ok(outcome)).await;

        assert_eq!(shared.records.last_check(), Some(update.cached_update()));
        assert_eq!(shared.records.last_check_result(), "found v2");
        let jobs = shared.records.last_jobs();
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].kind, jobs[0].result, jobs[0].message.as_str()), (JobKind::Check, JobStatus::Succeeded, "found v2"));
        assert!(jobs[0].start_time > 0 && jobs[0].start_time <= jobs[0].end_time, "{:?}", jobs[0]);
        let end = seen.iter().rfind(|s| matches!(s, Seen::JobChanged { .. })).unwrap();
        assert!(matches!(end, Seen::JobChanged { state: JobStatus::Succeeded, check_recorded: true, .. }), "{end:?}");
    }

    #[tokio::test]
    async fn a_failed_unattended_run_records_the_error_and_ends_failed() {
        let shared = Shared::new();
        let job = reserve(&shared, JobKind::Upgrade, Options { auto: true, ..Options::default() });
        let (seen, _) = run(&shared, job.clone(), Err(Error::Network("connection refused".into()))).await;

        assert_eq!(shared.records.last_check_result(), "Network: connection refused");
        let last = shared.records.last_jobs().pop().unwrap();
        assert_eq!((last.result, last.error_name.as_str()), (JobStatus::Failed, "org.hostd.Host1.Error.Network"));
        assert_eq!(changes(&seen).last(), Some(&(JobStatus::Failed, Phase::Staging)));
        assert_eq!(seen.last(), Some(&Seen::JobRemoved { state: JobStatus::Failed, slot_taken: false }));
        assert_eq!(job.props().error(), Some(&Error::Network("connection refused".into())));
    }

    #[tokio::test]
    async fn apply_asks_for_the_reboot_and_keeps_its_postponement() {
        let shared = Shared::new();
        let job = reserve(&shared, JobKind::Upgrade, Options { apply: true, ..Options::default() });
        let (_, reboots) = run(&shared, job.clone(), Ok(Outcome::message("staged."))).await;

        assert_eq!(reboots, 1);
        assert_eq!(job.props().message(), "staged. postponed");
        assert_eq!(shared.records.reboot_postponed().as_deref(), Some("inhibited"));
    }

    #[tokio::test]
    async fn warnings_end_the_message_and_stay_on_the_job() {
        let shared = Shared::new();
        let job = reserve(&shared, JobKind::Switch, Options::default());
        job.warning("/opt (1 path) was left out.");
        let (_, _) = run(&shared, job.clone(), Ok(Outcome::message("Deployed v1."))).await;
        assert_eq!(job.props().message(), "Deployed v1. Warning: /opt (1 path) was left out.");
        assert_eq!(job.props().warnings(), ["/opt (1 path) was left out."]);
    }

    #[tokio::test]
    async fn a_failed_job_does_not_reboot() {
        let shared = Shared::new();
        let job = reserve(&shared, JobKind::Upgrade, Options { apply: true, ..Options::default() });
        let (_, reboots) = run(&shared, job, Err(Error::Cancelled("cancelled by caller".into()))).await;
        assert_eq!(reboots, 0);
        assert_eq!(shared.records.reboot_postponed(), None);
    }

    /// Holds a check until it is cancelled; any other job notes whether the
    /// check had ended when its work began.
    struct HeldCheck {
        check_ended_first: Mutex<Option<bool>>,
        check: Arc<JobShared>,
    }

    impl Operation for HeldCheck {
        async fn run(&self, job: Arc<JobShared>) -> Result<Outcome, Error> {
            if job.id == self.check.id {
                job.cancel.cancelled().await;
                return Err(Error::Cancelled("cancelled by request".into()));
            }
            *self.check_ended_first.lock().unwrap() = Some(self.check.props().is_finished());
            Ok(Outcome::message("Removed 0 images."))
        }
    }

    #[tokio::test]
    async fn a_preempted_check_ends_cancelled_naming_its_successor_which_starts_after_it() {
        let shared = Shared::new();
        shared.records.record_check_result("Update available: v2.");
        let checker = Initiator { uid: 1000, unit: None };
        let request = |kind| JobRequest { kind, image: None, options: Options::default() };
        let Ok(Reservation::New { job: check, .. }) = shared.jobs.reserve(request(JobKind::Check), checker, None) else {
            panic!("the slot was free")
        };
        let bus = FakeBus { shared: shared.clone(), seen: Mutex::new(Vec::new()) };
        let operation = HeldCheck { check_ended_first: Mutex::new(None), check: check.clone() };
        let reboot = FakeReboot { asked: Mutex::new(0) };
        let runner = Runner {
            jobs: &shared.jobs,
            records: &shared.records,
            status: &shared.status,
            idle: &shared.idle,
            events: &bus,
            operation: &operation,
            reboot: &reboot,
        };
        let checking = runner.run(check.clone(), Course::Work { preempted: None }, async {});
        let cleaning = async {
            // The check is running when the cleanup arrives.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let admin = Initiator { uid: 0, unit: None };
            let Ok(Reservation::New { job, preempted }) = shared.jobs.reserve(request(JobKind::Cleanup), admin, None)
            else {
                panic!("a cleanup pre-empts a check")
            };
            runner.run(job.clone(), Course::Work { preempted }, async {}).await;
            job
        };
        let ((), cleanup) = tokio::join!(checking, cleaning);

        let reason = format!("the check was pre-empted by cleanup job {} (uid 0)", cleanup.path);
        assert_eq!(check.props().state(), &JobState::Cancelled { error: Error::Cancelled(reason) });
        assert_eq!(cleanup.props().message(), "Removed 0 images.");
        assert_eq!(*operation.check_ended_first.lock().unwrap(), Some(true), "the cleanup waited for the check's end");
        assert_eq!(shared.records.last_check_result(), "Update available: v2.", "a pre-empted check found nothing");
        assert!(shared.jobs.active().is_none() && !shared.jobs.busy());
    }

    #[tokio::test]
    async fn an_answered_check_is_only_announced() {
        let shared = Shared::new();
        let request = JobRequest { kind: JobKind::Check, image: None, options: Options::default() };
        let answer = Some(Ok("No update available. (from the check 3 s ago)".to_string()));
        let Ok(Reservation::Answered(job)) = shared.jobs.reserve(request, Initiator { uid: 1000, unit: None }, answer)
        else {
            panic!("the answer is given")
        };
        let bus = FakeBus { shared: shared.clone(), seen: Mutex::new(Vec::new()) };
        let operation = FakeOperation { result: Err(Error::Failed("must not run".into())) };
        let reboot = FakeReboot { asked: Mutex::new(0) };
        let runner = Runner {
            jobs: &shared.jobs,
            records: &shared.records,
            status: &shared.status,
            idle: &shared.idle,
            events: &bus,
            operation: &operation,
            reboot: &reboot,
        };
        runner.run(job.clone(), Course::Answered, async {}).await;
        assert_eq!(bus.seen(), [Seen::JobNew, Seen::JobRemoved { state: JobStatus::Succeeded, slot_taken: false }]);
        assert_eq!(job.props().message(), "No update available. (from the check 3 s ago)");
        assert_eq!(shared.records.last_check_time(), 0, "nothing new was checked");
        assert!(!shared.jobs.busy());
    }
}
