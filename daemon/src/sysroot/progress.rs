//! How long-running sysroot operations report what they are doing.

/// The phases a job goes through, in order (a job may skip some).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Fetching manifest and config.
    Checking,
    /// Fetching layers.
    Pulling,
    /// Writing the merged commit.
    Importing,
    /// Writing or queuing the deployment.
    Staging,
    /// Pruning.
    Cleanup,
    /// Asking for the reboot.
    Rebooting,
}

impl Phase {
    /// The name of the phase on the bus.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Checking => "checking",
            Phase::Pulling => "pulling",
            Phase::Importing => "importing",
            Phase::Staging => "staging",
            Phase::Cleanup => "cleanup",
            Phase::Rebooting => "rebooting",
        }
    }
}

/// Receives progress from an operation; implemented by the job machinery.
pub trait Progress: Send + Sync {
    /// Entered a new phase.
    fn phase(&self, phase: Phase, message: &str);
    /// Layer counts: fetched so far, to fetch in all.
    fn layers(&self, done: u32, total: u32);
    /// Byte counts: fetched so far, to fetch in all.
    fn bytes(&self, done: u64, total: u64);
    /// A human-readable note (e.g. "waiting for the sysroot lock").
    fn message(&self, message: &str);
}
