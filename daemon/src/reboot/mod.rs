//! Getting into the queued deployment: asking logind for the reboot when a
//! caller passed `apply`, and telling everyone else a reboot is pending.
//!
//! - [`apply`]: after a job with `apply`: strategy, inhibitors, reboot or postponement.
//! - [`finalize`]: making sure a staged deployment gets finalized on the way down.
//! - [`logind`]: the reboot request, with block inhibitors honoured.
//! - [`marker`]: `/run/reboot-required` kept in step with the sysroot.

pub mod apply;
pub mod finalize;
pub mod logind;
pub mod marker;
