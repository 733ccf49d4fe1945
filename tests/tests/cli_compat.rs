//! Scripts and progress consumers written for bootc run unchanged against
//! `hostctl`: `status --format`/`--format-version`, YAML when piped,
//! `--booted`, `upgrade --check` exit codes, the `--progress-fd` stream
//! (bootc's progress schema, per-layer subtasks, cached layers, the last
//! step), and what a terminal user meets: quiet exit on a closed pipe,
//! `--json` without repeats, a running job in `status` and `hostctl watch`.
//! Everything is validated against ../shared/reference.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hostd::failpoint::{held_message, points};
use hostd_tests::machine::{Extras, TestMachine};
use hostd_tests::offline::{host_with_v1, status_json, text};
use hostd_tests::registry::oci_layer_digests;
use hostd_tests::{binary, schema};

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

/// Run `command` with descriptor `target` writing to a new file at `path`.
fn with_fd_to(command: &mut Command, target: i32, path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    // SAFETY: only async-signal-safe calls between fork and exec; the file
    // lives in the closure, which outlives the fork.
    #[expect(unsafe_code, reason = "pre_exec runs between fork and exec")]
    unsafe {
        command.pre_exec(move || {
            let fd = file.as_raw_fd();
            if fd == target {
                nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
                    .map_err(std::io::Error::from)?;
            } else {
                nix::unistd::dup2(fd, target).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
}

/// Each line of `text` as JSON, each validated against bootc's progress schema.
fn progress_events(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| {
            let event: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            schema::validate("bootc-progress-v0.schema.json", &event).unwrap_or_else(|e| panic!("{e}\n{l}"));
            event
        })
        .collect()
}

fn last_of<'a>(events: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    events.iter().rfind(|e| e["type"] == kind).unwrap_or_else(|| panic!("no {kind} event in {events:#?}"))
}

/// Top-level and `status` keys of bootc's status examples (YAML).
fn example_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let dir = schema::reference_dir().join("bootc-status-examples");
    let (mut top, mut status) = (BTreeSet::new(), BTreeSet::new());
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        // serde_yaml's own value: the examples tag enums (`!ostreeRemote`).
        let doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let names = |v: &serde_yaml::Value| -> Vec<String> {
            v.as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_string()).collect()
        };
        top.extend(names(&doc));
        status.extend(names(&doc["status"]));
    }
    (top, status)
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

