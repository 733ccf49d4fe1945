//! Who may do what: every verb as root, as a `wheel` member with the
//! project's example rules, as a plain user and as a user a rule grants only
//! `check` — real polkitd, real users, real bus policy.

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use hostd_tests::fixture::ImageBuilder;
use hostd_tests::offline::text;
use hostd_tests::machine::{grant, TestMachine, ADMIN, CHECKER, USER};
use hostd_tests::registry::{SlowLink, TestRegistry};
use hostd_tests::sysroot::TestSysroot;
use hostd_tests::{binary, repo_root};
use zbus::MatchRule;

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

/// One `hostctl` call of the matrix.
struct Call {
    args: &'static [&'static str],
    /// The polkit actions it needs (none: anyone may).
    actions: &'static [&'static str],
    /// Exit code when allowed (the call then ran to its own end).
    allowed_exit: i32,
    /// Whether an allowed call creates a job.
    creates_job: bool,
}

const MISSING_IMAGE: &str = "/nonexistent/hostd/os:latest";

const CALLS: &[Call] = &[
    Call { args: &["status"], actions: &[], allowed_exit: 0, creates_job: false },
    Call { args: &["upgrade", "--check"], actions: &["check"], allowed_exit: 0, creates_job: true },
    Call { args: &["upgrade"], actions: &["upgrade"], allowed_exit: 0, creates_job: true },
    Call { args: &["upgrade", "--allow-downgrade"], actions: &["upgrade", "switch"], allowed_exit: 0, creates_job: true },
    Call { args: &["switch", "--transport", "oci", MISSING_IMAGE], actions: &["switch"], allowed_exit: 1, creates_job: true },
    Call { args: &["stage"], actions: &["stage"], allowed_exit: 1, creates_job: false },
    Call { args: &["rollback"], actions: &["rollback"], allowed_exit: 0, creates_job: true },
    Call { args: &["cleanup"], actions: &["cleanup"], allowed_exit: 0, creates_job: true },
    Call { args: &["reload"], actions: &["reload"], allowed_exit: 0, creates_job: false },
    Call { args: &["etc-diff"], actions: &["etc-diff"], allowed_exit: 0, creates_job: false },
    // Nothing is staged or downloaded here: allowed, it does nothing.
    Call { args: &["discard"], actions: &["stage"], allowed_exit: 0, creates_job: false },
    Call { args: &["config", "get"], actions: &[], allowed_exit: 0, creates_job: false },
    Call { args: &["config", "set", "time_zone", "UTC"], actions: &["configure"], allowed_exit: 0, creates_job: false },
    Call { args: &["config", "unset", "time_zone"], actions: &["configure"], allowed_exit: 0, creates_job: false },
];

/// Who calls, and which actions polkit grants them without a password.
struct Subject {
    name: &'static str,
    uid: Option<u32>,
    granted: fn(&str) -> bool,
}

const SUBJECTS: &[Subject] = &[
    Subject { name: "plain user", uid: Some(USER.1), granted: |_| false },
    Subject { name: "check-only user", uid: Some(CHECKER.1), granted: |a| a == "check" },
    Subject { name: "wheel member", uid: Some(ADMIN.1), granted: |_| true },
    Subject { name: "root", uid: None, granted: |_| true },
];

/// A machine whose offline sysroot has v1 deployed (the sysroot lives as
/// long as the returned guard).
async fn machine_with_v1() -> (TestSysroot, TestMachine) {
    let sysroot = TestSysroot::new("64m").unwrap();
    let builder = ImageBuilder::new(&sysroot.dir.path().join("images")).unwrap();
    let v1 = builder.build("v1", &[], &BTreeMap::new()).await.unwrap();
    sysroot.deploy_image(&v1.reference).await.unwrap();
    let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();
    (sysroot, machine)
}

/// Everything a denied call must leave alone.
fn footprint(sysroot: &TestSysroot, machine: &TestMachine) -> (Vec<String>, String, String, Option<String>) {
    let refs = hostd_tests::run(
        Command::new("ostree").arg(format!("--repo={}", sysroot.path().join("ostree/repo").display())).arg("refs"),
    )
    .unwrap();
    let policy = machine.command("busctl", None)
        .args(["--system", "get-property", "org.hostd.Host1", "/org/hostd/Host1", "org.hostd.Host1", "AutomaticUpdatePolicy"])
        .output()
        .unwrap();
    // The drop-in `config set` writes.
    let settings = std::fs::read_to_string(machine.config_dropin_dir().join("90-settings.toml")).ok();
    (sysroot.deployment_checksums().unwrap(), refs, text(&policy), settings)
}

