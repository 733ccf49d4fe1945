//! Checks never starve other jobs (docs/security.md, "Checks and
//! pre-emption"): users allowed `check` loop checks back to back while an
//! administrator cleans up and upgrades, through the real bus and polkitd.
//!
//! - a change (here Cleanup, Upgrade) pre-empts a running check, which ends
//!   `Cancelled` naming the job that took its place; the change never gets `Busy`;
//! - a check while a check runs gets the running check's path;
//! - a check by a user other than root within `check_interval_secs` of the
//!   last one is answered with that one's result and does no sysroot work.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hostd_interface::manager::CachedUpdate;
use hostd_interface::proxy::{Host1Proxy, JobProxy};
use hostd_tests::binary;
use hostd_tests::inject::OstreeAdminHoldingTheLock;
use hostd_tests::machine::{TestMachine, ADMIN, CHECKER, USER};
use hostd_tests::offline::{deployed, host_with_v1, text, vd};
use hostd_tests::repo_root;
use zbus::message::Type;
use zbus::{Connection, MatchRule, MessageStream, OwnedObjectPath, OwnedVariant, Variant};

/// The default `check_interval_secs` (60) is in force.
const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";
/// No check is answered from an earlier one: every check is a job that
/// takes the slot, as before there was an interval.
const NO_INTERVAL: &str = "[daemon]\nidle_exit_secs = 120\ncheck_interval_secs = 0\n";

/// How long a test waits for something the daemon does at once.
const PROMPTLY: Duration = Duration::from_secs(20);

/// The project's example rules (wheel may do everything), and `check` for
/// the checker and the plain user, as an active desktop session has it.
fn install_rules(machine: &TestMachine) {
    let rules = std::fs::read_to_string(repo_root().join("polkit-rules/50-hostd.rules")).unwrap();
    machine.add_polkit_rule("50-hostd.rules", &rules).unwrap();
    machine
        .add_polkit_rule(
            "60-users-check.rules",
            &format!(
                r#"polkit.addRule(function(action, subject) {{
    if (action.id == "org.hostd.host1.check" && (subject.user == "{}" || subject.user == "{}")) {{
        return polkit.Result.YES;
    }}
}});
"#,
                CHECKER.0, USER.0
            ),
        )
        .unwrap();
}

/// How a job ended, as a client following every job saw it.
#[derive(Debug, Clone, Default)]
struct Seen {
    kind: String,
    result: String,
    error_name: String,
    error_message: String,
}

/// Every job of the daemon, from `JobNew`, the jobs' `PropertiesChanged`
/// and `JobRemoved`, by path.
#[derive(Debug, Clone, Default)]
struct JobLog(Arc<Mutex<BTreeMap<String, Seen>>>);

