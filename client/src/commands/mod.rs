//! One function per verb; each is a typed call plus rendering.

mod config;
mod edit;
mod etc_diff;
mod job;
mod status;

use std::collections::HashMap;

use hostd_interface::options::PERSIST;
use hostd_interface::proxy::Host1Proxy;
use hostd_interface::Error;
use zbus::proxy::MethodFlags;
use zbus::{OwnedObjectPath, Variant};

use crate::cli::{Cli, Command};
use crate::exit::{self, Code};
use crate::polkit_agent::TtyAgent;

/// Run the command line; never panics on bus errors.
pub async fn run(cli: Cli) -> Code {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => exit::report(&e),
    }
}

async fn dispatch(cli: Cli) -> Result<Code, Error> {
    let conn = zbus::Connection::system().await?;
    // One-shot reads: a property cache would only cost a GetAll up front.
    let host = Host1Proxy::builder(&conn).cache_properties(zbus::proxy::CacheProperties::No).build().await?;
    let call = Caller { host: &host, interactive: !cli.no_ask_password };
    match cli.command {
        Command::Status(args) => status::run(&conn, &host, &args).await,
        Command::Upgrade(args) => job::upgrade(&conn, &call, &args).await,
        Command::Switch(args) => job::switch(&conn, &call, &args).await,
        Command::Stage(args) => job::simple(&conn, &call, "Stage", &args).await,
        Command::Rollback(args) => job::simple(&conn, &call, "Rollback", &args).await,
        Command::Cleanup(output) => job::cleanup(&conn, &call, &output).await,
        Command::Discard(output) => job::discard(&conn, &call, &output).await,
        Command::Config(command) => config::run(&call, &command).await,
        Command::Pin(args) => pin(&call, &args.deployment, true).await,
        Command::Unpin(args) => pin(&call, &args.deployment, false).await,
        Command::UsrOverlay(args) => usr_overlay(&call, args.persist).await,
        Command::Cancel => job::cancel(&conn, &host).await,
        Command::Watch(output) => job::watch(&conn, &host, &output).await,
        Command::EtcDiff(args) => etc_diff::run(&call, &args).await,
        Command::Edit(args) => edit::run(&conn, &call, &args).await,
        Command::Reload => {
            call.call::<()>("ReloadConfig", &()).await?;
            Ok(Code::Success)
        }
        Command::GenerateDocs { .. } => unreachable!("handled in main, before the bus"),
    }
}

async fn pin(call: &Caller<'_>, deployment: &str, pinned: bool) -> Result<Code, Error> {
    call.call::<()>("Pin", &(deployment, pinned)).await?;
    Ok(Code::Success)
}

async fn usr_overlay(call: &Caller<'_>, persist: bool) -> Result<Code, Error> {
    call.call::<()>("UsrOverlay", &(options(&[(PERSIST, Variant::Bool(persist))]),)).await?;
    if persist {
        crate::output::outln!("A writable overlay is mounted on /usr; its changes stay across reboots of this deployment.");
    } else {
        crate::output::outln!("A writable overlay is mounted on /usr; its changes are discarded at the next reboot.");
    }
    Ok(Code::Success)
}

/// Mutating calls carry ALLOW_INTERACTIVE_AUTHORIZATION unless --no-ask-password.
pub struct Caller<'a> {
    host: &'a Host1Proxy<'a>,
    interactive: bool,
}

impl Caller<'_> {
    async fn call<R>(&self, method: &str, body: &(impl serde::Serialize + zbus::DynamicType)) -> Result<R, Error>
    where
        R: for<'d> serde::Deserialize<'d> + zbus::Type,
    {
        let flags = if self.interactive { MethodFlags::ALLOW_INTERACTIVE_AUTH } else { MethodFlags::empty() };
        // An agent on the terminal for the call, so polkit can ask for a password.
        let agent = if self.interactive { TtyAgent::start().await } else { None };
        let reply = self.host.inner().call_with_flags(method, flags, body).await;
        if let Some(agent) = agent {
            agent.stop().await;
        }
        let reply: Option<R> = reply?;
        reply.ok_or_else(|| Error::Failed(format!("{method} returned no reply")))
    }

    /// Call a job-creating method and return the job path.
    async fn start(&self, method: &str, body: &(impl serde::Serialize + zbus::DynamicType)) -> Result<OwnedObjectPath, Error> {
        self.call(method, body).await
    }
}

/// Options dictionary from (key, value) pairs, leaving out false booleans.
fn options<'a>(pairs: &[(&'a str, Variant<'a>)]) -> HashMap<&'a str, Variant<'a>> {
    pairs
        .iter()
        .filter(|(_, v)| !matches!(v, Variant::Bool(false)))
        .map(|(k, v)| (*k, v.clone()))
        .collect()
}
