//! A job's observable state and its transitions.

use std::sync::Mutex;

use hostd_interface::names::job_path;
use hostd_interface::Error;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Initiator, JobRequest};
use crate::sysroot::progress::{Phase, Progress};

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Working.
    Running,
    /// Done, with its result in `Message`.
    Succeeded,
    /// Ended with an error in `ErrorName`/`ErrorMessage`.
    Failed,
    /// Stopped by `Cancel()` or the time limit.
    Cancelled,
}

impl JobState {
    /// The `State` property value (also the `JobRemoved` result).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// The job properties, copied out whole to publish changes.
#[derive(Debug, Clone, PartialEq)]
pub struct JobProps {
    /// `State`
    pub state: JobState,
    /// `Phase`
    pub phase: Phase,
    /// `BytesDone`
    pub bytes_done: u64,
    /// `BytesTotal`
    pub bytes_total: u64,
    /// `LayersDone`
    pub layers_done: u32,
    /// `LayersTotal`
    pub layers_total: u32,
    /// `Message`
    pub message: String,
    /// `ErrorName`
    pub error_name: String,
    /// `ErrorMessage`
    pub error_message: String,
}

impl JobProps {
    /// Whether the job has ended (nothing changes any more).
    pub fn is_finished(&self) -> bool {
        self.state != JobState::Running
    }

    /// `Progress`: bytes when known, else layers; 1 when finished.
    pub fn progress(&self) -> f64 {
        if self.state != JobState::Running {
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
    /// Fired by `Cancel()` or the time limit.
    pub cancel: CancellationToken,
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
            cancel: CancellationToken::new(),
            props: Mutex::new(JobProps {
                state: JobState::Running,
                phase: Phase::Checking,
                bytes_done: 0,
                bytes_total: 0,
                layers_done: 0,
                layers_total: 0,
                message: "starting".into(),
                error_name: String::new(),
                error_message: String::new(),
            }),
            phase_ends: Mutex::new(Vec::new()),
            changed: Notify::new(),
            ended: CancellationToken::new(),
            published_phase: tokio::sync::watch::channel(Phase::Checking).0,
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

    fn update(&self, f: impl FnOnce(&mut JobProps)) {
        let mut p = self.props.lock().expect("job props poisoned");
        if p.state != JobState::Running {
            // Finished jobs are immutable: a late progress report must not
            // overwrite the result readers already saw.
            return;
        }
        f(&mut p);
        drop(p);
        self.changed.notify_one();
    }

    /// Record the end of the job.
    pub fn finish(&self, result: &Result<String, Error>) {
        self.update(|p| match result {
            Ok(message) => {
                p.state = JobState::Succeeded;
                p.message = message.clone();
            }
            Err(e) => {
                p.state = if matches!(e, Error::Cancelled(_)) {
                    JobState::Cancelled
                } else {
                    JobState::Failed
                };
                p.message = e.message();
                p.error_name = zbus::DBusError::name(e).to_string();
                p.error_message = e.message();
            }
        });
        self.ended.cancel();
    }
}

impl Progress for JobShared {
    fn phase(&self, phase: Phase, message: &str) {
        // With timestamps, the debug log is the job's timeline.
        tracing::debug!(job = self.id, phase = phase.as_str(), "{message}");
        self.update(|p| {
            if p.phase != phase {
                self.phase_ends.lock().expect("job phases poisoned").push(p.clone());
            }
            p.phase = phase;
            p.message = message.to_string();
        });
    }

    fn layers(&self, done: u32, total: u32) {
        self.update(|p| {
            p.layers_done = done;
            p.layers_total = total;
        });
    }

    fn bytes(&self, done: u64, total: u64) {
        self.update(|p| {
            // Monotonic for readers even if a layer restarts its count.
            p.bytes_total = total.max(p.bytes_done);
            p.bytes_done = done.max(p.bytes_done).min(p.bytes_total);
        });
    }

    fn message(&self, message: &str) {
        self.update(|p| p.message = message.to_string());
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
        assert_eq!(j.props().bytes_done, 50);
        j.bytes(100, 100);
        assert_eq!(j.props().progress(), 1.0);
    }

    #[test]
    fn finished_job_ignores_late_updates() {
        let j = job();
        j.finish(&Err(Error::Cancelled("cancelled by caller".into())));
        j.phase(Phase::Staging, "late");
        let p = j.props();
        assert_eq!(p.state, JobState::Cancelled);
        assert_eq!(p.error_name, "org.hostd.Host1.Error.Cancelled");
        assert_eq!(p.phase, Phase::Checking);
    }
}
