//! Following a job: subscribe to its property changes, then read its state,
//! and show progress as a bar (terminal), plain lines, or JSON events.

use std::io::{IsTerminal, Write};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hostd_interface::job::{JobKind, JobProperties, JobStatus, Layer, LayerKind, Phase};
use hostd_interface::names::{BUS_NAME, JOB_INTERFACE};
use hostd_interface::proxy::JobProxy;
use hostd_interface::Error;
use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressStyle};
use serde_json::json;
use zbus::fdo::PropertiesProxy;
use zbus::{Connection, OwnedObjectPath};

use crate::cli::JobOutput;
use crate::output::{err, errln, outln};

/// A job's properties as last seen.
#[derive(Debug, Default, Clone, PartialEq)]
struct Seen {
    kind: Option<JobKind>,
    image: String,
    layers: Vec<Layer>,
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

/// How many layers a job fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LayerCounts {
    to_fetch: u32,
    total: u32,
    cached: u32,
    cached_bytes: u64,
}

impl std::fmt::Display for LayerCounts {
    /// "5 of 7 layers to fetch (2 cached)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {} layers to fetch ({} cached)", self.to_fetch, self.total, self.cached)
    }
}

impl Seen {
    /// Take what `props` carries (all of `GetAll`, or one `PropertiesChanged`).
    fn merge(&mut self, props: JobProperties) {
        let JobProperties {
            kind,
            image,
            layers,
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
        self.kind = kind.or(self.kind);
        self.state = state.or(self.state);
        self.phase = phase.or(self.phase);
        macro_rules! take {
            ($($field:ident),+) => { $( if let Some(v) = $field { self.$field = v; } )+ };
        }
        take!(image, layers, message, error_name, error_message, bytes_done, bytes_total, layers_done, layers_total, warnings);
    }

    /// What the job does, for people: "upgrade of quay.io/os:latest",
    /// "rollback".
    fn operation(&self) -> String {
        let kind = self.kind.map_or("job", JobKind::as_str);
        match self.image.as_str() {
            "" => kind.to_string(),
            image => format!("{kind} of {image}"),
        }
    }

    /// Layers: to fetch, in all, cached. Without the `Layers` list (an
    /// older hostd), the counts the job publishes.
    fn layer_counts(&self) -> LayerCounts {
        if self.layers.is_empty() {
            return LayerCounts { to_fetch: self.layers_total, total: self.layers_total, cached: 0, cached_bytes: 0 };
        }
        let cached: Vec<&Layer> = self.layers.iter().filter(|l| l.cached).collect();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        LayerCounts {
            to_fetch: count(self.layers.len() - cached.len()),
            total: count(self.layers.len()),
            cached: count(cached.len()),
            cached_bytes: cached.iter().map(|l| l.size).sum(),
        }
    }

    /// The layers fetched so far and the one being fetched, each with its
    /// bytes fetched: layers are fetched one after another in the order
    /// `Layers` lists them, so `LayersDone` and `BytesDone` place them.
    fn fetched_layers(&self) -> Vec<(&Layer, u64)> {
        let mut left = self.bytes_done;
        let done = usize::try_from(self.layers_done).unwrap_or(usize::MAX);
        let mut fetched = Vec::new();
        for (i, layer) in self.layers.iter().filter(|l| !l.cached).enumerate() {
            let bytes = if i < done { layer.size } else { left.min(layer.size) };
            if i > done || (i == done && bytes == 0) {
                break;
            }
            left = left.saturating_sub(bytes);
            fetched.push((layer, bytes));
        }
        fetched
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
    /// `--json`: the last object printed, so an unchanged one is not repeated.
    Json { last: String },
    /// A terminal: a spinner while there is nothing to measure, a bar while
    /// layers are fetched.
    Bar { bar: ProgressBar, fetching: bool, started: Instant },
    Lines { last: (String, String) },
}

/// How often the spinner moves while nothing else changes.
const TICK: Duration = Duration::from_millis(120);

/// The bar's look while nothing is measured: no bar, no bytes.
fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:>9} {wide_msg}").expect("valid template")
}

