//! hostd on a booted image-based host: the test OS (Debian with this build
//! of hostd) installed into a tmpfs sysroot and booted under systemd with
//! systemd-nspawn (see `hostd_tests::booted`). hostd is D-Bus activated by
//! the guest's systemd, asks the guest's polkitd, reboots through its logind,
//! and staged updates are finalized by ostree-finalize-staged at shutdown;
//! a reboot boots whatever the boot entries make the default.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use hostd_interface::diff::{Diff, PackageChangeKind, PackageDatabase};
use hostd_interface::edit::spec_document;
use hostd_interface::etc_diff::EtcDiff;
use hostd_interface::host::{BootEntry, BootOrder, DeploymentHealth, HealthResult, Host, Transport};
use hostd_tests::booted::bls;
use hostd_tests::booted::guest::Exit;
use hostd_tests::booted::image::{KARGS_V11, KARGS_V12, RELEASE_KARG, SETGID_FILE, SETGID_MODE, V2_PACKAGE};
use hostd_tests::booted::BootedMachine;
use hostd_tests::bound;
use hostd_tests::fixture::LayerFile;
use hostd_tests::fleetlock::StandInServer;
use hostd_tests::journal::message_id;
use hostd_tests::offline::text;
use hostd_tests::registry::{SlowLink, TestRegistry};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// An administrator: in `wheel`, which the image's polkit rules grant every
/// hostd action.
const ADMIN: &str = "alice";
/// A user with no grants.
const PLAIN_USER: &str = "bob";

/// The banner of `/run/reboot-required`.
const REBOOT_BANNER: &str = "*** System restart required ***";

/// A machine with v1 installed and booted.
fn booted_v1() -> BootedMachine {
    let mut m = BootedMachine::install().expect("installing v1");
    m.boot().expect("booting v1");
    m
}

/// A machine with v1, then v2 installed (v2 the default), booted into v2.
fn booted_v2_over_v1() -> BootedMachine {
    let mut m = BootedMachine::install().expect("installing v1");
    m.install_version("v2").expect("installing v2");
    m.boot().expect("booting v2");
    m
}

/// Its stdout; panics with everything it printed when it failed.
fn success(what: &str, out: &Output) -> String {
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn version(entry: &Option<BootEntry>) -> Option<&str> {
    entry.as_ref()?.image.as_ref()?.version.as_deref()
}

fn digest(entry: &Option<BootEntry>) -> Option<&str> {
    Some(entry.as_ref()?.image.as_ref()?.image_digest.as_str())
}

fn checksum(entry: &Option<BootEntry>) -> String {
    entry.as_ref().and_then(|e| e.ostree.as_ref()).map(|o| o.checksum.clone()).expect("an ostree deployment")
}

/// (staged, booted, rollback) versions.
fn slots(host: &Host) -> (Option<&str>, Option<&str>, Option<&str>) {
    (version(&host.status.staged), version(&host.status.booted), version(&host.status.rollback))
}

fn file(m: &BootedMachine, path: &str) -> String {
    m.must(&["cat", path]).unwrap_or_else(|e| panic!("reading {path}: {e:#}")).trim().to_string()
}

/// Whether the guest's hostd has a reboot pending by every account: the
/// marker file with its banner, the `RebootRequired` property and the text
/// `hostctl status` prints.
fn reboot_required(m: &BootedMachine) -> bool {
    let marker = m.exists("/run/reboot-required").unwrap();
    if marker {
        assert_eq!(file(m, "/run/reboot-required"), REBOOT_BANNER);
    }
    let property = m
        .must(&["busctl", "get-property", "org.hostd.Host1", "/org/hostd/Host1", "org.hostd.Host1", "RebootRequired"])
        .unwrap();
    let status_text = success("hostctl status", &m.hostctl(None, &["status", "--format", "humanreadable"]).unwrap());
    let said = status_text.contains("Reboot required");
    assert_eq!(
        (marker, property.trim() == "b true"),
        (said, said),
        "/run/reboot-required, RebootRequired ({}) and `hostctl status` disagree:\n{status_text}",
        property.trim()
    );
    said
}

/// The entry with `message_id` whose fields match, with the initiator's uid.
fn journal_entry(m: &BootedMachine, message_id: &str, new_checksum: &str, uid: u32) -> serde_json::Value {
    m.journal_entry(message_id, &[("NEW_CHECKSUM", new_checksum), ("INITIATOR_UID", &uid.to_string())]).unwrap()
}

/// A process started inside the guest in the background; killed on drop.
///
/// It runs in a process group of its own, which its part inside the guest
/// (nsenter forks to enter the PID namespace) shares, so both can be killed.
struct Background(Option<Child>);

impl Background {
    fn start(m: &BootedMachine, user: Option<&str>, args: &[&str]) -> Background {
        let mut cmd = m.command_as(user, args).unwrap();
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        Background(Some(cmd.spawn().expect("starting a command in the guest")))
    }

    /// Its output once it ended, or `None` when it still ran after
    /// `timeout` (then it is killed). It prints little, so the pipes never
    /// fill up while it runs.
    fn wait(mut self, timeout: Duration) -> Option<Output> {
        let deadline = Instant::now() + timeout;
        let child = self.0.as_mut().expect("not waited for yet");
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.0.take().map(|c| c.wait_with_output().unwrap())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

#[test]
fn first_status_call_activates_hostd_through_systemd_and_shows_v1_booted() {
    let m = booted_v1();
    let images = m.images();
    let before = m.run(&["systemctl", "is-active", "hostd.service"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&before.stdout).trim(), "inactive", "hostd runs before anyone asked");

    let host = m.status().unwrap();
    // hostd answers on the bus a moment before it tells systemd it is ready.
    wait_for("hostd.service to be active", Duration::from_secs(10), || {
        m.must(&["systemctl", "is-active", "hostd.service"]).is_ok()
    });
    let pid = m.must(&["systemctl", "show", "--value", "-p", "MainPID", "hostd.service"]).unwrap();
    let exe = m.must(&["readlink", &format!("/proc/{}/exe", pid.trim())]).unwrap();
    assert_eq!(exe.trim(), "/usr/libexec/hostd");

    let booted = host.status.booted.as_ref().expect("a booted deployment");
    let image = booted.image.as_ref().expect("booted from an image");
    assert_eq!(image.image.image, m.tracked_image());
    assert_eq!(image.image.transport, Transport::Oci);
    assert_eq!(image.version.as_deref(), Some("v1"));
    assert_eq!(image.image_digest, images.v1.digest);
    let deployment = m.booted_entry().unwrap().deployment(m.sysroot().path()).unwrap();
    let dir_name = deployment.file_name().unwrap().to_string_lossy().into_owned();
    let ostree = booted.ostree.as_ref().expect("ostree details");
    assert_eq!(dir_name, format!("{}.{}", ostree.checksum, ostree.deploy_serial), "the deployment nspawn booted");
    assert_eq!(slots(&host), (None, Some("v1"), None));
    assert_eq!(host.spec.image.as_ref().map(|i| i.image.as_str()), Some(m.tracked_image().as_str()));

    let plain = success("hostctl status", &m.hostctl(None, &["status", "--format", "humanreadable"]).unwrap());
    assert!(plain.contains(&format!("● Booted image: {} (oci)", m.tracked_image())), "{plain}");
    assert!(!reboot_required(&m));
}

/// The capabilities `systemd-units/hostd.service` keeps, with their numbers
/// (linux/capability.h); the unit says why each is needed.
const KEPT_CAPABILITIES: [(&str, u32); 12] = [
    ("cap_chown", 0),
    ("cap_dac_override", 1),
    ("cap_fowner", 3),
    ("cap_fsetid", 4),
    ("cap_kill", 5),
    ("cap_setgid", 6),
    ("cap_setuid", 7),
    ("cap_setpcap", 8),
    ("cap_linux_immutable", 9),
    ("cap_sys_admin", 21),
    ("cap_mknod", 27),
    ("cap_setfcap", 31),
];

/// Highest exposure `systemd-analyze security` may give hostd.service in
/// the guest (systemd 252; 6.8 before the unit was confined).
const MAX_EXPOSURE: f64 = 4.0;

#[test]
fn hostd_runs_with_the_confinement_its_unit_ships() {
    let m = booted_v1();
    m.status().unwrap();
    wait_for("hostd.service to be active", Duration::from_secs(10), || {
        m.must(&["systemctl", "is-active", "hostd.service"]).is_ok()
    });
    let pid = m.must(&["systemctl", "show", "--value", "-p", "MainPID", "hostd.service"]).unwrap();
    let status = file(&m, &format!("/proc/{}/status", pid.trim()));
    let field = |name: &str| -> String {
        let prefix = format!("{name}:");
        let line = status.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {name} in {status}"));
        line[name.len() + 1..].trim().to_string()
    };
    // What the kernel enforces on the running daemon.
    let kept = KEPT_CAPABILITIES.iter().fold(0u64, |mask, (_, bit)| mask | 1 << bit);
    let bounding = u64::from_str_radix(&field("CapBnd"), 16).unwrap();
    assert_eq!(bounding, kept, "capability bounding set of hostd: {bounding:#x}, expected {kept:#x}");
    assert_eq!(u64::from_str_radix(&field("CapEff"), 16).unwrap(), kept, "root's effective set is the bounding set");
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Seccomp"), "2", "a system call filter is installed");

    // What systemd applied from the installed unit.
    let show = |property: &str| m.must(&["systemctl", "show", "--value", "-p", property, "hostd.service"]).unwrap();
    let names: std::collections::BTreeSet<String> =
        show("CapabilityBoundingSet").split_whitespace().map(str::to_string).collect();
    let expected: std::collections::BTreeSet<String> = KEPT_CAPABILITIES.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, expected);
    let filter = show("SystemCallFilter");
    let allowed: std::collections::BTreeSet<&str> = filter.split_whitespace().collect();
    assert!(!filter.starts_with('~'), "an allow list: {filter}");
    for call in ["mount", "umount2", "unshare", "setresuid", "fchown", "ioctl"] {
        assert!(allowed.contains(call), "{call} is allowed: {filter}");
    }
    for call in ["reboot", "kexec_load", "swapon", "init_module", "iopl", "settimeofday", "ptrace", "uselib"] {
        assert!(!allowed.contains(call), "{call} is filtered: {filter}");
    }
    assert_eq!(show("SystemCallErrorNumber").trim(), "1", "denied calls fail with EPERM");
    assert_eq!(show("RestrictNamespaces").trim(), "mnt");
    assert_eq!(show("MemoryHigh").trim(), (512u64 << 20).to_string());
    assert_eq!(show("MemoryMax").trim(), (1u64 << 30).to_string());
    assert_eq!(show("TasksMax").trim(), "512");

    let analysis = m.must(&["systemd-analyze", "security", "--no-pager", "hostd.service"]).unwrap();
    let overall = analysis.lines().find(|l| l.contains("Overall exposure level")).expect("an overall level");
    let exposure: f64 = overall.split(':').nth(1).and_then(|v| v.split_whitespace().next()).unwrap().parse().unwrap();
    assert!(exposure <= MAX_EXPOSURE, "{overall}\n{analysis}");
}

#[test]
fn a_shutdown_right_after_upgrade_returns_boots_the_update_without_waiting_for_ostrees_path_unit() {
    let mut m = booted_v1();
    // ostree-finalize-staged.path starts the finalization once systemd
    // notices the staged deployment, which an immediate shutdown can beat;
    // stopped here, so only what hostd did before answering counts.
    m.must(&["systemctl", "stop", "ostree-finalize-staged.path"]).unwrap();
    m.publish("v2").unwrap();
    let said = upgrade(&m, &[]);
    assert!(said.contains("Staged v2"), "{said}");
    assert!(!said.contains("Warning"), "{said}");
    let state = m.must(&["systemctl", "show", "--value", "-p", "ActiveState", "ostree-finalize-staged.service"]).unwrap();
    assert_eq!(state.trim(), "active", "finalization is armed when the job ends");
    m.reboot().unwrap();
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (None, Some("v2"), Some("v1")));
}

#[test]
fn wheel_member_upgrades_and_the_reboot_boots_v2_with_etc_merged() {
    let mut m = booted_v1();
    let uid = m.add_user(ADMIN, true).unwrap();
    // A local edit of a default the update changes, and a file only this host has.
    m.write_file("/etc/testos/b.conf", "b=local-edit\n").unwrap();
    m.write_file("/etc/testos/local.conf", "c=local-only\n").unwrap();
    m.publish("v2").unwrap();

    let out = success("hostctl upgrade", &m.hostctl(Some(ADMIN), &["upgrade"]).unwrap());
    assert!(out.contains("Staged v2"), "{out}");
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (Some("v2"), Some("v1"), None));
    assert_eq!(digest(&host.status.staged), Some(m.images().v2.digest.as_str()));
    assert!(reboot_required(&m));
    let entry = journal_entry(&m, message_id::STAGED, &checksum(&host.status.staged), uid);
    assert_eq!(entry["OLD_CHECKSUM"], checksum(&host.status.booted));
    assert!(entry["IMAGE"].as_str().is_some_and(|i| i.contains(&m.tracked_image())), "{entry}");

    m.reboot().unwrap();
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (None, Some("v2"), Some("v1")));
    assert_eq!(digest(&host.status.booted), Some(m.images().v2.digest.as_str()));
    assert_eq!(file(&m, "/usr/share/testos/version"), "v2", "/usr comes from v2");
    assert_eq!(file(&m, "/etc/testos/a.conf"), "a=v2-default", "an unedited default follows the image");
    assert_eq!(file(&m, "/etc/testos/b.conf"), "b=local-edit", "a local edit survives");
    assert_eq!(file(&m, "/etc/testos/local.conf"), "c=local-only", "a local file survives");
    let setgid = m.must(&["stat", "-c", "%a %U %G", &format!("/{SETGID_FILE}")]).unwrap();
    assert_eq!(setgid.trim(), format!("{SETGID_MODE:o} root shadow"), "a setgid file keeps its mode and owners");
    let boot_entry = m.booted_entry().unwrap();
    assert_eq!(boot_entry.karg(RELEASE_KARG), Some("v2"), "kargs.d of v2 applied: {}", boot_entry.options);
    assert!(!reboot_required(&m));

    // bootc's `status --booted` for scripts: the Host document with only
    // the booted entry, as JSON and, piped, as YAML.
    let json = success("hostctl status --booted --format json", &m.hostctl(None, &["status", "--booted", "--format", "json"]).unwrap());
    let yaml = success("hostctl status --booted", &m.hostctl(None, &["status", "--booted"]).unwrap());
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_yaml::from_str::<serde_json::Value>(&yaml).unwrap(), json, "{yaml}");
    hostd_tests::schema::validate("bootc-host-v1.schema.json", &json).unwrap();
    let booted: Host = serde_json::from_value(json).unwrap();
    assert_eq!(slots(&booted), (None, Some("v2"), None), "only the booted entry");
}

