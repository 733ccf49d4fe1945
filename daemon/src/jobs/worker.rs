//! Running a job's sysroot operation on its own thread.
//!
//! libostree objects are not `Send`, and a pull must never compete with the
//! bus for runtime threads, so each job gets a thread with a current-thread
//! runtime. The bus side only sees the result and the shared progress.

use std::sync::Arc;
use std::time::Duration;

use hostd_interface::Error;
use tokio::sync::oneshot;

use super::runner::Operation;
use super::{JobKind, JobShared};
use crate::sysroot::progress::Phase;
use crate::sysroot::deploy::DeployOptions;
use crate::sysroot::{self, Outcome, SysrootPath};

/// The production [`Operation`]: each job on a thread of its own, calling
/// the sysroot, cancelled after `time_limit`.
#[derive(Debug, Clone)]
pub struct Worker {
    /// The sysroot the job works on.
    pub sysroot: SysrootPath,
    /// Cancel the job when it runs longer than this.
    pub time_limit: Duration,
}

impl Operation for Worker {
    async fn run(&self, job: Arc<JobShared>) -> Result<Outcome, Error> {
        run(self.sysroot.clone(), job, self.time_limit).await
    }
}

/// How long a cancelled job's thread gets to unwind before the job ends
/// without it, while it reads its image. Cancellation kills the job's
/// skopeo, so only a system call that ignores it (a read from a hung NFS
/// server) is left behind.
pub const UNWIND_LIMIT: Duration = Duration::from_secs(20);

/// Run `job` to completion, cancelling it when it exceeds `time_limit`.
/// Once cancelled (by the limit or `Cancel()`) while it reads its image
/// (phases `checking` and `pulling`), the job ends within [`UNWIND_LIMIT`]
/// whether or not its thread has returned. Later phases write to the
/// sysroot and stop only at libostree's safe points: the job then ends when
/// its thread does, so what it reports is what happened.
pub async fn run(sysroot: SysrootPath, job: Arc<JobShared>, time_limit: Duration) -> Result<Outcome, Error> {
    let (tx, mut rx) = oneshot::channel();
    let worker_job = job.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("job-{}", job.id))
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => {
                    let result = rt.block_on(execute(&sysroot, &worker_job));
                    // The result first: shutting the runtime down waits for
                    // its blocking tasks, which a killed skopeo ends soon
                    // but not at once.
                    let _ = tx.send(result);
                    drop(rt);
                }
                Err(e) => {
                    let _ = tx.send(Err(Error::Failed(format!("starting the job runtime: {e}"))));
                }
            }
            reap_forked_helpers();
        });
    if let Err(e) = spawned {
        return Err(Error::Failed(format!("starting the job thread: {e}")));
    }
    let timed_out = tokio::select! {
        r = &mut rx => return r.unwrap_or_else(|_| Err(Error::Failed("the job thread ended without a result".into()))),
        _ = tokio::time::sleep(time_limit) => {
            tracing::warn!(job = job.id, "time limit of {}s reached; cancelling", time_limit.as_secs());
            job.cancel.cancel();
            true
        }
        _ = job.cancel.cancelled() => false,
    };
    let reading = matches!(job.props().phase(), Phase::Checking | Phase::Pulling);
    let unwind_limit = if reading { UNWIND_LIMIT } else { Duration::MAX };
    let result = match tokio::time::timeout(unwind_limit, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(Error::Failed("the job thread ended without a result".into())),
        Err(_) => {
            tracing::error!(
                job = job.id,
                "the job's thread did not return within {}s of its cancellation; the job ends without it",
                UNWIND_LIMIT.as_secs()
            );
            Err(Error::Cancelled(format!(
                "cancelled; its last step did not return within {}s and was left behind (see hostd's journal)",
                UNWIND_LIMIT.as_secs()
            )))
        }
    };
    match result {
        Err(Error::Cancelled(_)) if timed_out => Err(Error::Cancelled(format!(
            "the job exceeded its time limit of {}s", time_limit.as_secs()
        ))),
        other => other,
    }
}

