//! A fresh offline host for one measurement: a tmpfs sysroot with v1 of an
//! image set deployed, and hostd on a private bus in front of it.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use hostd_tests::machine::TestMachine;
use hostd_tests::sysroot::TestSysroot;

use crate::images::ImageSet;

/// hostd's configuration: no idle exit while a measurement runs.
const CONFIG: &str = "[daemon]\nidle_exit_secs = 600\n";

/// A sysroot with version `deployed` of `set` deployed by ostree-ext, as an
/// installer would, and `latest` pointing at `target` afterwards.
pub async fn sysroot(set: &ImageSet, deployed: &str, target: &str) -> Result<TestSysroot> {
    let sysroot = TestSysroot::new(&set.shape.sysroot_size())?;
    set.point_latest_at(deployed)?;
    sysroot.deploy_image(&set.reference()).await?;
    set.point_latest_at(target)?;
    Ok(sysroot)
}

/// hostd started (by a first `Status`) against `sysroot`.
pub fn machine(sysroot: &TestSysroot) -> Result<TestMachine> {
    let machine = TestMachine::start(sysroot.path(), CONFIG)?;
    hostctl(&machine, &["status", "--json"])?;
    Ok(machine)
}

/// Run `hostctl ARGS` as root; its wall time. Fails unless it exits with
/// one of `ok_codes` (0 when empty).
pub fn hostctl_timed(machine: &TestMachine, args: &[&str], ok_codes: &[i32]) -> Result<Duration> {
    let start = Instant::now();
    let out = machine.hostctl(None, args);
    let took = start.elapsed();
    let code = out.status.code().unwrap_or(-1);
    let ok = if ok_codes.is_empty() { code == 0 } else { ok_codes.contains(&code) };
    ensure!(ok, "hostctl {args:?} exited {code}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok(took)
}

/// Like [`hostctl_timed`], exit 0 expected, time not wanted.
pub fn hostctl(machine: &TestMachine, args: &[&str]) -> Result<()> {
    hostctl_timed(machine, args, &[]).map(|_| ())
}

/// A `/proc/<pid>/status` memory field (`VmRSS`, `VmHWM`) in MiB.
pub fn memory_mib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field}"))?;
    let kib: f64 = line.split_whitespace().nth(1).context("no value")?.parse()?;
    Ok(kib / 1024.0)
}

/// CPU time of a process in seconds, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    /// Its own threads, user and system.
    pub own: f64,
    /// Its children that it has waited for (skopeo).
    pub children: f64,
}

impl CpuTime {
    pub fn total(self) -> f64 {
        self.own + self.children
    }

    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime { own: self.own - earlier.own, children: self.children - earlier.children }
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

pub fn cpu_time(pid: u32) -> Result<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: count fields after its ")".
    let after = stat.rsplit_once(") ").context("malformed stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |range: std::ops::Range<usize>| -> Result<f64> {
        let mut sum = 0u64;
        for field in &fields[range] {
            sum += field.parse::<u64>()?;
        }
        Ok(sum as f64 / TICKS_PER_SECOND)
    };
    // utime, stime, cutime, cstime are fields 14–17 of stat(5).
    Ok(CpuTime { own: ticks(11..13)?, children: ticks(13..15)? })
}