/// A boot entry's options with its `ostree=` argument written `ostree=…`.
fn options_of(entry: &bls::Entry) -> String {
    let ostree = entry.options.split_whitespace().find(|a| a.starts_with("ostree=")).expect("an ostree= argument");
    entry.options.replace(ostree, "ostree=…")
}

#[test]
fn the_kargs_delta_keeps_the_admins_argument_drops_the_images_and_round_trips_quotes() {
    let mut m = booted_v1();
    // The admin adds an argument of their own. On a booted host, ostree
    // 2022.7's `instutil set-kargs` fails ("Attempting to remove booted
    // deployment"); `kargs edit-in-place` rewrites the boot entry.
    m.must(&["ostree", "admin", "kargs", "edit-in-place", "--append-if-missing=local.arg=\"x y\""]).unwrap();
    let local = options_of(&bls::default_entry(m.sysroot().path()).unwrap());
    assert!(local.contains("local.arg=\"x y\""), "{local}");

    m.publish("v11").unwrap();
    let out = success("hostctl upgrade", &m.hostctl(None, &["upgrade"]).unwrap());
    assert!(out.contains("Staged v11"), "{out}");
    assert_eq!(slots(&m.status().unwrap()), (Some("v11"), Some("v1"), None));
    m.reboot().unwrap();
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v11"), Some("v1")));
    let v11 = options_of(m.booted_entry().unwrap());
    assert_eq!(v11, format!("{local} {}", KARGS_V11.join(" ")), "v11's arguments added, the quoted one whole");

    m.publish("v12").unwrap();
    success("hostctl upgrade", &m.hostctl(None, &["upgrade"]).unwrap());
    m.reboot().unwrap();
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v12"), Some("v11")));
    let v12 = options_of(m.booted_entry().unwrap());
    assert_eq!(v12, format!("{local} {}", KARGS_V12.join(" ")), "the admin's argument stays, what v12 dropped is gone");
}

#[test]
fn download_only_survives_a_plain_reboot_and_stage_queues_it() {
    let mut m = booted_v1();
    m.publish("v2").unwrap();
    success("hostctl upgrade --download-only", &m.hostctl(None, &["upgrade", "--download-only"]).unwrap());
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (Some("v2"), Some("v1"), None));
    assert!(host.status.staged.as_ref().unwrap().download_only, "the staged deployment is download-only");
    assert!(m.exists("/run/ostree/staged-deployment-locked").unwrap());
    assert!(!reboot_required(&m), "a plain reboot does not apply a download-only update");

    let entries_before = m.journal_entries(message_id::STAGED).unwrap().len();
    let boot_entries = bls::entries(m.sysroot().path()).unwrap();
    m.reboot().unwrap();
    assert_eq!(bls::entries(m.sysroot().path()).unwrap(), boot_entries, "not finalized");
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (None, Some("v1"), None));

    let out = success("hostctl stage", &m.hostctl(None, &["stage"]).unwrap());
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (Some("v2"), Some("v1"), None), "{out}");
    assert!(!host.status.staged.as_ref().unwrap().download_only);
    assert!(reboot_required(&m));
    journal_entry(&m, message_id::STAGED, &checksum(&host.status.staged), 0);
    assert!(m.journal_entries(message_id::STAGED).unwrap().len() > entries_before, "stage wrote its own entry");

    m.reboot().unwrap();
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (None, Some("v2"), Some("v1")));
    assert_eq!(file(&m, "/usr/share/testos/version"), "v2");
}

#[test]
fn rollback_twice_boots_v1_then_v2_again() {
    let mut m = booted_v2_over_v1();
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (None, Some("v2"), Some("v1")));
    let (v2_checksum, v1_checksum) = (checksum(&host.status.booted), checksum(&host.status.rollback));
    // A downloaded update waits, staged and locked; the rollback drops it.
    m.publish("v3").unwrap();
    success("hostctl upgrade --download-only", &m.hostctl(None, &["upgrade", "--download-only"]).unwrap());
    let v3_checksum = checksum(&m.status().unwrap().status.staged);

    let said = success("hostctl rollback", &m.hostctl(None, &["rollback"]).unwrap());
    assert!(
        said.contains(&format!("The staged download-only deployment {v3_checksum} was discarded.")),
        "{said}"
    );
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (None, Some("v2"), Some("v1")), "v3 is gone");
    assert!(host.status.rollback_queued, "the rollback deployment boots next");
    assert!(reboot_required(&m));
    let entry = journal_entry(&m, message_id::ROLLED_BACK, &v1_checksum, 0);
    assert_eq!(entry["OLD_CHECKSUM"], v2_checksum.as_str());

    m.reboot().unwrap();
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (None, Some("v1"), Some("v2")));
    assert_eq!(file(&m, "/usr/share/testos/version"), "v1");
    assert!(!reboot_required(&m));

    success("hostctl rollback", &m.hostctl(None, &["rollback"]).unwrap());
    journal_entry(&m, message_id::ROLLED_BACK, &v2_checksum, 0);
    m.reboot().unwrap();
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (None, Some("v2"), Some("v1")));
    assert_eq!(file(&m, "/usr/share/testos/version"), "v2");
}

#[test]
fn upgrade_apply_reboots_into_v2_through_logind() {
    let mut m = booted_v1();
    let uid = m.add_user(ADMIN, true).unwrap();
    m.publish("v2").unwrap();

    let hostctl = Background::start(&m, Some(ADMIN), &["hostctl", "upgrade", "--apply"]);
    let exit = m.wait_for_shutdown(Duration::from_secs(180)).unwrap();
    assert_eq!(exit, Exit::Rebooted, "the guest rebooted by itself");
    let out = hostctl.wait(Duration::from_secs(10)).expect("hostctl ends with the guest");

    m.boot().unwrap();
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (None, Some("v2"), Some("v1")));
    let v2_checksum = checksum(&host.status.booted);
    journal_entry(&m, message_id::STAGED, &v2_checksum, uid);
    m.journal_entry(message_id::REBOOT_REQUESTED, &[("INITIATOR_UID", &uid.to_string())]).unwrap();
    assert!(!reboot_required(&m));
    // The job succeeded: hostctl says so, unless the shutdown ended it first.
    assert!(
        out.status.success() || out.status.code().is_none(),
        "hostctl upgrade --apply failed ({}):\n{}",
        out.status,
        text(&out)
    );
}

#[test]
fn a_block_inhibitor_holds_off_the_reboots_of_upgrade_and_rollback_apply() {
    let mut m = booted_v2_over_v1();
    let uid = m.add_user(ADMIN, true).unwrap();
    let v1_checksum = checksum(&m.status().unwrap().status.rollback);
    m.must(&[
        "systemd-run",
        "--unit=test-burner",
        "--property=Type=exec",
        "--",
        "systemd-inhibit",
        "--what=shutdown",
        "--mode=block",
        "--who=test-burner",
        "--why=burning a disc",
        "sleep",
        "infinity",
    ])
    .unwrap();
    wait_for("the inhibitor to be listed", Duration::from_secs(10), || {
        m.must(&["systemd-inhibit", "--list", "--no-pager"]).unwrap().contains("test-burner")
    });

    m.publish("v3").unwrap();
    apply_is_blocked(&mut m, &["upgrade", "--apply"]);
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (Some("v3"), Some("v2"), Some("v1")));
    journal_entry(&m, message_id::STAGED, &checksum(&host.status.staged), uid);

    // Rolling back drops the staged v3 and queues v1.
    apply_is_blocked(&mut m, &["rollback", "--apply"]);
    let host = m.status().unwrap();
    assert!(host.status.rollback_queued, "v1 boots next");
    assert_eq!(host.status.staged, None);
    journal_entry(&m, message_id::ROLLED_BACK, &v1_checksum, uid);
    let blocked = m.journal_entries(message_id::REBOOT_BLOCKED).unwrap();
    assert_eq!(blocked.len(), 2, "one entry per blocked reboot: {blocked:#?}");
    assert!(blocked.iter().all(|e| e["INITIATOR_UID"] == uid.to_string().as_str()), "{blocked:#?}");

    // Once the burner is done, a plain reboot applies the queued rollback.
    m.must(&["systemctl", "stop", "test-burner"]).unwrap();
    m.reboot().unwrap();
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v1"), Some("v2")));
}