/// Reap the children libostree forks without waiting for them.
///
/// Writing a deployment freezes and thaws the file system through a forked
/// watchdog (`fsfreeze_thaw_cycle`), which libostree never waits for, so
/// each deployment left a zombie. Such a child never executes a program, so
/// it carries the name of the thread that forked it, `job-<id>`: only those
/// are reaped, by pid, never a child some other code waits for (skopeo,
/// wall). Run by each job's thread as it ends, after the job's result is
/// out; a watchdog exits as soon as libostree closes its end of their
/// socket, so it is waited for up to [`REAP_LIMIT`], and one that takes
/// longer is reaped by the next job's thread.
#[expect(clippy::disallowed_methods, reason = "runs on the job's own thread after its runtime is gone")]
fn reap_forked_helpers() {
    let me = nix::unistd::getpid().as_raw();
    let deadline = std::time::Instant::now() + REAP_LIMIT;
    loop {
        let pending: Vec<i32> = forked_helpers(me)
            .into_iter()
            .filter(|pid| {
                let reaped = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(*pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
                matches!(reaped, Ok(nix::sys::wait::WaitStatus::StillAlive))
            })
            .collect();
        if pending.is_empty() || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long a job's thread waits for libostree's watchdog children to exit.
const REAP_LIMIT: Duration = Duration::from_secs(2);

/// Children of `parent` named `job-<id>`, from `/proc/<pid>/stat`
/// (`/proc/<pid>/task/<tid>/children` needs `CONFIG_PROC_CHILDREN`, which
/// not every kernel has).
fn forked_helpers(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "<pid> (<name>) <state> <ppid> …"; the name may hold spaces.
            let Some((head, rest)) = stat.rsplit_once(") ") else { return false };
            let name = head.split_once(" (").map_or("", |(_, n)| n);
            let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<i32>().ok());
            ppid == Some(parent) && is_job_thread_name(name)
        })
        .collect()
}

/// `job-<digits>`, the name [`run`] gives a job's thread.
fn is_job_thread_name(name: &str) -> bool {
    name.strip_prefix("job-").is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

async fn execute(sysroot: &SysrootPath, job: &JobShared) -> Result<Outcome, Error> {
    let request = &job.request;
    let cancel = &job.cancel;
    let options = DeployOptions {
        download_only: request.options.download_only,
        retain: request.options.retain,
        allow_downgrade: request.options.allow_downgrade,
        retry_failed: request.options.retry_failed,
        unattended: request.options.auto,
        queued_is_enough: request.options.apply,
        may_choose_image: job.may_choose_image(),
        require_signatures: request.options.enforce_container_sigpolicy,
    };
    let result = match request.kind {
        JobKind::Check => sysroot::pull::check(sysroot, job, cancel).await,
        JobKind::Upgrade | JobKind::Switch => {
            sysroot::deploy::update(sysroot, request.image.as_ref(), &options, job, cancel).await
        }
        JobKind::Stage => sysroot::deploy::stage(sysroot, &options, job, cancel).await,
        JobKind::Rollback => sysroot::rollback::rollback(sysroot, job, cancel).await,
        JobKind::Cleanup => sysroot::cleanup::cleanup(sysroot, job, cancel).await,
        JobKind::Discard => sysroot::discard::discard(sysroot, job, cancel).await,
    };
    match result {
        // Cancelling kills the job's skopeo; whatever step that failed, the
        // job ends because it was cancelled.
        Err(e) if cancel.is_cancelled() && !matches!(e, sysroot::Error::Cancelled(_)) => {
            tracing::debug!(job = job.id, "after cancellation: {e:#}");
            Err(Error::Cancelled(sysroot::Error::cancelled().to_string()))
        }
        other => other.map_err(crate::errors::name_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_job_thread_names_mark_forked_helpers() {
        assert!(is_job_thread_name("job-12"));
        assert!(!is_job_thread_name("job-"));
        assert!(!is_job_thread_name("skopeo"));
        assert!(!is_job_thread_name("job-1x"));
    }
}
