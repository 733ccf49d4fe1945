//! `hostctl`: the command-line client of hostd. See [`hostctl`](crate) commands.

mod cli;
mod commands;
mod exit;
mod render;
mod watch;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hostctl: {e}");
            return exit::Code::Failure.into();
        }
    };
    runtime.block_on(commands::run(args)).into()
}