/// `hostctl ARGS` (with `--apply`) as the admin succeeds but says the
/// reboot is blocked; the guest keeps running and still needs a reboot.
fn apply_is_blocked(m: &mut BootedMachine, args: &[&str]) {
    let out = m.hostctl(Some(ADMIN), args).unwrap();
    let said = success(&format!("hostctl {}", args.join(" ")), &out);
    assert!(said.to_lowercase().contains("reboot blocked by test-burner"), "{}", text(&out));
    std::thread::sleep(Duration::from_secs(2));
    assert!(m.running().unwrap(), "the guest must not reboot while inhibited");
    assert_eq!(m.must(&["systemctl", "is-system-running"]).unwrap().trim(), "running");
    assert!(reboot_required(m), "the queued change still waits for a reboot");
}

#[test]
fn the_fetch_apply_timer_stages_the_update_without_a_manual_call() {
    let mut m = booted_v1();
    m.publish("v2").unwrap();
    let unit = "hostd-fetch-apply-updates";
    // The administrator lets updates be staged automatically.
    m.write_file("/etc/hostd/hostd.d/50-auto.toml", "[updates]\npolicy = \"stage\"\n").unwrap();
    // Due one second after it starts instead of an hour after boot.
    m.write_file(
        &format!("/run/systemd/system/{unit}.timer.d/test.conf"),
        "[Timer]\nOnBootSec=\nOnUnitInactiveSec=\nOnActiveSec=1s\nRandomizedDelaySec=0\n",
    )
    .unwrap();
    m.must(&["systemctl", "daemon-reload"]).unwrap();
    m.must(&["systemctl", "start", &format!("{unit}.timer")]).unwrap();
    wait_for("the timer's service to run", Duration::from_secs(180), || {
        let show = m
            .must(&[
                "systemctl",
                "show",
                "-p",
                "ActiveState,ExecMainExitTimestampMonotonic",
                &format!("{unit}.service"),
            ])
            .unwrap();
        let ran = show.contains("ActiveState=inactive") && !show.contains("ExecMainExitTimestampMonotonic=0");
        ran || show.contains("ActiveState=failed")
    });
    let result = m.must(&["systemctl", "show", "--value", "-p", "Result", &format!("{unit}.service")]).unwrap();
    assert_eq!(
        result.trim(),
        "success",
        "{}",
        m.must(&["journalctl", "-u", &format!("{unit}.service"), "--no-pager"]).unwrap()
    );
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (Some("v2"), Some("v1"), None));
    let entry = journal_entry(&m, message_id::STAGED, &checksum(&host.status.staged), 0);
    assert_eq!(entry["INITIATOR_UNIT"], format!("{unit}.service"), "the journal names the unit that asked");

    m.reboot().unwrap();
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v2"), Some("v1")));
}

/// bootc's own timer, on a host whose image enables it and that has hostd
/// installed with no configuration at all (`[updates] policy` is `none`):
/// its service keeps doing what `bootc upgrade --apply --quiet` does, now
/// through hostd's drop-in (the image has no bootc binary), and the host
/// reboots into v2 by itself.
#[test]
fn bootcs_timer_with_hostd_installed_and_no_configuration_upgrades_and_reboots_into_v2() {
    let mut m = booted_v1();
    let unit = "bootc-fetch-apply-updates";
    assert!(!m.exists("/usr/bin/bootc").unwrap(), "the test OS has no bootc binary");
    assert_eq!(m.must(&["systemctl", "is-enabled", &format!("{unit}.timer")]).unwrap().trim(), "enabled");
    assert_eq!(m.must(&["systemctl", "is-active", &format!("{unit}.timer")]).unwrap().trim(), "active");
    // find lists what exists (and complains about the directories that do not).
    let config = m.run(&["find", "/etc/hostd", "/run/hostd", "/usr/lib/hostd", "-type", "f"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&config.stdout), "", "no hostd configuration");
    assert!(m.exists("/usr/lib/hostd/hostd.d").unwrap(), "the vendor configuration directory is installed");
    // docs/install.md's `systemctl preset` enabled hostd's own units too.
    let enabled = m.must(&["systemctl", "is-enabled", "hostd-fetch-apply-updates.timer", "hostd-steady-state.service"]);
    assert_eq!(enabled.unwrap(), "enabled\nenabled\n");
    let shown = success("hostctl status", &m.hostctl(None, &["status", "--format", "humanreadable"]).unwrap());
    assert!(shown.contains("Automatic updates: policy none"), "{shown}");
    m.publish("v2").unwrap();

    // Due one second after it starts instead of an hour after boot.
    m.write_file(
        &format!("/run/systemd/system/{unit}.timer.d/test.conf"),
        "[Timer]\nOnBootSec=\nOnUnitInactiveSec=\nOnActiveSec=1s\nRandomizedDelaySec=0\n",
    )
    .unwrap();
    m.must(&["systemctl", "daemon-reload"]).unwrap();
    m.must(&["systemctl", "restart", &format!("{unit}.timer")]).unwrap();
    assert_eq!(m.wait_for_shutdown(Duration::from_secs(180)).unwrap(), Exit::Rebooted, "the guest rebooted by itself");

    m.boot().unwrap();
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (None, Some("v2"), Some("v1")));
    assert_eq!(file(&m, "/usr/share/testos/version"), "v2");
    let staged = journal_entry(&m, message_id::STAGED, &checksum(&host.status.booted), 0);
    assert_eq!(staged["INITIATOR_UNIT"], format!("{unit}.service"), "the journal names bootc's unit");
    m.journal_entry(message_id::REBOOT_REQUESTED, &[("INITIATOR_UNIT", &format!("{unit}.service"))]).unwrap();
    assert!(!reboot_required(&m));
}

#[test]
fn killing_hostd_mid_pull_leaves_v1_booted_and_the_next_upgrade_works() {
    let registry = TestRegistry::start().unwrap();
    let mut m = booted_v1();
    registry.push(&format!("{}:v3", m.oci_dir().display()), "testos:v3").unwrap();
    // v3's large layer takes many seconds through this link.
    let link = SlowLink::start(registry.port, 1 << 20).unwrap();
    m.write_file(
        "/etc/containers/registries.conf.d/50-test.conf",
        &format!("[[registry]]\nlocation = \"{}\"\ninsecure = true\n", link.host()),
    )
    .unwrap();

    let image = format!("{}/testos:v3", link.host());
    let switch = Background::start(&m, None, &["hostctl", "switch", "--transport", "registry", &image]);
    wait_for("the pull to bring its first bytes", Duration::from_secs(60), || {
        let Some(job) = active_job(&m) else { return false };
        job_property(&m, &job, "Phase") == "s \"pulling\"" && job_property(&m, &job, "BytesDone") != "t 0"
    });
    let pid = m.must(&["systemctl", "show", "--value", "-p", "MainPID", "hostd.service"]).unwrap();
    m.must(&["kill", "-9", pid.trim()]).unwrap();
    let switch_ended = switch.wait(Duration::from_secs(30));
    let work_marker = m.sysroot().path().join("ostree/hostd/work-in-progress");
    assert!(work_marker.exists(), "the killed hostd held the sysroot lock");

    // A new hostd (activated by this call) sees the host as it was.
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (None, Some("v1"), None));
    assert_eq!(host.spec.image.as_ref().map(|i| i.image.as_str()), Some(m.tracked_image().as_str()));
    let state =
        m.must(&["busctl", "get-property", "org.hostd.Host1", "/org/hostd/Host1", "org.hostd.Host1", "State"]).unwrap();
    assert_eq!(state.trim(), "s \"idle\"");
    assert!(!reboot_required(&m));
    // The new hostd cleans up behind the killed one (in its own mount
    // namespace, where /sysroot is writable).
    wait_for("the clean-up after the killed hostd", Duration::from_secs(30), || !work_marker.exists());
    m.sysroot().fsck().unwrap();

    m.reboot().unwrap();
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v1"), None));
    success("hostctl cleanup", &m.hostctl(None, &["cleanup"]).unwrap());
    m.journal_entry(message_id::CLEANED_UP, &[("INITIATOR_UID", "0")]).unwrap();
    m.publish("v2").unwrap();
    success("hostctl upgrade", &m.hostctl(None, &["upgrade"]).unwrap());
    assert_eq!(slots(&m.status().unwrap()), (Some("v2"), Some("v1"), None));
    // The client following the job notices that hostd is gone.
    match switch_ended {
        Some(out) => assert!(!out.status.success(), "hostctl switch succeeded although hostd died:\n{}", text(&out)),
        None => panic!("hostctl switch still waited for its job 30 s after hostd was killed"),
    }
}

/// hostd.service's drop-in that makes the next hostd hold its jobs at a
/// failpoint (`daemon/src/failpoint.rs`; the test OS has the test build).
const FAILPOINT_DROPIN: &str = "/etc/systemd/system/hostd.service.d/50-failpoint.conf";

#[test]
fn hostd_killed_between_staging_and_the_lock_file_leaves_a_download_only_update_unapplied() {
    let mut m = booted_v1();
    m.publish("v2").unwrap();
    m.write_file(FAILPOINT_DROPIN, "[Service]\nEnvironment=FAILPOINTS=after-staging=return\n").unwrap();
    m.must(&["systemctl", "daemon-reload"]).unwrap();
    let boot_entries = bls::entries(m.sysroot().path()).unwrap();

    let upgrade = Background::start(&m, None, &["hostctl", "upgrade", "--download-only"]);
    wait_for("the job to be held after staging", Duration::from_secs(60), || {
        let Some(job) = active_job(&m) else { return false };
        job_property(&m, &job, "Message") == "s \"held at failpoint after-staging\""
    });
    assert!(m.exists("/run/ostree/staged-deployment").unwrap(), "v2 is staged");
    assert!(m.exists("/run/ostree/staged-deployment-locked").unwrap(), "locked before it was staged");
    let pid = m.must(&["systemctl", "show", "--value", "-p", "MainPID", "hostd.service"]).unwrap();
    m.must(&["kill", "-9", pid.trim()]).unwrap();
    assert!(upgrade.wait(Duration::from_secs(30)).is_some_and(|out| !out.status.success()), "hostctl saw hostd go");
    m.must(&["rm", FAILPOINT_DROPIN]).unwrap();
    m.must(&["systemctl", "daemon-reload"]).unwrap();

    m.reboot().unwrap();
    assert_eq!(bls::entries(m.sysroot().path()).unwrap(), boot_entries, "the staged download-only update was not finalized");
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v1"), None));
    assert_eq!(file(&m, "/usr/share/testos/version"), "v1");
}

#[test]
fn a_user_outside_wheel_may_not_upgrade_and_nothing_is_staged() {
    let m = booted_v1();
    m.add_user(PLAIN_USER, false).unwrap();
    m.publish("v2").unwrap();

    let out = m.hostctl(Some(PLAIN_USER), &["upgrade"]).unwrap();
    assert_eq!(out.status.code(), Some(5), "exit code of a denied call:\n{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NotAuthorized"), "{stderr}");

    success("hostctl status as a plain user", &m.hostctl(Some(PLAIN_USER), &["status", "--format", "humanreadable"]).unwrap());
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v1"), None));
    assert!(!m.exists("/run/ostree/staged-deployment").unwrap());
    assert!(m.journal_entries(message_id::STAGED).unwrap().is_empty(), "nothing was staged");
    assert!(!reboot_required(&m));
}

/// The job the guest's hostd runs, if any.
fn active_job(m: &BootedMachine) -> Option<String> {
    let out = m
        .run(&["busctl", "get-property", "org.hostd.Host1", "/org/hostd/Host1", "org.hostd.Host1", "ActiveJob"])
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().strip_prefix("o ")?.trim_matches('"').to_string();
    (path != "/").then_some(path)
}

