//! A job's observable state and its transitions.

use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostd_interface::job::{JobStatus, SECONDS_LEFT_UNKNOWN};
use hostd_interface::names::job_path;
use hostd_interface::Error;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Initiator, JobRequest};
use crate::sysroot::progress::{Layer, Phase, Progress};

/// Where a job stands. The end carries the job's result, and only a job
/// that ended badly carries an error.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// Working; `message` says on what.
    Running {
        /// What the job is doing.
        message: String,
    },
    /// Done.
    Succeeded {
        /// The job's result.
        message: String,
    },
    /// Ended with an error.
    Failed {
        /// What went wrong.
        error: Error,
    },
    /// Stopped by `Cancel()` or the time limit.
    Cancelled {
        /// Who or what stopped it.
        error: Error,
    },
}

impl JobState {
    /// The `State` property value (also the `JobRemoved` result).
    pub fn status(&self) -> JobStatus {
        match self {
            JobState::Running { .. } => JobStatus::Running,
            JobState::Succeeded { .. } => JobStatus::Succeeded,
            JobState::Failed { .. } => JobStatus::Failed,
            JobState::Cancelled { .. } => JobStatus::Cancelled,
        }
    }

    /// The end a job's `result` makes.
    fn ended(result: &Result<String, Error>) -> JobState {
        match result {
            Ok(message) => JobState::Succeeded { message: message.clone() },
            Err(e @ Error::Cancelled(_)) => JobState::Cancelled { error: e.clone() },
            Err(e) => JobState::Failed { error: e.clone() },
        }
    }
}

/// A transition the job's state does not allow from where it stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The job has ended: its properties are final.
    #[error("the job has ended")]
    Ended,
    /// Phases only move forward.
    #[error("phase {to:?} would come after {from:?}")]
    PhaseBackwards {
        /// The phase the job is in.
        from: Phase,
        /// The phase asked for.
        to: Phase,
    },
}

/// How long the byte count is watched before a rate is measured from it.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The fetching rate, measured over windows of at least [`RATE_WINDOW`]
/// and smoothed (half the last window, half the rate before), so an
/// estimate neither jumps with each layer nor lags far behind.
#[derive(Debug, Clone, PartialEq)]
struct Rate {
    /// Start of the current window and the byte count then.
    window: Option<(Instant, u64)>,
    /// The published rate, 0 while unknown.
    bytes_per_second: u64,
}

impl Rate {
    fn new() -> Rate {
        Rate { window: None, bytes_per_second: 0 }
    }

    /// Take the byte count `done` seen at `now`.
    fn sample(&mut self, done: u64, now: Instant) {
        let Some((since, at)) = self.window else {
            self.window = Some((now, done));
            return;
        };
        let elapsed = now.saturating_duration_since(since);
        if elapsed < RATE_WINDOW {
            return;
        }
        let measured = (done.saturating_sub(at) as f64 / elapsed.as_secs_f64()) as u64;
        self.bytes_per_second = match self.bytes_per_second {
            0 => measured,
            before => before / 2 + measured / 2,
        };
        self.window = Some((now, done));
    }
}

/// µs since the epoch at `t`.
fn epoch_micros(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros()).unwrap_or(u64::MAX)
}

/// The job properties, copied out whole to publish changes. Changed only
/// through the transitions below, each checking where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct JobProps {
    /// When the job was created, µs since the epoch.
    start_time: u64,
    rate: Rate,
    state: JobState,
    /// The phase the job is in, or ended in.
    phase: Phase,
    bytes_done: u64,
    bytes_total: u64,
    layers_done: u32,
    layers_total: u32,
    image: String,
    layers: Vec<Layer>,
    warnings: Vec<String>,
}