/// Count `JobNew` signals seen on the bus from now on.
async fn count_new_jobs(machine: &TestMachine) -> (zbus::Connection, Arc<AtomicUsize>) {
    let conn = machine.connect().await.unwrap();
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.hostd.Host1")
        .member("JobNew")
        .build()
        .unwrap();
    let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, None).await.unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while stream.next().await.is_some() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    (conn, count)
}

#[tokio::test]
async fn every_verb_is_allowed_or_denied_exactly_as_documented() {
    let sysroot = TestSysroot::new("512m").unwrap();
    let builder = ImageBuilder::new(&sysroot.dir.path().join("images")).unwrap();
    for version in ["v1", "v2"] {
        let image = builder.build(version, &["data"], &BTreeMap::new()).await.unwrap();
        sysroot.deploy_image(&image.reference).await.unwrap();
    }
    let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();
    let example_rules = std::fs::read_to_string(repo_root().join("polkit-rules/50-hostd.rules")).unwrap();
    machine.add_polkit_rule("50-hostd.rules", &example_rules).unwrap();
    machine.add_polkit_rule("60-check-only.rules", &grant("check", CHECKER.0)).unwrap();
    // A configuration change that only an authorized ReloadConfig applies.
    machine.set_config_dropin("policy.toml", Some("[updates]\npolicy = \"check\"\n")).unwrap();
    let (_conn, new_jobs) = count_new_jobs(&machine).await;

    for subject in SUBJECTS {
        for call in CALLS {
            let allowed = call.actions.iter().all(|a| (subject.granted)(a));
            let before = footprint(&sysroot, &machine);
            let jobs_before = new_jobs.load(Ordering::SeqCst);
            let mut args = vec!["--no-ask-password"];
            args.extend_from_slice(call.args);
            let out = machine.hostctl(subject.uid, &args);
            let what = format!("{} running `hostctl {}`: {}", subject.name, call.args.join(" "), text(&out));
            // JobNew is a signal: give it time to arrive before counting.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let jobs = new_jobs.load(Ordering::SeqCst) - jobs_before;
            if allowed {
                assert_eq!(out.status.code(), Some(call.allowed_exit), "{what}");
                assert_eq!(jobs, usize::from(call.creates_job), "{what}");
            } else {
                assert_eq!(out.status.code(), Some(5), "{what}");
                let denied = call.actions.iter().find(|a| !(subject.granted)(a)).unwrap();
                assert!(text(&out).contains(&format!("org.hostd.host1.{denied}")), "{what}");
                assert_eq!(jobs, 0, "a denied call creates no job: {what}");
                assert_eq!(footprint(&sysroot, &machine), before, "a denied call changes nothing: {what}");
            }
        }
    }
}

