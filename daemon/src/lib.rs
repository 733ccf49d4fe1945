//! hostd: owns the ostree sysroot of an image-based host and serves its update
//! lifecycle on the system bus as `org.hostd.Host1`.
//!
//! - [`daemon`]: start-up, readiness, idle exit and shutdown.
//! - [`bus`]: the D-Bus objects (manager, jobs) — parse, validate, authorize, dispatch.
//! - [`auth`]: polkit checks.
//! - [`jobs`]: the single job slot, job state, the job runner (a job's life after the reply) and the worker thread.
//! - [`errors`]: naming errors for the API from their typed causes, once, at the edge.
//! - [`sysroot`]: everything that touches libostree/ostree-ext (status, pull, deploy, rollback, pin, cleanup).
//! - [`reboot`]: the logind reboot for `apply`, and `/run/reboot-required`.
//! - [`journal`]: the journal entries with stable `MESSAGE_ID`s.
//! - [`initiator`]: who asked for a job (uid, systemd unit).
//! - [`edit`]: what an edited Host spec asks for (nothing, a switch, a rollback).
//! - [`image_ref`]: strict parsing of caller-supplied image references.
//! - [`containers_policy`]: whether the host's containers policy verifies an image.
//! - [`config`]: `/etc/hostd/hostd.toml` and drop-ins.
//! - [`settings`]: the drop-in holding the settings changed over the bus.
//! - [`updates`]: unattended updates — maintenance windows, the FleetLock client, the reboot decision.
//! - [`context`]: state shared by the bus objects and the job runner.
//! - [`persist`]: the state file under `/var/lib/hostd` that keeps the manager's record of the past.
//! - [`idle`]: idle-exit bookkeeping.
//! - [`logging`]: journald or stderr.
//! - `systemd`: the parts of systemd's D-Bus API hostd calls (starting
//!   units, their jobs' end, a unit's state).
//! - [`usr_overlay`]: `UsrOverlay` through a helper systemd runs in the host's mount namespace.
//! - [`failpoint`]: moments where the fault tests hold a job (live only in test builds).

pub mod auth;
pub mod bus;
pub mod config;
pub mod containers_policy;
pub mod context;
pub mod daemon;
pub mod edit;
pub mod errors;
pub mod failpoint;
pub mod health;
pub mod idle;
pub mod image_ref;
pub mod initiator;
pub mod jobs;
pub mod journal;
pub mod logging;
pub mod persist;
pub mod reboot;
pub mod settings;
pub mod sysroot;
mod systemd;
pub mod updates;
pub mod usr_overlay;
