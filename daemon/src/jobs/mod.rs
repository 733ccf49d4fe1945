//! The job machinery: one mutating job at a time, its observable state, and
//! the thread it runs on.
//!
//! - [`request`]: what a caller asked for ([`JobRequest`]) and which job kind it is.
//! - [`state`]: a job's properties and their transitions ([`JobShared`]).
//! - [`runner`]: a job's life after the reply: work, records, status, journal, reboot, end.
//! - [`records`]: what finished jobs leave for the manager's properties.
//! - [`worker`]: running the sysroot operation on its own thread with a time limit.

pub mod records;
pub mod request;
pub mod runner;
pub mod state;
pub mod worker;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hostd_interface::Error;

pub use crate::initiator::Initiator;
pub use request::{JobKind, JobRequest};
pub use state::{JobShared, JobState};

/// Answer of [`Jobs::reserve`].
#[derive(Debug)]
pub enum Reservation {
    /// A new job was created and is now the active one.
    New(Arc<JobShared>),
    /// The same request is already running: hand out its path.
    Existing(Arc<JobShared>),
}

/// The single active job slot and the id counter.
#[derive(Debug, Default)]
pub struct Jobs {
    next_id: AtomicU64,
    active: Mutex<Option<Arc<JobShared>>>,
    /// Jobs whose final state has not been published yet: shutdown waits
    /// for them, so a caller learns how its job ended even when the job
    /// itself made systemd stop the daemon (`apply`).
    unpublished: AtomicUsize,
}

/// Held while a job's end is not yet published.
#[derive(Debug)]
pub struct Unpublished<'a>(&'a AtomicUsize);

impl Drop for Unpublished<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Jobs {
    /// Claim the slot for `request`, or find it already taken; see
    /// [`JobShared::may_choose_image`] for the last argument.
    pub fn reserve(&self, request: JobRequest, initiator: Initiator, may_choose_image: bool) -> Result<Reservation, Error> {
        let mut active = self.active.lock().expect("jobs lock poisoned");
        if let Some(job) = active.as_ref() {
            if job.request == request {
                return Ok(Reservation::Existing(job.clone()));
            }
            return Err(busy(job));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(JobShared::new(id, request, initiator, may_choose_image));
        *active = Some(job.clone());
        Ok(Reservation::New(job))
    }

    /// Free the slot held by job `id`.
    pub fn release(&self, id: u64) {
        let mut active = self.active.lock().expect("jobs lock poisoned");
        if active.as_ref().is_some_and(|j| j.id == id) {
            *active = None;
        }
    }

    /// `Busy` naming the running job, if there is one.
    pub fn ensure_idle(&self) -> Result<(), Error> {
        match self.active() {
            Some(job) => Err(busy(&job)),
            None => Ok(()),
        }
    }

    /// Count a job as unpublished until the guard is dropped.
    pub fn unpublished(&self) -> Unpublished<'_> {
        self.unpublished.fetch_add(1, Ordering::SeqCst);
        Unpublished(&self.unpublished)
    }

    /// Whether a job runs or has an end not yet published.
    pub fn busy(&self) -> bool {
        self.active().is_some() || self.unpublished.load(Ordering::SeqCst) > 0
    }

    /// The running job, if any.
    pub fn active(&self) -> Option<Arc<JobShared>> {
        self.active.lock().expect("jobs lock poisoned").clone()
    }
}

fn busy(job: &JobShared) -> Error {
    Error::Busy(format!("another job is running: {} ({})", job.path, job.request.kind.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostd_interface::options::Options;

    fn req(kind: JobKind) -> JobRequest {
        JobRequest { kind, image: None, options: Options::default() }
    }

    fn uid(uid: u32) -> Initiator {
        Initiator { uid, unit: None }
    }

    #[test]
    fn identical_request_joins_and_different_one_is_busy() {
        let jobs = Jobs::default();
        let Reservation::New(first) = jobs.reserve(req(JobKind::Upgrade), uid(1000), true).unwrap() else {
            panic!("first reservation must be new")
        };
        match jobs.reserve(req(JobKind::Upgrade), uid(1001), true).unwrap() {
            Reservation::Existing(j) => assert_eq!(j.id, first.id),
            Reservation::New(_) => panic!("identical request must join"),
        }
        let Err(Error::Busy(msg)) = jobs.reserve(req(JobKind::Cleanup), uid(0), true) else {
            panic!("different request must be busy")
        };
        assert!(msg.contains(&first.path), "{msg}");
        jobs.release(first.id);
        assert!(matches!(jobs.reserve(req(JobKind::Cleanup), uid(0), true), Ok(Reservation::New(j)) if j.id == 2));
    }
}
