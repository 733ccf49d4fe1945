//! The status snapshot served to the bus: filled off the bus thread, replaced
//! whole when the sysroot changes, read without waiting on any job.

use std::sync::Arc;

use tokio::sync::{watch, Mutex};

use super::status::{self, Snapshot};
use super::{Error, SysrootPath};

/// The result of the last sysroot read.
pub type Loaded = Arc<Result<Snapshot, Error>>;

/// Latest snapshot plus the means to refresh it.
#[derive(Debug)]
pub struct StatusCache {
    sysroot: SysrootPath,
    latest: watch::Sender<Option<Loaded>>,
    /// Serializes reloads so an older read never replaces a newer one.
    reload: Mutex<()>,
}

impl StatusCache {
    /// An empty cache; the first [`StatusCache::refresh`] fills it.
    pub fn new(sysroot: SysrootPath) -> Arc<StatusCache> {
        Arc::new(StatusCache {
            sysroot,
            latest: watch::channel(None).0,
            reload: Mutex::new(()),
        })
    }

    /// The latest snapshot, waiting only for the very first read.
    pub async fn current(&self) -> Loaded {
        let mut rx = self.latest.subscribe();
        let guard = rx.wait_for(Option::is_some).await.expect("sender lives in self");
        guard.clone().expect("waited for Some")
    }

    /// The latest snapshot if one was read.
    pub fn peek(&self) -> Option<Loaded> {
        self.latest.borrow().clone()
    }

    /// Re-read the sysroot on a blocking thread and publish the result.
    pub async fn refresh(&self) -> Loaded {
        let _serialized = self.reload.lock().await;
        let sysroot = self.sysroot.clone();
        let loaded = tokio::task::spawn_blocking(move || status::load(sysroot.path(), sysroot.state_dir()))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("status reader panicked: {e}").into()));
        let loaded = Arc::new(loaded);
        self.latest.send_replace(Some(loaded.clone()));
        loaded
    }

    /// Told after every publish.
    pub fn subscribe(&self) -> watch::Receiver<Option<Loaded>> {
        self.latest.subscribe()
    }
}
