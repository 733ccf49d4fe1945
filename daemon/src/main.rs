//! `hostd`: see the library crate for what it does.

use std::path::PathBuf;

use clap::Parser;

/// Update daemon for image-based hosts, serving org.hostd.Host1 on the system bus.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Manage the ostree sysroot at DIR (an offline sysroot unless DIR is /).
    #[arg(long, value_name = "DIR", default_value = "/")]
    sysroot: PathBuf,
    /// Read configuration below DIR instead of / (etc/hostd, usr/lib/hostd, run/hostd).
    #[arg(long, value_name = "DIR", default_value = "/")]
    config_root: PathBuf,
    /// Keep hostd's state in DIR: the state file (last check, last jobs) and
    /// the boot health record, for the daemon and both modes below.
    #[arg(long, value_name = "DIR", default_value = hostd::persist::DEFAULT_DIR)]
    state_dir: PathBuf,
    /// Do not serve: tell the fleet lock manager this host booted fine and
    /// give back its reboot slot (hostd-steady-state.service), then exit.
    /// Does nothing unless [updates] strategy = "fleet-lock".
    #[arg(long)]
    report_steady_state: bool,
    /// Do not serve: run the boot health checks on the booted deployment if
    /// they never ran on it, record the outcome, and roll back on failure as
    /// [health] says (hostd-health-check.service), then exit; the exit status
    /// is failure when a check failed.
    #[arg(long, conflicts_with = "report_steady_state")]
    health_check: bool,
    /// Internal: mount the /usr overlay (transient or persistent) in this
    /// process's mount namespace; hostd has systemd run this for UsrOverlay.
    #[arg(long, value_name = "MODE", hide = true)]
    usr_overlay_helper: Option<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    hostd::logging::init();
    let failpoints = hostd::failpoint::setup();
    if !failpoints.is_empty() {
        tracing::warn!("failpoints configured: {}", failpoints.join(", "));
    }
    if let Some(mode) = &args.usr_overlay_helper {
        return hostd::usr_overlay::helper_main(mode);
    }
    if args.health_check {
        return match hostd::config::Config::load(&args.config_root) {
            Ok(config) => hostd::health::assess::main(&args.sysroot, &args.config_root, &args.state_dir, &config.health),
            Err(e) => {
                tracing::error!("reading the configuration: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if args.report_steady_state {
        let reported = hostd::config::Config::load(&args.config_root)
            .map_err(|e| anyhow::Error::new(e).context("reading the configuration"))
            .and_then(|config| hostd::updates::report_steady_state(&config, &args.state_dir));
        return match reported {
            Ok(said) => {
                tracing::info!("{said}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("hostd: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hostd: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let settings = hostd::daemon::Settings {
        sysroot: args.sysroot,
        config_root: args.config_root,
        state_dir: args.state_dir,
    };
    match runtime.block_on(hostd::daemon::run(settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("hostd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
