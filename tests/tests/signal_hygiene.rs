//! What a GUI that notifies on every signal sees: a client subscribed to
//! every signal hostd sends, across check, a repeated check, upgrade
//! (download only), stage, a check finding a newer image, the same check
//! by a restarted hostd, and rollback,
//! counts the emissions of each property. Each emitted value differs from
//! the one before it (at most one emission per real change), the manager
//! goes idle once per job, and `UpdateAvailable` comes once per new update.
//! On a real bus with real polkitd, against an offline sysroot.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hostd_interface::job::SECONDS_LEFT_UNKNOWN;
use hostd_interface::names::{BUS_NAME, JOB_INTERFACE, MANAGER_INTERFACE, MANAGER_PATH};
use hostd_interface::proxy::JobProxy;
use hostd_tests::jobs::run_job;
use hostd_tests::machine::TestMachine;
use hostd_tests::offline::{deployed, host_with_v1, vd};
use zbus::message::Type;
use zbus::{Connection, MatchRule, MessageStream, OwnedObjectPath, OwnedVariant, Variant};

const CONFIG: &str = "[daemon]\nidle_exit_secs = 120\n";

/// One signal hostd sent.
#[derive(Debug)]
enum Signal {
    /// `PropertiesChanged` of `interface` on `path`, from the hostd process
    /// of unique name `sender` (job paths start over with each process).
    Properties { sender: String, path: String, interface: String, changed: HashMap<String, OwnedVariant> },
    UpdateAvailable { digest: String, version: String },
    JobNew { path: String },
    JobRemoved { path: String },
}