impl JobProps {
    /// A job that is starting, in the first phase.
    pub fn starting() -> JobProps {
        JobProps {
            start_time: epoch_micros(SystemTime::now()),
            rate: Rate::new(),
            state: JobState::Running { message: "starting".into() },
            phase: Phase::Checking,
            bytes_done: 0,
            bytes_total: 0,
            layers_done: 0,
            layers_total: 0,
            image: String::new(),
            layers: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// `State`, with the result once ended.
    pub fn state(&self) -> &JobState {
        &self.state
    }

    /// `Phase`: the phase the job is in, or ended in.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// `StartTime`: when the job was created, µs since the epoch.
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// `BytesPerSecond`: the recent fetching rate; 0 while unknown and
    /// once the job has ended.
    pub fn bytes_per_second(&self) -> u64 {
        if self.is_finished() {
            return 0;
        }
        self.rate.bytes_per_second
    }

    /// `SecondsLeft`: the bytes still to fetch at the recent rate;
    /// [`SECONDS_LEFT_UNKNOWN`] without a rate, 0 once the job has ended.
    pub fn seconds_left(&self) -> u64 {
        if self.is_finished() {
            return 0;
        }
        match self.bytes_per_second() {
            0 => SECONDS_LEFT_UNKNOWN,
            rate => self.bytes_total.saturating_sub(self.bytes_done).div_ceil(rate),
        }
    }

    /// `BytesDone`: bytes fetched so far.
    pub fn bytes_done(&self) -> u64 {
        self.bytes_done
    }

    /// `BytesTotal`: bytes to fetch in all.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_total
    }

    /// `LayersDone`: layers fetched so far.
    pub fn layers_done(&self) -> u32 {
        self.layers_done
    }

    /// `LayersTotal`: layers to fetch in all.
    pub fn layers_total(&self) -> u32 {
        self.layers_total
    }

    /// `Image`: the image the job fetches or looks at; empty until known.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// `Layers`: the image's layers, cached or to fetch, in fetching order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// `Warnings`: what the user must know about the job's result, in the
    /// order they came up.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// `Message`: what the job is doing, or its result.
    pub fn message(&self) -> String {
        match &self.state {
            JobState::Running { message } | JobState::Succeeded { message } => message.clone(),
            JobState::Failed { error } | JobState::Cancelled { error } => error.message(),
        }
    }

    /// The error a job that ended badly carries.
    pub fn error(&self) -> Option<&Error> {
        match &self.state {
            JobState::Failed { error } | JobState::Cancelled { error } => Some(error),
            JobState::Running { .. } | JobState::Succeeded { .. } => None,
        }
    }

    /// Whether the job has ended (nothing changes any more).
    pub fn is_finished(&self) -> bool {
        !matches!(self.state, JobState::Running { .. })
    }

    /// `Progress` (0..1): bytes when known, else layers; 1 when finished.
    pub fn progress(&self) -> f64 {
        if self.is_finished() {
            return 1.0;
        }
        if self.bytes_total > 0 {
            (self.bytes_done as f64 / self.bytes_total as f64).min(1.0)
        } else if self.layers_total > 0 {
            (f64::from(self.layers_done) / f64::from(self.layers_total)).min(1.0)
        } else {
            0.0
        }
    }

    /// The running job's message, or `Ended`.
    fn running_message(&mut self) -> Result<&mut String, Refused> {
        match &mut self.state {
            JobState::Running { message } => Ok(message),
            _ => Err(Refused::Ended),
        }
    }

    /// Enter `phase` (or stay in it) doing `message`.
    pub fn enter_phase(&mut self, phase: Phase, message: &str) -> Result<(), Refused> {
        if phase < self.phase && !self.is_finished() {
            return Err(Refused::PhaseBackwards { from: self.phase, to: phase });
        }
        *self.running_message()? = message.to_string();
        self.phase = phase;
        Ok(())
    }

    /// Say what the running job is doing.
    pub fn set_message(&mut self, message: &str) -> Result<(), Refused> {
        *self.running_message()? = message.to_string();
        Ok(())
    }

    /// Add a warning; one already given is not repeated.
    pub fn add_warning(&mut self, warning: &str) -> Result<(), Refused> {
        self.running_message()?;
        if !self.warnings.iter().any(|w| w == warning) {
            self.warnings.push(warning.to_string());
        }
        Ok(())
    }

    /// Name the image the running job fetches or looks at.
    pub fn set_image(&mut self, image: &str) -> Result<(), Refused> {
        self.running_message()?;
        self.image = image.to_string();
        Ok(())
    }

    /// The layers of the image, cached or to fetch, in fetching order.
    pub fn set_layer_plan(&mut self, layers: &[Layer]) -> Result<(), Refused> {
        self.running_message()?;
        self.layers = layers.to_vec();
        Ok(())
    }

    /// Layer counts: fetched so far, to fetch in all.
    pub fn set_layers(&mut self, done: u32, total: u32) -> Result<(), Refused> {
        self.running_message()?;
        self.layers_done = done;
        self.layers_total = total;
        Ok(())
    }

    /// Byte counts, kept monotonic for readers even if a layer restarts its count.
    pub fn set_bytes(&mut self, done: u64, total: u64) -> Result<(), Refused> {
        self.set_bytes_at(done, total, Instant::now())
    }

    /// [`JobProps::set_bytes`] seen at `now`, which the rate is measured by.
    fn set_bytes_at(&mut self, done: u64, total: u64, now: Instant) -> Result<(), Refused> {
        self.running_message()?;
        self.bytes_total = total.max(self.bytes_done);
        self.bytes_done = done.max(self.bytes_done).min(self.bytes_total);
        self.rate.sample(self.bytes_done, now);
        Ok(())
    }

    /// End the job with `result`.
    pub fn finish(&mut self, result: &Result<String, Error>) -> Result<(), Refused> {
        self.running_message()?;
        self.state = JobState::ended(result);
        Ok(())
    }
}

/// One job, shared by its worker, its bus object and the manager.
#[derive(Debug)]
pub struct JobShared {
    /// The job id.
    pub id: u64,
    /// The job object path.
    pub path: String,
    /// What was asked.
    pub request: JobRequest,
    /// Who asked (for `Cancel` and the journal).
    pub initiator: Initiator,
    /// Whether the caller may choose what the host runs: root, or granted
    /// `switch`. An `Upgrade` without it refuses a local image path others
    /// can write (`sysroot::local_source`), judged again when the job opens
    /// it. Set by the bus before the job starts ([`JobShared::allow_image_choice`]).
    may_choose_image: AtomicBool,
    /// Fired by `Cancel()`, the time limit or a pre-empting job.
    pub cancel: CancellationToken,
    /// Set when a job took this check's place ([`JobShared::preempt`]):
    /// what its `Cancelled` end says instead of the sysroot's words.
    preempted_by: OnceLock<String>,
    props: Mutex<JobProps>,
    /// Properties as they were when each phase ended, not yet published:
    /// readers see every phase even when a fast one lasts less than the
    /// publishing interval.
    phase_ends: Mutex<Vec<JobProps>>,
    changed: Notify,
    /// Fired when the job ends.
    ended: CancellationToken,
    /// The phase clients have last been told about.
    published_phase: tokio::sync::watch::Sender<Phase>,
}

impl JobShared {
    /// A running job in its first phase.
    pub fn new(id: u64, request: JobRequest, initiator: Initiator) -> JobShared {
        JobShared {
            id,
            path: job_path(id),
            request,
            initiator,
            may_choose_image: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            preempted_by: OnceLock::new(),
            props: Mutex::new(JobProps::starting()),
            phase_ends: Mutex::new(Vec::new()),
            changed: Notify::new(),
            ended: CancellationToken::new(),
            published_phase: tokio::sync::watch::channel(Phase::Checking).0,
        }
    }

