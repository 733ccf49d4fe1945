//! `/run/reboot-required`: the file motd scripts, monitoring checks and
//! configuration management already look at to learn that a host waits for
//! a reboot. hostd writes it on a booted host while a reboot would change
//! what runs (a staged deployment that is not download-only, or a queued
//! rollback), with a one-line reason beside it, and removes both otherwise.

use std::io;
use std::path::{Path, PathBuf};

use tokio::sync::watch;

use crate::sysroot::cache::Loaded;
use crate::sysroot::status::{Role, Snapshot};

/// The directory both files live in on a real host.
pub const RUN_DIR: &str = "/run";
/// The conventional banner.
const BANNER: &str = "*** System restart required ***\n";

/// The files under a `/run` directory.
#[derive(Debug, Clone)]
pub struct Marker {
    required: PathBuf,
    reason: PathBuf,
}

impl Marker {
    /// The marker under `run_dir` (`/run` on a host).
    pub fn new(run_dir: &Path) -> Marker {
        Marker {
            required: run_dir.join("reboot-required"),
            reason: run_dir.join("hostd/reboot-required"),
        }
    }

    /// Make the files say what `snapshot` says.
    pub fn sync(&self, snapshot: &Snapshot) -> io::Result<()> {
        match reason(snapshot) {
            Some(reason) => self.set(&reason),
            None => self.clear(),
        }
    }

    fn set(&self, reason: &str) -> io::Result<()> {
        if std::fs::read_to_string(&self.reason).ok().as_deref() == Some(reason) && self.required.exists() {
            return Ok(());
        }
        write_atomically(&self.reason, reason)?;
        write_atomically(&self.required, BANNER)
    }

    /// The banner may also come from another tool (a package manager on a
    /// mixed host): only a banner hostd wrote, known by its reason file, goes.
    fn clear(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.reason) {
            Ok(()) => remove_if_present(&self.required),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// One line saying what the next boot changes, or `None` when nothing.
pub fn reason(snapshot: &Snapshot) -> Option<String> {
    if !snapshot.booted || !snapshot.reboot_required {
        return None;
    }
    let (what, deployment) = match snapshot.staged() {
        Some(staged) => ("staged deployment", staged),
        None => ("rollback queued to", snapshot.deployments.iter().find(|d| d.role == Role::Rollback)?),
    };
    let image = deployment.entry.image.as_ref();
    let version = image.and_then(|i| i.version.as_deref()).unwrap_or("no version");
    let digest = image.map(|i| format!(" {}", i.image_digest)).unwrap_or_default();
    Some(format!("{what} {} ({version}{digest})\n", deployment.checksum()))
}

/// Keep the marker in step with every new status snapshot.
pub async fn follow(marker: Marker, mut snapshots: watch::Receiver<Option<Loaded>>) {
    loop {
        let latest = snapshots.borrow_and_update().clone();
        if let Some(Ok(snapshot)) = latest.as_deref() {
            if let Err(e) = marker.sync(snapshot) {
                tracing::warn!("updating {}: {e}", marker.required.display());
            }
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

fn write_atomically(path: &Path, content: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysroot::status::tests::{booted_with_staged, booted_with_queued_rollback, offline};

    #[test]
    fn written_while_a_reboot_changes_something_and_removed_after() {
        let dir = tempfile::tempdir().unwrap();
        let marker = Marker::new(dir.path());
        marker.sync(&booted_with_staged(false)).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("reboot-required")).unwrap(), BANNER);
        let why = std::fs::read_to_string(dir.path().join("hostd/reboot-required")).unwrap();
        assert!(why.starts_with("staged deployment "), "{why}");
        marker.sync(&booted_with_queued_rollback()).unwrap();
        let why = std::fs::read_to_string(dir.path().join("hostd/reboot-required")).unwrap();
        assert!(why.starts_with("rollback queued to "), "{why}");
        marker.sync(&booted_with_staged(true)).unwrap();
        assert!(!dir.path().join("reboot-required").exists());
        assert!(!dir.path().join("hostd/reboot-required").exists());
    }

    #[test]
    fn a_banner_from_another_tool_stays() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("reboot-required"), BANNER).unwrap();
        Marker::new(dir.path()).sync(&booted_with_staged(true)).unwrap();
        assert!(dir.path().join("reboot-required").exists());
    }

    #[test]
    fn an_offline_sysroot_never_needs_a_reboot_of_this_host() {
        assert_eq!(reason(&offline()), None);
    }
}
