//! Following a job: subscribe to its property changes, then read its state,
//! and show progress as a bar (terminal), plain lines, or JSON events.

use std::io::{IsTerminal, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use futures_util::StreamExt;
use hostd_interface::job::{JobProperties, JobStatus, Phase};
use hostd_interface::names::{BUS_NAME, JOB_INTERFACE};
use hostd_interface::proxy::JobProxy;
use hostd_interface::Error;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use zbus::fdo::PropertiesProxy;
use zbus::{Connection, OwnedObjectPath};

use crate::cli::JobOutput;

/// A job's properties as last seen.
#[derive(Debug, Default, Clone, PartialEq)]
struct Seen {
    state: Option<JobStatus>,
    phase: Option<Phase>,
    message: String,
    bytes_done: u64,
    bytes_total: u64,
    layers_done: u32,
    layers_total: u32,
    error_name: String,
    error_message: String,
    warnings: Vec<String>,
}

impl Seen {
    /// Take what `props` carries (all of `GetAll`, or one `PropertiesChanged`).
    fn merge(&mut self, props: JobProperties) {
        let JobProperties {
            state,
            phase,
            message,
            error_name,
            error_message,
            bytes_done,
            bytes_total,
            layers_done,
            layers_total,
            warnings,
            ..
        } = props;
        self.state = state.or(self.state);
        self.phase = phase.or(self.phase);
        macro_rules! take {
            ($($field:ident),+) => { $( if let Some(v) = $field { self.$field = v; } )+ };
        }
        take!(message, error_name, error_message, bytes_done, bytes_total, layers_done, layers_total, warnings);
    }

    fn finished(&self) -> bool {
        self.state.is_some_and(JobStatus::is_final)
    }

    /// `State` as it travels; empty before it was seen.
    fn state_name(&self) -> &'static str {
        self.state.map_or("", JobStatus::as_str)
    }

    /// `Phase` as it travels; empty before it was seen.
    fn phase_name(&self) -> &'static str {
        self.phase.map_or("", Phase::as_str)
    }
}

/// Where progress goes.
enum Display {
    Quiet,
    Json,
    Bar(ProgressBar),
    Lines { last: (String, String) },
}

impl Display {
    fn new(output: &JobOutput) -> Display {
        if output.quiet {
            Display::Quiet
        } else if output.json {
            Display::Json
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix:>9} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {wide_msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            Display::Bar(bar)
        } else {
            Display::Lines { last: (String::new(), String::new()) }
        }
    }

    fn show(&mut self, seen: &Seen) {
        match self {
            Display::Quiet => {}
            Display::Json => {
                let line = json!({
                    "state": seen.state_name(), "phase": seen.phase_name(), "message": seen.message,
                    "bytesDone": seen.bytes_done, "bytesTotal": seen.bytes_total,
                    "layersDone": seen.layers_done, "layersTotal": seen.layers_total,
                    "errorName": seen.error_name, "errorMessage": seen.error_message,
                    "warnings": seen.warnings,
                });
                println!("{line}");
            }
            Display::Bar(bar) => {
                bar.set_prefix(seen.phase_name());
                bar.set_length(seen.bytes_total);
                bar.set_position(seen.bytes_done);
                bar.set_message(format!("layers {}/{} {}", seen.layers_done, seen.layers_total, seen.message));
            }
            Display::Lines { last } => {
                let now = (seen.phase_name().to_string(), seen.message.clone());
                if *last != now {
                    eprintln!("{}: {}", seen.phase_name(), seen.message);
                    *last = now;
                }
            }
        }
    }

    /// Show the warnings of `seen` from the `shown`-th on, as `Warning: …`
    /// lines on stderr (also with `--quiet`); `--json` carries them in
    /// its events instead.
    fn warn(&mut self, seen: &Seen, shown: &mut usize) {
        let new = seen.warnings.get(*shown..).unwrap_or_default();
        *shown = seen.warnings.len();
        if new.is_empty() || matches!(self, Display::Json) {
            return;
        }
        let mut text = Vec::new();
        for w in new {
            let _ = write_warning(&mut text, w);
        }
        let text = String::from_utf8_lossy(&text);
        match self {
            Display::Bar(bar) => bar.suspend(|| eprint!("{text}")),
            _ => eprint!("{text}"),
        }
    }