    /// Record that the caller may choose what the host runs; called by the
    /// bus for a new job before it starts.
    pub fn allow_image_choice(&self) {
        self.may_choose_image.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// See the field `may_choose_image`.
    pub fn may_choose_image(&self) -> bool {
        self.may_choose_image.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stop the job because another one takes its place; `reason` becomes
    /// the message of its `Cancelled` end. A job already being cancelled
    /// keeps the reason it has.
    pub fn preempt(&self, reason: String) {
        if !self.cancel.is_cancelled() {
            let _ = self.preempted_by.set(reason);
        }
        self.cancel.cancel();
    }

    /// Why the job was pre-empted, if it was.
    pub fn preempted_by(&self) -> Option<&str> {
        self.preempted_by.get().map(String::as_str)
    }

    /// The job's own `result`, with a cancellation that came from
    /// pre-emption saying so.
    pub fn explain_cancel<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        match (result, self.preempted_by()) {
            (Err(Error::Cancelled(_)), Some(reason)) => Err(Error::Cancelled(reason.to_string())),
            (result, _) => result,
        }
    }

    /// Take the properties recorded at phase ends since the last call.
    pub fn take_phase_ends(&self) -> Vec<JobProps> {
        std::mem::take(&mut *self.phase_ends.lock().expect("job phases poisoned"))
    }

    /// A copy of the current properties.
    pub fn props(&self) -> JobProps {
        self.props.lock().expect("job props poisoned").clone()
    }

    /// Record that clients have been told the job is in `phase`.
    pub fn mark_published(&self, phase: Phase) {
        self.published_phase.send_replace(phase);
    }

    /// Wait (at most `limit`) until clients have been told about `phase`:
    /// what comes next may take the bus away (a reboot).
    pub async fn wait_published(&self, phase: Phase, limit: std::time::Duration) {
        let mut rx = self.published_phase.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|p| *p == phase)).await;
    }