/// `busctl get-property` output of a job property (`s "pulling"`, `t 42`).
fn job_property(m: &BootedMachine, job: &str, name: &str) -> String {
    let out = m.run(&["busctl", "get-property", "org.hostd.Host1", job, "org.hostd.Host1.Job", name]).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `/etc/hostd/hostd.d/50-auto.toml` in the guest, then `hostctl reload`.
fn configure_updates(m: &BootedMachine, toml: &str) {
    m.write_file("/etc/hostd/hostd.d/50-auto.toml", toml).unwrap();
    success("hostctl reload", &m.hostctl(None, &["reload"]).unwrap());
}

/// A one-minute window every day, twelve hours from now (UTC): closed now.
fn closed_window() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let start = (now / 60 + 12 * 60) % (24 * 60);
    format!(
        "time_zone = \"UTC\"\n[[updates.window]]\ndays = [\"Mon\", \"Tue\", \"Wed\", \"Thu\", \"Fri\", \"Sat\", \"Sun\"]\nstart = \"{:02}:{:02}\"\nlength = 1\n",
        start / 60,
        start % 60
    )
}

#[test]
fn each_unattended_policy_does_what_it_documents_on_a_booted_host() {
    let mut m = booted_v1();
    m.publish("v2").unwrap();
    let v2_digest = m.images().v2.digest.clone();
    let auto = |m: &BootedMachine| success("hostctl upgrade --auto", &m.hostctl(None, &["upgrade", "--auto"]).unwrap());

    configure_updates(&m, "[updates]\npolicy = \"none\"\n");
    assert!(auto(&m).contains("Automatic updates are off"));
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v1"), None));

    configure_updates(&m, "[updates]\npolicy = \"check\"\n");
    auto(&m);
    let host = m.status().unwrap();
    let cached = host.status.booted.as_ref().and_then(|b| b.cached_update.as_ref()).expect("a cached update");
    assert_eq!(cached.image_digest, v2_digest);
    assert_eq!(slots(&host), (None, Some("v1"), None), "check stages nothing");

    configure_updates(&m, "[updates]\npolicy = \"download\"\n");
    auto(&m);
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (Some("v2"), Some("v1"), None));
    assert!(host.status.staged.as_ref().unwrap().download_only, "download stages locked");
    assert!(!reboot_required(&m));

    configure_updates(&m, "[updates]\npolicy = \"stage\"\n");
    auto(&m);
    assert!(!m.status().unwrap().status.staged.as_ref().unwrap().download_only);
    assert!(reboot_required(&m));

    // apply, but only inside a maintenance window: postponed, users told why.
    configure_updates(&m, &format!("[updates]\npolicy = \"apply\"\nstrategy = \"periodic\"\n{}", closed_window()));
    let said = auto(&m);
    assert!(said.contains("Reboot postponed: outside the maintenance windows; the next opens"), "{said}");
    assert!(m.running().unwrap(), "no reboot outside the window");
    assert!(reboot_required(&m));
    let shown = success("hostctl status", &m.hostctl(None, &["status", "--format", "humanreadable"]).unwrap());
    assert!(shown.contains("Automatic updates: policy apply, strategy periodic"), "{shown}");
    assert!(shown.contains("Reboot pending: staged deployment") && shown.contains("outside the maintenance windows"), "{shown}");
    m.journal_entry(message_id::REBOOT_BLOCKED, &[("INITIATOR_UID", "0")]).unwrap();

    // apply, immediately: the run reboots into v2 by itself.
    configure_updates(&m, "[updates]\npolicy = \"apply\"\n");
    let run = Background::start(&m, None, &["hostctl", "upgrade", "--auto"]);
    assert_eq!(m.wait_for_shutdown(Duration::from_secs(120)).unwrap(), Exit::Rebooted);
    drop(run);
    m.boot().unwrap();
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v2"), Some("v1")));
}

#[test]
fn fleet_lock_lets_one_host_of_a_group_reboot_at_a_time() {
    let server = StandInServer::semaphore(1);
    let address = server.address().to_string();
    let config = format!(
        "[updates]\npolicy = \"apply\"\nstrategy = \"fleet-lock\"\n[updates.fleet_lock]\nurl = \"http://{address}\"\ngroup = \"workers\"\n"
    );
    let mut a = booted_v1();
    let mut b = booted_v1();
    // Every host of a fleet has its own machine id (the node id derives from it).
    for (m, id) in [(&a, "a"), (&b, "b")] {
        m.write_file("/etc/machine-id", &format!("{}\n", id.repeat(32))).unwrap();
        m.publish("v2").unwrap();
        configure_updates(m, &config);
        m.must(&["systemctl", "enable", "hostd-steady-state.service"]).unwrap();
    }
    let steady_states = |s: &StandInServer| s.seen().iter().filter(|r| r.path == "/v1/steady-state").count();

    // A takes the group's only slot and reboots into v2.
    let run = Background::start(&a, None, &["hostctl", "upgrade", "--auto"]);
    assert_eq!(a.wait_for_shutdown(Duration::from_secs(120)).unwrap(), Exit::Rebooted);
    drop(run);

    // B stages v2 too but waits for the slot.
    let out = b.hostctl(None, &["upgrade", "--auto"]).unwrap();
    let said = success("hostctl upgrade --auto", &out);
    assert!(
        said.contains("Reboot postponed: the lock manager gave no reboot slot: failed_lock_semaphore_full"),
        "{}",
        text(&out)
    );
    assert!(b.running().unwrap());
    assert!(reboot_required(&b));
    b.journal_entry(message_id::REBOOT_BLOCKED, &[]).unwrap();

    // A is back: hostd-steady-state.service gives the slot back.
    a.boot().unwrap();
    assert_eq!(slots(&a.status().unwrap()), (None, Some("v2"), Some("v1")));
    wait_for("A's steady-state report", Duration::from_secs(30), || steady_states(&server) == 1);

    // The lock manager is down: B keeps waiting, hostd keeps serving.
    drop(server);
    let said = success("hostctl upgrade --auto", &b.hostctl(None, &["upgrade", "--auto"]).unwrap());
    assert!(said.contains("Reboot postponed: no reboot slot:") && said.contains("unreachable"), "{said}");
    assert!(b.running().unwrap());
    b.must(&["systemctl", "is-active", "hostd.service"]).unwrap();

    // Back again: B's next run gets the slot and reboots.
    let server = StandInServer::semaphore_at(&address, 1);
    let run = Background::start(&b, None, &["hostctl", "upgrade", "--auto"]);
    assert_eq!(b.wait_for_shutdown(Duration::from_secs(120)).unwrap(), Exit::Rebooted);
    drop(run);
    b.boot().unwrap();
    assert_eq!(slots(&b.status().unwrap()), (None, Some("v2"), Some("v1")));
    wait_for("B's steady-state report", Duration::from_secs(30), || steady_states(&server) == 1);
}

/// A file the `/usr` overlay tests write; the image has none there.
const USR_FILE: &str = "/usr/share/hostd-usr-overlay-test";

/// Make the host's `/sysroot` read-only, as on a host with
/// `sysroot.readonly` in ostree's prepare-root.conf (bootc's default).
fn make_sysroot_read_only(m: &BootedMachine) {
    m.must(&["mount", "-o", "remount,ro,bind", "/sysroot"]).unwrap();
    assert!(!sysroot_writable(m));
}

/// Whether a process of the host can write to `/sysroot`.
fn sysroot_writable(m: &BootedMachine) -> bool {
    m.run(&["touch", "/sysroot/hostd-test-probe"]).unwrap().status.success()
}

/// `hostctl status --json` as served, validated against bootc's schema,
/// and its `status.usrOverlay`.
fn usr_overlay_in_status(m: &BootedMachine) -> serde_json::Value {
    let json = success("hostctl status --json", &m.hostctl(None, &["status", "--json"]).unwrap());
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    hostd_tests::schema::validate("bootc-host-v1.schema.json", &value).unwrap();
    value["status"]["usrOverlay"].clone()
}

#[test]
fn usr_overlay_makes_usr_writable_until_the_reboot_for_a_wheel_member_only() {
    let mut m = booted_v1();
    let uid = m.add_user(ADMIN, true).unwrap();
    m.add_user(PLAIN_USER, false).unwrap();
    let write = |m: &BootedMachine| m.run(&["sh", "-c", &format!("echo fix > {USR_FILE}")]).unwrap();
    assert!(!write(&m).status.success(), "/usr is read-only before");
    make_sysroot_read_only(&m);
    assert_eq!(usr_overlay_in_status(&m), serde_json::Value::Null);

    let out = m.hostctl(Some(PLAIN_USER), &["usr-overlay"]).unwrap();
    assert_eq!(out.status.code(), Some(5), "exit code of a denied call:\n{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("org.hostd.host1.usr-overlay"), "{}", text(&out));
    assert!(!write(&m).status.success(), "a denied call leaves /usr read-only");

    let out = success("hostctl usr-overlay", &m.hostctl(Some(ADMIN), &["usr-overlay"]).unwrap());
    assert!(out.contains("discarded at the next reboot"), "{out}");
    success("writing under /usr", &write(&m));
    assert_eq!(file(&m, USR_FILE), "fix");
    assert!(!sysroot_writable(&m), "/sysroot was made writable for the helper only");
    // The host sees the overlay, not only hostd: a fresh process of another user reads the file.
    success("reading it as another user", &m.run_as(Some(PLAIN_USER), &["cat", USR_FILE]).unwrap());
    assert_eq!(usr_overlay_in_status(&m), serde_json::json!({"accessMode": "readWrite", "persistence": "transient"}));
    let plain = success("hostctl status", &m.hostctl(None, &["status", "--format", "humanreadable"]).unwrap());
    assert!(plain.contains("/usr overlay: writable, its changes are discarded at the next reboot."), "{plain}");
    let host = m.status().unwrap();
    let entry = journal_entry(&m, message_id::USR_OVERLAY, &checksum(&host.status.booted), uid);
    assert_eq!(entry["PERSISTENCE"], "transient");

    let again = m.hostctl(Some(ADMIN), &["usr-overlay"]).unwrap();
    assert_eq!(again.status.code(), Some(7), "InvalidArgument while one is active:\n{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already active"), "{}", text(&again));

    m.reboot().unwrap();
    assert!(!m.exists(USR_FILE).unwrap(), "the overlay's changes are gone after the reboot");
    assert!(!write(&m).status.success(), "/usr is read-only again");
    assert_eq!(usr_overlay_in_status(&m), serde_json::Value::Null);
    assert_eq!(checksum(&m.status().unwrap().status.booted), checksum(&host.status.booted));
}

#[test]
fn persisted_usr_overlay_survives_a_reboot() {
    let mut m = booted_v1();
    m.add_user(ADMIN, true).unwrap();
    make_sysroot_read_only(&m);
    let out = success("hostctl usr-overlay --persist", &m.hostctl(Some(ADMIN), &["usr-overlay", "--persist"]).unwrap());
    assert!(out.contains("stay across reboots"), "{out}");
    m.must(&["sh", "-c", &format!("echo hotfix > {USR_FILE}")]).unwrap();
    let persistent = serde_json::json!({"accessMode": "readWrite", "persistence": "persistent"});
    assert_eq!(usr_overlay_in_status(&m), persistent);
    assert!(!sysroot_writable(&m), "/sysroot was made writable for the helper only");
    let before = m.status().unwrap();

    m.reboot().unwrap();
    assert_eq!(file(&m, USR_FILE), "hotfix", "the hotfix is still there after the reboot");
    assert_eq!(usr_overlay_in_status(&m), persistent);
    let plain = success("hostctl status", &m.hostctl(None, &["status", "--format", "humanreadable"]).unwrap());
    assert!(plain.contains("/usr overlay: writable, persistent"), "{plain}");
    let after = m.status().unwrap();
    assert_eq!(checksum(&after.status.booted), checksum(&before.status.booted), "the hotfixed deployment booted");
    // libostree keeps an unchanged clone of it as the rollback.
    assert_eq!(checksum(&after.status.rollback), checksum(&before.status.booted));
}

