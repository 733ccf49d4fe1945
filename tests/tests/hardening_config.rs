//! What a caller or a configuration file can make the daemon do beyond its
//! API: configuration files only root could have written, read off the bus
//! threads in bounded time; no credentials in settings every user can read;
//! oversized calls refused before they are decoded; the initiator's unit in
//! the journal as the system manager named it. See docs/security.md,
//! "Configuration, options and credentials".

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use hostd_interface::manager::{UpdatePolicy, UpdateStrategy};
use hostd_interface::proxy::Host1Proxy;
use hostd_interface::Error;
use hostd_tests::binary;
use hostd_tests::journal::{message_id, JournalSocket};
use hostd_tests::machine::{TestMachine, ADMIN, USER};
use hostd_tests::offline::{host_with_v1, text};
use hostd_tests::repo_root;
use zbus::Variant;

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

/// Longer than any configuration read may take (hostd gives up after 5 s),
/// shorter than the bus's own method timeout.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// A machine over a directory that is not a sysroot: enough for settings.
fn machine_without_sysroot(config: &str) -> (tempfile::TempDir, TestMachine) {
    let dir = tempfile::tempdir().unwrap();
    let machine = TestMachine::start(dir.path(), config).unwrap();
    (dir, machine)
}

/// `ReloadConfig` as root, answered within [`ANSWER_WITHIN`].
async fn reload(host: &Host1Proxy<'_>) -> Result<(), Error> {
    tokio::time::timeout(ANSWER_WITHIN, host.reload_config())
        .await
        .expect("ReloadConfig answers in time")
}

/// A drop-in with policy `policy`, reloaded: the last good configuration.
async fn good_policy(machine: &TestMachine, host: &Host1Proxy<'_>, policy: &str) {
    machine
        .set_config_dropin("10-policy.toml", Some(&format!("[updates]\npolicy = \"{policy}\"\n")))
        .unwrap();
    reload(host).await.unwrap();
}

/// The daemon still answers: the bus's ping and a property.
async fn answers(machine: &TestMachine, host: &Host1Proxy<'_>) -> UpdatePolicy {
    let conn = machine.connect().await.unwrap();
    let ping = conn.call_method(Some("org.hostd.Host1"), "/org/hostd/Host1", Some("org.freedesktop.DBus.Peer"), "Ping", &());
    tokio::time::timeout(ANSWER_WITHIN, ping).await.expect("Ping answers in time").unwrap();
    tokio::time::timeout(ANSWER_WITHIN, host.automatic_update_policy())
        .await
        .expect("properties answer in time")
        .unwrap()
}