#[tokio::test]
async fn bootc_scripts_get_bootc_s_formats_documents_and_exit_codes() {
    let h = host_with_v1("512m", &[]).await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    let served: serde_json::Value = serde_json::from_str(&status_json(&conn).await).unwrap();

    // `--format json --format-version 1`: the Host document, as served.
    let out = machine.hostctl(None, &["status", "--format", "json", "--format-version", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    schema::validate("bootc-host-v1.schema.json", &json).unwrap();
    assert_eq!(json, served);
    for same in [&["status", "--json"][..], &["status", "--format=json", "--format-version=0"]] {
        let out = machine.hostctl(None, same);
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), served, "{same:?}");
    }

    // Piped with no format: YAML, the same document, shaped like bootc's examples.
    let out = machine.hostctl(None, &["status"]);
    assert!(out.status.success(), "{}", text(&out));
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.starts_with("apiVersion: org.containers.bootc/v1\n"), "{yaml}");
    let from_yaml: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    schema::validate("bootc-host-v1.schema.json", &from_yaml).unwrap();
    assert_eq!(from_yaml["spec"], served["spec"]);
    assert_eq!(from_yaml["status"]["otherDeployments"], served["status"]["otherDeployments"]);
    let (example_top, example_status) = example_keys();
    assert_eq!(keys(&from_yaml), example_top, "the examples' top-level keys");
    let unknown: Vec<String> = keys(&from_yaml["status"])
        .difference(&example_status)
        .filter(|k| *k != "otherDeployments") // v1 lists an offline sysroot's deployments there
        .cloned()
        .collect();
    assert!(unknown.is_empty(), "status keys bootc's examples do not have: {unknown:?}");
    // Text only when asked for (or on a terminal).
    let out = machine.hostctl(None, &["status", "--format", "humanreadable"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Offline sysroot"), "{}", text(&out));
    // Only versions 0 and 1 exist.
    let out = machine.hostctl(None, &["status", "--format", "json", "--format-version", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // `--booted` with a document format: a Host document with only the
    // booted entry; an offline sysroot has none.
    let out = machine.hostctl(None, &["status", "--booted", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let booted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    schema::validate("bootc-host-v1.schema.json", &booted).unwrap();
    assert_eq!((booted["kind"].as_str(), &booted["spec"]), (Some("BootcHost"), &served["spec"]));
    for slot in ["booted", "staged", "rollback"] {
        assert!(booted["status"][slot].is_null(), "{slot}: {booted}");
    }
    assert_eq!(booted["status"]["otherDeployments"], serde_json::json!([]), "{booted}");
    let out = machine.hostctl(None, &["status", "--booted"]);
    let booted_yaml: serde_json::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(booted_yaml, booted, "piped --booted is the same document as YAML");

    // `upgrade --check`: 0 with or without an update; --exit-code keeps 100.
    let out = machine.hostctl(None, &["upgrade", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("No update available."), "{}", text(&out));
    h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let out = machine.hostctl(None, &["upgrade", "--check"]);
    assert_eq!(out.status.code(), Some(0), "an update is no failure, as for bootc: {}", text(&out));
    assert!(text(&out).contains("Update available: v2"), "{}", text(&out));
    let out = machine.hostctl(None, &["upgrade", "--check", "--exit-code"]);
    assert_eq!(out.status.code(), Some(100), "{}", text(&out));
    let out = machine.hostctl(None, &["upgrade", "--exit-code"]);
    assert_eq!(out.status.code(), Some(2), "--exit-code only goes with --check: {}", text(&out));
}

#[tokio::test]
async fn progress_fd_streams_bootc_events_with_a_subtask_per_fetched_layer_and_the_cached_ones_counted() {
    let h = host_with_v1("512m", &[("data", 1 << 20), ("tools", 1 << 20)]).await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let layers_v1 = oci_layer_digests(&h.builder.oci_dir, "latest").unwrap();
    let v2 = h.builder.build("v2", &["kernel", "tools", "data"], &BTreeMap::new()).await.unwrap();
    let layers_v2 = oci_layer_digests(&h.builder.oci_dir, "latest").unwrap();
    let fetched: BTreeSet<&String> = layers_v2.iter().filter(|d| !layers_v1.contains(d)).collect();
    let cached = layers_v2.len() - fetched.len();
    // 7 layers (5 components, the rest, the commit): 2 unchanged.
    assert_eq!((fetched.len(), layers_v2.len()), (5, 7), "v2 changes 5 of 7 layers: {layers_v2:?}");

    // Descriptor 5, as a caller hands one over.
    let progress = h.sysroot.dir.path().join("progress.jsonl");
    let mut command = machine.command(binary("hostctl"), None);
    command.args(["upgrade", "--progress-fd", "5"]).stdin(Stdio::null());
    with_fd_to(&mut command, 5, &progress);
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), machine.log());
    let events = progress_events(&std::fs::read_to_string(&progress).unwrap());
    assert_eq!(events[0]["type"], "Start");

    let image = format!("oci:{}", h.builder.oci_name());
    let bytes = last_of(&events, "ProgressBytes");
    assert_eq!(bytes["id"], image.as_str(), "the image reference names the pull: {bytes}");
    let subtasks = bytes["subtasks"].as_array().unwrap();
    let ids: BTreeSet<&String> =
        subtasks.iter().map(|s| s["id"].as_str().unwrap()).map(|d| layers_v2.iter().find(|l| *l == d).unwrap()).collect();
    assert_eq!(ids, fetched, "one subtask per fetched layer: {bytes}");
    for s in subtasks {
        assert_eq!(s["bytes"], s["bytesTotal"], "every fetched layer complete: {s}");
        assert!(s["bytesTotal"].as_u64().unwrap() > 0, "{s}");
    }
    assert_eq!(bytes["stepsCached"].as_u64(), Some(cached as u64), "{bytes}");
    assert!(bytes["bytesCached"].as_u64().unwrap() > 0, "{bytes}");
    assert_eq!((&bytes["steps"], &bytes["bytes"]), (&bytes["stepsTotal"], &bytes["bytesTotal"]), "{bytes}");
    assert_eq!(bytes["stepsTotal"].as_u64(), Some(layers_v2.len() as u64), "{bytes}");
    let subtask_bytes: u64 = subtasks.iter().map(|s| s["bytes"].as_u64().unwrap()).sum();
    assert_eq!(
        subtask_bytes + bytes["bytesCached"].as_u64().unwrap(),
        bytes["bytesTotal"].as_u64().unwrap(),
        "fetched and cached bytes make up the image: {bytes}"
    );
    // Layer by layer: each ProgressBytes has at most one unfinished subtask.
    for e in events.iter().filter(|e| e["type"] == "ProgressBytes") {
        let open = e["subtasks"].as_array().unwrap().iter().filter(|s| s["bytes"] != s["bytesTotal"]).count();
        assert!(open <= 1, "{e}");
    }
    let steps = last_of(&events, "ProgressSteps");
    assert_eq!(steps["steps"], steps["stepsTotal"], "a successful run ends at stepsTotal: {steps}");
    assert!(steps["subtasks"].as_array().unwrap().iter().all(|s| s["completed"] == true), "{steps}");
    assert_eq!(hostd_tests::offline::deployed(&machine.connect().await.unwrap()).await[0], hostd_tests::offline::vd(&v2));

    // Descriptor 1, stdout, with --quiet: only the events there; a failed
    // job ends the stream with a last event saying so.
    let missing = "/nonexistent/hostd/os:latest";
    let out = machine.hostctl(None, &["switch", "--transport", "oci", missing, "--progress-fd", "1", "--quiet"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let events = progress_events(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(events[0]["type"], "Start");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "ProgressSteps", "{events:#?}");
    assert!(last["description"].as_str().unwrap().starts_with("failed: "), "{last}");
    assert!(last["steps"].as_u64() < last["stepsTotal"].as_u64(), "{last}");
    assert_eq!(last["id"], format!("oci:{missing}"), "{last}");

    // A descriptor that is not open is refused before anything starts.
    let out = machine.hostctl(None, &["upgrade", "--progress-fd", "9"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(text(&out).contains("--progress-fd 9 is not an open file descriptor"), "{}", text(&out));
    // Nor is one open for reading only (stdin from /dev/null): its events would be lost.
    let out = machine.hostctl(None, &["upgrade", "--progress-fd", "0"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(text(&out).contains("--progress-fd 0 is open for reading only"), "{}", text(&out));
}

/// Start hostctl with its stdout a pipe whose reader reads `lines` lines
/// and then closes it (what `| head -N` does); its output once it ended.
fn with_reader_gone_after(mut command: Command, lines: usize) -> (Output, Vec<String>) {
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut read = Vec::new();
    for _ in 0..lines {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        read.push(line);
    }
    drop(stdout);
    (child.wait_with_output().unwrap(), read)
}

/// The exit status as a shell reports it (128 + signal for a signal).
fn shell_status(out: &Output) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    out.status.code().unwrap_or_else(|| 128 + out.status.signal().unwrap())
}

#[tokio::test]
async fn a_closed_stdout_ends_hostctl_quietly_and_json_never_repeats_itself() {
    let h = host_with_v1("512m", &[("data", 1 << 20)]).await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let (_conn, proxy) = machine.manager().await.unwrap();

    // `hostctl status | head -0`: the reader is gone before anything is written.
    let (out, _) = with_reader_gone_after(
        { let mut c = machine.command(binary("hostctl"), None); c.args(["status", "--format", "humanreadable"]); c },
        0,
    );
    assert!([0, 141].contains(&shell_status(&out)), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "nothing on stderr");

    // Every verb that prints: `etc-diff` (text and JSON) and an `edit` that
    // changes nothing, with the reader gone.
    let spec = h.sysroot.dir.path().join("spec.json");
    let current = hostd_tests::offline::status_json(&machine.connect().await.unwrap()).await;
    let current: serde_json::Value = serde_json::from_str(&current).unwrap();
    let document = serde_json::json!({"apiVersion": current["apiVersion"], "kind": current["kind"], "spec": current["spec"]});
    std::fs::write(&spec, document.to_string()).unwrap();
    for args in [&["etc-diff"][..], &["etc-diff", "--json"][..], &["edit", "--filename", spec.to_str().unwrap()][..]] {
        let (out, _) = with_reader_gone_after({ let mut c = machine.command(binary("hostctl"), None); c.args(args); c }, 0);
        assert!([0, 141].contains(&shell_status(&out)), "{args:?}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}: nothing on stderr");
    }

    // `hostctl switch … --json | head -1`: the job goes on in hostd.
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let image = h.builder.oci_name();
    let (out, first) = with_reader_gone_after(
        {
            let mut c = machine.command(binary("hostctl"), None);
            c.args(["switch", "--transport", "oci", &image, "--json"]);
            c
        },
        1,
    );
    assert!([0, 141].contains(&shell_status(&out)), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "nothing on stderr");
    let first: serde_json::Value = serde_json::from_str(&first[0]).unwrap();
    assert_eq!(first["state"], "running", "{first}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while proxy.active_job().await.unwrap().as_str() != "/" {
        assert!(Instant::now() < deadline, "the switch never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deployed = hostd_tests::offline::deployed(&machine.connect().await.unwrap()).await;
    assert_eq!(deployed[0], hostd_tests::offline::vd(&v2), "the switch went on without its reader");

    // `--json`: one object per change, never the same one twice in a row.
    h.builder.build("v3", &["data"], &BTreeMap::new()).await.unwrap();
    let out = machine.hostctl(None, &["upgrade", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert!(lines.len() >= 3, "{lines:#?}");
    for pair in lines.windows(2) {
        assert_ne!(pair[0], pair[1], "a repeated object");
    }
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["state"], "succeeded", "{last}");
}

#[tokio::test]
async fn status_shows_the_running_job_and_watch_follows_it_again() {
    let h = host_with_v1("512m", &[("data", 1 << 20)]).await;
    h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let point = points::AFTER_PULL;
    let extras = Extras { hostd_env: vec![("FAILPOINTS", format!("{point}=return"))], ..Extras::default() };
    let machine = TestMachine::start_with(h.sysroot.path(), CONFIG, extras).unwrap();
    let (conn, proxy) = machine.manager().await.unwrap();

    // An upgrade left running: its client is gone (stdout closed at once).
    let (out, _) = with_reader_gone_after(
        { let mut c = machine.command(binary("hostctl"), None); c.args(["upgrade", "--json"]); c },
        0,
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{}", text(&out));
    let path = proxy.active_job().await.unwrap();
    assert_ne!(path.as_str(), "/", "the upgrade goes on");
    let job = hostd_interface::proxy::JobProxy::builder(&conn)
        .path(path.clone())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while job.message().await.unwrap() != held_message(point) {
        assert!(Instant::now() < deadline, "the job never reached {point}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let out = machine.hostctl(None, &["status", "--format", "humanreadable"]);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    let image = format!("oci:{}", h.builder.oci_name());
    assert!(shown.contains(&format!("Running: upgrade {image}, pulling, ")), "{shown}");
    assert!(shown.contains("`hostctl watch` follows it"), "{shown}");

    // `hostctl watch` re-attaches and follows the job to its end.
    let watcher = machine
        .command(binary("hostctl"), None)
        .args(["watch", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = machine.hostctl(None, &["cancel"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("Cancelling the upgrade of {image}.")), "{}", text(&out));
    let watched = watcher.wait_with_output().unwrap();
    assert_eq!(watched.status.code(), Some(8), "watch ends with the job's end: {}", text(&watched));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&watched.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.first().unwrap()["message"], held_message(point), "{lines:#?}");
    assert_eq!(lines.last().unwrap()["state"], "cancelled", "{lines:#?}");

    let out = machine.hostctl(None, &["watch"]);
    assert!(out.status.success() && text(&out).contains("No job is running."), "{}", text(&out));
}

/// `hostctl ARGS` as `uid` on a pseudo-terminal inside the machine (its
/// users, its PAM view), typing `password` at polkit's prompt when given.
fn hostctl_on_a_terminal(machine: &TestMachine, uid: u32, password: Option<&str>, args: &[&str]) -> Output {
    let mut command = machine.command("python3", None);
    command.arg(hostd_tests::repo_root().join("tests/env/pty-session.py"));
    if let Some(password) = password {
        command.args(["--expect", "Password:", "--send", &format!("{password}\\r")]);
    }
    let inside = machine.command_inside(binary("hostctl"), Some(uid));
    command.arg("--").arg(inside.get_program()).args(inside.get_args()).args(args);
    command.env("PTY_SESSION_TIMEOUT", "60").stdin(Stdio::null()).output().unwrap()
}

/// The pkttyagent processes of `uid`.
fn agents_of(uid: u32) -> String {
    let out = Command::new("pgrep").args(["-a", "-u", &uid.to_string(), "pkttyagent"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn on_a_terminal_polkit_asks_for_an_administrator_s_password_unless_told_not_to() {
    use hostd_tests::machine::{ADMIN, USER};
    let h = host_with_v1("512m", &[]).await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    // The administrators are wheel, and one of them has a password; the
    // user is in no rule, so an upgrade needs an administrator (auth_admin).
    machine
        .add_polkit_rule(
            "40-admins.rules",
            "polkit.addAdminRule(function(action, subject) { return [\"unix-group:wheel\"]; });\n",
        )
        .unwrap();
    let mut chpasswd = machine.command_inside("chpasswd", None).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut chpasswd.stdin.take().unwrap(), format!("{}:correct horse\n", ADMIN.0).as_bytes())
        .unwrap();
    assert!(chpasswd.wait().unwrap().success());

    let started = Instant::now();
    let out = hostctl_on_a_terminal(&machine, USER.1, None, &["--no-ask-password", "upgrade"]);
    assert_eq!(out.status.code(), Some(5), "NotAuthorized: {}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(10), "at once, without waiting for a password");
    assert!(!text(&out).contains("Password:") && text(&out).contains("NotAuthorized"), "{}", text(&out));

    let out = hostctl_on_a_terminal(&machine, USER.1, Some("correct horse"), &["upgrade"]);
    let shown = text(&out);
    assert!(shown.contains("AUTHENTICATING FOR org.hostd.host1.upgrade"), "pkttyagent asked: {shown}");
    assert!(shown.contains(&format!("Authenticating as: {}", ADMIN.0)), "{shown}");
    assert_eq!(out.status.code(), Some(0), "the administrator's password let the upgrade run: {shown}");
    assert!(shown.contains("No update available."), "{shown}");
    assert_eq!(agents_of(USER.1), "", "no pkttyagent outlives the call");

    // Without a terminal nothing asks.
    let out = machine.command_inside(binary("hostctl"), Some(USER.1)).arg("upgrade").stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
}