    /// Get the bar out of the way of a question.
    fn pause(&mut self) {
        if let Display::Bar(bar) = self {
            bar.suspend(|| {});
        }
    }

    fn done(&mut self, seen: &Seen) {
        if let Display::Bar(bar) = self {
            bar.finish_and_clear();
        }
        if seen.state == Some(JobStatus::Succeeded) && !matches!(self, Display::Quiet | Display::Json) {
            println!("{}", seen.message);
        }
    }
}

/// One warning of a job, as hostctl shows it.
fn write_warning(out: &mut impl Write, warning: &str) -> std::io::Result<()> {
    writeln!(out, "Warning: {warning}")
}

/// Writes bootc-compatible progress events (progress schema v0) to a descriptor.
struct BootcProgress {
    out: std::fs::File,
    last: Option<Seen>,
}

impl BootcProgress {
    fn open(fd: i32) -> Result<BootcProgress, Error> {
        check_progress_fd(fd)?;
        // The caller handed this descriptor to us (checked in main, before
        // anything of our own was opened); we own it from here on.
        #[allow(unsafe_code)]
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut p = BootcProgress { out: std::fs::File::from(owned), last: None };
        p.write(json!({"type": "Start", "version": "0.1.0"}));
        Ok(p)
    }

    fn write(&mut self, v: serde_json::Value) {
        let _ = writeln!(self.out, "{v}");
    }

    fn event(&mut self, seen: &Seen) {
        let last = self.last.replace(seen.clone()).unwrap_or_default();
        let bytes_moved = (seen.bytes_done, seen.bytes_total, seen.layers_done)
            != (last.bytes_done, last.bytes_total, last.layers_done);
        if seen.bytes_total > 0 && bytes_moved {
            self.write(json!({
                "type": "ProgressBytes", "task": "pulling", "description": "Fetching layers", "id": "image",
                "bytesCached": 0, "bytes": seen.bytes_done, "bytesTotal": seen.bytes_total,
                "stepsCached": 0, "steps": seen.layers_done, "stepsTotal": seen.layers_total,
                "subtasks": [],
            }));
        }
        if (&seen.phase, &seen.message, &seen.state) != (&last.phase, &last.message, &last.state) {
            let step = seen.phase.and_then(|p| Phase::ALL.iter().position(|known| *known == p)).unwrap_or(0);
            self.write(json!({
                "type": "ProgressSteps", "task": seen.phase_name(), "description": seen.message, "id": "job",
                "stepsCached": 0, "steps": step + usize::from(seen.finished()), "stepsTotal": Phase::ALL.len(),
                "subtasks": [],
            }));
        }
    }
}

/// `--progress-fd` must name a descriptor the caller passed: 3 or higher, open.
pub fn check_progress_fd(fd: i32) -> Result<(), Error> {
    if fd < 3 {
        return Err(Error::InvalidArgument(format!("--progress-fd {fd} must be 3 or higher")));
    }
    if !std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists() {
        return Err(Error::InvalidArgument(format!("--progress-fd {fd} is not open")));
    }
    Ok(())
}

/// How following a job ended.
pub enum End {
    /// The job finished: its message, or its error.
    Finished(Result<String, Error>),
    /// The user interrupted and chose to leave the job running.
    Detached,
}

