//! Writing to stdout and stderr the way command-line tools do: a reader that
//! went away (`hostctl … | head -1`) ends hostctl quietly, never with a
//! panic or an error message.

use std::io::Write;

/// The exit status of a process killed by SIGPIPE, as shells report it;
/// hostctl ignores the signal (as every Rust program does) and exits with
/// this status instead when its standard output is closed.
pub const BROKEN_PIPE_EXIT: i32 = 128 + 13;

/// Print a line on stdout (`println!` without its panic).
macro_rules! outln {
    () => { $crate::output::stdout_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::stdout_line(format_args!($($arg)*)) };
}

/// Print a line on stderr (`eprintln!` without its panic).
macro_rules! errln {
    () => { $crate::output::stderr_write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::stderr_write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Print on stderr without a newline (`eprint!` without its panic).
macro_rules! err {
    ($($arg:tt)*) => { $crate::output::stderr_write(format_args!($($arg)*)) };
}

pub(crate) use {err, errln, outln};

/// Write one line to stdout and flush it, so a reader sees each line as it
/// happens.
pub fn stdout_line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out.write_all(format!("{args}\n").as_bytes()).and_then(|()| out.flush());
    if let Err(e) = written {
        stdout_failed(&e);
    }
}

/// Write to stderr in one piece (a question is never seen half-asked); a
/// failure there has nowhere to be told, so it is dropped.
pub fn stderr_write(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_all(args.to_string().as_bytes());
}

/// Writing to stdout failed: a closed pipe ends hostctl quietly with
/// [`BROKEN_PIPE_EXIT`], anything else with a message and 1. A job hostctl
/// follows keeps running in hostd either way.
pub fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(BROKEN_PIPE_EXIT);
    }
    stderr_write(format_args!("hostctl: writing to stdout: {e}\n"));
    std::process::exit(1);
}

/// `value` on stdout as pretty JSON (`json`), else as `render` writes it;
/// a failed write ends hostctl as [`stdout_failed`] says. The tail of every
/// verb that prints one document hostd answered (`diff`, `etc-diff`).
pub fn print_document<T: serde::Serialize>(
    json: bool,
    value: &T,
    render: impl FnOnce(&mut std::io::StdoutLock<'static>, &T) -> std::io::Result<()>,
) {
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from).and_then(|()| writeln!(out))
    } else {
        render(&mut out, value)
    };
    if let Err(e) = written.and_then(|()| out.flush()) {
        stdout_failed(&e);
    }
}