/// `hostctl etc-diff --json` as `user`: (path, kind) of each change, and
/// the deployment compared.
fn etc_changes(m: &BootedMachine, user: Option<&str>, args: &[&str]) -> (String, BTreeSet<(String, &'static str)>) {
    let mut all = vec!["etc-diff", "--json"];
    all.extend_from_slice(args);
    let json = success("hostctl etc-diff --json", &m.hostctl(user, &all).unwrap());
    let diff: EtcDiff = serde_json::from_str(&json).unwrap();
    (diff.deployment, diff.changes.into_iter().map(|c| (c.path, c.kind.as_str())).collect())
}

fn deployment_name(entry: &Option<BootEntry>) -> String {
    let ostree = entry.as_ref().and_then(|e| e.ostree.as_ref()).expect("an ostree deployment");
    format!("{}.{}", ostree.checksum, ostree.deploy_serial)
}

#[test]
fn etc_diff_lists_an_admins_edit_deletion_and_addition_and_the_merge_keeps_them() {
    let mut m = booted_v1();
    m.add_user(ADMIN, true).unwrap();
    m.add_user(PLAIN_USER, false).unwrap();
    // What the booted host has changed in /etc already (users, machine id).
    let (name, before) = etc_changes(&m, Some(ADMIN), &[]);
    assert_eq!(name, deployment_name(&m.status().unwrap().status.booted));
    let ours = |path: &str| path.starts_with("/etc/testos/");
    assert!(!before.iter().any(|(p, _)| ours(p)), "{before:?}");

    m.write_file("/etc/testos/b.conf", "b=local-edit\n").unwrap();
    m.must(&["rm", "/etc/testos/a.conf"]).unwrap();
    m.write_file("/etc/testos/local.conf", "c=local-only\n").unwrap();
    let expected = BTreeSet::from([
        ("/etc/testos/a.conf".to_string(), "removed"),
        ("/etc/testos/b.conf".to_string(), "modified"),
        ("/etc/testos/local.conf".to_string(), "added"),
    ]);
    let (_, after) = etc_changes(&m, Some(ADMIN), &[]);
    assert_eq!(after.difference(&before).cloned().collect::<BTreeSet<_>>(), expected, "{after:?}");
    let shown = success("hostctl etc-diff", &m.hostctl(Some(ADMIN), &["etc-diff"]).unwrap());
    for line in ["D  /etc/testos/a.conf  (file 0644)", "M  /etc/testos/b.conf  (content)", "A  /etc/testos/local.conf  (file 0644)"] {
        assert!(shown.lines().any(|l| l == line), "{line} in:\n{shown}");
    }
    assert!(!shown.contains("local-edit"), "contents are never shown:\n{shown}");
    let out = m.hostctl(Some(PLAIN_USER), &["etc-diff"]).unwrap();
    assert_eq!(out.status.code(), Some(5), "a user outside wheel without a session:\n{}", text(&out));

    // Upgrade and reboot: the 3-way merge keeps the three changes, now
    // against v2's defaults.
    m.publish("v2").unwrap();
    success("hostctl upgrade", &m.hostctl(Some(ADMIN), &["upgrade"]).unwrap());
    let staged = deployment_name(&m.status().unwrap().status.staged);
    let (name, in_staged) = etc_changes(&m, Some(ADMIN), &["--deployment", "staged"]);
    assert_eq!(name, staged);
    // The running system's changes are merged into it only at shutdown.
    assert!(in_staged.is_empty(), "a staged /etc holds the image's defaults until finalization: {in_staged:?}");
    m.reboot().unwrap();
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (None, Some("v2"), Some("v1")));
    let (name, merged) = etc_changes(&m, Some(ADMIN), &[]);
    assert_eq!(name, deployment_name(&host.status.booted), "the booted v2 deployment is compared");
    let testos: BTreeSet<_> = merged.iter().filter(|(p, _)| ours(p)).cloned().collect();
    assert_eq!(testos, expected, "{merged:?}");
    assert_eq!(file(&m, "/etc/testos/b.conf"), "b=local-edit");
    assert!(!m.exists("/etc/testos/a.conf").unwrap(), "a deletion survives the merge");
}

#[test]
fn edit_switches_to_the_spec_image_and_the_same_spec_again_changes_nothing() {
    let mut m = booted_v1();
    m.add_user(ADMIN, true).unwrap();
    let mut host = m.status().unwrap();
    let v2_image = format!("{}:v2", m.oci_dir().display());
    host.spec.image.as_mut().expect("a tracked image").image = v2_image.clone();
    m.write_file("/var/tmp/spec.yaml", &spec_document(&host)).unwrap();

    let out = success("hostctl edit", &m.hostctl(Some(ADMIN), &["edit", "--filename", "/var/tmp/spec.yaml"]).unwrap());
    assert!(out.contains("Staged v2"), "{out}");
    let after = m.status().unwrap();
    assert_eq!(slots(&after), (Some("v2"), Some("v1"), None));
    assert_eq!(after.spec.image.as_ref().map(|i| i.image.as_str()), Some(v2_image.as_str()));
    assert_eq!(after.spec.image.as_ref().map(|i| i.transport), Some(Transport::Oci));

    let again = success("hostctl edit (again)", &m.hostctl(Some(ADMIN), &["edit", "--filename", "/var/tmp/spec.yaml"]).unwrap());
    assert!(again.contains("already matches the spec"), "{again}");
    assert_eq!(checksum(&m.status().unwrap().status.staged), checksum(&after.status.staged), "nothing was staged again");

    // A document with a status section is refused; nothing changes.
    let full = success("hostctl status --json", &m.hostctl(None, &["status", "--json"]).unwrap());
    m.write_file("/var/tmp/full.json", &full.replace(&v2_image, &m.tracked_image())).unwrap();
    let out = m.hostctl(Some(ADMIN), &["edit", "--filename", "/var/tmp/full.json"]).unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert_eq!(slots(&m.status().unwrap()), (Some("v2"), Some("v1"), None));

    m.reboot().unwrap();
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (None, Some("v2"), Some("v1")));
    assert_eq!(file(&m, "/usr/share/testos/version"), "v2");

    // bootOrder: rollback queues v1; the same spec again is a no-op.
    let mut rollback = host.clone();
    rollback.spec.boot_order = BootOrder::Rollback;
    m.write_file("/var/tmp/rollback.yaml", &spec_document(&rollback)).unwrap();
    success("hostctl edit (rollback)", &m.hostctl(Some(ADMIN), &["edit", "--filename", "/var/tmp/rollback.yaml"]).unwrap());
    let queued = m.status().unwrap();
    assert!(queued.status.rollback_queued);
    assert_eq!(queued.spec.boot_order, BootOrder::Rollback);
    let again = success("hostctl edit (rollback again)", &m.hostctl(Some(ADMIN), &["edit", "--filename", "/var/tmp/rollback.yaml"]).unwrap());
    assert!(again.contains("already matches the spec"), "{again}");
    m.reboot().unwrap();
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v1"), Some("v2")));
}

/// A manager property as `busctl` prints it (`t 1796…`, `a{sv} 8 "digest" …`).
fn manager_property(m: &BootedMachine, name: &str) -> String {
    let out = m.must(&["busctl", "get-property", "org.hostd.Host1", "/org/hostd/Host1", "org.hostd.Host1", name]).unwrap();
    out.trim().to_string()
}

#[test]
fn the_last_check_survives_a_crash_and_a_reboot_in_the_units_state_directory_until_the_update_is_staged() {
    let mut m = booted_v1();
    m.publish("v2").unwrap();
    let v2_digest = m.images().v2.digest.clone();
    success("hostctl upgrade --check", &m.hostctl(None, &["upgrade", "--check"]).unwrap());
    let time = manager_property(&m, "LastCheckTime");
    let result = manager_property(&m, "LastCheckResult");
    let cached = manager_property(&m, "CachedUpdate");
    assert!(result.contains("Update available: v2"), "{result}");
    assert!(cached.contains(&v2_digest) && cached.contains("\"download-bytes\" t"), "{cached}");
    // StateDirectory=hostd, StateDirectoryMode=0700: root's alone.
    let modes = m.must(&["stat", "-c", "%a %U %n", "/var/lib/hostd", "/var/lib/hostd/state.json"]).unwrap();
    assert_eq!(modes.trim(), "700 root /var/lib/hostd\n600 root /var/lib/hostd/state.json", "{modes}");

    m.must(&["systemctl", "kill", "--signal=KILL", "hostd.service"]).unwrap();
    wait_for("hostd to be gone", Duration::from_secs(20), || {
        m.must(&["systemctl", "is-active", "hostd.service"]).is_err()
    });
    for _ in 0..2 {
        assert_eq!(manager_property(&m, "LastCheckTime"), time);
        assert_eq!(manager_property(&m, "LastCheckResult"), result);
        assert_eq!(manager_property(&m, "CachedUpdate"), cached, "with its download size");
        m.reboot().unwrap();
    }

    // Staged: the booted deployment updates still build on keeps the found
    // manifest, but the update is no news any more.
    success("hostctl upgrade", &m.hostctl(None, &["upgrade"]).unwrap());
    assert_eq!(slots(&m.status().unwrap()), (Some("v2"), Some("v1"), None));
    assert_eq!(manager_property(&m, "CachedUpdate"), "a{sv} 0");
    let after = manager_property(&m, "LastCheckResult");
    assert!(after.contains("has been deployed since") && after.contains(&v2_digest), "{after}");
    assert!(m.status().unwrap().status.booted.as_ref().unwrap().cached_update.is_none(), "the Host document agrees");
}

