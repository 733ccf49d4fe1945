//! A staged deployment becomes the next boot when
//! `ostree-finalize-staged.service` stops at shutdown. A path unit starts
//! that service once systemd notices the staged deployment; a reboot
//! requested right after staging (hostd's own, or an admin's `hostctl
//! upgrade && systemctl reboot`) can begin before it does, and then nothing
//! finalizes the deployment and the old one boots again. So hostd starts the
//! service itself and waits for it: at the end of every job that staged a
//! deployment, before the job is reported done, and again before a reboot
//! of its own.

use std::time::{Duration, Instant};

use zbus::Connection;

use crate::systemd::{Systemd1ManagerProxy, Systemd1UnitProxy};

/// The unit whose stop finalizes a staged deployment.
const FINALIZE_UNIT: &str = "ostree-finalize-staged.service";
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// Why finalization could not be armed.
#[derive(Debug, thiserror::Error)]
pub enum FinalizeError {
    /// systemd refused or could not be asked.
    #[error("starting {FINALIZE_UNIT}: {0}")]
    Bus(#[from] zbus::Error),
    /// The unit did not become active.
    #[error("{FINALIZE_UNIT} is {0} instead of active")]
    NotActive(String),
}

/// Start the finalization service and wait until it is active, so the
/// coming shutdown stops it and thereby finalizes the staged deployment.
pub async fn arm(conn: &Connection) -> Result<(), FinalizeError> {
    let systemd = Systemd1ManagerProxy::new(conn).await?;
    systemd.start_unit(FINALIZE_UNIT, "replace").await?;
    let unit = Systemd1UnitProxy::builder(conn)
        .path(systemd.get_unit(FINALIZE_UNIT).await?)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let deadline = Instant::now() + WAIT;
    loop {
        let state = unit.active_state().await?;
        match state.as_str() {
            "active" => return Ok(()),
            // "inactive" too: the start job waits for the unit it is ordered after.
            "inactive" | "activating" | "reloading" if Instant::now() < deadline => tokio::time::sleep(POLL).await,
            _ => return Err(FinalizeError::NotActive(state)),
        }
    }
}
