//! The update settings over the bus: `SetSettings`, `ResetSettings` and
//! `Settings`, and `hostctl config get|set|unset` on top of them, against
//! a real polkitd and the real configuration files of a test machine.
//! What a GUI sees: the properties, the drop-in an admin can read, the
//! error names, and one `PropertiesChanged` per changed property.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hostd_interface::manager::{UpdatePolicy, UpdateStrategy};
use hostd_interface::Error;
use hostd_tests::machine::{TestMachine, ADMIN, USER};
use hostd_tests::offline::{host_with_v1, text, OfflineHost};
use hostd_tests::repo_root;
use zbus::{MatchRule, OwnedVariant, Variant};

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";
const DROPIN: &str = "90-settings.toml";

/// The project's example rules: wheel members (ADMIN) may do everything.
fn install_wheel_rules(machine: &TestMachine) {
    let rules = std::fs::read_to_string(repo_root().join("polkit-rules/50-hostd.rules")).unwrap();
    machine.add_polkit_rule("50-hostd.rules", &rules).unwrap();
}

async fn machine() -> (OfflineHost, TestMachine) {
    let h = host_with_v1("128m", &[]).await;
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    install_wheel_rules(&machine);
    (h, machine)
}

fn dropin(machine: &TestMachine) -> PathBuf {
    machine.config_dropin_dir().join(DROPIN)
}

/// The drop-in's text and modification time; `None` when there is none.
fn dropin_state(machine: &TestMachine) -> Option<(String, i64, i64)> {
    let path = dropin(machine);
    let meta = std::fs::metadata(&path).ok()?;
    Some((std::fs::read_to_string(&path).unwrap(), meta.mtime(), meta.mtime_nsec()))
}

/// `hostctl ARGS` as `uid`, insisting on exit code `code`; what it printed.
fn hostctl(machine: &TestMachine, uid: Option<u32>, args: &[&str], code: i32) -> String {
    let out = machine.hostctl(uid, &[&["--no-ask-password"], args].concat());
    assert_eq!(out.status.code(), Some(code), "hostctl {args:?}: {}\n{}", text(&out), machine.log());
    text(&out)
}

/// Counts of `PropertiesChanged` of the manager, per property, from now on.
async fn count_changes(machine: &TestMachine) -> (zbus::Connection, Arc<Mutex<BTreeMap<String, usize>>>) {
    let conn = machine.connect().await.unwrap();
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.freedesktop.DBus.Properties")
        .member("PropertiesChanged")
        .path("/org/hostd/Host1")
        .build()
        .unwrap();
    let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, None).await.unwrap();
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let counter = counts.clone();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let (_, changed, invalidated): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                msg.body().deserialize().unwrap();
            let mut c = counter.lock().unwrap();
            for name in changed.into_keys().chain(invalidated) {
                *c.entry(name).or_insert(0) += 1;
            }
        }
    });
    (conn, counts)
}

/// How often each settings property was announced since `counts` started.
fn announced(counts: &Mutex<BTreeMap<String, usize>>) -> [usize; 3] {
    let c = counts.lock().unwrap();
    ["AutomaticUpdatePolicy", "UpdateStrategy", "NextMaintenanceWindow"].map(|p| c.get(p).copied().unwrap_or(0))
}

async fn set(conn: &zbus::Connection, settings: HashMap<&str, Variant<'_>>) -> Result<(), Error> {
    call(conn, "SetSettings", &(settings, HashMap::<&str, Variant<'_>>::new())).await
}

async fn call<B>(conn: &zbus::Connection, method: &str, body: &B) -> Result<(), Error>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    conn.call_method(Some("org.hostd.Host1"), "/org/hostd/Host1", Some("org.hostd.Host1"), method, body)
        .await
        .map(|_| ())
        .map_err(Error::from)
}

fn window<'a>(days: &[&'a str], start: &'a str, length: u32) -> HashMap<&'static str, Variant<'a>> {
    HashMap::from([
        ("days", Variant::from(days.to_vec())),
        ("start", Variant::from(start)),
        ("length", Variant::from(length)),
    ])
}