#[test]
fn discard_drops_the_staged_update_and_the_next_boot_is_the_current_one() {
    // Three deployments: v3 staged over v2 (booted), v1 the rollback.
    let mut m = booted_v2_over_v1();
    let uid = m.add_user(ADMIN, true).unwrap();
    m.add_user(PLAIN_USER, false).unwrap();
    let host = m.status().unwrap();
    let (v2_checksum, v1_checksum) = (checksum(&host.status.booted), checksum(&host.status.rollback));
    let order = m.sysroot().deployment_checksums().unwrap();
    assert_eq!(order, [v2_checksum.clone(), v1_checksum.clone()]);
    let boot_entries = bls::entries(m.sysroot().path()).unwrap();
    m.publish("v3").unwrap();
    success("hostctl upgrade", &m.hostctl(Some(ADMIN), &["upgrade"]).unwrap());
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (Some("v3"), Some("v2"), Some("v1")));
    let v3_checksum = checksum(&host.status.staged);
    assert!(reboot_required(&m));
    // Armed: a poweroff now would finalize v3, unless it is gone.

    let out = m.hostctl(Some(PLAIN_USER), &["--no-ask-password", "discard"]).unwrap();
    assert_eq!(out.status.code(), Some(5), "exit code of a denied call:\n{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("org.hostd.host1.stage"), "{}", text(&out));
    assert_eq!(slots(&m.status().unwrap()), (Some("v3"), Some("v2"), Some("v1")), "a denied call drops nothing");

    let said = success("hostctl discard", &m.hostctl(Some(ADMIN), &["discard"]).unwrap());
    assert!(said.contains(&format!("Discarded the staged deployment {v3_checksum}.0.")), "{said}");
    assert!(said.contains(&format!("{v2_checksum} boots next, as before.")), "{said}");
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (None, Some("v2"), Some("v1")), "v3 is gone");
    assert_eq!(m.sysroot().deployment_checksums().unwrap(), order, "the others keep their order");
    assert_eq!(bls::entries(m.sysroot().path()).unwrap(), boot_entries, "and their boot entries");
    assert!(!m.exists("/run/ostree/staged-deployment").unwrap());
    assert!(!reboot_required(&m), "RebootRequired, /run/reboot-required and the status follow");
    let entry = journal_entry(&m, message_id::DISCARDED, &v2_checksum, uid);
    assert_eq!(entry["OLD_CHECKSUM"], v3_checksum.as_str());
    let out = m.hostctl(None, &["stage"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("NothingToStage"), "nothing downloaded waits to be staged: {}", text(&out));

    // A download-only update, staged and locked, goes the same way.
    success("hostctl upgrade --download-only", &m.hostctl(None, &["upgrade", "--download-only"]).unwrap());
    assert!(m.exists("/run/ostree/staged-deployment-locked").unwrap());
    let said = success("hostctl discard", &m.hostctl(None, &["discard"]).unwrap());
    assert!(said.contains("Discarded the staged download-only deployment"), "{said}");
    assert!(!m.exists("/run/ostree/staged-deployment-locked").unwrap());
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v2"), Some("v1")));
    let said = success("hostctl discard", &m.hostctl(None, &["discard"]).unwrap());
    assert_eq!(said.trim(), "No update is staged or downloaded; nothing to discard.");

    // Settings written by the confined service in the guest's /etc outlive the reboot.
    success("hostctl config set", &m.hostctl(Some(ADMIN), &["config", "set", "policy", "check"]).unwrap());
    m.reboot().unwrap();
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (None, Some("v2"), Some("v1")), "the next boot is the current one");
    assert_eq!(checksum(&host.status.booted), v2_checksum);
    assert_eq!(file(&m, "/usr/share/testos/version"), "v2");
    assert_eq!(m.sysroot().deployment_checksums().unwrap(), order);
    assert!(!reboot_required(&m));
    assert!(file(&m, "/etc/hostd/hostd.d/90-settings.toml").contains("policy = \"check\""));
    let policy = success("hostctl config get policy", &m.hostctl(None, &["config", "get", "policy"]).unwrap());
    assert_eq!(policy, "check\n");
}

/// `hostctl diff` as JSON, run as `user`.
fn diff_json(m: &BootedMachine, user: Option<&str>, args: &[&str]) -> Diff {
    let mut all = vec!["diff", "--json"];
    all.extend_from_slice(args);
    let out = success("hostctl diff --json", &m.hostctl(user, &all).unwrap());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// (kind, name) of each package change.
fn package_changes(d: &Diff) -> Vec<(PackageChangeKind, String)> {
    d.packages.as_ref().expect("packages compared").iter().map(|c| (c.kind, c.name.clone())).collect()
}

#[test]
fn diff_booted_to_staged_lists_the_package_v2_adds_and_its_kernel_argument() {
    let m = booted_v1();
    m.add_user(PLAIN_USER, false).unwrap();
    // Nothing staged: the default names nothing to compare; the booted
    // deployment against itself lists nothing.
    let out = m.hostctl(Some(PLAIN_USER), &["diff"]).unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let same = diff_json(&m, Some(PLAIN_USER), &["booted", "booted"]);
    assert!(same.is_empty() && same.packages == Some(vec![]), "{same:?}");
    assert_eq!(same.from.package_database, PackageDatabase::Dpkg);

    m.publish("v2").unwrap();
    success("hostctl upgrade", &m.hostctl(None, &["upgrade", "--quiet"]).unwrap());
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (Some("v2"), Some("v1"), None));
    // The image labels reach the Host document, which stays bootc's.
    let staged_labels = &host.status.staged.as_ref().unwrap().image.as_ref().unwrap().labels;
    assert_eq!(staged_labels.get("org.opencontainers.image.version").map(String::as_str), Some("v2"));

    // A user outside wheel may read what the update changes.
    let d = diff_json(&m, Some(PLAIN_USER), &[]);
    assert_eq!((d.from.target.as_str(), d.to.target.as_str()), ("booted", "staged"));
    assert_eq!(d.to.deployment, Some(deployment_name(&host.status.staged)));
    assert_eq!(package_changes(&d), [(PackageChangeKind::Added, V2_PACKAGE.to_string())]);
    assert_eq!(d.to.packages, d.from.packages.map(|n| n + 1));
    assert!(!d.kernel_changed);
    // v1 was installed with the installer's arguments, not its kargs.d;
    // the upgrade added v2's, which the staged deployment boots with.
    assert_eq!(d.kargs.removed, Vec::<String>::new());
    assert_eq!(d.kargs.added, [format!("{RELEASE_KARG}=v2")]);
    assert!(d.to.kargs.contains(&format!("{RELEASE_KARG}=v2")) && !d.to.kargs.iter().any(|k| k.starts_with("ostree=")), "{:?}", d.to.kargs);
    let shown = success("hostctl diff", &m.hostctl(Some(PLAIN_USER), &["diff"]).unwrap());
    assert!(shown.contains(&format!("  + {V2_PACKAGE} ")), "{shown}");
    assert!(shown.contains(&format!("Kernel argument added: {RELEASE_KARG}=v2")), "{shown}");
    // The package is really missing from the booted v1, by dpkg's own account.
    let query = |package: &str| m.run_as(None, &["dpkg-query", "--admindir=/usr/share/factory/var/lib/dpkg", "-W", package]).unwrap();
    assert!(query("base-files").status.success(), "v1's database is where hostd reads it: {}", text(&query("base-files")));
    let missing = query(V2_PACKAGE);
    assert!(!missing.status.success() && text(&missing).contains("no packages found"), "{V2_PACKAGE} is not in v1: {}", text(&missing));
}

#[test]
fn diff_of_a_downloaded_update_reads_the_image_before_it_is_deployed() {
    let mut m = booted_v1();
    m.publish("v2").unwrap();
    success("hostctl upgrade --download-only", &m.hostctl(None, &["upgrade", "--quiet", "--download-only"]).unwrap());
    let locked = diff_json(&m, None, &["booted", "cached"]);
    assert_eq!(locked.to.target, "cached");
    assert_eq!(package_changes(&locked), [(PackageChangeKind::Added, V2_PACKAGE.to_string())]);
    // A plain reboot drops the locked deployment; the image stays pulled,
    // and the default compares with it, read from its commit.
    m.reboot().unwrap();
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v1"), None));
    let d = diff_json(&m, None, &[]);
    assert_eq!(d.to.target, "cached");
    assert_eq!(d.to.deployment, None, "not deployed");
    assert_eq!(d.to.digest.as_deref(), Some(m.images().v2.digest.as_str()));
    assert_eq!(package_changes(&d), [(PackageChangeKind::Added, V2_PACKAGE.to_string())]);
    assert_eq!(d.kargs.added, [format!("{RELEASE_KARG}=v2")]);
}

// Boot health checks (docs/health.md).

/// Where an image puts its health check executables.
const IMAGE_CHECKS: &str = "usr/lib/hostd/health.d";

/// The health assessment of `entry`, which must have one.
fn health(entry: &Option<BootEntry>) -> DeploymentHealth {
    entry.as_ref().and_then(|e| e.health.clone()).expect("the deployment has a health assessment")
}

/// An executable file of a derived image's layer.
fn executable<'a>(path: &'a str, content: &'a [u8]) -> LayerFile<'a> {
    LayerFile { path, content, mode: 0o755, uid: 0, gid: 0 }
}

/// The image's part of a version that needs `testos-app.service` (which
/// runs `command`) to be active for a healthy boot: the unit and a vendor
/// drop-in listing it in `[health] required_units`.
fn app_files(command: &'static str) -> Vec<(String, Vec<u8>)> {
    let unit = format!(
        "[Unit]\nDescription=The test OS's application\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={command}\n"
    );
    vec![
        ("usr/lib/systemd/system/testos-app.service".into(), unit.into_bytes()),
        ("usr/lib/hostd/hostd.d/50-testos-health.toml".into(), b"[health]\nrequired_units = [\"testos-app.service\"]\n".to_vec()),
    ]
}

/// Upgrade to whatever the tracked tag names now, as root; its output.
fn upgrade(m: &BootedMachine, args: &[&str]) -> String {
    let mut all = vec!["upgrade"];
    all.extend_from_slice(args);
    success("hostctl upgrade", &m.hostctl(None, &all).unwrap())
}

#[test]
fn a_healthy_update_passes_its_boot_health_checks_and_nothing_else_happens() {
    let mut m = booted_v1();
    // hostd did not stage the installed v1: its boots are not assessed.
    assert_eq!(m.status().unwrap().status.booted.unwrap().health, None);
    let mut files = app_files("/bin/true");
    let check = b"#!/bin/sh\necho the application answers\n";
    files.push((format!("{IMAGE_CHECKS}/10-app-answers"), check.to_vec()));
    let layer: Vec<LayerFile> = files
        .iter()
        .map(|(p, c)| if p.starts_with(IMAGE_CHECKS) { executable(p, c) } else { LayerFile::plain(p, c) })
        .collect();
    let v2_digest = m.derive_version("v21", &layer).unwrap();
    m.publish("v21").unwrap();
    upgrade(&m, &[]);
    m.reboot().unwrap();

    let host = m.status().unwrap();
    assert_eq!(digest(&host.status.booted), Some(v2_digest.as_str()), "v2 stays booted");
    let booted = checksum(&host.status.booted);
    let h = health(&host.status.booted);
    assert_eq!((h.result, h.failures.len(), h.action.as_deref()), (HealthResult::Passed, 0, None), "{h:?}");
    assert!(!reboot_required(&m));
    let entry = m.journal_entry(message_id::HEALTH_PASSED, &[("NEW_CHECKSUM", booted.as_str())]).unwrap();
    assert_eq!(entry["IMAGE_DIGEST"], v2_digest.as_str());
    // The check's output is in the journal.
    let log = m.must(&["journalctl", "-b", "-u", "hostd-health-check.service", "--no-pager"]).unwrap();
    assert!(log.contains("the application answers"), "{log}");
    let said = success("hostctl status", &m.hostctl(None, &["status", "--format", "humanreadable"]).unwrap());
    assert!(said.contains("Health: passed (first boot checked "), "{said}");
    // The deployment is assessed once: the next boot changes nothing.
    m.reboot().unwrap();
    assert_eq!(m.journal_entries(message_id::HEALTH_PASSED).unwrap().iter().filter(|e| e["NEW_CHECKSUM"] == booted.as_str()).count(), 1);
    assert_eq!(health(&m.status().unwrap().status.booted), h);
}