    /// Resolves after the next change.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Resolves once the job has ended (at once if it has).
    pub async fn ended(&self) {
        self.ended.cancelled().await
    }

    /// Apply a transition; a refused one changes nothing.
    fn update(&self, transition: impl FnOnce(&mut JobProps) -> Result<(), Refused>) {
        let mut p = self.props.lock().expect("job props poisoned");
        match transition(&mut p) {
            Ok(()) => {
                drop(p);
                self.changed.notify_one();
            }
            // Progress may still trickle in from a pull being torn down:
            // the result readers already saw stays.
            Err(Refused::Ended) => tracing::debug!(job = self.id, "ignoring a change after the end"),
            Err(refused @ Refused::PhaseBackwards { .. }) => {
                debug_assert!(false, "job {}: {refused}", self.id);
                tracing::warn!(job = self.id, "ignoring a transition: {refused}");
            }
        }
    }

    /// Record the end of the job. A job ends once.
    pub fn finish(&self, result: &Result<String, Error>) {
        let mut p = self.props.lock().expect("job props poisoned");
        let finished = p.finish(result);
        drop(p);
        debug_assert_eq!(finished, Ok(()), "job {} finished twice", self.id);
        match finished {
            Ok(()) => self.changed.notify_one(),
            Err(refused) => tracing::warn!(job = self.id, "ignoring a second end: {refused}"),
        }
        self.ended.cancel();
    }
}

impl Progress for JobShared {
    fn phase(&self, phase: Phase, message: &str) {
        // With timestamps, the debug log is the job's timeline.
        tracing::debug!(job = self.id, phase = phase.as_str(), "{message}");
        self.update(|p| {
            let before = p.clone();
            p.enter_phase(phase, message)?;
            if before.phase != phase {
                self.phase_ends.lock().expect("job phases poisoned").push(before);
            }
            Ok(())
        });
    }

    fn image(&self, image: &str) {
        self.update(|p| p.set_image(image));
    }

    fn layer_plan(&self, layers: &[Layer]) {
        self.update(|p| p.set_layer_plan(layers));
    }

    fn layers(&self, done: u32, total: u32) {
        self.update(|p| p.set_layers(done, total));
    }

    fn bytes(&self, done: u64, total: u64) {
        self.update(|p| p.set_bytes(done, total));
    }

    fn message(&self, message: &str) {
        self.update(|p| p.set_message(message));
    }

