//! Cleanup: remove images no deployment uses, their layers, and unreachable
//! objects. Pinned and rollback deployments keep their images.

use ostree_ext::gio;
use tokio_util::sync::CancellationToken;

use super::cancel::Interruptible;
use super::progress::{Phase, Progress};
use super::{Error, Outcome, SysrootPath};
use crate::failpoint::points;
use crate::journal::{Change, Event};

/// `Cleanup`.
pub async fn cleanup(
    sysroot: &SysrootPath,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Outcome, Error> {
    progress.phase(Phase::Cleanup, "pruning");
    let locked = sysroot
        .lock(cancel, || progress.message("waiting for the sysroot lock"))
        .await?;
    let job = Interruptible { progress, cancel };
    let link = job.link();
    job.failpoint(points::PRUNE);
    locked.cleanup(Some(link.get())).map_err(|e| anyhow::Error::new(e).context("cleaning up the sysroot"))?;
    job.failpoint(points::MID_PRUNE);
    // ostree-ext's image prune takes no GCancellable: the last point to stop.
    if cancel.is_cancelled() {
        return Err(Error::cancelled());
    }
    let pruned = ostree_ext::container::deploy::prune(&locked.as_ostree_ext_lock())?;
    let message = format!(
        "Removed {} images, {} layers and {} objects ({} bytes).",
        pruned.n_images, pruned.n_layers, pruned.n_objects_pruned, pruned.objsize
    );
    Ok(Outcome::changed(message, Change::event(Event::CleanedUp)))
}

/// At start-up, when the last hostd stopped while it held the sysroot lock:
/// let libostree clean up behind it on a thread of its own (Status answers
/// meanwhile; a job started now waits for the lock). libostree's cleanup
/// removes deployment directories and boot files no deployment uses and
/// prunes objects no ref reaches, which finishes an interrupted prune; it
/// also removes an interrupted pull's staging directory. Downloaded images
/// and completed layers keep their refs and stay.
pub fn finish_interrupted_work(sysroot: &SysrootPath) {
    if !sysroot.work_was_interrupted() {
        return;
    }
    let sysroot = sysroot.clone();
    let spawned = std::thread::Builder::new().name("repair".into()).spawn(move || {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(repair(&sysroot)));
        match result {
            Ok(()) => tracing::info!("cleaned up after work an earlier hostd left unfinished"),
            Err(e) => tracing::warn!("cleaning up after work an earlier hostd left unfinished: {e:#}"),
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("starting the clean-up after interrupted work: {e}");
    }
}

async fn repair(sysroot: &SysrootPath) -> anyhow::Result<()> {
    tracing::info!("an earlier hostd stopped while it held the sysroot lock; cleaning up behind it");
    let never = CancellationToken::new();
    let locked = sysroot.lock(&never, || tracing::info!("waiting for the sysroot lock")).await?;
    locked.cleanup(gio::Cancellable::NONE)?;
    Ok(())
}
