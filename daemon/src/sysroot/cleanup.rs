//! Cleanup: remove images no deployment uses, their layers, and unreachable
//! objects. Pinned and rollback deployments keep their images.

use hostd_interface::Error;
use ostree_ext::gio;
use tokio_util::sync::CancellationToken;

use super::errors::classify;
use super::progress::{Phase, Progress};
use super::{Outcome, SysrootPath};
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
        .await
        .map_err(classify)?;
    if cancel.is_cancelled() {
        return Err(Error::Cancelled("cancelled by request".into()));
    }
    locked.cleanup(gio::Cancellable::NONE).map_err(|e| classify(e.into()))?;
    let pruned = ostree_ext::container::deploy::prune(&locked.as_ostree_ext_lock()).map_err(classify)?;
    let message = format!(
        "Removed {} images, {} layers and {} objects ({} bytes).",
        pruned.n_images, pruned.n_layers, pruned.n_objects_pruned, pruned.objsize
    );
    Ok(Outcome::changed(message, Change::event(Event::CleanedUp)))
}
