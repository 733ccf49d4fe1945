//! Cancellation that reaches into blocking libostree calls.
//!
//! A job is cancelled through a `CancellationToken` (by `Cancel()`, the time
//! limit or shutdown). libostree's blocking calls (deployment writes, the
//! repo prune of a cleanup) check a `GCancellable` between their steps; this
//! links the two for the duration of one operation.

use ostree_ext::gio;
use ostree_ext::gio::prelude::*;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::progress::Progress;
use crate::failpoint;

/// What a blocking step of a job needs to be stopped: where to report, and
/// the job's cancellation.
#[derive(Clone, Copy)]
pub struct Interruptible<'a> {
    /// The job's progress (a held failpoint says so in `Message`).
    pub progress: &'a dyn Progress,
    /// The job's cancellation.
    pub cancel: &'a CancellationToken,
}

impl std::fmt::Debug for Interruptible<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interruptible").field("cancelled", &self.cancel.is_cancelled()).finish_non_exhaustive()
    }
}

impl Interruptible<'_> {
    /// A `GCancellable` for the libostree calls of this step.
    pub fn link(&self) -> LinkedCancellable {
        LinkedCancellable::new(self.cancel)
    }

    /// Failpoint `name` (a no-op outside test builds).
    pub fn failpoint(&self, name: &str) {
        failpoint::hold(name, |m| self.progress.message(m), self.cancel);
    }
}

/// A `GCancellable` cancelled when the job's token is; dropping it stops
/// the link.
///
/// The link runs on a small thread of its own: the job's thread is blocked
/// inside libostree exactly when the cancellation must get through, so its
/// runtime cannot deliver it.
#[derive(Debug)]
pub struct LinkedCancellable {
    cancellable: gio::Cancellable,
    token: CancellationToken,
    _stop: oneshot::Sender<()>,
}

impl LinkedCancellable {
    /// Link a new `GCancellable` to `token` (already cancelled if it is).
    pub fn new(token: &CancellationToken) -> LinkedCancellable {
        let cancellable = gio::Cancellable::new();
        let (stop, stopped) = oneshot::channel::<()>();
        if token.is_cancelled() {
            cancellable.cancel();
        } else {
            let (token, linked) = (token.clone(), cancellable.clone());
            let watcher = std::thread::Builder::new().name("cancel-link".into()).spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else { return };
                rt.block_on(async {
                    tokio::select! {
                        _ = token.cancelled() => linked.cancel(),
                        _ = stopped => {}
                    }
                });
            });
            if let Err(e) = watcher {
                tracing::warn!("cancellation will not reach libostree during this step: {e}");
            }
        }
        LinkedCancellable { cancellable, token: token.clone(), _stop: stop }
    }

    /// The `GCancellable` to pass to libostree; cancelled already if the
    /// token is, even when the link's thread has not got to it yet.
    pub fn get(&self) -> &gio::Cancellable {
        if self.token.is_cancelled() {
            self.cancellable.cancel();
        }
        &self.cancellable
    }
}

#[cfg(test)]
#[expect(clippy::disallowed_methods, reason = "plain threads, no runtime")]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn cancelling_the_token_cancels_the_linked_cancellable() {
        let token = CancellationToken::new();
        let linked = LinkedCancellable::new(&token);
        assert!(!linked.get().is_cancelled());
        token.cancel();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !linked.get().is_cancelled() {
            assert!(Instant::now() < deadline, "the cancellation did not get through");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_token_cancelled_before_the_link_gives_a_cancelled_cancellable() {
        let token = CancellationToken::new();
        token.cancel();
        assert!(LinkedCancellable::new(&token).get().is_cancelled());
    }

    #[test]
    fn dropping_the_link_leaves_the_cancellable_alone() {
        let token = CancellationToken::new();
        let linked = LinkedCancellable::new(&token);
        let cancellable = linked.get().clone();
        drop(linked);
        std::thread::sleep(Duration::from_millis(50));
        token.cancel();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!cancellable.is_cancelled());
    }
}
