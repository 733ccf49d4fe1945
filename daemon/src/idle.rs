//! Exit when nobody needs the daemon: no job runs and no call arrived for the
//! configured time. D-Bus activation starts it again on the next call.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Notify;

/// Tracks the last moment the daemon was busy.
#[derive(Debug)]
pub struct Idle {
    last_activity: Mutex<Instant>,
    timeout: Mutex<Option<Duration>>,
    changed: Notify,
}

impl Idle {
    /// Start counting from now.
    pub fn new(timeout: Option<Duration>) -> Idle {
        Idle {
            last_activity: Mutex::new(Instant::now()),
            timeout: Mutex::new(timeout),
            changed: Notify::new(),
        }
    }

    /// Something happened: restart the countdown.
    pub fn touch(&self) {
        *self.last_activity.lock().expect("idle lock poisoned") = Instant::now();
    }

    /// A new timeout from a reloaded configuration.
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        *self.timeout.lock().expect("idle lock poisoned") = timeout;
        self.changed.notify_one();
    }

    /// Resolves once the daemon has been idle for the timeout while `busy()` is false.
    pub async fn wait_until_idle(&self, busy: impl Fn() -> bool) {
        loop {
            let timeout = *self.timeout.lock().expect("idle lock poisoned");
            let Some(timeout) = timeout else {
                self.changed.notified().await;
                continue;
            };
            let last = *self.last_activity.lock().expect("idle lock poisoned");
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                if !busy() {
                    return;
                }
                self.touch();
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.changed.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_timeout_and_for_jobs() {
        let idle = Idle::new(Some(Duration::from_secs(10)));
        let start = tokio::time::Instant::now();
        let busy = std::sync::atomic::AtomicU32::new(2);
        // Busy twice, then free: three timeouts elapse.
        idle.wait_until_idle(|| busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) > 0)
            .await;
        assert!(start.elapsed() >= Duration::from_secs(10));
    }
}