fn invalid_argument(result: Result<(), Error>) -> String {
    match result {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

/// Peak resident memory of `pid` in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_fifo_dropin_is_refused_at_once_and_the_last_good_configuration_stays() {
    let (_dir, machine) = machine_without_sysroot(CONFIG);
    let (_conn, host) = machine.manager().await.unwrap();
    good_policy(&machine, &host, "check").await;
    let fifo = machine.config_dropin_dir().join("20-fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();

    let message = invalid_argument(reload(&host).await);
    assert!(message.contains("20-fifo.toml: a FIFO, not a regular file"), "{message}");
    assert!(message.contains("keeping the previous one"), "{message}");
    assert_eq!(answers(&machine, &host).await, UpdatePolicy::Check, "the last good configuration stays");
}

#[tokio::test]
async fn a_symlink_to_a_device_is_refused_without_reading_it() {
    let (_dir, machine) = machine_without_sysroot(CONFIG);
    let (_conn, host) = machine.manager().await.unwrap();
    good_policy(&machine, &host, "download").await;
    let pid = machine.hostd_pid().unwrap();
    let before = peak_rss_kib(pid);
    std::os::unix::fs::symlink("/dev/zero", machine.config_dropin_dir().join("20-zero.toml")).unwrap();

    let message = invalid_argument(reload(&host).await);
    assert!(message.contains("20-zero.toml: a symbolic link"), "{message}");
    assert_eq!(answers(&machine, &host).await, UpdatePolicy::Download);
    let grown = peak_rss_kib(pid) - before;
    assert!(grown < 16 * 1024, "peak memory grew by {grown} KiB");
}

#[tokio::test]
async fn files_someone_other_than_root_could_write_are_refused_naming_the_file() {
    let (_dir, machine) = machine_without_sysroot(CONFIG);
    let (_conn, host) = machine.manager().await.unwrap();
    good_policy(&machine, &host, "stage").await;
    let dropin = machine.config_dropin_dir().join("30-other.toml");
    let write = |mode: u32, owner: Option<u32>| {
        std::fs::write(&dropin, "[updates]\npolicy = \"apply\"\n").unwrap();
        std::fs::set_permissions(&dropin, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&dropin, owner.or(Some(0)), None).unwrap();
    };

    write(0o664, None);
    let message = invalid_argument(reload(&host).await);
    assert!(message.contains("30-other.toml: writable by group or others (mode 0664)"), "{message}");
    write(0o644, Some(USER.1));
    let message = invalid_argument(reload(&host).await);
    assert!(message.contains(&format!("30-other.toml: owned by uid {}, not by root", USER.1)), "{message}");
    std::fs::write(&dropin, "#".repeat(64 * 1024 + 1)).unwrap();
    std::os::unix::fs::chown(&dropin, Some(0), None).unwrap();
    let message = invalid_argument(reload(&host).await);
    assert!(message.contains("30-other.toml: larger than 65536 bytes"), "{message}");
    assert_eq!(answers(&machine, &host).await, UpdatePolicy::Stage, "none of them applied");

    // The same file, root's and private, is read.
    write(0o644, None);
    reload(&host).await.unwrap();
    assert_eq!(answers(&machine, &host).await, UpdatePolicy::Apply);
}

#[tokio::test]
async fn a_fifo_at_start_up_does_not_keep_the_daemon_from_serving() {
    let (_dir, machine) = machine_without_sysroot("[updates]\npolicy = \"check\"\n");
    // hostd starts on the first call, with the FIFO already there.
    std::fs::create_dir_all(machine.config_dropin_dir()).unwrap();
    let fifo = machine.config_dropin_dir().join("20-fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (_conn, host) = machine.manager().await.unwrap();
    assert_eq!(answers(&machine, &host).await, UpdatePolicy::None, "defaults, as with any bad file");
    assert!(machine.log().contains("20-fifo.toml: a FIFO"), "{}", machine.log());
}

#[tokio::test]
async fn a_fleet_lock_url_with_credentials_is_refused_and_shown_nowhere() {
    const SECRET: &str = "tok3n-s3cret";
    let (_dir, machine) = machine_without_sysroot(CONFIG);
    let (_conn, host) = machine.manager().await.unwrap();
    machine
        .set_config_dropin(
            "40-fleet.toml",
            Some(&format!(
                "[updates]\nstrategy = \"fleet-lock\"\n[updates.fleet_lock]\nurl = \"https://node:{SECRET}@lock.example/\"\n"
            )),
        )
        .unwrap();

    let message = invalid_argument(reload(&host).await);
    assert!(message.contains("40-fleet.toml: updates.fleet_lock.url: must not contain credentials"), "{message}");
    assert!(!message.contains(SECRET), "{message}");
    assert_eq!(host.update_strategy().await.unwrap(), UpdateStrategy::Immediate);
    assert!(!host.reboot_pending_reason().await.unwrap().contains(SECRET));
    // Nor in the log, of this reload or of the next start.
    machine.kill_hostd();
    let (_conn, host) = machine.manager().await.unwrap();
    assert_eq!(host.update_strategy().await.unwrap(), UpdateStrategy::Immediate);
    let log = machine.log();
    assert!(log.contains("updates.fleet_lock.url: must not contain credentials"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
}

/// 1.3 million keys, as in the report that grew hostd from 32 MB to 393 MB.
const HUGE_DICT_KEYS: u32 = 1_300_000;

/// A short distinct key for `i` (base 36), so the message stays under the
/// bus's 32 MiB limit and reaches hostd.
fn short_key(mut i: u32) -> String {
    let mut key = Vec::new();
    loop {
        key.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(i % 36) as usize]);
        i /= 36;
        if i == 0 {
            break;
        }
    }
    String::from_utf8(key).unwrap()
}

#[tokio::test]
async fn a_huge_option_dictionary_is_refused_before_it_is_decoded() {
    let (_dir, machine) = machine_without_sysroot(CONFIG);
    let (conn, host) = machine.manager().await.unwrap();
    answers(&machine, &host).await;
    let pid = machine.hostd_pid().unwrap();
    let before = peak_rss_kib(pid);
    let dict: HashMap<String, Variant<'static>> = (0..HUGE_DICT_KEYS).map(|i| (short_key(i), Variant::Bool(true))).collect();
    let body = (dict,);
    let sent_bytes = zbus::Message::method_call("/org/hostd/Host1", "Status")
        .build(&body)
        .unwrap()
        .body()
        .len();
    assert!(sent_bytes < 32 << 20, "{sent_bytes} bytes would not pass the bus");

    let reply = conn
        .call_method(Some("org.hostd.Host1"), "/org/hostd/Host1", Some("org.hostd.Host1"), "Status", &body)
        .await;
    // Receiving the message costs its bytes, which the bus limits; nothing
    // may be built from them.
    let grown = (peak_rss_kib(pid) - before) * 1024;
    let beyond_the_message = grown.saturating_sub(sent_bytes as u64);
    assert!(
        beyond_the_message < 16 << 20,
        "peak memory grew by {grown} bytes for a {sent_bytes}-byte message"
    );
    let err = Error::from(reply.unwrap_err());
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains(&format!("the arguments are {sent_bytes} bytes"))),
        "{err:?}"
    );
    answers(&machine, &host).await;
}

#[tokio::test]
async fn properties_set_never_reaches_the_daemon() {
    let (_dir, machine) = machine_without_sysroot(CONFIG);
    let (conn, host) = machine.manager().await.unwrap();
    answers(&machine, &host).await;
    let pid = machine.hostd_pid().unwrap();
    let before = peak_rss_kib(pid);
    let dict: HashMap<String, Variant<'static>> = (0..HUGE_DICT_KEYS).map(|i| (short_key(i), Variant::Bool(true))).collect();
    let value = Variant::from(dict);
    let reply = conn
        .call_method(
            Some("org.hostd.Host1"),
            "/org/hostd/Host1",
            Some("org.freedesktop.DBus.Properties"),
            "Set",
            &("org.hostd.Host1", "State", &value),
        )
        .await;
    let grown = (peak_rss_kib(pid) - before) * 1024;
    assert!(grown < 16 << 20, "peak memory grew by {grown} bytes");
    match reply {
        Err(zbus::Error::FDO(e)) if matches!(*e, zbus::fdo::Error::AccessDenied(_)) => {}
        other => panic!("expected the bus to refuse, got {other:?}"),
    }
    answers(&machine, &host).await;
}

/// The hierarchies systemd tracks units in: the unified (v2) one, and on
/// hybrid hosts also the legacy name=systemd one.
fn unit_hierarchies() -> Vec<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup"]
        .iter()
        .map(PathBuf::from)
        .filter(|root| root.join("cgroup.procs").exists())
        .take(2)
        .collect()
}

