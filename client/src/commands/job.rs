//! Verbs that start a job and follow it to the end.

use hostd_interface::host::Transport;
use hostd_interface::options as opt;
use hostd_interface::proxy::{Host1Proxy, JobProxy};
use hostd_interface::Error;
use zbus::{Connection, Variant};

use super::{options, Caller};
use crate::cli::{ApplyArgs, JobOutput, SwitchArgs, UpgradeArgs};
use crate::exit::{self, Code};
use crate::output::{errln, outln};
use crate::watch::{self, End};

/// `upgrade [--check]`.
pub async fn upgrade(conn: &Connection, call: &Caller<'_>, args: &UpgradeArgs) -> Result<Code, Error> {
    if args.check {
        let path = call.start("Check", &(options(&[]),)).await?;
        return match watch::follow(conn, &path, &args.output).await? {
            End::Finished(Ok(_)) if args.exit_code && update_pending(call.host).await? => Ok(Code::UpdateAvailable),
            end => finish(end),
        };
    }
    let opts = options(&[
        (opt::DOWNLOAD_ONLY, Variant::Bool(args.download_only)),
        (opt::APPLY, Variant::Bool(args.apply)),
        (opt::ALLOW_DOWNGRADE, Variant::Bool(args.allow_downgrade)),
        (opt::AUTO, Variant::Bool(args.auto)),
        (opt::RETRY_FAILED, Variant::Bool(args.retry_failed)),
    ]);
    let path = call.start("Upgrade", &(opts,)).await?;
    if path.as_str() == "/" {
        if !args.output.quiet {
            outln!("Automatic updates are off ([updates] policy = none in hostd.toml).");
        }
        return Ok(Code::Success);
    }
    finish(watch::follow(conn, &path, &args.output).await?)
}

/// `CachedUpdate` names an update that is not yet downloaded.
async fn update_pending(host: &Host1Proxy<'_>) -> Result<bool, Error> {
    Ok(host.cached_update().await?.pending())
}

/// `switch IMAGE`.
pub async fn switch(conn: &Connection, call: &Caller<'_>, args: &SwitchArgs) -> Result<Code, Error> {
    let opts = options(&[
        (opt::TRANSPORT, Variant::from(Transport::from(args.transport).as_str())),
        (opt::RETAIN, Variant::Bool(args.retain)),
        (opt::ENFORCE_CONTAINER_SIGPOLICY, Variant::Bool(args.enforce_container_sigpolicy)),
        (opt::DOWNLOAD_ONLY, Variant::Bool(args.download_only)),
        (opt::APPLY, Variant::Bool(args.apply)),
    ]);
    let path = call.start("Switch", &(args.image.as_str(), opts)).await?;
    finish(watch::follow(conn, &path, &args.output).await?)
}

/// `stage` and `rollback`.
pub async fn simple(conn: &Connection, call: &Caller<'_>, method: &str, args: &ApplyArgs) -> Result<Code, Error> {
    let opts = options(&[(opt::APPLY, Variant::Bool(args.apply))]);
    let path = call.start(method, &(opts,)).await?;
    finish(watch::follow(conn, &path, &args.output).await?)
}

/// `cleanup`.
pub async fn cleanup(conn: &Connection, call: &Caller<'_>, output: &JobOutput) -> Result<Code, Error> {
    let path = call.start("Cleanup", &(options(&[]),)).await?;
    finish(watch::follow(conn, &path, output).await?)
}

/// `discard`: drop the staged or downloaded update.
pub async fn discard(conn: &Connection, call: &Caller<'_>, output: &JobOutput) -> Result<Code, Error> {
    let path = call.start("Discard", &(options(&[]),)).await?;
    if path.as_str() == "/" {
        if !output.quiet {
            outln!("No update is staged or downloaded; nothing to discard.");
        }
        return Ok(Code::Success);
    }
    finish(watch::follow(conn, &path, output).await?)
}

/// `cancel`: cancel whatever job runs.
pub async fn cancel(conn: &Connection, host: &Host1Proxy<'_>) -> Result<Code, Error> {
    let path = host.active_job().await?;
    if path.as_str() == "/" {
        errln!("No job is running.");
        return Ok(Code::Success);
    }
    let job = JobProxy::builder(conn).path(path.clone()).build().await?;
    let kind = job.kind().await?;
    let image = job.image().await.unwrap_or_default();
    job.cancel().await?;
    match image.as_str() {
        "" => errln!("Cancelling the {kind}."),
        image => errln!("Cancelling the {kind} of {image}."),
    }
    Ok(Code::Success)
}

/// `watch`: follow the running job (again) to its end.
pub async fn watch(conn: &Connection, host: &Host1Proxy<'_>, output: &JobOutput) -> Result<Code, Error> {
    let path = host.active_job().await?;
    if path.as_str() == "/" {
        errln!("No job is running.");
        return Ok(Code::Success);
    }
    finish(watch::follow(conn, &path, output).await?)
}

pub(super) fn finish(end: End) -> Result<Code, Error> {
    Ok(match end {
        End::Finished(Ok(_)) => Code::Success,
        End::Finished(Err(e)) => exit::report(&e),
        End::Detached => Code::Detached,
    })
}