#[test]
fn a_failing_required_unit_rolls_back_by_itself_and_unattended_runs_skip_that_image() {
    let mut m = booted_v1();
    let v1 = checksum(&m.status().unwrap().status.booted);
    let files = app_files("/bin/sh -c 'echo cannot reach the database >&2; exit 1'");
    let layer: Vec<LayerFile> = files.iter().map(|(p, c)| LayerFile::plain(p, c)).collect();
    let bad = m.derive_version("v22", &layer).unwrap();
    m.publish("v22").unwrap();
    upgrade(&m, &[]);
    m.poweroff().unwrap();
    // v2 boots, its required unit fails, hostd rolls back and reboots by itself.
    assert_eq!(m.boot_until_it_goes_down(Duration::from_secs(240)).unwrap(), Exit::Rebooted);
    m.boot().unwrap();

    let host = m.status().unwrap();
    assert_eq!(checksum(&host.status.booted), v1, "v1 is booted again");
    assert_eq!(digest(&host.status.rollback), Some(bad.as_str()), "v2 is the rollback deployment");
    let v2 = checksum(&host.status.rollback);
    let h = health(&host.status.rollback);
    assert_eq!((h.result, h.action.as_deref()), (HealthResult::Failed, Some("rolled-back")), "{h:?}");
    assert_eq!(h.failures, ["unit testos-app.service: failed (failed)"]);
    let entry = m.journal_entry(message_id::HEALTH_FAILED, &[("NEW_CHECKSUM", v2.as_str())]).unwrap();
    assert_eq!((entry["ACTION"].as_str(), entry["IMAGE_DIGEST"].as_str()), (Some("rolled-back"), Some(bad.as_str())));
    assert_eq!(entry["FAILURES"], "unit testos-app.service: failed (failed)");
    m.journal_entry(message_id::ROLLED_BACK, &[("OLD_CHECKSUM", v2.as_str())]).unwrap();
    let said = success("hostctl status", &m.hostctl(None, &["status", "--format", "humanreadable"]).unwrap());
    assert!(said.contains("Health: failed, rolled back (first boot checked "), "{said}");
    assert!(said.contains("unit testos-app.service: failed (failed)"), "{said}");

    // The timer's run skips the failed image; a manual upgrade needs --retry-failed.
    configure_updates(&m, "[updates]\npolicy = \"stage\"\n");
    m.must(&["systemctl", "start", "hostd-fetch-apply-updates.service"]).unwrap();
    let said = m.must(&["journalctl", "-b", "-u", "hostd.service", "--no-pager"]).unwrap();
    assert!(said.contains("failed its boot health checks") && said.contains("unattended updates skip it"), "{said}");
    assert_eq!(slots(&m.status().unwrap()).0, None, "nothing staged");
    let out = m.hostctl(None, &["upgrade"]).unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("hostctl upgrade --retry-failed"), "{}", text(&out));
    // A check says the image it finds is the one that failed here.
    let said = success("hostctl upgrade --check", &m.hostctl(None, &["upgrade", "--check"]).unwrap());
    assert!(said.contains(&format!("It failed its boot health checks on {}", h.checked_at)), "{said}");

    // A fixed image on the same tag is installed and, healthy, stays.
    let files = app_files("/bin/true");
    let layer: Vec<LayerFile> = files.iter().map(|(p, c)| LayerFile::plain(p, c)).collect();
    let fixed = m.derive_version("v31", &layer).unwrap();
    m.publish("v31").unwrap();
    let said = upgrade(&m, &["--auto"]);
    assert!(said.contains("Staged"), "{said}");
    m.reboot().unwrap();
    let host = m.status().unwrap();
    assert_eq!(digest(&host.status.booted), Some(fixed.as_str()));
    assert_eq!(health(&host.status.booted).result, HealthResult::Passed);
}