/// The same cgroup path made for the test in each of [`unit_hierarchies`],
/// removed (innermost first) on drop.
struct TestCgroup {
    made: Vec<Vec<PathBuf>>,
}

impl TestCgroup {
    fn create(relative: &str) -> TestCgroup {
        let made = unit_hierarchies()
            .into_iter()
            .map(|mut path| {
                let mut dirs = Vec::new();
                for part in relative.split('/') {
                    path.push(part);
                    std::fs::create_dir(&path).unwrap();
                    dirs.push(path.clone());
                }
                dirs
            })
            .collect();
        TestCgroup { made }
    }

    /// The innermost directory in each hierarchy, space-separated.
    fn leaves(&self) -> String {
        let leaves: Vec<String> = self.made.iter().map(|dirs| dirs.last().unwrap().display().to_string()).collect();
        leaves.join(" ")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in self.made.iter().flat_map(|dirs| dirs.iter().rev()) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// `hostctl ARGS` as `uid`, started in `cgroup`.
fn hostctl_in_cgroup(machine: &TestMachine, cgroup: &TestCgroup, uid: u32, args: &[&str]) -> Output {
    let mut cmd = machine.command("sh", None);
    cmd.arg("-c")
        .arg(r#"for leaf in $LEAVES; do echo $$ > "$leaf/cgroup.procs" || exit 99; done; exec "$@""#)
        .arg("sh")
        .arg("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(binary("hostctl"))
        .args(args)
        .env("LEAVES", cgroup.leaves())
        .stdin(Stdio::null());
    cmd.output().unwrap()
}

#[tokio::test]
async fn the_journal_names_the_unit_the_system_manager_made_not_one_the_caller_named() {
    let h = host_with_v1("256m", &[]).await;
    let journal = JournalSocket::bind().unwrap();
    let machine = TestMachine::start_with_journal(h.sysroot.path(), CONFIG, &journal).unwrap();
    let rules = std::fs::read_to_string(repo_root().join("polkit-rules/50-hostd.rules")).unwrap();
    machine.add_polkit_rule("50-hostd.rules", &rules).unwrap();
    // Inside their user@.service, systemd delegates the cgroup tree to the
    // user, who may name a cgroup after any unit, the timer's included.
    let user_manager = format!("user@{}.service", ADMIN.1);
    let cgroup = TestCgroup::create(&format!(
        "hostd-test-{}.slice/user-{}.slice/{user_manager}/app.slice/hostd-fetch-apply-updates.service",
        std::process::id(),
        ADMIN.1
    ));

    let started = Instant::now();
    let out = hostctl_in_cgroup(&machine, &cgroup, ADMIN.1, &["cleanup"]);
    assert!(out.status.success(), "hostctl cleanup: {}\n{}", text(&out), machine.log());
    assert!(started.elapsed() < Duration::from_secs(60));

    let cleaned = journal.single(message_id::CLEANED_UP).unwrap();
    assert_eq!(cleaned["INITIATOR_UID"], ADMIN.1.to_string());
    assert_eq!(cleaned.get("INITIATOR_UNIT"), Some(&user_manager), "{cleaned:?}");
}
