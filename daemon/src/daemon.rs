//! Start-up and shutdown of the daemon.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use hostd_interface::names::BUS_NAME;
use sd_notify::NotifyState;

use crate::config::{Explained, Loader};
use crate::context::Context;
use crate::jobs::records::Records;
use crate::persist::StateFile;
use crate::reboot::marker::{self, Marker};
use crate::sysroot::{cleanup, watch, SysrootPath};

/// What `hostd` was started with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The sysroot to manage (`/` on a booted host).
    pub sysroot: PathBuf,
    /// Prefix of the configuration directories (`/` in production).
    pub config_root: PathBuf,
    /// Where the state file lives ([`crate::persist::DEFAULT_DIR`] in production).
    pub state_dir: PathBuf,
}

/// Serve until idle or told to stop.
pub async fn run(settings: Settings) -> Result<()> {
    // Bounded like ReloadConfig: a file that cannot be read in time must not
    // keep the daemon from serving.
    let config = Loader::default().explain(&settings.config_root, None).await.unwrap_or_else(|e| {
        tracing::error!("ignoring the configuration, using defaults: {e:#}");
        Explained::default()
    });
    let state_file = StateFile::new(&settings.state_dir);
    let saved = tokio::task::spawn_blocking({
        let file = state_file.clone();
        move || file.load_or_fresh()
    })
    .await
    .context("reading the saved state")?;
    let records = Records::restored(state_file, saved);
    let sysroot = SysrootPath::new(&settings.sysroot).with_state_dir(&settings.state_dir);
    let ctx = Context::new(sysroot, settings.config_root.clone(), config, records);
    // Read the sysroot while connecting to the bus; Status waits for it.
    let first_read = tokio::spawn({
        let status = ctx.status.clone();
        async move { status.refresh().await }
    });
    let (conn, loaded) = crate::bus::serve(ctx.clone(), async {
        let loaded = first_read.await;
        // The saved state follows the host as it is now, whatever changed
        // it while hostd was not running; before the name is taken, so no
        // caller reads the stale state.
        if let Ok(Ok(snapshot)) = loaded.as_ref().map(|l| l.as_ref()) {
            if ctx.records.follow_host(snapshot) {
                ctx.records.persist().await;
            }
        }
        loaded
    })
    .await?;
    let loaded = loaded.context("first sysroot read")?;
    let booted = matches!(&*loaded, Ok(s) if s.booted);
    if let Err(e) = &*loaded {
        tracing::warn!("{}: {e}", settings.sysroot.display());
    }
    crate::bus::manager::host_changed(&ctx, &conn).await;
    if !matches!(&*loaded, Err(crate::sysroot::Error::NotImageBased(_))) {
        watch::spawn(&ctx.sysroot, booted, ctx.status.clone()).context("watching the sysroot")?;
        cleanup::finish_interrupted_work(&ctx.sysroot);
    }
    if booted {
        let marker = Marker::new(std::path::Path::new(marker::RUN_DIR));
        tokio::spawn(marker::follow(marker, ctx.status.subscribe()));
    }
    notify(&[NotifyState::Ready, NotifyState::Status("Idle")]);
    tracing::info!(sysroot = %settings.sysroot.display(), booted, "serving {BUS_NAME}");

    wait_for_exit(&ctx).await;

    notify(&[NotifyState::Stopping]);
    if let Some(job) = ctx.jobs.active() {
        tracing::info!(job = job.id, "cancelling the running job before exit");
        job.cancel.cancel();
    }
    // Keep the name until the job's end is published (also the end of a job
    // whose reboot stops us): clients match its signals by that name.
    while ctx.jobs.busy() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Then give it up before exiting, so an activation request queues for
    // our successor.
    let _ = conn.release_name(BUS_NAME).await;
    Ok(())
}

async fn wait_for_exit(ctx: &Arc<Context>) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            return ctx.idle.wait_until_idle(|| ctx.jobs.busy()).await;
        }
    };
    tokio::select! {
        _ = ctx.idle.wait_until_idle(|| ctx.jobs.busy()) => {
            tracing::info!("idle; exiting until the next call activates us");
        }
        _ = term.recv() => tracing::info!("SIGTERM; exiting"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT; exiting"),
    }
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!("sd_notify: {e}");
    }
}