/// The bar's look while layers are fetched.
fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} {prefix:>9} {wide_msg}\n            [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .expect("valid template")
    .progress_chars("=> ")
}

/// One `--json` object: the job's properties as seen.
fn json_event(seen: &Seen) -> serde_json::Value {
    json!({
        "state": seen.state_name(), "phase": seen.phase_name(), "image": seen.image, "message": seen.message,
        "bytesDone": seen.bytes_done, "bytesTotal": seen.bytes_total,
        "layersDone": seen.layers_done, "layersTotal": seen.layers_total,
        "errorName": seen.error_name, "errorMessage": seen.error_message,
        "warnings": seen.warnings,
    })
}

/// The bar's message: what is fetched and how much of it (first, so a
/// narrow terminal cuts the image name rather than the counts).
fn bar_message(seen: &Seen) -> String {
    match (seen.phase, seen.image.as_str()) {
        (Some(Phase::Pulling), "") => format!("{}, {} done", seen.layer_counts(), seen.layers_done),
        (Some(Phase::Pulling), image) => format!("{}, {} done, from {image}", seen.layer_counts(), seen.layers_done),
        (_, "") => seen.message.clone(),
        (_, image) => format!("{}: {image}", seen.message),
    }
}

/// A duration for people: tenths of seconds under a minute, else indicatif's words.
fn took(elapsed: Duration) -> String {
    if elapsed < Duration::from_secs(60) {
        format!("{:.1} s", elapsed.as_secs_f64())
    } else {
        HumanDuration(elapsed).to_string()
    }
}

/// The closing line on a terminal: what was fetched, in human units, and
/// how long the job took.
fn summary(seen: &Seen, elapsed: Duration) -> String {
    let took = took(elapsed);
    let operation = seen.operation();
    if seen.state != Some(JobStatus::Succeeded) {
        return format!("The {operation} ended {} after {took}.", seen.state_name());
    }
    if seen.bytes_total == 0 {
        return format!("The {operation} took {took}.");
    }
    let counts = seen.layer_counts();
    format!(
        "The {operation} fetched {} in {} layers ({} cached) in {took}.",
        HumanBytes(seen.bytes_total),
        counts.to_fetch,
        counts.cached,
    )
}

impl Display {
    fn new(output: &JobOutput) -> Display {
        if output.quiet {
            Display::Quiet
        } else if output.json {
            Display::Json { last: String::new() }
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(spinner_style());
            bar.enable_steady_tick(TICK);
            Display::Bar { bar, fetching: false, started: Instant::now() }
        } else {
            Display::Lines { last: (String::new(), String::new()) }
        }
    }

