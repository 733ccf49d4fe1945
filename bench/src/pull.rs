//! Pulls: hostd against ostree-ext called directly and against `skopeo
//! copy`, the bytes an incremental update fetches, memory, and how the cost
//! grows with bytes and with layers.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use hostd_tests::jobs::run_job;
use hostd_tests::sysroot::TestSysroot;
use zbus::zvariant::Variant;

use crate::figures::{median, Report, Target};
use crate::host::{self, CpuTime};
use crate::images::{ImageSet, Shape};

/// One `hostctl upgrade` from v1 to v2 through hostd.
pub struct HostdPull {
    pub wall: Duration,
    /// hostd's and its skopeo's.
    pub cpu: CpuTime,
    pub idle_rss_mib: f64,
    pub peak_rss_mib: f64,
}

/// Upgrade a fresh host from v1 to v2 with `hostctl upgrade`.
pub async fn with_hostd(set: &ImageSet) -> Result<HostdPull> {
    let sysroot = host::sysroot(set, "v1", "v2").await?;
    let machine = host::machine(&sysroot)?;
    let pid = machine.hostd_pid().expect("hostd answered");
    let idle_rss_mib = host::memory_mib(pid, "VmRSS")?;
    let cpu_before = host::cpu_time(pid)?;
    let wall = host::hostctl_timed(&machine, &["upgrade", "--quiet"], &[])?;
    let cpu = host::cpu_time(pid)?.since(cpu_before);
    let peak_rss_mib = host::memory_mib(pid, "VmHWM")?;
    ensure!(sysroot.deployment_checksums()?.len() == 2, "the upgrade deployed v2 beside v1");
    Ok(HostdPull { wall, cpu, idle_rss_mib, peak_rss_mib })
}

