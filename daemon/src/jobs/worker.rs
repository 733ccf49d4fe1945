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

/// Run `job` to completion, cancelling it when it exceeds `time_limit`.
pub async fn run(sysroot: SysrootPath, job: Arc<JobShared>, time_limit: Duration) -> Result<Outcome, Error> {
    let (tx, rx) = oneshot::channel();
    let worker_job = job.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("job-{}", job.id))
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(execute(&sysroot, &worker_job)),
                Err(e) => Err(Error::Failed(format!("starting the job runtime: {e}"))),
            };
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(Error::Failed(format!("starting the job thread: {e}")));
    }
    let mut rx = rx;
    let outcome = tokio::select! {
        r = &mut rx => r,
        _ = tokio::time::sleep(time_limit) => {
            tracing::warn!(job = job.id, "time limit of {}s reached; cancelling", time_limit.as_secs());
            job.cancel.cancel();
            return match rx.await {
                Ok(Err(Error::Cancelled(_))) => Err(Error::Cancelled(format!(
                    "the job exceeded its time limit of {}s", time_limit.as_secs()
                ))),
                Ok(other) => other,
                Err(_) => Err(Error::Failed("the job thread ended without a result".into())),
            };
        }
    };
    outcome.unwrap_or_else(|_| Err(Error::Failed("the job thread ended without a result".into())))
}

async fn execute(sysroot: &SysrootPath, job: &JobShared) -> Result<Outcome, Error> {
    let request = &job.request;
    let cancel = &job.cancel;
    let options = DeployOptions {
        download_only: request.options.download_only,
        retain: request.options.retain,
        allow_downgrade: request.options.allow_downgrade,
        unattended: request.options.auto,
        queued_is_enough: request.options.apply,
    };
    let result = match request.kind {
        JobKind::Check => sysroot::pull::check(sysroot, job, cancel).await,
        JobKind::Upgrade | JobKind::Switch => {
            sysroot::deploy::update(sysroot, request.image.as_ref(), &options, job, cancel).await
        }
        JobKind::Stage => sysroot::deploy::stage(sysroot, &options, job, cancel).await,
        JobKind::Rollback => sysroot::rollback::rollback(sysroot, job, cancel).await,
        JobKind::Cleanup => sysroot::cleanup::cleanup(sysroot, job, cancel).await,
    };
    result.map_err(crate::errors::name_owned)
}