/// The journal entries `_SYSTEMD_UNIT=unit` of every boot, oldest first,
/// read from the stateroot's `/var/log/journal`.
fn unit_journal(m: &BootedMachine, unit: &str) -> Vec<serde_json::Value> {
    let out = std::process::Command::new("journalctl")
        .arg("-D")
        .arg(m.var().join("log/journal"))
        .args(["--no-pager", "-o", "json"])
        .arg(format!("_SYSTEMD_UNIT={unit}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `__REALTIME_TIMESTAMP` of the first entry whose `MESSAGE` contains `text`, in µs.
fn logged_at(entries: &[serde_json::Value], text: &str) -> u64 {
    let entry = entries
        .iter()
        .find(|e| e["MESSAGE"].as_str().is_some_and(|m| m.contains(text)))
        .unwrap_or_else(|| panic!("no entry saying {text:?} in {entries:#?}"));
    entry["__REALTIME_TIMESTAMP"].as_str().unwrap().parse().unwrap()
}

#[test]
fn a_hanging_check_is_killed_at_its_limit_and_an_inhibitor_delays_the_rollback_reboot_for_the_grace_period() {
    let mut m = booted_v1();
    let v1 = checksum(&m.status().unwrap().status.booted);
    m.write_file("/etc/hostd/hostd.d/50-health.toml", "[health]\ncheck_time_limit_secs = 3\nreboot_grace_secs = 20\n")
        .unwrap();
    // Something that blocks shutdown from every boot on, as a disc burner would.
    m.write_file(
        "/etc/systemd/system/test-burner.service",
        "[Service]\nExecStart=systemd-inhibit --what=shutdown --mode=block --who=test-burner \"--why=burning a disc\" sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    m.must(&["systemctl", "enable", "test-burner.service"]).unwrap();
    let hang = b"#!/bin/sh\necho waiting for the database\nsleep 600 &\nwait\n";
    let bad = m.derive_version("v23", &[executable("usr/lib/hostd/health.d/50-hang", hang)]).unwrap();
    m.publish("v23").unwrap();
    upgrade(&m, &[]);
    m.poweroff().unwrap();
    assert_eq!(m.boot_until_it_goes_down(Duration::from_secs(240)).unwrap(), Exit::Rebooted);
    m.boot().unwrap();

    let host = m.status().unwrap();
    assert_eq!(checksum(&host.status.booted), v1, "rolled back to v1");
    assert_eq!(digest(&host.status.rollback), Some(bad.as_str()));
    let h = health(&host.status.rollback);
    assert_eq!((h.result, h.action.as_deref()), (HealthResult::Failed, Some("rolled-back")));
    assert_eq!(h.failures, ["check /usr/lib/hostd/health.d/50-hang: killed at its time limit of 3 s"]);

    // The reboot waited for the inhibitor for the grace period, then overrode it.
    let log = unit_journal(&m, "hostd-health-check.service");
    let killed = logged_at(&log, "50-hang: killed at its time limit of 3 s");
    let blocked = logged_at(&log, "rollback reboot blocked by test-burner");
    let overridden = logged_at(&log, "the grace period of 20 s is over; overriding test-burner");
    assert!(blocked >= killed && overridden >= blocked);
    let waited = Duration::from_micros(overridden - blocked);
    assert!(waited >= Duration::from_secs(19) && waited < Duration::from_secs(40), "waited {waited:?}");
}

#[test]
fn an_admins_rollback_while_the_checks_run_is_kept_when_they_fail() {
    let mut m = booted_v1();
    let v1 = checksum(&m.status().unwrap().status.booted);
    let slow = b"#!/bin/sh\necho still waiting for the database\nsleep 20\nexit 1\n";
    let bad = m.derive_version("v25", &[executable("usr/lib/hostd/health.d/50-slow-fail", slow)]).unwrap();
    m.publish("v25").unwrap();
    upgrade(&m, &[]);
    m.poweroff().unwrap();
    m.start_boot().unwrap();
    // The admin sees v2 misbehave and rolls back while the checks still run.
    wait_for("the health checks to start", Duration::from_secs(60), || {
        m.run(&["systemctl", "is-active", "hostd-health-check.service"]).is_ok_and(|o| text(&o).trim() == "activating")
    });
    let said = success("hostctl rollback", &m.hostctl(None, &["rollback"]).unwrap());
    assert!(said.contains(&v1), "{said}");
    // The checks fail; hostd keeps the admin's rollback (a second rollback
    // would undo it) and reboots into v1.
    assert_eq!(m.wait_for_shutdown(Duration::from_secs(120)).unwrap(), Exit::Rebooted);
    m.boot().unwrap();
    let host = m.status().unwrap();
    assert_eq!(checksum(&host.status.booted), v1, "v1 is booted again");
    assert_eq!(digest(&host.status.rollback), Some(bad.as_str()));
    let h = health(&host.status.rollback);
    assert_eq!((h.result, h.action.as_deref()), (HealthResult::Failed, Some("rolled-back")), "{h:?}");
    assert_eq!(h.failures, ["check /usr/lib/hostd/health.d/50-slow-fail: exit status: 1"]);
    let log = unit_journal(&m, "hostd-health-check.service");
    logged_at(&log, "the next boot already leaves deployment");
}

#[test]
fn with_on_failure_report_every_check_source_fails_the_boot_and_the_new_deployment_stays() {
    let mut m = booted_v1();
    let v1 = checksum(&m.status().unwrap().status.booted);
    m.write_file(
        "/etc/hostd/hostd.d/50-health.toml",
        "[health]\non_failure = \"report\"\nno_failed_units = true\ndeadline_secs = 15\ncheck_time_limit_secs = 120\n",
    )
    .unwrap();
    let oneshot = |command: &str| format!("[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={command}\n");
    // Required through the image's hostd-health.target.wants/, and failing.
    let db = oneshot("/bin/sh -c 'echo no database >&2; exit 1'");
    // Required by nothing but failing, which only no_failed_units notices.
    let cron = oneshot("/bin/false");
    let slow = b"#!/bin/sh\nsleep 600 &\nwait\n";
    let layer = [
        LayerFile::plain("usr/lib/systemd/system/testos-db.service", db.as_bytes()),
        LayerFile::symlink("usr/lib/systemd/system/hostd-health.target.wants/testos-db.service", "../testos-db.service"),
        LayerFile::plain("usr/lib/systemd/system/testos-cron.service", cron.as_bytes()),
        LayerFile::symlink("usr/lib/systemd/system/multi-user.target.wants/testos-cron.service", "../testos-cron.service"),
        executable("usr/lib/hostd/health.d/50-slow", slow),
    ];
    let bad = m.derive_version("v24", &layer).unwrap();
    m.publish("v24").unwrap();
    upgrade(&m, &[]);
    m.poweroff().unwrap();
    // The checks fail, and with on_failure = report nothing reboots: the
    // boot ends degraded, the health check among its failed units.
    let failed = m.boot_with_failed_units().unwrap();
    assert_eq!(failed, ["hostd-health-check.service", "testos-cron.service", "testos-db.service"]);

    let host = m.status().unwrap();
    assert_eq!(digest(&host.status.booted), Some(bad.as_str()), "v2 stays booted");
    assert_eq!(checksum(&host.status.rollback), v1);
    assert!(!host.status.rollback_queued);
    let h = health(&host.status.booted);
    assert_eq!((h.result, h.action.as_deref()), (HealthResult::Failed, Some("reported")), "{h:?}");
    assert_eq!(
        h.failures,
        [
            "unit testos-db.service: failed (failed)",
            "check /usr/lib/hostd/health.d/50-slow: killed at the deadline of all checks ([health] deadline_secs = 15)",
            "failed units: testos-cron.service, testos-db.service",
        ]
    );
    let v2 = checksum(&host.status.booted);
    let entry = m.journal_entry(message_id::HEALTH_FAILED, &[("NEW_CHECKSUM", v2.as_str())]).unwrap();
    assert_eq!(entry["ACTION"], "reported");
    assert!(m.journal_entries(message_id::ROLLED_BACK).unwrap().is_empty());
    let said = success("hostctl status", &m.hostctl(None, &["status", "--format", "humanreadable"]).unwrap());
    assert!(said.contains("Health: failed, reported only (first boot checked "), "{said}");
    // Every later boot of it fails its assessment again, without running the checks.
    m.poweroff().unwrap();
    let failed = m.boot_with_failed_units().unwrap();
    assert_eq!(failed, ["hostd-health-check.service", "testos-cron.service", "testos-db.service"]);
    assert_eq!(digest(&m.status().unwrap().status.booted), Some(bad.as_str()));
    let assessments = m.journal_entries(message_id::HEALTH_FAILED).unwrap();
    assert_eq!(assessments.iter().filter(|e| e["NEW_CHECKSUM"] == v2.as_str()).count(), 1);
    assert_eq!(health(&m.status().unwrap().status.booted), h);
}

/// `[updates]` for a fleet-lock host of group `workers` at `address`.
fn fleet_lock_config(address: &str) -> String {
    format!(
        "[updates]\npolicy = \"apply\"\nstrategy = \"fleet-lock\"\n[updates.fleet_lock]\nurl = \"http://{address}\"\ngroup = \"workers\"\n"
    )
}

/// A monotonic timestamp property of `unit` (µs since boot).
fn unit_time(m: &BootedMachine, unit: &str, property: &str) -> u64 {
    m.must(&["systemctl", "show", "--value", "-p", property, unit]).unwrap().trim().parse().unwrap()
}

#[test]
fn with_fleet_lock_the_steady_state_report_follows_the_passed_health_checks() {
    let server = StandInServer::semaphore(1);
    let mut m = booted_v1();
    m.write_file("/etc/machine-id", &format!("{}\n", "a".repeat(32))).unwrap();
    configure_updates(&m, &fleet_lock_config(server.address()));
    let files = app_files("/bin/true");
    let layer: Vec<LayerFile> = files.iter().map(|(p, c)| LayerFile::plain(p, c)).collect();
    m.derive_version("v21", &layer).unwrap();
    m.publish("v21").unwrap();
    let run = Background::start(&m, None, &["hostctl", "upgrade", "--auto"]);
    assert_eq!(m.wait_for_shutdown(Duration::from_secs(120)).unwrap(), Exit::Rebooted);
    drop(run);
    m.boot().unwrap();
    let booted = checksum(&m.status().unwrap().status.booted);
    assert_eq!(health(&m.status().unwrap().status.booted).result, HealthResult::Passed);
    wait_for("the steady-state report", Duration::from_secs(30), || {
        server.seen().iter().filter(|r| r.path == "/v1/steady-state").count() == 1
    });
    m.journal_entry(message_id::HEALTH_PASSED, &[("NEW_CHECKSUM", booted.as_str())]).unwrap();
    let checked = unit_time(&m, "hostd-health-check.service", "ExecMainExitTimestampMonotonic");
    let reported = unit_time(&m, "hostd-steady-state.service", "ExecMainStartTimestampMonotonic");
    assert!(checked > 0 && reported > checked, "steady state at {reported} µs, checks done at {checked} µs");
}

#[test]
fn two_hosts_one_slot_a_bad_update_rolls_back_on_the_first_which_keeps_the_slot_and_the_second_never_boots_it() {
    let server = StandInServer::semaphore(1);
    let config = fleet_lock_config(server.address());
    let mut a = booted_v1();
    let mut b = booted_v1();
    // Each sysroot has its own v1 commit (the merge commit is written per import).
    let (a_v1, b_v1) = (checksum(&a.status().unwrap().status.booted), checksum(&b.status().unwrap().status.booted));
    let files = app_files("/bin/false");
    let layer: Vec<LayerFile> = files.iter().map(|(p, c)| LayerFile::plain(p, c)).collect();
    for (m, id) in [(&a, "a"), (&b, "b")] {
        m.write_file("/etc/machine-id", &format!("{}\n", id.repeat(32))).unwrap();
        configure_updates(m, &config);
        m.derive_version("v22", &layer).unwrap();
        m.publish("v22").unwrap();
    }
    let steady_states = |s: &StandInServer| s.seen().iter().filter(|r| r.path == "/v1/steady-state").count();

    // A takes the only slot, reboots into v2, fails its checks and rolls back.
    let run = Background::start(&a, None, &["hostctl", "upgrade", "--auto"]);
    assert_eq!(a.wait_for_shutdown(Duration::from_secs(120)).unwrap(), Exit::Rebooted);
    drop(run);
    assert_eq!(a.boot_until_it_goes_down(Duration::from_secs(240)).unwrap(), Exit::Rebooted);
    a.boot().unwrap();
    assert_eq!(checksum(&a.status().unwrap().status.booted), a_v1);
    assert_eq!(health(&a.status().unwrap().status.rollback).action.as_deref(), Some("rolled-back"));
    // A keeps the slot: its steady-state unit ran and did not report.
    wait_for("A's steady-state unit to finish", Duration::from_secs(30), || {
        a.must(&["systemctl", "show", "--value", "-p", "ActiveState", "hostd-steady-state.service"]).unwrap().trim() != "activating"
    });
    let said = a.must(&["journalctl", "-b", "-u", "hostd-steady-state.service", "--no-pager"]).unwrap();
    assert!(said.contains("keeping the reboot slot"), "{said}");
    assert_eq!(steady_states(&server), 0);

    // B stages v2 but gets no slot, so it never reboots into it.
    for _ in 0..2 {
        let out = b.hostctl(None, &["upgrade", "--auto"]).unwrap();
        let said = success("hostctl upgrade --auto", &out);
        assert!(said.contains("Reboot postponed: the lock manager gave no reboot slot: failed_lock_semaphore_full"), "{said}");
        std::thread::sleep(Duration::from_secs(2));
        assert!(b.running().unwrap());
    }
    assert_eq!(checksum(&b.status().unwrap().status.booted), b_v1);
    assert!(!b.status().unwrap().status.rollback_queued);
    assert!(a.running().unwrap());
}

/// v1 (built at the time of `version`, `vN`: see `created_for`) binding
/// `image` through `app.image` in bound-images.d (a link to the
/// quadlet file in /usr/share/containers/systemd), or binding nothing.
fn derive_binding(m: &BootedMachine, version: &str, image: Option<&str>) -> String {
    let version_file = format!("{version}\n");
    let quadlet = image.map(|i| bound::image_file(i, None)).unwrap_or_default();
    let (file, link, target) = bound::binding("app.image");
    let mut files = vec![LayerFile::plain("usr/share/testos/version", version_file.as_bytes())];
    if image.is_some() {
        files.push(LayerFile::plain(&file, quadlet.as_bytes()));
        files.push(LayerFile::symlink(&link, &target));
    }
    m.derive_version(version, &files).unwrap()
}

/// The images in the bound-image store, read from the physical sysroot.
fn bound_store(m: &BootedMachine) -> Vec<String> {
    bound::stored_names(&m.sysroot().path().join("ostree/bootc/storage")).unwrap()
}

#[test]
fn a_bound_image_is_pulled_before_staging_runs_offline_after_the_reboot_and_goes_when_no_deployment_needs_it() {
    let mut registry = TestRegistry::start().unwrap();
    let mut m = booted_v1();
    let app_dir = tempfile::Builder::new().prefix("hostd-app-").tempdir().unwrap();
    registry.push(&bound::app_image(app_dir.path(), "v1").unwrap(), "app:v1").unwrap();
    let closed = format!("127.0.0.1:{}", hostd_tests::registry::free_port().unwrap());
    for host in [registry.host(), closed.clone()] {
        let name = format!("/etc/containers/registries.conf.d/50-{}.conf", host.replace([':', '.'], "-"));
        m.write_file(&name, &format!("[[registry]]\nlocation = \"{host}\"\ninsecure = true\n")).unwrap();
    }
    let app = format!("{}/app:v1", registry.host());

    // A bound image that cannot be pulled fails the upgrade; nothing is staged.
    derive_binding(&m, "v21", Some(&format!("{closed}/app:v1")));
    m.publish("v21").unwrap();
    let out = m.hostctl(None, &["upgrade"]).unwrap();
    assert!(!out.status.success() && text(&out).contains("Network"), "{}", text(&out));
    assert!(text(&out).contains("/usr/lib/bootc/bound-images.d/app.image"), "{}", text(&out));
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v1"), None), "nothing staged");
    assert!(!m.exists("/run/ostree/staged-deployment").unwrap());
    assert!(!reboot_required(&m));

    // Staged with its bound image in the store before the reboot.
    derive_binding(&m, "v22", Some(&app));
    m.publish("v22").unwrap();
    let out = success("hostctl upgrade", &m.hostctl(None, &["upgrade"]).unwrap());
    assert!(out.contains("Staged v22"), "{out}");
    assert_eq!(bound_store(&m), std::slice::from_ref(&app), "pulled before the reboot");
    let host = m.status().unwrap();
    assert_eq!(slots(&host), (Some("v22"), Some("v1"), None));
    let staged_bound: Vec<&str> = host.status.staged.as_ref().unwrap().bound_images.iter().map(|b| b.image.as_str()).collect();
    assert_eq!(staged_bound, [app.as_str()]);
    let json: serde_json::Value = serde_json::from_str(&success("status", &m.hostctl(None, &["status", "--format", "json"]).unwrap())).unwrap();
    hostd_tests::schema::validate("bootc-host-v1.schema.json", &json).unwrap();
    assert_eq!(json["status"]["staged"]["boundImages"][0]["file"], "app.image");

    // After the reboot, with the registry gone, podman runs the image from
    // the bound-image store. Two options fit the container to this guest
    // and change nothing about the image store: `--cgroups=disabled`, as
    // these machines run cgroup v1, whose controller hierarchies
    // systemd-nspawn mounts read-only in the guest, so crun cannot create a
    // container's cgroup ("crun: creating cgroup directory
    // `/sys/fs/cgroup/pids/container`: No such file or directory"); and
    // `--network=host`, as nspawn mounts /proc/sys read-only and crun cannot
    // write the network sysctl podman sets for a network namespace of the
    // container's own ("open /proc/sys/net/ipv4/ping_group_range:
    // Read-only file system"). The run is otherwise podman's ordinary one:
    // the image found in the additional store, its layers mounted, `true` run.
    m.reboot().unwrap();
    registry.kill();
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v22"), Some("v1")));
    let store = "additionalimagestore=/usr/lib/bootc/storage";
    let run = m
        .run(&["podman", "--storage-opt", store, "run", "--rm", "--network=host", "--cgroups=disabled", &app, "true"])
        .unwrap();
    assert!(run.status.success(), "podman run from the bound-image store: {}", text(&run));
    let exists = m.run(&["podman", "--storage-opt", store, "image", "exists", &app]).unwrap();
    assert!(exists.status.success(), "{}", text(&exists));

    // An upgrade that drops the binding, and a cleanup: the booted
    // deployment still references the image.
    derive_binding(&m, "v23", None);
    m.publish("v23").unwrap();
    success("hostctl upgrade", &m.hostctl(None, &["upgrade"]).unwrap());
    success("hostctl cleanup", &m.hostctl(None, &["cleanup"]).unwrap());
    assert_eq!(bound_store(&m), std::slice::from_ref(&app), "kept for the booted deployment");
    // Rebooted into it: the rollback deployment references the image.
    m.reboot().unwrap();
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v23"), Some("v22")));
    success("hostctl cleanup", &m.hostctl(None, &["cleanup"]).unwrap());
    assert_eq!(bound_store(&m), std::slice::from_ref(&app), "kept for the rollback deployment");
    let rollback_ok = m.run(&["podman", "--storage-opt", store, "image", "exists", &app]).unwrap();
    assert!(rollback_ok.status.success(), "{}", text(&rollback_ok));
    // One more update and reboot: no deployment references it any more.
    derive_binding(&m, "v24", None);
    m.publish("v24").unwrap();
    success("hostctl upgrade", &m.hostctl(None, &["upgrade"]).unwrap());
    m.reboot().unwrap();
    assert_eq!(slots(&m.status().unwrap()), (None, Some("v24"), Some("v23")));
    let out = success("hostctl cleanup", &m.hostctl(None, &["cleanup"]).unwrap());
    assert!(out.contains("1 bound images"), "{out}");
    assert!(bound_store(&m).is_empty(), "{:?}", bound_store(&m));
}
