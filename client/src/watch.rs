//! Following a job: subscribe to its property changes, then read its state,
//! and show progress as a bar (terminal), plain lines, or JSON events.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use futures_util::StreamExt;
use hostd_interface::proxy::JobProxy;
use hostd_interface::Error;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use zbus::fdo::PropertiesProxy;
use zbus::{Connection, OwnedObjectPath, OwnedVariant};

use crate::cli::JobOutput;

/// A job's properties as last seen.
#[derive(Debug, Default, Clone, PartialEq)]
struct Seen {
    state: String,
    phase: String,
    message: String,
    bytes_done: u64,
    bytes_total: u64,
    layers_done: u32,
    layers_total: u32,
    error_name: String,
    error_message: String,
}

impl Seen {
    fn merge(&mut self, props: &HashMap<String, OwnedVariant>) {
        for (k, v) in props {
            let s = || String::try_from(v.try_clone().ok()?).ok();
            match k.as_str() {
                "State" => self.state = s().unwrap_or_default(),
                "Phase" => self.phase = s().unwrap_or_default(),
                "Message" => self.message = s().unwrap_or_default(),
                "ErrorName" => self.error_name = s().unwrap_or_default(),
                "ErrorMessage" => self.error_message = s().unwrap_or_default(),
                "BytesDone" => self.bytes_done = u64::try_from(&**v).unwrap_or_default(),
                "BytesTotal" => self.bytes_total = u64::try_from(&**v).unwrap_or_default(),
                "LayersDone" => self.layers_done = u32::try_from(&**v).unwrap_or_default(),
                "LayersTotal" => self.layers_total = u32::try_from(&**v).unwrap_or_default(),
                _ => {}
            }
        }
    }

    fn finished(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
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
                    "state": seen.state, "phase": seen.phase, "message": seen.message,
                    "bytesDone": seen.bytes_done, "bytesTotal": seen.bytes_total,
                    "layersDone": seen.layers_done, "layersTotal": seen.layers_total,
                    "errorName": seen.error_name, "errorMessage": seen.error_message,
                });
                println!("{line}");
            }
            Display::Bar(bar) => {
                bar.set_prefix(seen.phase.clone());
                bar.set_length(seen.bytes_total);
                bar.set_position(seen.bytes_done);
                bar.set_message(format!("layers {}/{} {}", seen.layers_done, seen.layers_total, seen.message));
            }
            Display::Lines { last } => {
                let now = (seen.phase.clone(), seen.message.clone());
                if *last != now {
                    eprintln!("{}: {}", seen.phase, seen.message);
                    *last = now;
                }
            }
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
        if seen.state == "succeeded" && !matches!(self, Display::Quiet | Display::Json) {
            println!("{}", seen.message);
        }
    }
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
            let step = PHASES.iter().position(|p| *p == seen.phase).unwrap_or(0);
            self.write(json!({
                "type": "ProgressSteps", "task": seen.phase, "description": seen.message, "id": "job",
                "stepsCached": 0, "steps": step + usize::from(seen.finished()), "stepsTotal": PHASES.len(),
                "subtasks": [],
            }));
        }
    }
}

/// Job phases in the order a job passes through them.
const PHASES: [&str; 6] = ["checking", "pulling", "importing", "staging", "cleanup", "rebooting"];

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
        .destination(hostd_interface::names::BUS_NAME)
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
    let iface = zbus::names::InterfaceName::from_static_str_unchecked(hostd_interface::names::JOB_INTERFACE);
    let mut seen = Seen::default();
    let all = props.get_all(iface).await.map_err(|e| Error::ZBus(e.into()))?;
    seen.merge(&all);
    let mut display = Display::new(output);
    let mut cancel_sent = false;
    loop {
        display.show(&seen);
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
                if let Ok(args) = change.args() {
                    let map: HashMap<String, OwnedVariant> = args
                        .changed_properties()
                        .iter()
                        .filter_map(|(k, v)| Some((k.to_string(), v.try_to_owned().ok()?)))
                        .collect();
                    seen.merge(&map);
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
    Ok(End::Finished(match seen.state.as_str() {
        "succeeded" => Ok(seen.message),
        "failed" | "cancelled" => Err(Error::from_name(&seen.error_name, seen.error_message)),
        // The reboot the job asked for took hostd (and the bus) down.
        _ if seen.phase == "rebooting" => Ok("The update is queued; the system is rebooting into it.".to_string()),
        _ => Err(lost(&seen)),
    }))
}

/// hostd went away before publishing the job's end (killed, crashed, or
/// the system is going down).
fn lost(seen: &Seen) -> Error {
    let last = if seen.phase.is_empty() { String::new() } else { format!(" (last seen: {}: {})", seen.phase, seen.message) };
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