impl JobLog {
    async fn follow(conn: &Connection) -> JobLog {
        let log = JobLog::default();
        let rule = |member: &'static str, interface: &'static str| {
            MatchRule::builder().msg_type(Type::Signal).interface(interface).member(member).build().unwrap()
        };
        for rule in [
            rule("JobNew", "org.hostd.Host1"),
            rule("JobRemoved", "org.hostd.Host1"),
            rule("PropertiesChanged", "org.freedesktop.DBus.Properties"),
        ] {
            let mut stream = MessageStream::for_match_rule(rule, conn, std::num::NonZeroUsize::new(100_000)).await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                while let Some(Ok(msg)) = stream.next().await {
                    log.take(&msg);
                }
            });
        }
        log
    }

    fn take(&self, msg: &zbus::Message) {
        let header = msg.header();
        let member = header.member().map(|m| m.to_string()).unwrap_or_default();
        let mut jobs = self.0.lock().unwrap();
        match member.as_str() {
            "JobNew" => {
                let (_, path, kind): (u64, OwnedObjectPath, String) = msg.body().deserialize().unwrap();
                jobs.entry(path.to_string()).or_default().kind = kind;
            }
            "JobRemoved" => {
                let (_, path, result): (u64, OwnedObjectPath, String) = msg.body().deserialize().unwrap();
                jobs.entry(path.to_string()).or_default().result = result;
            }
            _ => {
                let Some(path) = header.path().map(|p| p.to_string()) else { return };
                if !path.starts_with("/org/hostd/Host1/job/") {
                    return;
                }
                let (_, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                    msg.body().deserialize().unwrap();
                let text = |name: &str| changed.get(name).and_then(|v| String::try_from(v.try_clone().unwrap()).ok());
                let seen = jobs.entry(path).or_default();
                if let Some(name) = text("ErrorName") {
                    seen.error_name = name;
                }
                if let Some(message) = text("ErrorMessage") {
                    seen.error_message = message;
                }
            }
        }
    }

    /// The jobs seen so far, once every one of them has ended (at most
    /// [`PROMPTLY`] after the call).
    async fn ended(&self) -> BTreeMap<String, Seen> {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            let jobs = self.0.lock().unwrap().clone();
            if jobs.values().all(|j| !j.result.is_empty()) || Instant::now() > deadline {
                return jobs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `sh` looping `hostctl upgrade --check` as `uid` until dropped.
struct CheckLoop(Child);

impl CheckLoop {
    /// `hostctl upgrade --check` over and over as `uid`.
    fn start(machine: &TestMachine, uid: u32) -> CheckLoop {
        CheckLoop::of(machine, uid, "upgrade --check --quiet")
    }

    /// `hostctl <args>` over and over as `uid`.
    fn of(machine: &TestMachine, uid: u32, args: &str) -> CheckLoop {
        // The loop is root's shell starting each hostctl through setpriv, as
        // `TestMachine::command` does: a shell run as the user could not
        // reach a hostctl under a directory only root may enter.
        let child = machine
            .command("sh", None)
            .args([
                "-c",
                r#"while :; do setpriv --reuid="$USER_ID" --regid="$USER_ID" --clear-groups "$HOSTCTL" --no-ask-password $ARGS; done"#,
            ])
            .env("ARGS", args)
            .env("HOSTCTL", binary("hostctl"))
            .env("USER_ID", uid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        CheckLoop(child)
    }
}

impl Drop for CheckLoop {
    fn drop(&mut self) {
        // The loop's shell itself; a hostctl it started still follows its
        // job to the end.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `hostctl --no-ask-password ARGS` as `uid` (root when `None`).
fn spawn_hostctl(machine: &TestMachine, uid: Option<u32>, args: &[&str]) -> Child {
    machine
        .command(binary("hostctl"), uid)
        .arg("--no-ask-password")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait for `child` at most `limit`; kill it if it takes longer.
fn finished_within(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("hostctl did not end within {limit:?}: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `hostctl --no-ask-password upgrade --check` as the checker, which must end within [`PROMPTLY`].
fn user_check(machine: &TestMachine) -> Output {
    finished_within(spawn_hostctl(machine, Some(CHECKER.1), &["upgrade", "--check", "--exit-code"]), PROMPTLY)
}

/// `Check` called by `uid` with busctl: the job path, or the error text.
fn busctl_check(machine: &TestMachine, uid: u32) -> String {
    let out = machine
        .command("busctl", Some(uid))
        .args(["--system", "call", "org.hostd.Host1", "/org/hostd/Host1", "org.hostd.Host1", "Check", "a{sv}", "0"])
        .output()
        .unwrap();
    text(&out)
}

/// Wait until `until` holds for the manager's `ActiveJob`; that path.
async fn active_job(proxy: &Host1Proxy<'_>, until: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let path = proxy.active_job().await.unwrap().to_string();
        if until(&path) {
            return path;
        }
        assert!(Instant::now() < deadline, "ActiveJob stayed {path}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn job_proxy(conn: &Connection, path: &str) -> JobProxy<'static> {
    JobProxy::builder(conn)
        .path(path.to_string())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_of_user_checks_never_makes_an_admins_cleanup_or_pin_busy() {
    let h = host_with_v1("512m", &[]).await;
    let machine = TestMachine::start(h.sysroot.path(), NO_INTERVAL).unwrap();
    install_rules(&machine);
    let (conn, proxy) = machine.manager().await.unwrap();
    let log = JobLog::follow(&conn).await;
    let before = h.sysroot.deployment_checksums().unwrap();

    // Two users loop checks, as the report's did: a check holds the slot
    // nearly all the time.
    let loops = [CheckLoop::start(&machine, CHECKER.1), CheckLoop::start(&machine, USER.1)];
    let deadline = Instant::now() + PROMPTLY;
    while log.0.lock().unwrap().values().filter(|j| j.kind == "check" && !j.result.is_empty()).count() < 2 {
        assert!(Instant::now() < deadline, "the loops ran no checks:\n{}", machine.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut cleanups = Vec::new();
    for round in 0..15 {
        let out = machine.hostctl(Some(ADMIN.1), &["--no-ask-password", "cleanup"]);
        assert_eq!(out.status.code(), Some(0), "cleanup {round} of 15: {}", text(&out));
        assert!(text(&out).contains("Removed "), "{}", text(&out));
        cleanups.push(text(&out));
    }
    // Pinning is a change the call makes itself: it is not Busy either.
    for round in 0..5 {
        for verb in ["pin", "unpin"] {
            let out = machine.hostctl(Some(ADMIN.1), &["--no-ask-password", verb, "0"]);
            assert_eq!(out.status.code(), Some(0), "{verb} {round} of 5: {}", text(&out));
        }
    }
    drop(loops);

    let jobs = log.ended().await;
    let cleanup_paths: Vec<&String> = jobs.iter().filter(|(_, j)| j.kind == "cleanup").map(|(p, _)| p).collect();
    assert_eq!(cleanup_paths.len(), 15, "{jobs:#?}");
    assert!(jobs.values().filter(|j| j.kind == "cleanup").all(|j| j.result == "succeeded"), "{jobs:#?}");
    let preempted: Vec<&Seen> = jobs.values().filter(|j| j.kind == "check" && j.result == "cancelled").collect();
    assert!(!preempted.is_empty(), "no cleanup met a running check: {jobs:#?}");
    for check in &preempted {
        assert_eq!(check.error_name, "org.hostd.Host1.Error.Cancelled", "{check:?}");
        let by_cleanup = cleanup_paths
            .iter()
            .any(|p| check.error_message == format!("the check was pre-empted by cleanup job {p} (uid {})", ADMIN.1));
        let by_pin = ["pin", "unpin"]
            .iter()
            .any(|verb| check.error_message == format!("the check was pre-empted by {verb} (uid {})", ADMIN.1));
        assert!(by_cleanup || by_pin, "a pre-empted check names what took its place: {check:?}");
    }
    assert_eq!(h.sysroot.deployment_checksums().unwrap(), before);
    assert_eq!(active_job(&proxy, |p| p == "/").await, "/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_upgrade_preempts_a_users_check_and_other_checks_join_it() {
    let h = host_with_v1("512m", &[]).await;
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    install_rules(&machine);
    machine.set_config_dropin("policy.toml", Some("[updates]\npolicy = \"check\"\n")).unwrap();
    let (conn, proxy) = machine.manager().await.unwrap();
    proxy.reload_config().await.unwrap();
    let log = JobLog::follow(&conn).await;

    // With the sysroot lock held elsewhere, the user's check waits for it:
    // a check that is running for as long as the test needs.
    let holder = OstreeAdminHoldingTheLock::start(&h.sysroot).unwrap();
    let user = spawn_hostctl(&machine, Some(CHECKER.1), &["upgrade", "--check", "--exit-code"]);
    let check = active_job(&proxy, |p| p != "/").await;
    let check_job = job_proxy(&conn, &check).await;
    let deadline = Instant::now() + PROMPTLY;
    while !check_job.message().await.unwrap().contains("waiting for the sysroot lock") {
        assert!(Instant::now() < deadline, "the check did not wait for the lock: {}", check_job.message().await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Every other check gets the running one: root's, another user's, the timer's.
    assert_eq!(proxy.check(HashMap::new()).await.unwrap().as_str(), check);
    let other_user = busctl_check(&machine, USER.1);
    assert!(other_user.contains(&check), "{other_user}");
    let timer = proxy.upgrade(HashMap::from([("auto", Variant::from(true))])).await.unwrap();
    assert_eq!(timer.as_str(), check, "policy check: the timer's run is a check");

    // The admin's upgrade is not Busy: it takes the check's place at once.
    let admin = spawn_hostctl(&machine, Some(ADMIN.1), &["upgrade"]);
    let upgrade = active_job(&proxy, |p| p != "/" && p != check).await;
    let pre_empted = finished_within(user, PROMPTLY);
    assert_eq!(pre_empted.status.code(), Some(8), "{}", text(&pre_empted));
    let reason = format!("the check was pre-empted by upgrade job {upgrade} (uid {})", ADMIN.1);
    assert!(text(&pre_empted).contains(&reason), "hostctl says why: {}", text(&pre_empted));
    assert_eq!(check_job.state().await.unwrap(), "cancelled");
    assert_eq!(check_job.error_message().await.unwrap(), reason);

    // While the upgrade runs, a user's check is Busy: the pre-empted check
    // found nothing that could answer it.
    let during = busctl_check(&machine, CHECKER.1);
    // (busctl prints Busy's message, not its name.)
    assert!(during.contains(&format!("another job is running: {upgrade} (upgrade)")), "{during}");
    assert_eq!(proxy.last_check_result().await.unwrap(), "", "a pre-empted check leaves no result");

    drop(holder);
    let upgraded = finished_within(admin, Duration::from_secs(120));
    assert_eq!(upgraded.status.code(), Some(0), "{}\n{}", text(&upgraded), machine.log());
    assert_eq!(deployed(&conn).await[0], vd(&v2));
    let jobs = log.ended().await;
    let kinds: Vec<(&str, &str)> = jobs.values().map(|j| (j.kind.as_str(), j.result.as_str())).collect();
    assert_eq!(kinds, [("check", "cancelled"), ("upgrade", "succeeded")], "{jobs:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_check_soon_after_the_last_is_answered_with_its_result_without_sysroot_work() {
    let h = host_with_v1("512m", &[]).await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    install_rules(&machine);
    let (conn, proxy) = machine.manager().await.unwrap();

    let first = user_check(&machine);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert!(text(&first).contains("No update available.") && !text(&first).contains("from the check"), "{}", text(&first));
    let checked_at = proxy.last_check_time().await.unwrap();
    assert!(checked_at > 0);

    // v2 appears, and any check that looked would have to wait for the lock.
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let holder = OstreeAdminHoldingTheLock::start(&h.sysroot).unwrap();
    let answered = user_check(&machine);
    assert_eq!(answered.status.code(), Some(0), "{}", text(&answered));
    let said = text(&answered);
    assert!(said.contains("No update available. (from the check "), "the last result, saying so: {said}");
    assert!(said.contains("answered from the last result for 60 s"), "{said}");
    assert_eq!(proxy.last_check_time().await.unwrap(), checked_at, "nothing was checked");
    assert_eq!(proxy.cached_update().await.unwrap(), CachedUpdate::default(), "v2 was not looked at");
    assert_eq!(proxy.active_job().await.unwrap().as_str(), "/");
    drop(holder);

    // Root always looks afresh, and its result answers the user's next check.
    let root = machine.hostctl(None, &["upgrade", "--check", "--exit-code"]);
    assert_eq!(root.status.code(), Some(100), "{}", text(&root));
    assert!(text(&root).contains("Update available: v2") && !text(&root).contains("from the check"), "{}", text(&root));
    let answered = user_check(&machine);
    assert_eq!(answered.status.code(), Some(100), "an update is still an update: {}", text(&answered));
    assert!(text(&answered).contains("Update available: v2"), "{}", text(&answered));
    assert!(text(&answered).contains("(from the check "), "{}", text(&answered));

    // Once the sysroot has changed, the last result is stale.
    let upgrade = machine.hostctl(None, &["upgrade"]);
    assert!(upgrade.status.success(), "{}", text(&upgrade));
    assert_eq!(deployed(&conn).await[0], vd(&v2));
    let fresh = user_check(&machine);
    assert_eq!(fresh.status.code(), Some(0), "{}", text(&fresh));
    assert!(text(&fresh).contains("No update available.") && !text(&fresh).contains("from the check"), "{}", text(&fresh));

    // check_interval_secs = 0: every check looks.
    machine.set_config_dropin("checks.toml", Some("[daemon]\ncheck_interval_secs = 0\n")).unwrap();
    proxy.reload_config().await.unwrap();
    let before = proxy.last_check_time().await.unwrap();
    let again = user_check(&machine);
    assert!(!text(&again).contains("from the check"), "{}", text(&again));
    assert!(proxy.last_check_time().await.unwrap() > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_of_user_upgrades_never_makes_an_admins_cleanup_busy() {
    let h = host_with_v1("512m", &[]).await;
    let machine = TestMachine::start(h.sysroot.path(), NO_INTERVAL).unwrap();
    install_rules(&machine);
    // `upgrade` is what an active desktop user has too.
    machine.add_polkit_rule("60-user-upgrades.rules", &hostd_tests::machine::grant("upgrade", USER.0)).unwrap();
    let (conn, proxy) = machine.manager().await.unwrap();
    let log = JobLog::follow(&conn).await;
    let before = h.sysroot.deployment_checksums().unwrap();

    // Nothing new: each upgrade only looks, holding the slot while it does.
    let upgrades = CheckLoop::of(&machine, USER.1, "upgrade --quiet");
    let deadline = Instant::now() + PROMPTLY;
    while log.0.lock().unwrap().values().filter(|j| j.kind == "upgrade" && !j.result.is_empty()).count() < 2 {
        assert!(Instant::now() < deadline, "the loop ran no upgrades:\n{}", machine.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for round in 0..10 {
        let out = machine.hostctl(Some(ADMIN.1), &["--no-ask-password", "cleanup"]);
        assert_eq!(out.status.code(), Some(0), "cleanup {round} of 10: {}", text(&out));
    }
    drop(upgrades);

    let jobs = log.ended().await;
    assert_eq!(jobs.values().filter(|j| j.kind == "cleanup" && j.result == "succeeded").count(), 10, "{jobs:#?}");
    let preempted: Vec<&Seen> = jobs.values().filter(|j| j.kind == "upgrade" && j.result == "cancelled").collect();
    assert!(!preempted.is_empty(), "no cleanup met a running upgrade: {jobs:#?}");
    for upgrade in preempted {
        let expected = format!("the upgrade was pre-empted by a cleanup of uid {}, who may stop other users' jobs", ADMIN.1);
        assert_eq!(upgrade.error_message, expected, "{upgrade:?}");
    }
    assert_eq!(h.sysroot.deployment_checksums().unwrap(), before);
    assert_eq!(active_job(&proxy, |p| p == "/").await, "/");
}
