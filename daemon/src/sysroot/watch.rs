//! inotify on the places libostree touches when deployments change, so the
//! status cache follows changes made by hostd and by other tools alike.
//!
//! libostree bumps the mtime of `ostree/deploy` after every deployment write
//! (that is what rpm-ostreed watches too); `boot/` sees the bootloader symlink
//! swap and `/run/ostree` the staged deployment of a booted host;
//! `/var/lib/hostd` holds the boot health record shown with each deployment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::mpsc;

use super::cache::StatusCache;
use super::SysrootPath;

/// Changes arriving within this window cause one reload.
const SETTLE: Duration = Duration::from_millis(100);

/// Start watching; the watch lives as long as the process.
pub fn spawn(sysroot: &SysrootPath, booted: bool, cache: Arc<StatusCache>) -> anyhow::Result<()> {
    let root = sysroot.path();
    let mut dirs = vec![root.join("ostree/deploy"), root.join("boot")];
    if booted {
        dirs.push(PathBuf::from("/run/ostree"));
        // The boot health record, which `hostd --health-check` replaces.
        dirs.push(sysroot.state_dir().to_path_buf());
    }
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
    let flags = AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_CLOSE_WRITE;
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        inotify.add_watch(dir.as_path(), flags)?;
    }
    let (tx, mut rx) = mpsc::channel::<()>(1);
    // What changed between the first read and the watches (such as the
    // health record `hostd --health-check` writes while the daemon it
    // activated starts) is read once more.
    let _ = tx.try_send(());
    std::thread::Builder::new()
        .name("sysroot-watch".into())
        .spawn(move || loop {
            match inotify.read_events() {
                // A full channel already means "reload pending".
                Ok(_) => {
                    let _ = tx.try_send(());
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!("sysroot watch stopped: {e}");
                    return;
                }
            }
        })?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            tracing::debug!("sysroot changed; reloading status");
            cache.refresh().await;
        }
    });
    Ok(())
}
