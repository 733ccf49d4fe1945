//! A polkit text agent for the duration of a call, as systemctl and
//! hostnamectl run one: on a terminal, a call that polkit lets an
//! administrator authorize with a password asks for it there.

use std::io::{IsTerminal, Read};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::output::errln;

/// The agent polkit ships (package polkitd on Debian).
const PKTTYAGENT: &str = "pkttyagent";

/// How long to wait for the agent to register before calling anyway.
const REGISTER_LIMIT: Duration = Duration::from_secs(10);

/// A running `pkttyagent` registered for this process.
#[derive(Debug)]
pub struct TtyAgent {
    child: Child,
}

impl TtyAgent {
    /// Start `pkttyagent --process <this process>` when stdin is a
    /// terminal, and wait until it has registered with polkit, so the call
    /// that follows can ask. polkit finds it for hostd's question about
    /// hostctl's bus name through hostctl's process. Unlike systemctl,
    /// hostctl does not pass `--fallback`: polkit (122) consults a fallback
    /// agent only when the caller is in a login session, so without one (a
    /// container, a rescue shell, no logind) nothing would ask; the price is
    /// that on a desktop the password is asked on the terminal hostctl runs
    /// in rather than in the desktop's dialog. `None` without a terminal, or
    /// when no agent could be started: the call is then decided without a
    /// password. Root needs none: hostd does not ask polkit about uid 0.
    pub async fn start() -> Option<TtyAgent> {
        if !std::io::stdin().is_terminal() || nix::unistd::geteuid().is_root() {
            return None;
        }
        // The agent closes --notify-fd once registered (or dies): its stdout
        // is the write end of this pipe; it talks to the user on /dev/tty.
        let (mut registered, notify) = std::io::pipe().ok()?;
        let mut command = Command::new(PKTTYAGENT);
        command
            .args(["--notify-fd", "1", "--process", &std::process::id().to_string()])
            .stdin(Stdio::null())
            .stdout(notify)
            .kill_on_drop(true);
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                errln!("hostctl: cannot start {PKTTYAGENT} to ask for a password: {e}");
                return None;
            }
        };
        // Our copy of the write end goes with the command.
        drop(command);
        let wait = tokio::task::spawn_blocking(move || registered.read(&mut [0u8; 1]));
        let _ = tokio::time::timeout(REGISTER_LIMIT, wait).await;
        Some(TtyAgent { child })
    }

    /// Stop the agent (SIGTERM, as systemd does) and wait for it.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let _ = self.child.wait().await;
    }
}
