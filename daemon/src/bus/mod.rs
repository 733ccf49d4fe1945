//! The D-Bus face of the daemon. Handlers parse, validate, authorize and hand
//! work to [`crate::jobs`]; nothing here touches libostree.
//!
//! - [`manager`]: `org.hostd.Host1` on `/org/hostd/Host1`, the bus side of the job runner's events, and
//!   the announcement of property changes (each once, only when the value changed).
//! - [`job`]: `org.hostd.Host1.Job` objects.
//! - [`properties`]: the manager's computed properties.
//! - [`guard`]: typed `InvalidArgument` errors for calls with wrong signatures.

pub mod guard;
pub mod job;
pub mod manager;
pub mod properties;

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use hostd_interface::names::{BUS_NAME, MANAGER_PATH};
use zbus::fdo::{RequestNameFlags, RequestNameReply};
use zbus::Connection;

use crate::context::Context;
use guard::SignatureGuard;
use manager::Manager;
pub use manager::ManagerObject;

/// Connect to the system bus, serve the manager object, wait for
/// `before_name` (what callers must not see undone), then take the bus
/// name; `before_name`'s output with the connection.
pub async fn serve<T>(ctx: Arc<Context>, before_name: impl Future<Output = T>) -> Result<(Connection, T)> {
    // Before the manager takes its first look, so no read is missed.
    let reads = ctx.status.subscribe();
    let conn = zbus::connection::Builder::system()
        .serve_at(MANAGER_PATH, SignatureGuard::new(Manager::new(ctx.clone())))
        .build()
        .await
        .context("connecting to the system bus")?;
    let done = before_name.await;
    manager::take_as_announced(&ctx, &conn).await;
    let reply = conn
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await
        .with_context(|| format!("requesting {BUS_NAME}"))?;
    anyhow::ensure!(
        reply == RequestNameReply::PrimaryOwner,
        "{BUS_NAME} is already owned by another process"
    );
    manager::follow_status_changes(ctx, conn.clone(), reads);
    Ok((conn, done))
}