/// Follow the job at `path` to its end.
pub async fn follow(conn: &Connection, path: &OwnedObjectPath, output: &JobOutput) -> Result<End, Error> {
    let mut bootc = output.progress_fd.map(BootcProgress::open).transpose()?;
    let props = PropertiesProxy::builder(conn)
        .destination(BUS_NAME)
        .path(path.clone())
        .build()
        .await?;
    // Subscribe first, then read: no change can fall in between.
    let mut changes = props.receive_properties_changed().await?;
    let bus = zbus::fdo::DBusProxy::new(conn).await?;
    let mut owner_changes = bus
        .receive_name_owner_changed_with_args(&[(0, hostd_interface::names::BUS_NAME)])
        .await?;
    let mut hostd_gone = !bus
        .name_has_owner(hostd_interface::names::BUS_NAME.try_into().expect("valid bus name"))
        .await
        .map_err(|e| Error::ZBus(e.into()))?;
    let mut seen = Seen::default();
    seen.merge(all_properties(conn, path).await?);
    let mut display = Display::new(output);
    let mut cancel_sent = false;
    let mut warned = 0;
    loop {
        display.show(&seen);
        display.warn(&seen, &mut warned);
        if let Some(b) = bootc.as_mut() {
            b.event(&seen);
        }
        if seen.finished() || hostd_gone {
            break;
        }
        tokio::select! {
            owner = owner_changes.next() => {
                hostd_gone = owner.is_none_or(|o| o.args().is_ok_and(|a| a.new_owner().is_none()));
            }
            change = changes.next() => {
                let Some(change) = change else { break };
                let body = change.message().body();
                if let Ok((_, changed, _)) = body.deserialize::<(String, JobProperties, Vec<String>)>() {
                    seen.merge(changed);
                }
            }
            _ = tokio::signal::ctrl_c() => {
                display.pause();
                if !cancel_sent && ask_to_cancel(path).await {
                    JobProxy::builder(conn).path(path.clone()).build().await?.cancel().await?;
                    eprintln!("Cancelling; waiting for the job to stop at a safe point.");
                    cancel_sent = true;
                    continue;
                }
                display.done(&seen);
                eprintln!("The job keeps running ({}); `hostctl cancel` stops it.", path.as_str());
                return Ok(End::Detached);
            }
        }
    }
    display.done(&seen);
    Ok(End::Finished(match seen.state {
        Some(JobStatus::Succeeded) => Ok(seen.message),
        Some(JobStatus::Failed | JobStatus::Cancelled) => Err(Error::from_name(&seen.error_name, seen.error_message)),
        // The reboot the job asked for took hostd (and the bus) down.
        _ if seen.phase == Some(Phase::Rebooting) => Ok("The update is queued; the system is rebooting into it.".to_string()),
        _ => Err(lost(&seen)),
    }))
}

/// Every property of the job at `path` (`GetAll`).
async fn all_properties(conn: &Connection, path: &OwnedObjectPath) -> Result<JobProperties, Error> {
    let reply = conn
        .call_method(Some(BUS_NAME), path, Some("org.freedesktop.DBus.Properties"), "GetAll", &(JOB_INTERFACE,))
        .await?;
    reply.body().deserialize().map_err(Error::ZBus)
}

/// hostd went away before publishing the job's end (killed, crashed, or
/// the system is going down).
fn lost(seen: &Seen) -> Error {
    let last = match seen.phase {
        None => String::new(),
        Some(phase) => format!(" (last seen: {phase}: {})", seen.message),
    };
    Error::Failed(format!(
        "hostd stopped before the job ended{last}; its result is unknown, `hostctl status` shows the deployments"
    ))
}

/// Ask on the terminal whether to cancel the job; without a terminal, or on
/// a second Ctrl-C, the answer is no: a job outlives its client.
async fn ask_to_cancel(path: &OwnedObjectPath) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("\nCancel job {}? [y/N] ", path.as_str());
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    });
    tokio::select! {
        line = answer => matches!(line, Ok(Ok(l)) if l.trim().eq_ignore_ascii_case("y") || l.trim().eq_ignore_ascii_case("yes")),
        _ = tokio::signal::ctrl_c() => {
            eprintln!();
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_taken_from_changes_and_written_one_a_line() {
        let mut seen = Seen::default();
        seen.merge(JobProperties { warnings: Some(vec!["/opt (1 path) is not deployed.".into()]), ..Default::default() });
        seen.merge(JobProperties { message: Some("done".into()), ..Default::default() });
        assert_eq!(seen.warnings, ["/opt (1 path) is not deployed."], "a change without Warnings keeps them");
        let mut out = Vec::new();
        write_warning(&mut out, &seen.warnings[0]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "Warning: /opt (1 path) is not deployed.\n");
    }
}