#[tokio::test]
async fn an_admins_settings_are_written_applied_announced_once_and_survive_a_restart() {
    let (_h, machine) = machine().await;
    let (_, host) = machine.manager().await.unwrap();
    assert_eq!(host.automatic_update_policy().await.unwrap(), UpdatePolicy::None);
    let (_signals, counts) = count_changes(&machine).await;

    hostctl(&machine, Some(ADMIN.1), &["config", "set", "updates.policy", "stage"], 0);
    assert_eq!(host.automatic_update_policy().await.unwrap(), UpdatePolicy::Stage, "applied at once");
    let path = dropin(&machine);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o644), "root's, readable by all");
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.starts_with("# Written by hostd"), "{written}");
    assert!(written.contains("[updates]\npolicy = \"stage\"\n"), "{written}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(announced(&counts), [1, 0, 0], "only the policy changed, once");

    // Windows and a strategy that needs them, in the words of hostd.toml.
    hostctl(&machine, Some(ADMIN.1), &["config", "set", "window", "Sat,Sun 23:30 90", "Wed 03:00 30"], 0);
    hostctl(&machine, Some(ADMIN.1), &["config", "set", "strategy", "periodic"], 0);
    hostctl(&machine, Some(ADMIN.1), &["config", "set", "time_zone", "Europe/Berlin"], 0);
    assert_eq!(host.update_strategy().await.unwrap(), UpdateStrategy::Periodic);
    assert_ne!(host.next_maintenance_window().await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(announced(&counts), [1, 1, 2], "strategy once; the window time for the windows and for the zone");
    // Setting what is set already changes and announces nothing.
    let before = dropin_state(&machine);
    hostctl(&machine, Some(ADMIN.1), &["config", "set", "policy", "stage"], 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(announced(&counts), [1, 1, 2]);
    assert_eq!(dropin_state(&machine), before, "not rewritten");

    // get round-trips what set took, and names the file that set it.
    assert_eq!(hostctl(&machine, Some(USER.1), &["config", "get", "policy"], 0), "stage\n");
    assert_eq!(hostctl(&machine, Some(USER.1), &["config", "get", "updates.window"], 0), "Sat,Sun 23:30 90\nWed 03:00 30\n");
    assert_eq!(hostctl(&machine, None, &["config", "get", "time_zone"], 0), "Europe/Berlin\n");
    let all = hostctl(&machine, Some(USER.1), &["config", "get"], 0);
    let line = |key: &str| all.lines().find(|l| l.starts_with(&format!("{key} "))).unwrap_or_else(|| panic!("{all}")).to_string();
    assert!(line("updates.policy").ends_with(&path.display().to_string()), "{all}");
    assert!(line("updates.fleet_lock.url").contains("(not set)"), "{all}");
    let json: serde_json::Value =
        serde_json::from_str(&hostctl(&machine, None, &["config", "get", "--json"], 0)).unwrap();
    assert_eq!(json["settings"]["updates.strategy"], "periodic");
    assert_eq!(json["settings"]["updates.window"][1], serde_json::json!({"days": ["Wed"], "start": "03:00", "length": 30}));
    assert_eq!(json["sources"]["updates.window"], path.display().to_string());

    // A restart (as idle exit or a crash) reads the drop-in like any other.
    machine.kill_hostd().unwrap();
    assert_eq!(host.automatic_update_policy().await.unwrap(), UpdatePolicy::Stage);
    assert_eq!(host.update_strategy().await.unwrap(), UpdateStrategy::Periodic);
    assert_eq!(hostctl(&machine, None, &["config", "get", "window"], 0), "Sat,Sun 23:30 90\nWed 03:00 30\n");

    // unset hands a key back to the other files; --all removes the file.
    hostctl(&machine, Some(ADMIN.1), &["config", "unset", "policy"], 0);
    assert_eq!(host.automatic_update_policy().await.unwrap(), UpdatePolicy::None);
    assert!(!std::fs::read_to_string(&path).unwrap().contains("policy"));
    let out = hostctl(&machine, Some(ADMIN.1), &["config", "unset", "window"], 7);
    assert!(out.contains("InvalidArgument: ResetSettings: updates.strategy: \"periodic\" needs at least one"), "{out}");
    hostctl(&machine, Some(ADMIN.1), &["config", "unset", "--all"], 0);
    assert!(!path.exists());
    assert_eq!(host.update_strategy().await.unwrap(), UpdateStrategy::Immediate);
    assert_eq!(host.next_maintenance_window().await.unwrap(), 0);
}

#[tokio::test]
async fn a_plain_user_may_read_but_not_change_the_settings_and_nothing_is_written() {
    let (_h, machine) = machine().await;
    let (_, host) = machine.manager().await.unwrap();
    for args in [&["config", "set", "policy", "apply"][..], &["config", "unset", "policy"], &["config", "unset", "--all"]] {
        let out = hostctl(&machine, Some(USER.1), args, 5);
        assert!(out.contains("NotAuthorized: org.hostd.host1.configure"), "{args:?}: {out}");
    }
    assert!(!dropin(&machine).exists(), "nothing is written");
    assert!(!machine.config_dropin_dir().exists(), "not even the directory");
    assert_eq!(host.automatic_update_policy().await.unwrap(), UpdatePolicy::None);
    assert_eq!(hostctl(&machine, Some(USER.1), &["config", "get", "policy"], 0), "none\n");
    // A rule may grant exactly this action, and nothing else with it.
    machine.add_polkit_rule("60-user-configures.rules", &hostd_tests::machine::grant("configure", USER.0)).unwrap();
    hostctl(&machine, Some(USER.1), &["config", "set", "policy", "check"], 0);
    assert_eq!(host.automatic_update_policy().await.unwrap(), UpdatePolicy::Check);
    hostctl(&machine, Some(USER.1), &["reload"], 5);
}

#[tokio::test]
async fn invalid_settings_are_refused_by_name_and_change_nothing() {
    let (_h, machine) = machine().await;
    let conn = machine.connect().await.unwrap();
    let (_, host) = machine.manager().await.unwrap();
    hostctl(&machine, Some(ADMIN.1), &["config", "set", "policy", "check"], 0);
    let before = dropin_state(&machine).unwrap();
    let (_signals, counts) = count_changes(&machine).await;
    let unchanged = |what: &str| {
        assert_eq!(dropin_state(&machine).as_ref(), Some(&before), "{what}: the drop-in is untouched");
    };

    let s = |v: &'static str| Variant::from(v);
    let cases: Vec<(&str, HashMap<&str, Variant<'_>>, &str)> = vec![
        ("bad policy name", HashMap::from([("updates.policy", s("sometimes"))]), "SetSettings: updates.policy: unknown value 'sometimes'"),
        ("bad strategy", HashMap::from([("updates.strategy", s("fleet_lock"))]), "SetSettings: updates.strategy: unknown value 'fleet_lock'"),
        ("a strategy without what it needs", HashMap::from([("updates.strategy", s("periodic"))]), "SetSettings: updates.strategy: \"periodic\" needs at least one [[updates.window]]"),
        ("fleet-lock without a url", HashMap::from([("updates.strategy", s("fleet-lock"))]), "SetSettings: updates.strategy: \"fleet-lock\" needs the lock manager's"),
        ("malformed window start", HashMap::from([("updates.window", Variant::from(vec![window(&["Sat"], "25:00", 60)]))]), "SetSettings: updates.window[0].start: \"25:00\" is not a 24-hour time HH:MM"),
        ("unknown day", HashMap::from([("updates.window", Variant::from(vec![window(&["Sat"], "01:00", 60), window(&["Funday"], "01:00", 60)]))]), "SetSettings: updates.window[1].days: unknown day \"Funday\""),
        ("zero length", HashMap::from([("updates.window", Variant::from(vec![window(&["Sat"], "01:00", 0)]))]), "SetSettings: updates.window[0].length: 0 is not a length in minutes greater than 0"),
        ("missing start", HashMap::from([("updates.window", Variant::from(vec![HashMap::from([("days", Variant::from(vec!["Sat"])), ("length", Variant::from(60u32))])]))]), "SetSettings: updates.window[0].start: missing"),
        ("unknown window key", HashMap::from([("updates.window", Variant::from(vec![HashMap::from([("hours", Variant::from(2u32))])]))]), "SetSettings: updates.window[0]: unknown key 'hours'"),
        ("bad time zone", HashMap::from([("updates.time_zone", s("Europe/Bern"))]), "SetSettings: updates.time_zone: unknown time zone \"Europe/Bern\""),
        ("bad lock url", HashMap::from([("updates.fleet_lock.url", s("ftp://lock.example"))]), "SetSettings: updates.fleet_lock.url: \"ftp://lock.example\" is not an http:// or https:// URL"),
        ("wrong type", HashMap::from([("updates.policy", Variant::from(3u32))]), "SetSettings: updates.policy must be of type 's', got 'u'"),
        ("wrong window type", HashMap::from([("updates.window", s("Sat 01:00 60"))]), "SetSettings: updates.window must be of type 'aa{sv}', got 's'"),
        ("wrong length type", HashMap::from([("updates.window", Variant::from(vec![HashMap::from([("length", Variant::from(60i64))])]))]), "SetSettings: updates.window[0].length must be of type 'u', got 'x'"),
        ("unknown key", HashMap::from([("updates.require_signatures", Variant::Bool(false))]), "SetSettings: unknown setting 'updates.require_signatures'"),
        ("a daemon key", HashMap::from([("daemon.idle_exit_secs", Variant::from(0u64))]), "SetSettings: unknown setting 'daemon.idle_exit_secs'"),
        ("nothing", HashMap::new(), "SetSettings: no setting given"),
        // One bad value spoils the call: the good one is not written either.
        ("a good and a bad value", HashMap::from([("updates.policy", s("apply")), ("updates.time_zone", s("Mars/Olympus"))]), "SetSettings: updates.time_zone: unknown time zone"),
    ];
    for (what, settings, says) in cases {
        let e = set(&conn, settings).await.expect_err(what);
        assert_eq!(e.short_name(), "InvalidArgument", "{what}: {e:?}");
        assert!(e.message().starts_with(says), "{what}: {}", e.message());
        unchanged(what);
    }
    let e = call(&conn, "SetSettings", &(HashMap::from([("updates.policy", s("apply"))]), HashMap::from([("force", Variant::Bool(true))]))).await.unwrap_err();
    assert_eq!(e, Error::InvalidArgument("SetSettings: unknown option 'force' (this method takes no options)".into()));
    let e = call(&conn, "SetSettings", &("updates.policy", "apply")).await.unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument(m) if m.contains("'a{sv}a{sv}'")), "wrong argument types: {e:?}");
    let e = call(&conn, "ResetSettings", &(vec!["policy"], HashMap::<&str, Variant<'_>>::new())).await.unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument(m) if m.starts_with("ResetSettings: unknown setting 'policy'")), "{e:?}");
    unchanged("bad resets");
    let out = hostctl(&machine, Some(ADMIN.1), &["config", "set", "window", "Sat 01:00"], 7);
    assert!(out.contains("is not DAYS START LENGTH"), "{out}");

    // A key a later drop-in decides cannot be set here: it would not apply.
    machine.set_config_dropin("95-site.toml", Some("[updates]\npolicy = \"download\"\n")).unwrap();
    let e = set(&conn, HashMap::from([("updates.policy", s("apply"))])).await.unwrap_err();
    assert_eq!(e.short_name(), "InvalidArgument");
    assert!(e.message().contains("updates.policy is also set by") && e.message().contains("95-site.toml"), "{}", e.message());
    // A broken file of the admin's refuses every change, and says whose it is.
    machine.set_config_dropin("95-site.toml", Some("[updates]\npolicy = \"sometimes\"\n")).unwrap();
    let e = set(&conn, HashMap::from([("updates.strategy", s("immediate"))])).await.unwrap_err();
    assert!(e.message().contains("the configuration cannot be read") && e.message().contains("95-site.toml"), "{}", e.message());
    unchanged("overridden and broken");

    assert_eq!(host.automatic_update_policy().await.unwrap(), UpdatePolicy::Check);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(announced(&counts), [0, 0, 0], "nothing changed, nothing announced");
}