/// Every signal from hostd, in the order the bus delivered them.
struct Recorder {
    seen: Arc<Mutex<Vec<Signal>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(conn: &Connection) -> Recorder {
        // By path, not sender: the subscription outlives a hostd process.
        let rule = MatchRule::builder().msg_type(Type::Signal).path_namespace(MANAGER_PATH).build().unwrap();
        let mut stream = MessageStream::for_match_rule(rule, conn, std::num::NonZeroUsize::new(100_000)).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Some(Ok(msg)) = stream.next().await {
                    let header = msg.header();
                    let path = header.path().map(|p| p.to_string()).unwrap_or_default();
                    let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
                    let member = header.member().map(|m| m.to_string()).unwrap_or_default();
                    let signal = match member.as_str() {
                        "PropertiesChanged" => {
                            let (interface, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                                msg.body().deserialize().unwrap();
                            Signal::Properties { sender, path, interface, changed }
                        }
                        "UpdateAvailable" => {
                            let (digest, version): (String, String) = msg.body().deserialize().unwrap();
                            Signal::UpdateAvailable { digest, version }
                        }
                        "JobNew" => {
                            let (_, job, _): (u64, OwnedObjectPath, String) = msg.body().deserialize().unwrap();
                            Signal::JobNew { path: job.to_string() }
                        }
                        "JobRemoved" => {
                            let (_, job, _): (u64, OwnedObjectPath, String) = msg.body().deserialize().unwrap();
                            Signal::JobRemoved { path: job.to_string() }
                        }
                        other => panic!("an undocumented signal {other} on {path}"),
                    };
                    seen.lock().unwrap().push(signal);
                }
            }
        });
        Recorder { seen, task }
    }

    fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Wait until `JobRemoved` for `path` has arrived.
    async fn wait_removed(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.seen.lock().unwrap().iter().any(|s| matches!(s, Signal::JobRemoved { path: p } if p == path)) {
                return;
            }
            assert!(Instant::now() < deadline, "no JobRemoved for {path}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop(self) -> Vec<Signal> {
        self.task.abort();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Run `method` to its end, with everything the manager announces about it.
async fn job(conn: &Connection, recorder: &Recorder, method: &str, options: HashMap<&str, Variant<'_>>) -> String {
    let record = run_job(conn, method, &(options,)).await.unwrap();
    assert_eq!(record.state, "succeeded", "{method}: {record:?}");
    recorder.wait_removed(&record.path).await;
    record.path
}

/// The manager's properties as `GetAll` returns them.
async fn get_all(conn: &Connection) -> HashMap<String, OwnedVariant> {
    conn.call_method(Some(BUS_NAME), MANAGER_PATH, Some("org.freedesktop.DBus.Properties"), "GetAll", &(MANAGER_INTERFACE,))
        .await
        .unwrap()
        .body()
        .deserialize()
        .unwrap()
}

/// The values each property of each object was announced with, in order:
/// (object path, property) → values. A job object is told apart by the
/// process that served it (`<sender> <path>`); the manager is one object
/// whoever serves it.
fn emissions(signals: &[Signal]) -> BTreeMap<(String, String), Vec<OwnedVariant>> {
    let mut by_property: BTreeMap<(String, String), Vec<OwnedVariant>> = BTreeMap::new();
    for s in signals {
        if let Signal::Properties { sender, path, interface, changed } = s {
            let expected = if path == MANAGER_PATH { MANAGER_INTERFACE } else { JOB_INTERFACE };
            assert_eq!(interface, expected, "{s:?}");
            let object = if path == MANAGER_PATH { path.clone() } else { format!("{sender} {path}") };
            for (name, value) in changed {
                by_property.entry((object.clone(), name.clone())).or_default().push(value.try_clone().unwrap());
            }
        }
    }
    by_property
}

/// `value` as a string, for the string-typed properties.
fn text(value: &OwnedVariant) -> String {
    String::try_from(value.try_clone().unwrap()).unwrap_or_else(|_| {
        OwnedObjectPath::try_from(value.try_clone().unwrap()).map(|p| p.to_string()).unwrap()
    })
}

#[tokio::test]
async fn every_property_change_is_emitted_once_and_only_when_it_changed() {
    let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
    let h = host_with_v1("768m", &[]).await;
    let v2 = h.builder.build("v2", &["data"], &BTreeMap::new()).await.unwrap();
    let machine = TestMachine::start(h.sysroot.path(), CONFIG).unwrap();
    let conn = machine.connect().await.unwrap();
    let recorder = Recorder::start(&conn).await;
    assert_eq!(deployed(&conn).await, [vd(&h.v1)], "hostd runs and has read the sysroot");
    // Any start-up announcement would be out by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = get_all(&conn).await;
    let from = recorder.len();
    assert_eq!(from, 0, "a starting hostd announces nothing: no client can have read anything before: {:?}", recorder.seen.lock().unwrap());

    let no = HashMap::new;
    let mut jobs = vec![job(&conn, &recorder, "Check", no()).await];
    // The same update again: nothing about it is news.
    jobs.push(job(&conn, &recorder, "Check", no()).await);
    let download_only = HashMap::from([("download-only", Variant::Bool(true))]);
    let upgrade = job(&conn, &recorder, "Upgrade", download_only).await;
    jobs.push(upgrade.clone());
    // Job objects linger for 10 s: their start time is still readable.
    let upgrade_job = JobProxy::builder(&conn).path(upgrade.as_str()).build().await.unwrap();
    let start = upgrade_job.start_time().await.unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
    assert!(started <= start && start <= now, "StartTime {start} in µs since the epoch, within the test");
    assert_eq!((upgrade_job.seconds_left().await.unwrap(), upgrade_job.bytes_per_second().await.unwrap()), (0, 0));
    jobs.push(job(&conn, &recorder, "Stage", no()).await);
    assert_eq!(deployed(&conn).await, [vd(&v2), vd(&h.v1)]);
    let v3 = h.builder.build("v3", &["data"], &BTreeMap::new()).await.unwrap();
    jobs.push(job(&conn, &recorder, "Check", no()).await);
    // A new hostd (as after an idle exit) announces nothing on its own, and
    // the same update found again is no news to it either.
    machine.kill_hostd().expect("hostd ran");
    jobs.push(job(&conn, &recorder, "Check", no()).await);
    jobs.push(job(&conn, &recorder, "Rollback", no()).await);
    assert_eq!(deployed(&conn).await, [vd(&h.v1), vd(&v2)]);

    // Late announcements (a sysroot read after a job) would come now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signals = recorder.stop();
    let (before, during) = signals.split_at(from);

    // Each emitted value differs from the one before it: the manager's
    // from the values read before the jobs, a job's among themselves.
    for ((path, name), values) in emissions(before).into_iter().chain(emissions(during)) {
        for pair in values.windows(2) {
            assert_ne!(pair[0], pair[1], "{path} {name} was announced again with the same value: {values:?}");
        }
    }
    let manager = |name: &str| -> Vec<OwnedVariant> {
        emissions(during).remove(&(MANAGER_PATH.to_string(), name.to_string())).unwrap_or_default()
    };
    for (name, values) in emissions(during).into_iter().filter(|((path, _), _)| path == MANAGER_PATH) {
        let initial = &baseline[&name.1];
        assert_ne!(&values[0], initial, "{} was announced with the value it had: {values:?}", name.1);
    }
    let count = |name: &str, value: &str| manager(name).iter().filter(|v| text(v) == value).count();
    assert_eq!(count("State", "idle"), jobs.len(), "idle once per job: {:?}", manager("State"));
    assert_eq!(count("ActiveJob", "/"), jobs.len(), "{:?}", manager("ActiveJob"));
    for path in &jobs {
        let runs = jobs.iter().filter(|p| *p == path).count();
        assert_eq!(count("ActiveJob", path), runs, "{path} became active once per job: {:?}", manager("ActiveJob"));
    }
    assert_eq!(manager("LastCheckTime").len(), 4, "one per check: {:?}", manager("LastCheckTime"));
    assert_eq!(
        manager("LastCheckResult").len(),
        3,
        "the repeated checks said the same; stage made it stale: {:?}",
        manager("LastCheckResult")
    );
    assert_eq!(manager("LastJobs").len(), jobs.len(), "{:?}", manager("LastJobs"));
    // v2 found → downloaded → deployed by stage (none) → v3 found (also
    // what the restarted hostd knows) → none after the rollback (ostree-ext keeps v3's manifest on v2's commit,
    // which no longer is the one updates build on).
    assert_eq!(manager("CachedUpdate").len(), 5, "{:?}\n{:?}", manager("CachedUpdate"), manager("LastCheckResult"));
    let new_jobs: Vec<&String> = during
        .iter()
        .filter_map(|s| match s {
            Signal::JobNew { path } => Some(path),
            _ => None,
        })
        .collect();
    assert_eq!(new_jobs, jobs.iter().collect::<Vec<_>>(), "JobNew once per job");

    let announced: Vec<(String, String)> = signals
        .iter()
        .filter_map(|s| match s {
            Signal::UpdateAvailable { digest, version } => Some((digest.clone(), version.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        announced,
        [(v2.digest.clone(), "v2".to_string()), (v3.digest.clone(), "v3".to_string())],
        "once per new update, not again for the same one"
    );

    // Each job published its time estimate and its end.
    let job_values = emissions(during);
    let seconds_left = job_values
        .iter()
        .find(|((object, name), _)| object.ends_with(&format!(" {upgrade}")) && name == "SecondsLeft")
        .map(|(_, values)| values)
        .expect("the upgrade announced SecondsLeft");
    let last = u64::try_from(&**seconds_left.last().unwrap()).unwrap();
    assert_eq!(last, 0, "{seconds_left:?}");
    assert!(
        seconds_left.iter().all(|v| u64::try_from(&**v).is_ok_and(|s| s == SECONDS_LEFT_UNKNOWN || s < 3600)),
        "{seconds_left:?}"
    );
}
