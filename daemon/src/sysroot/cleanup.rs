//! Cleanup: remove images no deployment uses, their layers, unreachable
//! objects, and bound images (`/usr/lib/bootc/bound-images.d`) no
//! deployment references. Pinned, staged and rollback deployments keep
//! their images and their bound images.

use std::collections::BTreeSet;

use anyhow::Context;
use ostree_ext::{gio, ostree};
use tokio_util::sync::CancellationToken;

use super::cancel::Interruptible;
use super::progress::{Phase, Progress};
use super::{bound_images, bound_storage, Error, Outcome, SysrootPath};
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
    let bound = match prune_bound_images(sysroot, &locked, progress, cancel).await {
        Some(removed) => format!("and {removed} bound images"),
        None => "and no bound image (see the warning)".to_string(),
    };
    if cancel.is_cancelled() {
        return Err(Error::cancelled());
    }
    let message = format!(
        "Removed {} images, {} layers and {} objects ({} bytes), {bound}.",
        pruned.n_images, pruned.n_layers, pruned.n_objects_pruned, pruned.objsize
    );
    Ok(Outcome::changed(message, Change::event(Event::CleanedUp)))
}

/// The bound images (normalized names) some deployment references: booted,
/// staged, rollback, pinned or any other the sysroot still has. A
/// deployment whose `bound-images.d` cannot be read or parsed makes this
/// fail, so that cleanup never removes what it might reference.
fn bound_images_referenced(sysroot: &ostree::Sysroot) -> Result<BTreeSet<String>, Error> {
    let repo = sysroot.repo();
    let mut referenced = BTreeSet::new();
    for deployment in sysroot.deployments() {
        let commit = deployment.csum();
        let images = bound_images::of_commit(&repo, commit.as_str())
            .with_context(|| format!("reading the bound images of deployment {commit}"))?
            .map_err(|bad| anyhow::anyhow!("deployment {commit}: {bad}; its bound images are all kept"))?;
        referenced.extend(images.iter().map(|i| bound_images::normalized(&i.image)));
    }
    Ok(referenced)
}

/// Remove the bound images no deployment references any more (`Cleanup`,
/// and the automatic cleanup after an offline deployment write); how many
/// were removed. A failure (a deployment whose `bound-images.d` cannot be
/// read, a removal skopeo refused) is a warning on the job and `None`: what
/// the job did besides stands, and the next cleanup tries again.
pub async fn prune_bound_images(
    sysroot: &SysrootPath,
    locked: &ostree::Sysroot,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Option<usize> {
    let result = match bound_images_referenced(locked) {
        Ok(referenced) => bound_storage::Store::of(sysroot.path()).remove_all_but(&referenced, cancel).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(removed) => Some(removed.len()),
        Err(e) => {
            progress.warning(&format!("bound images no deployment references were not removed: {e}"));
            None
        }
    }
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
