//! How long-running sysroot operations report what they are doing.

pub use hostd_interface::job::{Layer, Phase};

/// Receives progress from an operation; implemented by the job machinery.
pub trait Progress: Send + Sync {
    /// Entered a new phase.
    fn phase(&self, phase: Phase, message: &str);
    /// The image the operation fetches or looks at, as a caller writes it.
    fn image(&self, image: &str);
    /// Every layer of that image, cached or to fetch, in fetching order.
    fn layer_plan(&self, layers: &[Layer]);
    /// Layer counts: fetched so far, to fetch in all.
    fn layers(&self, done: u32, total: u32);
    /// Byte counts: fetched so far, to fetch in all.
    fn bytes(&self, done: u64, total: u64);
    /// A human-readable note (e.g. "waiting for the sysroot lock").
    fn message(&self, message: &str);
    /// Something the user must know although the operation goes on (e.g.
    /// image content the host does not deploy); kept with the job's result.
    fn warning(&self, warning: &str);
}