#[tokio::test]
async fn only_the_initiator_or_an_authorized_user_cancels_a_job() {
    let sysroot = TestSysroot::new("512m").unwrap();
    let mut builder = ImageBuilder::new(&sysroot.dir.path().join("images")).unwrap();
    builder.sizes.insert("data", 4 << 20);
    let v1 = builder.build("v1", &[], &BTreeMap::new()).await.unwrap();
    sysroot.deploy_image(&v1.reference).await.unwrap();
    let registry = TestRegistry::start().unwrap();
    registry.push(&builder.oci_name(), "hostd/os:stable").unwrap();
    let link = SlowLink::start(registry.port, 512 << 10).unwrap();
    let machine = TestMachine::start(sysroot.path(), CONFIG).unwrap();
    machine.trust_registry(&link.host()).unwrap();
    let image = format!("{}/hostd/os:stable", link.host());
    assert!(machine.hostctl(None, &["switch", &image]).status.success());
    builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    registry.push(&builder.oci_name(), "hostd/os:stable").unwrap();
    machine.add_polkit_rule("60-checker-upgrades.rules", &grant("upgrade", CHECKER.0)).unwrap();
    let before = sysroot.deployment_checksums().unwrap();

    let upgrade = machine
        .command(binary("hostctl"), Some(CHECKER.1))
        .args(["--no-ask-password", "upgrade"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_, proxy) = machine.manager().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while proxy.state().await.unwrap() != "fetching" {
        assert!(std::time::Instant::now() < deadline, "the upgrade did not start");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let out = machine.hostctl(Some(USER.1), &["--no-ask-password", "cancel"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("org.hostd.host1.cancel"), "{}", text(&out));
    assert_eq!(proxy.state().await.unwrap(), "fetching", "the job still runs");

    let out = machine.hostctl(Some(CHECKER.1), &["--no-ask-password", "cancel"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ended = upgrade.wait_with_output().unwrap();
    assert_eq!(ended.status.code(), Some(8), "the initiator's hostctl reports the cancel: {}", text(&ended));
    assert_eq!(sysroot.deployment_checksums().unwrap(), before);
    drop(link);
}

#[tokio::test]
async fn only_root_may_own_the_name_and_anyone_may_call() {
    let (_sysroot, machine) = machine_with_v1().await;

    // Anyone may call (this also starts hostd, which then holds the name).
    let out = machine.hostctl(Some(USER.1), &["status"]);
    assert!(out.status.success(), "{}", text(&out));

    let request_name = |uid: Option<u32>| {
        machine
            .command("dbus-send", uid)
            .args(["--system", "--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus"])
            .args(["org.freedesktop.DBus.RequestName", "string:org.hostd.Host1", "uint32:4"])
            .output()
            .unwrap()
    };
    for (_, uid) in [USER, ADMIN] {
        let out = request_name(Some(uid));
        assert!(!out.status.success(), "uid {uid} must not own org.hostd.Host1");
        assert!(text(&out).contains("AccessDenied"), "{}", text(&out));
    }
    // Root may ask; hostd holds the name, so the answer is "exists" (3).
    let out = request_name(None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("uint32 3"), "{}", text(&out));
}

/// `hostctl ARGS` as the plain user on a terminal, with a polkit text agent
/// (pkttyagent) registered for that very process; once `expect` shows,
/// Ctrl-C ends both.
fn with_agent(machine: &TestMachine, hostctl_args: &str, expect: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    // The user's shell must be able to reach hostctl, wherever the checkout is.
    let hostctl = dir.path().join("hostctl");
    std::fs::copy(binary("hostctl"), &hostctl).unwrap();
    // pkttyagent closes its notify fd once registered; a FIFO turns that
    // into an end-of-file to wait for. `exec` keeps the pid it registered for.
    let script = format!(
        "pkttyagent --process $$ --notify-fd 3 3>$READY & cat $READY; exec {} {hostctl_args}",
        hostctl.display()
    );
    let ready = dir.path().join("registered");
    nix::unistd::mkfifo(&ready, nix::sys::stat::Mode::empty()).unwrap();
    std::fs::set_permissions(&ready, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    machine
        .command("python3", None)
        .arg(repo_root().join("tests/env/pty-session.py"))
        .args(["--expect", expect, "--send", "\\x03", "--"])
        .args(["setpriv", &format!("--reuid={}", USER.1), &format!("--regid={}", USER.1), "--clear-groups"])
        .args(["sh", "-c", &script])
        .env("READY", &ready)
        .env("PTY_SESSION_TIMEOUT", "30")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test]
async fn polkit_may_prompt_only_when_the_caller_allows_interaction() {
    let (_sysroot, machine) = machine_with_v1().await;

    // Interactive (hostctl's default): polkit asks the agent for a password.
    let out = with_agent(&machine, "upgrade --check", "Password:");
    assert!(text(&out).contains("AUTHENTICATING FOR org.hostd.host1.check"), "{}", text(&out));

    // --no-ask-password: denied at once, the agent is never asked.
    let out = with_agent(&machine, "--no-ask-password upgrade --check", "NotAuthorized");
    assert!(!text(&out).contains("AUTHENTICATING"), "{}", text(&out));
    assert!(text(&out).contains("NotAuthorized: org.hostd.host1.check"), "{}", text(&out));
}

#[tokio::test]
async fn rules_can_decide_on_the_details_and_widening_options_need_switch() {
    let (_sysroot, machine) = machine_with_v1().await;
    machine
        .add_polkit_rule(
            "60-local-images-only.rules",
            r#"polkit.addRule(function(action, subject) {
                if (action.id == "org.hostd.host1.switch" && subject.user == "hostd-user" &&
                    action.lookup("verb") == "switch" && action.lookup("transport") == "oci" &&
                    action.lookup("image").indexOf("/nonexistent/") == 0 &&
                    action.lookup("options") == "retain") {
                    return polkit.Result.YES;
                }
            });"#,
        )
        .unwrap();
    machine.add_polkit_rule("60-user-upgrades.rules", &grant("upgrade", USER.0)).unwrap();
    let user = |args: &[&str]| machine.hostctl(Some(USER.1), &[&["--no-ask-password"], args].concat());
    // allow-downgrade widens an upgrade into choosing what to run: switch too.
    assert_eq!(user(&["upgrade"]).status.code(), Some(0));
    let out = user(&["upgrade", "--allow-downgrade"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("org.hostd.host1.switch"), "{}", text(&out));

    // Allowed by the rule: the job runs and fails on the missing image.
    let out = user(&["switch", "--transport", "oci", "--retain", MISSING_IMAGE]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("ImageNotFound"), "{}", text(&out));
    // Any other detail and the rule does not apply.
    for args in [
        &["switch", "--transport", "oci", MISSING_IMAGE][..],
        &["switch", "--retain", "quay.io/example/os:latest"][..],
        &["switch", "--transport", "dir", "--retain", "/nonexistent/hostd/os"][..],
    ] {
        let out = user(args);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {}", text(&out));
    }
}
