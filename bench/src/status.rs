//! Status latency: through hostctl, as a raw D-Bus call, against `ostree
//! admin status`, on a cold start, and while a pull runs.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use hostd_interface::names::{BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH};
use hostd_tests::jobs::JobWatch;
use hostd_tests::machine::TestMachine;
use zbus::zvariant::Variant;
use zbus::Connection;

use crate::figures::{ms, percentile, Report, Target};
use crate::host;
use crate::images::ImageSet;

async fn raw_status(conn: &Connection) -> Result<Duration> {
    let start = Instant::now();
    let reply = conn
        .call_method(Some(BUS_NAME), MANAGER_PATH, Some(MANAGER_INTERFACE), "Status", &(HashMap::<&str, Variant<'_>>::new(),))
        .await?;
    let json: String = reply.body().deserialize()?;
    let took = start.elapsed();
    ensure!(json.contains("deployments") || json.contains("otherDeployments"), "Status returned {json}");
    Ok(took)
}

fn ostree_admin_status(sysroot: &std::path::Path) -> Result<Duration> {
    let start = Instant::now();
    let status = Command::new("ostree")
        .args(["admin", "status"])
        .arg(format!("--sysroot={}", sysroot.display()))
        .stdout(Stdio::null())
        .status()?;
    let took = start.elapsed();
    ensure!(status.success(), "ostree admin status failed");
    Ok(took)
}

fn sorted_ms(samples: &[Duration]) -> Vec<f64> {
    let mut v: Vec<f64> = samples.iter().map(|d| ms(*d)).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Figure 4: `calls` of each kind, interleaved, on a host with two
/// deployments and a warm daemon.
pub async fn latency(set: &ImageSet, calls: usize, report: &mut Report) -> Result<()> {
    let sysroot = host::sysroot(set, "v1", "v2").await?;
    sysroot.deploy_image(&set.reference()).await?;
    let machine = host::machine(&sysroot)?;
    let conn = machine.connect().await?;
    let (mut hostctl, mut dbus, mut ostree) = (vec![], vec![], vec![]);
    for _ in 0..calls {
        hostctl.push(host::hostctl_timed(&machine, &["status", "--json"], &[])?);
        dbus.push(raw_status(&conn).await?);
        ostree.push(ostree_admin_status(sysroot.path())?);
    }
    let (hostctl, dbus, ostree) = (sorted_ms(&hostctl), sorted_ms(&dbus), sorted_ms(&ostree));
    report.record("status_p50_ms", "ms", vec![percentile(&hostctl, 50.0)], None);
    report.record("status_p99_ms", "ms", vec![percentile(&hostctl, 99.0)], None);
    report.record("status_dbus_p50_ms", "ms", vec![percentile(&dbus, 50.0)], None);
    report.record("status_dbus_p99_ms", "ms", vec![percentile(&dbus, 99.0)], None);
    report.record("ostree_admin_status_p50_ms", "ms", vec![percentile(&ostree, 50.0)], None);
    let ratio = percentile(&hostctl, 50.0) / percentile(&ostree, 50.0);
    report.record("status_vs_ostree_admin_ratio", "x", vec![ratio], Some(Target::AtMost(1.0)));
    Ok(())
}

/// Figure 5: `hostctl status --json` when hostd has exited, `runs` times.
pub async fn cold(set: &ImageSet, runs: usize, report: &mut Report) -> Result<()> {
    let sysroot = host::sysroot(set, "v1", "v2").await?;
    let machine = host::machine(&sysroot)?;
    let mut samples = vec![];
    for _ in 0..runs {
        stop_hostd(&machine)?;
        samples.push(ms(host::hostctl_timed(&machine, &["status", "--json"], &[])?));
    }
    report.record("status_cold_ms", "ms", samples, None);
    Ok(())
}

/// Stop hostd as systemd would (SIGTERM) and wait until its name is free.
fn stop_hostd(machine: &TestMachine) -> Result<()> {
    let pid = machine.hostd_pid().expect("hostd runs");
    hostd_tests::run(Command::new("kill").arg(pid.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while machine.hostd_running() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
        ensure!(Instant::now() < deadline, "hostd did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Pause between one caller's calls: 50 callers polling at 10 Hz.
const CALLER_PAUSE: Duration = Duration::from_millis(100);

/// Figure 6: `callers` connections calling `Status` while an upgrade of v1
/// to v2 runs; the latencies of the calls made during the pull.
pub async fn during_pull(set: &ImageSet, callers: usize, report: &mut Report) -> Result<()> {
    let sysroot = host::sysroot(set, "v1", "v2").await?;
    let machine = host::machine(&sysroot)?;
    let (conn, _) = machine.manager().await?;
    let watch = JobWatch::start(&conn, "Upgrade", &(HashMap::<&str, Variant<'_>>::new(),))
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![];
    for _ in 0..callers {
        let caller = machine.connect().await?;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = vec![];
            while !stop.load(Ordering::Relaxed) {
                samples.push(raw_status(&caller).await?);
                tokio::time::sleep(CALLER_PAUSE).await;
            }
            anyhow::Ok(samples)
        }));
    }
    let job = watch.finish().await?;
    stop.store(true, Ordering::Relaxed);
    ensure!(job.state == "succeeded", "the upgrade under load: {job:?}");
    let mut samples = vec![];
    for task in tasks {
        samples.extend(task.await??);
    }
    let sorted = sorted_ms(&samples);
    report.record("status_calls_during_pull", "calls", vec![sorted.len() as f64], None);
    report.record("status_p99_during_pull_ms", "ms", vec![percentile(&sorted, 99.0)], Some(Target::AtMost(20.0)));
    Ok(())
}