/// One upgrade of `set` through hostd, and hostd's debug log of it (its
/// timestamps are the timeline of the job), then the same import with
/// ostree-ext directly; for both, the CPU time used. Also the byte
/// progress a client saw.
pub async fn timeline(set: &ImageSet) -> Result<()> {
    let sysroot = host::sysroot(set, "v1", "v2").await?;
    let machine = host::machine(&sysroot)?;
    let pid = machine.hostd_pid().expect("hostd answered");
    let (conn, _) = machine.manager().await?;
    let cpu_before = host::cpu_time(pid)?;
    let start = Instant::now();
    let job = run_job(&conn, "Upgrade", &(HashMap::<&str, Variant<'_>>::new(),)).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let wall = start.elapsed();
    let cpu = host::cpu_time(pid)?.since(cpu_before);
    ensure!(job.state == "succeeded", "the upgrade: {job:?}");
    println!("{}", machine.log());
    let mib = |bytes: u64| format!("{:.1}", bytes as f64 / f64::from(1 << 20));
    let seen: Vec<String> = job.bytes.iter().map(|(done, _)| mib(*done)).collect();
    println!("BytesDone as a client saw it, MiB: {}", seen.join(" "));
    println!(
        "the Upgrade job took {:.3} s; CPU: hostd {:.2} s, its skopeo {:.2} s",
        wall.as_secs_f64(),
        cpu.own,
        cpu.children
    );
    let direct = host::sysroot(set, "v1", "v2").await?;
    let cpu_before = host::cpu_time(std::process::id())?;
    let start = Instant::now();
    direct.deploy_image(&set.reference()).await?;
    let cpu = host::cpu_time(std::process::id())?.since(cpu_before);
    println!(
        "ostree-ext directly took {:.3} s; CPU: the benchmark process {:.2} s, its skopeo {:.2} s",
        start.elapsed().as_secs_f64(),
        cpu.own,
        cpu.children
    );
    Ok(())
}

/// The same import and deployment with ostree-ext's own deploy, in this
/// process, into an identical fresh sysroot: no D-Bus, no daemon. Its wall
/// time, and the CPU time of this process and its skopeo meanwhile.
pub async fn with_ostree_ext(set: &ImageSet) -> Result<(Duration, CpuTime)> {
    let sysroot = host::sysroot(set, "v1", "v2").await?;
    let cpu_before = host::cpu_time(std::process::id())?;
    let start = Instant::now();
    sysroot.deploy_image(&set.reference()).await?;
    let took = start.elapsed();
    let cpu = host::cpu_time(std::process::id())?.since(cpu_before);
    ensure!(sysroot.deployment_checksums()?.len() == 2, "ostree-ext deployed v2 beside v1");
    Ok((took, cpu))
}

/// `skopeo copy` of v2 from its `oci:` directory to one on a tmpfs.
pub fn with_skopeo_copy(set: &ImageSet) -> Result<Duration> {
    let target = TestSysroot::new(&set.shape.sysroot_size())?;
    let dest = format!("oci:{}:latest", target.path().join("copy").display());
    let start = Instant::now();
    hostd_tests::run(Command::new("skopeo").args(["copy", "--quiet"]).arg(format!("oci:{}", set.oci_name("v2"))).arg(dest))?;
    Ok(start.elapsed())
}

/// Figures 1, 2 and 7 (at the main size): hostd, ostree-ext and skopeo
/// alternating, `runs` times each.
pub async fn overhead(set: &ImageSet, runs: usize, report: &mut Report) -> Result<()> {
    let (mut hostd, mut direct, mut copy, mut idle, mut peak) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut hostd_cpu, mut direct_cpu) = (vec![], vec![]);
    for round in 0..runs {
        // Who goes first alternates, so drift within a round cancels too.
        let (pull, (direct_wall, direct_used)) = if round % 2 == 0 {
            let pull = with_hostd(set).await?;
            (pull, with_ostree_ext(set).await?)
        } else {
            let direct = with_ostree_ext(set).await?;
            (with_hostd(set).await?, direct)
        };
        hostd.push(pull.wall.as_secs_f64());
        hostd_cpu.push(pull.cpu.total());
        idle.push(pull.idle_rss_mib);
        peak.push(pull.peak_rss_mib);
        direct.push(direct_wall.as_secs_f64());
        direct_cpu.push(direct_used.total());
        copy.push(with_skopeo_copy(set)?.as_secs_f64());
    }
    let mib = set.shape.payload_mib;
    report.record(format!("pull_hostd_{mib}mib_s"), "s", hostd.clone(), None);
    report.record(format!("pull_ostree_ext_{mib}mib_s"), "s", direct.clone(), None);
    report.record(format!("skopeo_copy_{mib}mib_s"), "s", copy.clone(), None);
    report.record("pull_overhead_ratio", "x", ratios(&hostd, &direct), Some(Target::AtMost(1.05)));
    report.record("pull_vs_copy_ratio", "x", ratios(&hostd, &copy), None);
    // CPU time is what other load on the machine disturbs least.
    report.record("pull_cpu_ratio", "x", ratios(&hostd_cpu, &direct_cpu), None);
    report.record("rss_idle_mb", "MiB", idle, Some(Target::AtMost(64.0)));
    report.record(format!("rss_peak_pull_{mib}mib_mb"), "MiB", peak, Some(Target::AtMost(64.0)));
    Ok(())
}

/// Run by run: measured side by side, so noise common to a pair cancels.
fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

/// Figure 3: from v2 to v3 (one layer added), the bytes hostd reports
/// fetched over the compressed size of the layers v2 lacks.
pub async fn incremental(set: &ImageSet, runs: usize, report: &mut Report) -> Result<()> {
    let v2 = set.layer_sizes("v2")?;
    let new_bytes: u64 = set.layer_sizes("v3")?.iter().filter(|(d, _)| !v2.contains_key(*d)).map(|(_, s)| s).sum();
    let (mut ratio, mut wall) = (vec![], vec![]);
    for _ in 0..runs {
        let sysroot = host::sysroot(set, "v2", "v3").await?;
        let machine = host::machine(&sysroot)?;
        let (conn, _) = machine.manager().await?;
        let start = Instant::now();
        let job = run_job(&conn, "Upgrade", &(HashMap::<&str, Variant<'_>>::new(),)).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        wall.push(start.elapsed().as_secs_f64());
        ensure!(job.state == "succeeded", "the incremental upgrade: {job:?}");
        let fetched = job.bytes.last().map_or(0, |(done, _)| *done);
        ratio.push(fetched as f64 / new_bytes as f64);
    }
    report.record("incremental_bytes_ratio", "x", ratio, Some(Target::Equal(1.0)));
    report.record("incremental_pull_s", "s", wall, None);
    Ok(())
}

/// Figure 9 and the large-image memory of figure 7: one row per shape.
pub async fn scaling(shapes: &[Shape], runs: usize, report: &mut Report) -> Result<()> {
    let mut table = String::from("scaling: hostctl upgrade v1 -> v2 (median of runs)\n payload_MiB  layers  pull_s  MiB_per_s  peak_rss_MiB\n");
    let mut peak_of_largest = None;
    for &shape in shapes {
        let set = ImageSet::get(shape)?;
        let layers = set.layer_sizes("v2")?.len();
        let (mut walls, mut peaks) = (vec![], vec![]);
        for _ in 0..runs {
            let pull = with_hostd(&set).await?;
            walls.push(pull.wall.as_secs_f64());
            peaks.push(pull.peak_rss_mib);
        }
        let (wall, peak) = (median(&walls), median(&peaks));
        table.push_str(&format!(
            " {:>11}  {:>6}  {:>6.2}  {:>9.1}  {:>12.1}\n",
            shape.payload_mib,
            layers,
            wall,
            shape.payload_mib as f64 / wall,
            peak
        ));
        if peak_of_largest.as_ref().is_none_or(|(s, _): &(Shape, Vec<f64>)| shape.payload_mib > s.payload_mib) {
            peak_of_largest = Some((shape, peaks));
        }
    }
    report.table(table);
    if let Some((shape, peaks)) = peak_of_largest {
        report.record(format!("rss_peak_pull_{}mib_mb", shape.payload_mib), "MiB", peaks, Some(Target::AtMost(64.0)));
    }
    Ok(())
}
