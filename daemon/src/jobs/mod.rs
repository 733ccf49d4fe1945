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
use crate::sysroot::progress::Phase;
pub use request::{JobKind, JobRequest};
pub use state::{JobShared, JobState};

/// Answer of [`Jobs::reserve`].
#[derive(Debug)]
pub enum Reservation {
    /// A new job was created and now holds the slot. `preempted` is the
    /// check it took the slot from, which has been asked to stop.
    New {
        /// The new job.
        job: Arc<JobShared>,
        /// The check that held the slot, ending `Cancelled`.
        preempted: Option<Arc<JobShared>>,
    },
    /// The running job does what was asked: hand out its path.
    Existing(Arc<JobShared>),
    /// A check answered with the last check's result: a job that has
    /// ended already and never held the slot.
    Answered(Arc<JobShared>),
}

/// What a request meets when another job holds the slot; the rule of
/// docs/security.md, "Checks and pre-emption".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contention {
    /// The running job does what was asked.
    Join,
    /// The running job is a check, the request would change the system:
    /// the check stops and the request takes the slot.
    Preempt,
    /// `Busy`.
    Refuse,
}

impl Contention {
    fn of(request: &JobRequest, running: &JobShared) -> Contention {
        let running_check = running.request.kind == JobKind::Check;
        match (request.kind == JobKind::Check, running_check) {
            // Any check looks at the same thing: one that is stopping
            // would only hand its `Cancelled` on.
            (true, true) if running.cancel.is_cancelled() => Contention::Refuse,
            (true, true) => Contention::Join,
            (false, true) => Contention::Preempt,
            _ if running.request == *request => Contention::Join,
            _ => Contention::Refuse,
        }
    }
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
    /// Claim the slot for `request`, join the running job, pre-empt a
    /// running check, or answer with `answer` — the last check's result,
    /// which the caller passes when it may stand in for a new check
    /// (`Records::check_answer`). `Busy` when none of these applies.
    pub fn reserve(
        &self,
        request: JobRequest,
        initiator: Initiator,
        answer: Option<Result<String, Error>>,
    ) -> Result<Reservation, Error> {
        let mut active = self.active.lock().expect("jobs lock poisoned");
        let preempted = match active.clone() {
            None => None,
            Some(running) => match Contention::of(&request, &running) {
                Contention::Join => return Ok(Reservation::Existing(running)),
                Contention::Preempt => Some(running),
                Contention::Refuse if answer.is_none() => return Err(busy(&running)),
                Contention::Refuse => None,
            },
        };
        let job = Arc::new(JobShared::new(self.next_id(), request, initiator));
        // Only a check is ever offered an answer, and a check pre-empts nothing.
        if let Some(result) = answer.filter(|_| preempted.is_none()) {
            job.finish(&result);
            return Ok(Reservation::Answered(job));
        }
        if let Some(check) = &preempted {
            check.preempt(format!(
                "the check was pre-empted by {} job {} (uid {})",
                job.request.kind.as_str(),
                job.path,
                job.initiator.uid
            ));
        }
        *active = Some(job.clone());
        Ok(Reservation::New { job, preempted })
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Free the slot held by job `id`.
    pub fn release(&self, id: u64) {
        let mut active = self.active.lock().expect("jobs lock poisoned");
        if active.as_ref().is_some_and(|j| j.id == id) {
            *active = None;
        }
    }

    /// Make way for a change that runs without a job (`Pin`), as a job
    /// making a change would: `Busy` naming the running job when it is not
    /// a check; a running check is pre-empted, `reason` becoming its end.
    pub fn make_way(&self, reason: impl FnOnce() -> String) -> Result<(), Error> {
        let active = self.active.lock().expect("jobs lock poisoned");
        match active.as_ref() {
            None => Ok(()),
            Some(check) if check.request.kind == JobKind::Check => {
                check.preempt(reason());
                Ok(())
            }
            Some(change) => Err(busy(change)),
        }
    }

    /// The running job, when it is a change another non-root caller started
    /// that has fetched and written nothing yet: an `Upgrade` or `Switch`
    /// still in its checking phase. A caller allowed to stop other users'
    /// jobs (root, or polkit's `cancel`) may pre-empt it rather than wait
    /// behind it; see docs/security.md, "Checks and pre-emption".
    pub fn unstarted_change_of_another(&self, uid: u32) -> Option<Arc<JobShared>> {
        let running = self.active()?;
        let fetching = matches!(running.request.kind, JobKind::Upgrade | JobKind::Switch);
        let theirs = running.initiator.uid != uid && running.initiator.uid != 0;
        let unstarted = running.props().phase() == Phase::Checking && !running.cancel.is_cancelled();
        (fetching && theirs && unstarted).then_some(running)
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

    fn new(r: Result<Reservation, Error>) -> (Arc<JobShared>, Option<Arc<JobShared>>) {
        match r {
            Ok(Reservation::New { job, preempted }) => (job, preempted),
            other => panic!("expected a new job: {other:?}"),
        }
    }

    #[test]
    fn identical_request_joins_and_different_one_is_busy() {
        let jobs = Jobs::default();
        let (first, _) = new(jobs.reserve(req(JobKind::Upgrade), uid(1000), None));
        match jobs.reserve(req(JobKind::Upgrade), uid(1001), None).unwrap() {
            Reservation::Existing(j) => assert_eq!(j.id, first.id),
            other => panic!("identical request must join: {other:?}"),
        }
        let Err(Error::Busy(msg)) = jobs.reserve(req(JobKind::Cleanup), uid(0), None) else {
            panic!("different request must be busy")
        };
        assert!(msg.contains(&first.path), "{msg}");
        jobs.release(first.id);
        let (cleanup, preempted) = new(jobs.reserve(req(JobKind::Cleanup), uid(0), None));
        assert_eq!((cleanup.id, preempted.map(|p| p.id)), (2, None));
    }

    #[test]
    fn every_check_joins_a_running_check_unless_it_is_stopping() {
        let jobs = Jobs::default();
        let (check, _) = new(jobs.reserve(req(JobKind::Check), uid(1000), None));
        let timer = JobRequest { options: Options { auto: true, ..Options::default() }, ..req(JobKind::Check) };
        for (request, who) in [(req(JobKind::Check), uid(0)), (timer, uid(0)), (req(JobKind::Check), uid(1001))] {
            let answer = Some(Ok("old".to_string()));
            match jobs.reserve(request, who, answer).unwrap() {
                Reservation::Existing(j) => assert_eq!(j.id, check.id),
                other => panic!("a check must join the running one: {other:?}"),
            }
        }
        check.cancel.cancel();
        assert!(matches!(jobs.reserve(req(JobKind::Check), uid(0), None), Err(Error::Busy(_))));
    }

    #[test]
    fn a_change_preempts_a_running_check_and_takes_the_slot() {
        for kind in [JobKind::Upgrade, JobKind::Switch, JobKind::Stage, JobKind::Rollback, JobKind::Cleanup] {
            let jobs = Jobs::default();
            let (check, _) = new(jobs.reserve(req(JobKind::Check), uid(1000), None));
            let (job, preempted) = new(jobs.reserve(req(kind), uid(4101), None));
            let preempted = preempted.expect("the check is pre-empted");
            assert_eq!(preempted.id, check.id);
            assert!(check.cancel.is_cancelled());
            let reason = check.preempted_by().unwrap();
            assert_eq!(reason, format!("the check was pre-empted by {} job {} (uid 4101)", kind.as_str(), job.path));
            assert_eq!(jobs.active().map(|j| j.id), Some(job.id));
            jobs.release(check.id);
            assert_eq!(jobs.active().map(|j| j.id), Some(job.id), "the check's end leaves the new job's slot alone");
            // A change never pre-empts another change.
            let other = if kind == JobKind::Cleanup { JobKind::Rollback } else { JobKind::Cleanup };
            assert!(matches!(jobs.reserve(req(other), uid(0), None), Err(Error::Busy(_))));
        }
    }

    #[test]
    fn a_change_without_a_job_preempts_a_check_and_waits_for_no_change() {
        let jobs = Jobs::default();
        assert_eq!(jobs.make_way(|| unreachable!("nothing to pre-empt")), Ok(()));
        let (check, _) = new(jobs.reserve(req(JobKind::Check), uid(1000), None));
        assert_eq!(jobs.make_way(|| "the check was pre-empted by pin (uid 0)".into()), Ok(()));
        assert_eq!(check.preempted_by(), Some("the check was pre-empted by pin (uid 0)"));
        jobs.release(check.id);
        let (upgrade, _) = new(jobs.reserve(req(JobKind::Upgrade), uid(0), None));
        let Err(Error::Busy(msg)) = jobs.make_way(|| unreachable!("a change is not pre-empted")) else {
            panic!("a running change is Busy")
        };
        assert!(msg.contains(&upgrade.path), "{msg}");
        assert!(!upgrade.cancel.is_cancelled());
    }

    #[test]
    fn a_recorded_answer_ends_at_once_and_holds_no_slot() {
        let jobs = Jobs::default();
        let Reservation::Answered(answered) = jobs.reserve(req(JobKind::Check), uid(1000), Some(Ok("seen".into()))).unwrap()
        else {
            panic!("an answer is given when the slot is free")
        };
        assert_eq!(answered.props().state(), &JobState::Succeeded { message: "seen".into() });
        assert!(jobs.active().is_none());
        let (upgrade, _) = new(jobs.reserve(req(JobKind::Upgrade), uid(0), None));
        let failed = Some(Err(Error::Network("refused".into())));
        let Reservation::Answered(during) = jobs.reserve(req(JobKind::Check), uid(1000), failed).unwrap() else {
            panic!("an answer is given while another job runs")
        };
        assert_eq!(during.props().error(), Some(&Error::Network("refused".into())));
        assert_eq!(jobs.active().map(|j| j.id), Some(upgrade.id), "the running job keeps the slot");
        assert!(!upgrade.cancel.is_cancelled());
        assert_eq!((answered.id, upgrade.id, during.id), (1, 2, 3));
    }
}
