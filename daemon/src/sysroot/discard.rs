//! Discard: drop the update that waits for the next boot and change
//! nothing else.
//!
//! - A staged deployment (queued, or download-only and finalization-locked;
//!   only a booted host has one) is dropped by writing the other
//!   deployments again in the order they had, as `rpm-ostree cleanup -p`
//!   does; libostree removes a staged deployment the new list leaves out.
//! - An image fetched for the tracked reference that no deployment runs
//!   (an offline download-only update, the image of the staged deployment
//!   just dropped, or a locked one a reboot dropped) would still be offered
//!   to `Stage`: its ref is pointed back at the commit the deployment
//!   updates build on runs (or dropped, for an image no deployment
//!   tracks). Its layers stay until the next cleanup.
//!
//! With nothing pending the job succeeds and says so, as `rpm-ostree
//! cleanup -p` leaves the deployments unchanged.

use std::path::Path;

use anyhow::Context;
use ostree_ext::container::store;
use ostree_ext::container::OstreeImageReference;
use ostree_ext::{gio, ostree};
use tokio_util::sync::CancellationToken;

use super::cancel::LinkedCancellable;
use super::deploy::{IMAGE_REF_PREFIX, STAGED_LOCK_FILE};
use super::progress::{Phase, Progress};
use super::status::Snapshot;
use super::{merge_deployment, origin_reference, Error, Outcome, SysrootPath};
use crate::journal::{Change, Event};

/// What [`discard`] says when nothing waited.
pub const NOTHING_PENDING: &str = "No update is staged or downloaded; nothing was discarded.";

/// Whether `snapshot` shows something [`discard`] would drop: a staged
/// deployment, or a downloaded image no deployment runs.
pub fn pending(snapshot: &Snapshot) -> bool {
    let deployed = |digest: &str| {
        snapshot.deployments.iter().any(|d| d.entry.image.as_ref().is_some_and(|i| i.image_digest == digest))
    };
    snapshot.staged().is_some() || snapshot.downloaded_update.as_deref().is_some_and(|d| !deployed(d))
}

/// `Discard`.
pub async fn discard(
    sysroot: &SysrootPath,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Outcome, Error> {
    progress.phase(Phase::Staging, "dropping the pending update");
    let locked = sysroot
        .lock(cancel, || progress.message("waiting for the sysroot lock"))
        .await?;
    let merge = merge_deployment(&locked);
    let tracked = match &merge {
        Some(m) => origin_reference(m)?,
        None => None,
    };
    let mut said = Vec::new();
    let mut change = None;
    // The commits deployed once the staged deployment is gone.
    let mut remaining: Vec<String> = locked.deployments().iter().map(|d| d.csum().to_string()).collect();
    if let Some(staged) = locked.staged_deployment() {
        // Read before libostree drops the staged deployment and its lock.
        let kind = if Path::new(STAGED_LOCK_FILE).exists() { "download-only " } else { "" };
        let image = origin_reference(&staged)?;
        let order: Vec<ostree::Deployment> = locked.deployments().into_iter().filter(|d| !d.equal(&staged)).collect();
        let link = LinkedCancellable::new(cancel);
        locked
            .write_deployments(&order, Some(link.get()))
            .map_err(|e| anyhow::Error::new(e).context("writing the deployments without the staged one"))?;
        remove_staged_lock()?;
        remaining = order.iter().map(|d| d.csum().to_string()).collect();
        said.push(format!("Discarded the staged {kind}deployment {}.{}.", staged.csum(), staged.deployserial()));
        if let Some(image) = image.filter(|i| Some(i) != tracked.as_ref()) {
            // A switch that was staged: its image is tracked by nothing now.
            forget_image(&locked.repo(), &image, None)?;
        }
        change = Some(Change {
            event: Event::Discarded,
            old_checksum: Some(staged.csum().to_string()),
            new_checksum: order.first().map(|d| d.csum().to_string()),
            image: origin_reference(&staged).ok().flatten().map(|r| r.to_string()),
        });
    }
    if let (Some(merge), Some(tracked)) = (&merge, &tracked) {
        let repo = locked.repo();
        let state = store::query_image(&repo, &tracked.imgref)?;
        // An image some deployment runs (after an offline rollback, the
        // other one) is no download waiting.
        if let Some(state) = state.filter(|s| !remaining.contains(&s.merge_commit)) {
            forget_image(&repo, tracked, Some(merge.csum().as_str()))?;
            if change.is_none() {
                said.push(format!("Discarded the downloaded update {} ({}).", state.manifest_digest, state.merge_commit));
                change = Some(Change {
                    event: Event::Discarded,
                    old_checksum: Some(state.merge_commit.clone()),
                    new_checksum: Some(merge.csum().to_string()),
                    image: Some(tracked.to_string()),
                });
            }
        }
    }
    match change {
        Some(change) => {
            if let Some(next) = &change.new_checksum {
                said.push(format!("{next} boots next, as before."));
            }
            Ok(Outcome::changed(said.join(" "), change))
        }
        None => Ok(Outcome::message(NOTHING_PENDING)),
    }
}

/// Point the ref of `imgref`'s image at `commit` (the deployed commit of
/// that image), or drop it when `None`: `Stage` and the status then see no
/// fetched update of it.
fn forget_image(repo: &ostree::Repo, imgref: &OstreeImageReference, commit: Option<&str>) -> Result<(), Error> {
    let image_ref = ostree_ext::refescape::prefix_escape_for_ref(IMAGE_REF_PREFIX, &imgref.imgref.to_string())?;
    repo.set_ref_immediate(None, &image_ref, commit, gio::Cancellable::NONE)
        .with_context(|| format!("resetting the ref of {imgref}"))?;
    Ok(())
}

/// libostree removes the lock with the staged deployment; a lock left by
/// another tool must not hold off the next staged update.
fn remove_staged_lock() -> Result<(), Error> {
    match std::fs::remove_file(STAGED_LOCK_FILE) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::new(e).context(format!("removing {STAGED_LOCK_FILE}")).into())
        }
        _ => Ok(()),
    }
}