    fn show(&mut self, seen: &Seen) {
        match self {
            Display::Quiet => {}
            Display::Json { last } => {
                let line = json_event(seen).to_string();
                if *last != line {
                    outln!("{line}");
                    *last = line;
                }
            }
            Display::Bar { bar, fetching, .. } => {
                let measured = seen.phase == Some(Phase::Pulling) && seen.bytes_total > 0;
                // Length first: a bar of length 0 would be drawn full.
                if measured {
                    bar.set_length(seen.bytes_total);
                    bar.set_position(seen.bytes_done);
                }
                if measured != *fetching {
                    bar.set_style(if measured { bytes_style() } else { spinner_style() });
                    *fetching = measured;
                }
                bar.set_prefix(seen.phase_name());
                bar.set_message(bar_message(seen));
            }
            Display::Lines { last } => {
                let now = (seen.phase_name().to_string(), seen.message.clone());
                if *last != now {
                    errln!("{}: {}", seen.phase_name(), seen.message);
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
        if new.is_empty() || matches!(self, Display::Json { .. }) {
            return;
        }
        let mut text = Vec::new();
        for w in new {
            let _ = write_warning(&mut text, w);
        }
        let text = String::from_utf8_lossy(&text);
        match self {
            Display::Bar { bar, .. } => bar.suspend(|| err!("{text}")),
            _ => err!("{text}"),
        }
    }

    /// Get the bar out of the way of a question: cleared, and no spinner
    /// ticking over the question until [`Display::resume`].
    fn pause(&mut self) {
        if let Display::Bar { bar, .. } = self {
            bar.disable_steady_tick();
            bar.suspend(|| {});
        }
    }

    /// The spinner ticks again after a question.
    fn resume(&mut self) {
        if let Display::Bar { bar, .. } = self {
            bar.enable_steady_tick(TICK);
        }
    }

    fn done(&mut self, seen: &Seen) {
        if let Display::Bar { bar, started, .. } = self {
            bar.finish_and_clear();
            if seen.finished() {
                errln!("{}", summary(seen, started.elapsed()));
            }
        }
        if seen.state == Some(JobStatus::Succeeded) && !matches!(self, Display::Quiet | Display::Json { .. }) {
            outln!("{}", seen.message);
        }
    }
}

/// One warning of a job, as hostctl shows it.
fn write_warning(out: &mut impl Write, warning: &str) -> std::io::Result<()> {
    writeln!(out, "Warning: {warning}")
}

/// Writes bootc-compatible progress events (progress schema v0) to a
/// descriptor, as `bootc upgrade --progress-fd` does: `ProgressBytes` with
/// one subtask per fetched layer while layers are fetched, `ProgressSteps`
/// at each phase, and a last `ProgressSteps` at the end, at `stepsTotal`
/// when the job succeeded.
struct BootcProgress {
    out: std::fs::File,
    last: Option<Seen>,
    /// The phases seen so far, for the steps' subtasks.
    phases: Vec<(Phase, String)>,
}

impl BootcProgress {
    fn open(fd: i32) -> Result<BootcProgress, Error> {
        check_progress_fd(fd)?;
        // Checked open in main, before anything of hostctl's own was opened,
        // so `fd` is the caller's; a duplicate of it is written to, which
        // leaves stdout (fd 1 is allowed) to the rest of hostctl.
        #[expect(unsafe_code, reason = "the descriptor was checked to be open and is only borrowed to duplicate it")]
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let owned = borrowed
            .try_clone_to_owned()
            .map_err(|e| Error::InvalidArgument(format!("--progress-fd {fd}: {e}")))?;
        let mut p = BootcProgress { out: std::fs::File::from(owned), last: None, phases: Vec::new() };
        p.write(&json!({"type": "Start", "version": "0.1.0"}));
        Ok(p)
    }

    /// One event, one line, one write: lines of a pipe shared with stdout
    /// never interleave.
    fn write(&mut self, v: &serde_json::Value) {
        let _ = self.out.write_all(format!("{v}\n").as_bytes());
    }

    fn event(&mut self, seen: &Seen) {
        for v in self.events(seen) {
            self.write(&v);
        }
    }

    /// The events `seen` adds to what was last seen.
    fn events(&mut self, seen: &Seen) -> Vec<serde_json::Value> {
        let last = self.last.replace(seen.clone()).unwrap_or_default();
        let id = if seen.image.is_empty() { seen.kind.map_or("job", JobKind::as_str) } else { seen.image.as_str() };
        let mut events = Vec::new();
        let bytes_moved = (seen.bytes_done, seen.bytes_total, seen.layers_done, seen.layers.len())
            != (last.bytes_done, last.bytes_total, last.layers_done, last.layers.len());
        // In `bound-images` the layer counts count bound images, not the
        // image's layers: bootc's byte events describe the image's pull only.
        if seen.bytes_total > 0 && bytes_moved && seen.phase != Some(Phase::BoundImages) {
            let counts = seen.layer_counts();
            let subtasks: Vec<serde_json::Value> = seen
                .fetched_layers()
                .into_iter()
                .map(|(layer, bytes)| {
                    let (subtask, what) = match layer.kind {
                        LayerKind::Chunk => ("ostree_chunk", "OSTree Chunk"),
                        LayerKind::Derived => ("ostree_derived", "Derived Layer"),
                    };
                    json!({
                        "subtask": subtask, "description": format!("{what}: {}", layer.digest), "id": layer.digest,
                        "bytesCached": 0, "bytes": bytes, "bytesTotal": layer.size,
                    })
                })
                .collect();
            events.push(json!({
                "type": "ProgressBytes", "task": "pulling", "description": format!("Pulling image: {id}"), "id": id,
                "bytesCached": counts.cached_bytes,
                "bytes": counts.cached_bytes + seen.bytes_done,
                "bytesTotal": counts.cached_bytes + seen.bytes_total,
                "stepsCached": counts.cached,
                "steps": counts.cached + seen.layers_done,
                "stepsTotal": counts.cached + seen.layers_total.max(counts.to_fetch),
                "subtasks": subtasks,
            }));
        }
        if let Some(phase) = seen.phase {
            match self.phases.last_mut() {
                Some((p, message)) if *p == phase => message.clone_from(&seen.message),
                _ => self.phases.push((phase, seen.message.clone())),
            }
        }
        if (&seen.phase, &seen.message, &seen.state) != (&last.phase, &last.message, &last.state) {
            let total = Phase::ALL.len();
            let position = seen.phase.and_then(|p| Phase::ALL.iter().position(|known| *known == p)).unwrap_or(0);
            let succeeded = seen.state == Some(JobStatus::Succeeded);
            let steps = if succeeded { total } else { position };
            let description = match seen.state {
                Some(JobStatus::Failed | JobStatus::Cancelled) => format!("{}: {}", seen.state_name(), seen.error_message),
                _ => seen.message.clone(),
            };
            let n = self.phases.len();
            let subtasks: Vec<serde_json::Value> = self
                .phases
                .iter()
                .enumerate()
                .map(|(i, (phase, message))| {
                    json!({
                        "subtask": phase.as_str(), "description": message, "id": phase.as_str(),
                        "completed": i + 1 < n || succeeded,
                    })
                })
                .collect();
            events.push(json!({
                "type": "ProgressSteps", "task": seen.phase_name(), "description": description, "id": id,
                "stepsCached": 0, "steps": steps, "stepsTotal": total,
                "subtasks": subtasks,
            }));
        }
        events
    }
}

/// `--progress-fd` must name a descriptor that is open for writing (any,
/// stdout too): events written to a read-only one would be lost unseen.
pub fn check_progress_fd(fd: i32) -> Result<(), Error> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = (fd >= 0).then(|| fcntl(fd, FcntlArg::F_GETFL).ok()).flatten();
    let Some(flags) = flags else {
        return Err(Error::InvalidArgument(format!("--progress-fd {fd} is not an open file descriptor")));
    };
    if OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE == OFlag::O_RDONLY {
        return Err(Error::InvalidArgument(format!("--progress-fd {fd} is open for reading only")));
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
                if !cancel_sent && ask_to_cancel(&seen.operation()).await {
                    JobProxy::builder(conn).path(path.clone()).build().await?.cancel().await?;
                    errln!("Cancelling the {}; waiting for it to stop at a safe point.", seen.operation());
                    cancel_sent = true;
                    display.resume();
                    continue;
                }
                display.done(&seen);
                errln!(
                    "The {} keeps running in hostd; `hostctl watch` follows it again, `hostctl cancel` stops it.",
                    seen.operation()
                );
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
pub async fn all_properties(conn: &Connection, path: &OwnedObjectPath) -> Result<JobProperties, Error> {
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
async fn ask_to_cancel(operation: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    err!("\nCancel the {operation}? [y/N] ");
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    });
    tokio::select! {
        line = answer => matches!(line, Ok(Ok(l)) if l.trim().eq_ignore_ascii_case("y") || l.trim().eq_ignore_ascii_case("yes")),
        _ = tokio::signal::ctrl_c() => {
            errln!();
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(digest: &str, size: u64, cached: bool) -> Layer {
        Layer { digest: digest.into(), kind: LayerKind::Chunk, size, cached }
    }

    fn pulling(bytes_done: u64, layers_done: u32) -> Seen {
        Seen {
            kind: Some(JobKind::Upgrade),
            image: "quay.io/os:latest".into(),
            layers: vec![layer("a", 100, true), layer("b", 50, false), layer("c", 30, false), layer("d", 20, true)],
            state: Some(JobStatus::Running),
            phase: Some(Phase::Pulling),
            bytes_done,
            bytes_total: 80,
            layers_done,
            layers_total: 2,
            ..Default::default()
        }
    }

    #[test]
    fn layers_are_placed_by_the_counts_one_after_another() {
        let seen = pulling(60, 1);
        assert_eq!(seen.layer_counts().to_string(), "2 of 4 layers to fetch (2 cached)");
        assert_eq!(seen.layer_counts().cached_bytes, 120);
        let fetched: Vec<(&str, u64)> = seen.fetched_layers().into_iter().map(|(l, b)| (l.digest.as_str(), b)).collect();
        assert_eq!(fetched, [("b", 50), ("c", 10)]);
        assert_eq!(pulling(0, 0).fetched_layers().len(), 0, "nothing fetched yet");
        assert_eq!(pulling(50, 1).fetched_layers().len(), 1, "the next layer has not started");
    }

    #[test]
    fn bootc_events_count_cached_layers_and_end_at_the_last_step() {
        let mut progress = Vec::new();
        let mut events = |seen: &Seen, p: &mut BootcProgress| {
            progress.extend(p.events(seen));
        };
        let file = std::fs::File::open("/dev/null").unwrap();
        let mut p = BootcProgress { out: file, last: None, phases: Vec::new() };
        events(&pulling(60, 1), &mut p);
        let mut done = pulling(80, 2);
        events(&done, &mut p);
        done.state = Some(JobStatus::Succeeded);
        done.phase = Some(Phase::Staging);
        done.message = "Deployed v2".into();
        events(&done, &mut p);
        let bytes: Vec<&serde_json::Value> = progress.iter().filter(|e| e["type"] == "ProgressBytes").collect();
        let last = bytes.last().unwrap();
        assert_eq!((last["bytesCached"].as_u64(), last["bytes"].as_u64(), last["bytesTotal"].as_u64()), (Some(120), Some(200), Some(200)));
        assert_eq!((last["stepsCached"].as_u64(), last["steps"].as_u64(), last["stepsTotal"].as_u64()), (Some(2), Some(4), Some(4)));
        assert_eq!(last["id"], "quay.io/os:latest");
        assert_eq!(last["subtasks"].as_array().unwrap().len(), 2);
        let steps = progress.iter().rfind(|e| e["type"] == "ProgressSteps").unwrap();
        assert_eq!(steps["steps"], steps["stepsTotal"], "{steps}");
    }

    #[test]
    fn bound_image_counts_make_no_byte_event_of_the_image() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let mut p = BootcProgress { out: file, last: None, phases: Vec::new() };
        let done = pulling(80, 2);
        p.events(&done);
        // The job moves on to its bound images, counted in the layer counts.
        let bound = Seen { phase: Some(Phase::BoundImages), layers_done: 0, layers_total: 1, ..done.clone() };
        let events = p.events(&bound);
        assert!(events.iter().all(|e| e["type"] != "ProgressBytes"), "{events:?}");
        assert!(events.iter().any(|e| e["type"] == "ProgressSteps" && e["task"] == "bound-images"), "{events:?}");
    }

    #[test]
    fn json_events_name_the_image_and_the_summary_is_in_human_units() {
        let mut display = Display::Json { last: String::new() };
        let seen = pulling(60, 1);
        display.show(&seen);
        let Display::Json { last } = &display else { unreachable!() };
        assert!(last.contains("\"image\":\"quay.io/os:latest\""), "{last}");
        let mut done = pulling(80, 2);
        done.state = Some(JobStatus::Succeeded);
        assert_eq!(
            summary(&done, Duration::from_secs(3)),
            "The upgrade of quay.io/os:latest fetched 80 B in 2 layers (2 cached) in 3.0 s."
        );
        done.state = Some(JobStatus::Cancelled);
        assert_eq!(summary(&done, Duration::from_secs(3)), "The upgrade of quay.io/os:latest ended cancelled after 3.0 s.");
    }

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
