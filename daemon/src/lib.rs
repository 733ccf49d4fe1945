//! hostd: owns the ostree sysroot of an image-based host and serves its update
//! lifecycle on the system bus as `org.hostd.Host1`.
//!
//! - [`daemon`]: start-up, readiness, idle exit and shutdown.
//! - [`bus`]: the D-Bus objects (manager, jobs) — parse, validate, authorize, dispatch.
//! - [`auth`]: polkit checks.
//! - [`jobs`]: the single job slot, job state and the worker thread.
//! - [`sysroot`]: everything that touches libostree/ostree-ext (status, pull, deploy, rollback, cleanup).
//! - [`image_ref`]: strict parsing of caller-supplied image references.
//! - [`containers_policy`]: whether the host's containers policy verifies an image.
//! - [`config`]: `/etc/hostd/hostd.toml` and drop-ins.
//! - [`context`]: state shared by the bus objects and jobs.
//! - [`idle`]: idle-exit bookkeeping.
//! - [`logging`]: journald or stderr.

pub mod auth;
pub mod bus;
pub mod config;
pub mod containers_policy;
pub mod context;
pub mod daemon;
pub mod idle;
pub mod image_ref;
pub mod jobs;
pub mod logging;
pub mod sysroot;
