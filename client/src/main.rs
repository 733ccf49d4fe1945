//! `hostctl`: the command-line client of hostd. See [`hostctl`](crate) commands.

mod cli;
mod commands;
mod docs;
mod exit;
mod output;
mod polkit_agent;
mod render;
mod watch;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    if let cli::Command::GenerateDocs { dir } = &args.command {
        return match docs::generate(dir) {
            Ok(()) => exit::Code::Success.into(),
            Err(e) => {
                output::errln!("hostctl: writing man pages and completions to {}: {e}", dir.display());
                exit::Code::Failure.into()
            }
        };
    }
    // Checked before the runtime opens descriptors of its own, one of which
    // could otherwise take a number the caller did not pass.
    if let Some(fd) = args.command.job_output().and_then(|o| o.progress_fd) {
        if let Err(e) = watch::check_progress_fd(fd) {
            return exit::report(&e).into();
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hostctl: {e}");
            return exit::Code::Failure.into();
        }
    };
    runtime.block_on(commands::run(args)).into()
}
