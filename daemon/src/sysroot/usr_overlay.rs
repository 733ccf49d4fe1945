//! The overlay on the booted deployment's `/usr`: libostree's deployment
//! unlock, and how the Host document describes its state.
//!
//! libostree mounts the overlay in the mount namespace of the calling
//! process. hostd's own namespace is private (`PrivateMounts=yes`), so the
//! daemon does not call [`unlock_booted`] itself: a helper started by
//! systemd in the host's namespace does (`crate::usr_overlay`).

use anyhow::Context;
use hostd_interface::host::{FilesystemOverlay, FilesystemOverlayAccessMode, FilesystemOverlayPersistence};
use ostree_ext::ostree::DeploymentUnlockedState;
use ostree_ext::{gio, ostree};

use super::Error;

/// What an unlock state of a deployment means for its `/usr`; `None`
/// when it is locked (the image's `/usr`, read-only).
pub fn overlay_of(state: DeploymentUnlockedState) -> Option<FilesystemOverlay> {
    use FilesystemOverlayAccessMode::{ReadOnly, ReadWrite};
    use FilesystemOverlayPersistence::{Persistent, Transient};
    let (access_mode, persistence) = match state {
        DeploymentUnlockedState::None => return None,
        DeploymentUnlockedState::Development => (ReadWrite, Transient),
        DeploymentUnlockedState::Hotfix => (ReadWrite, Persistent),
        // Prepared, mounted read-only until someone remounts it.
        DeploymentUnlockedState::Transient => (ReadOnly, Transient),
        // A state newer than this libostree: writable is the safe guess.
        _ => (ReadWrite, Transient),
    };
    Some(FilesystemOverlay { access_mode, persistence })
}

/// Mount a writable overlay on the booted deployment's `/usr`, in the mount
/// namespace of this process and, through mount propagation, its peers (the
/// host's, for the helper): discarded at the next reboot, or with
/// `persist` kept in the deployment and mounted at every boot of it (a
/// hotfix; libostree then also writes an unchanged clone of the deployment
/// as the rollback). Takes the sysroot lock, waiting for it as `Pin` does.
/// Blocking.
pub fn unlock_booted(persist: bool) -> Result<FilesystemOverlay, Error> {
    let sysroot = ostree::Sysroot::new_default();
    enter_shared_mount_namespace()?;
    sysroot.set_mount_namespace_in_use();
    super::pin::lock_within(&sysroot, super::pin::LOCK_WAIT)?;
    let result = (|| {
        sysroot.load(gio::Cancellable::NONE).context("loading the sysroot")?;
        let booted = sysroot
            .booted_deployment()
            .ok_or_else(|| Error::Refused("the sysroot at / is not booted: there is no running /usr".into()))?;
        if let Some(active) = overlay_of(booted.unlocked()) {
            return Err(Error::Refused(format!(
                "a /usr overlay is already active ({}, {})",
                active.access_mode, active.persistence
            )));
        }
        let state = if persist { DeploymentUnlockedState::Hotfix } else { DeploymentUnlockedState::Development };
        sysroot
            .deployment_unlock(&booted, state, gio::Cancellable::NONE)
            .with_context(|| format!("unlocking {}.{}", booted.csum(), booted.deployserial()))?;
        Ok(overlay_of(state).expect("an unlocked state has an overlay"))
    })();
    sysroot.unlock();
    result
}

/// What libostree's `ostree_sysroot_initialize_with_mount_namespace`
/// (2022.7, newer than the bindings) and `ostree admin` do: a mount
/// namespace of this process in which libostree may remount a read-only
/// `/sysroot` and `/boot` writable without the host seeing that. Unlike a
/// job's namespace (`SysrootPath::lock`) its mounts keep their propagation:
/// `/usr` stays a peer of the host's, so the overlay mounted on it here
/// appears on the host's `/usr`, while remounts, which do not propagate,
/// stay here.
fn enter_shared_mount_namespace() -> Result<(), Error> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlock_states_map_to_bootc_overlays() {
        assert_eq!(overlay_of(DeploymentUnlockedState::None), None);
        let o = overlay_of(DeploymentUnlockedState::Development).unwrap();
        assert_eq!((o.access_mode.as_str(), o.persistence.as_str()), ("readWrite", "transient"));
        let o = overlay_of(DeploymentUnlockedState::Hotfix).unwrap();
        assert_eq!((o.access_mode.as_str(), o.persistence.as_str()), ("readWrite", "persistent"));
        let o = overlay_of(DeploymentUnlockedState::Transient).unwrap();
        assert_eq!((o.access_mode.as_str(), o.persistence.as_str()), ("readOnly", "transient"));
    }
}