    fn warning(&self, warning: &str) {
        tracing::warn!(job = self.id, "{warning}");
        self.update(|p| p.add_warning(warning));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobKind;
    use hostd_interface::options::Options;

    fn job() -> JobShared {
        JobShared::new(
            7,
            JobRequest { kind: JobKind::Upgrade, image: None, options: Options::default() },
            Initiator { uid: 0, unit: None },
        )
    }

    #[test]
    fn bytes_never_go_backwards() {
        let j = job();
        j.bytes(50, 100);
        j.bytes(10, 100);
        assert_eq!(j.props().bytes_done(), 50);
        j.bytes(100, 100);
        assert_eq!(j.props().progress(), 1.0);
    }

    #[test]
    fn rate_and_time_left_follow_the_bytes_and_end_with_the_job() {
        let mut p = JobProps::starting();
        assert!(p.start_time() > 0);
        assert_eq!((p.bytes_per_second(), p.seconds_left()), (0, SECONDS_LEFT_UNKNOWN), "nothing measured yet");
        let t0 = Instant::now();
        p.set_bytes_at(0, 10_000, t0).unwrap();
        p.set_bytes_at(500, 10_000, t0 + Duration::from_millis(500)).unwrap();
        assert_eq!(p.bytes_per_second(), 0, "a window is at least a second long");
        p.set_bytes_at(1_000, 10_000, t0 + Duration::from_secs(1)).unwrap();
        assert_eq!((p.bytes_per_second(), p.seconds_left()), (1_000, 9));
        p.set_bytes_at(4_000, 10_000, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!((p.bytes_per_second(), p.seconds_left()), (2_000, 3), "smoothed: half the last window, half before");
        p.finish(&Ok("done".into())).unwrap();
        assert_eq!((p.bytes_per_second(), p.seconds_left()), (0, 0));
    }

    #[test]
    fn finished_job_ignores_late_updates() {
        let j = job();
        j.finish(&Err(Error::Cancelled("cancelled by caller".into())));
        j.phase(Phase::Staging, "late");
        j.bytes(5, 10);
        j.message("late");
        let p = j.props();
        assert_eq!(p.state(), &JobState::Cancelled { error: Error::Cancelled("cancelled by caller".into()) });
        assert_eq!(p.message(), "cancelled by caller");
        assert_eq!(p.phase(), Phase::Checking);
        assert_eq!(p.bytes_total(), 0);
    }

    #[test]
    fn phases_only_move_forward() {
        let mut p = JobProps::starting();
        assert_eq!(p.enter_phase(Phase::Pulling, "fetching"), Ok(()));
        assert_eq!(p.enter_phase(Phase::Pulling, "still fetching"), Ok(()), "staying is fine");
        assert_eq!(p.message(), "still fetching");
        assert_eq!(
            p.enter_phase(Phase::Checking, "back"),
            Err(Refused::PhaseBackwards { from: Phase::Pulling, to: Phase::Checking })
        );
        assert_eq!((p.phase(), p.message().as_str()), (Phase::Pulling, "still fetching"));
        assert_eq!(p.enter_phase(Phase::Rebooting, "rebooting"), Ok(()), "phases may be skipped");
    }

    #[test]
    fn nothing_changes_after_the_end() {
        let mut p = JobProps::starting();
        p.enter_phase(Phase::Staging, "writing").unwrap();
        p.set_bytes(10, 20).unwrap();
        p.finish(&Ok("staged".into())).unwrap();
        let ended = p.clone();
        assert_eq!(p.enter_phase(Phase::Cleanup, "late"), Err(Refused::Ended));
        assert_eq!(p.enter_phase(Phase::Checking, "late"), Err(Refused::Ended));
        assert_eq!(p.set_message("late"), Err(Refused::Ended));
        assert_eq!(p.set_bytes(20, 20), Err(Refused::Ended));
        assert_eq!(p.set_layers(1, 1), Err(Refused::Ended));
        assert_eq!(p.add_warning("late"), Err(Refused::Ended));
        assert_eq!(p.finish(&Err(Error::Failed("again".into()))), Err(Refused::Ended));
        assert_eq!(p, ended);
        assert_eq!(p.state(), &JobState::Succeeded { message: "staged".into() });
        assert_eq!(p.progress(), 1.0);
        assert_eq!(p.error(), None);
    }

    #[test]
    fn warnings_are_kept_once_each_in_order() {
        let j = job();
        j.warning("left out: /opt");
        j.warning("second");
        j.warning("left out: /opt");
        assert_eq!(j.props().warnings(), ["left out: /opt", "second"]);
        j.finish(&Ok("done".into()));
        assert_eq!(j.props().warnings(), ["left out: /opt", "second"], "the end keeps them");
    }

    #[test]
    fn a_preempted_job_says_what_took_its_place() {
        let j = job();
        j.preempt("pre-empted by job 8".into());
        assert!(j.cancel.is_cancelled());
        let sysroot_says: Result<(), Error> = Err(Error::Cancelled("cancelled by request".into()));
        assert_eq!(j.explain_cancel(sysroot_says), Err(Error::Cancelled("pre-empted by job 8".into())));
        assert_eq!(j.explain_cancel(Ok::<_, Error>(1)), Ok(1), "a job that finished anyway keeps its result");
        let failed: Result<(), Error> = Err(Error::Network("reset".into()));
        assert_eq!(j.explain_cancel(failed.clone()), failed, "only a cancellation is explained");
        j.preempt("pre-empted by job 9".into());
        assert_eq!(j.preempted_by(), Some("pre-empted by job 8"), "the first reason stays");

        let cancelled_first = job();
        cancelled_first.cancel.cancel();
        cancelled_first.preempt("pre-empted by job 10".into());
        assert_eq!(cancelled_first.preempted_by(), None, "Cancel() came first: its reason stands");
    }

    #[test]
    fn only_an_end_carries_an_error() {
        let mut running = JobProps::starting();
        assert_eq!(running.error(), None);
        running.finish(&Err(Error::Network("timed out".into()))).unwrap();
        assert_eq!(running.state().status(), JobStatus::Failed);
        assert_eq!(running.error(), Some(&Error::Network("timed out".into())));
        assert_eq!(running.message(), "timed out");

        let mut cancelled = JobProps::starting();
        cancelled.finish(&Err(Error::Cancelled("time limit".into()))).unwrap();
        assert_eq!(cancelled.state().status(), JobStatus::Cancelled);
    }
}
