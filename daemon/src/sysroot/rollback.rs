//! Rollback: put the other deployment first in the boot order. On a booted
//! host that is the rollback deployment (or, when a rollback is already
//! queued, the booted one again); on an offline sysroot the second entry.
//! libostree drops a staged deployment that is not first in the new list.

use std::path::Path;

use ostree_ext::ostree;
use tokio_util::sync::CancellationToken;

use super::cancel::LinkedCancellable;
use super::progress::{Phase, Progress};
use super::deploy::STAGED_LOCK_FILE;
use super::{origin_reference, Error, Outcome, SysrootPath};
use crate::journal::{Change, Event};

/// `Rollback`.
pub async fn rollback(
    sysroot: &SysrootPath,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Outcome, Error> {
    progress.phase(Phase::Staging, "reordering deployments");
    let locked = sysroot
        .lock(cancel, || progress.message("waiting for the sysroot lock"))
        .await?;
    let deployments = locked.deployments();
    let staged = locked.staged_deployment();
    let finalized: Vec<ostree::Deployment> = deployments
        .iter()
        .filter(|d| staged.as_ref().is_none_or(|s| !s.equal(d)))
        .cloned()
        .collect();
    let target = rollback_target(&locked, &finalized)?;
    let previous_default = finalized.first().map(|d| d.csum().to_string());
    // Read before libostree drops the staged deployment and its lock.
    let staged_kind = if Path::new(STAGED_LOCK_FILE).exists() { "download-only " } else { "" };
    let mut order = vec![target.clone()];
    order.extend(finalized.into_iter().filter(|d| !d.equal(&target)));
    let link = LinkedCancellable::new(cancel);
    locked
        .write_deployments(&order, Some(link.get()))
        .map_err(|e| anyhow::Error::new(e).context("writing the new boot order"))?;
    let mut message = format!("{}.{} is now the default deployment.", target.csum(), target.deployserial());
    if let Some(s) = staged {
        message.push_str(&format!(" The staged {staged_kind}deployment {} was discarded.", s.csum()));
    }
    let change = Change {
        event: Event::RolledBack,
        old_checksum: previous_default,
        new_checksum: Some(target.csum().to_string()),
        image: origin_reference(&target).ok().flatten().map(|r| r.to_string()),
    };
    Ok(Outcome::changed(message, change))
}

fn rollback_target(sysroot: &ostree::Sysroot, finalized: &[ostree::Deployment]) -> Result<ostree::Deployment, Error> {
    let none = || Error::Refused("there is no rollback deployment".into());
    match sysroot.booted_deployment() {
        Some(booted) => {
            let first = finalized.first().ok_or_else(none)?;
            if !first.equal(&booted) {
                // A rollback is queued: undo it.
                return Ok(booted);
            }
            sysroot
                .query_deployments_for(Some(&booted.osname()))
                .1
                .ok_or_else(none)
        }
        None => finalized.get(1).cloned().ok_or_else(none),
    }
}
