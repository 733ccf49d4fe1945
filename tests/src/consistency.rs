//! What a host must look like after any fault (a killed daemon, a dead
//! registry, a damaged image, a full disk): an intact repo, a deployment
//! list from before or after the operation and never a mix, boot entries
//! that agree with it, and a daemon that answers and is idle.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use hostd_interface::proxy::Host1Proxy;

use crate::sysroot::TestSysroot;

/// The marker a booted host's daemon maintains; an offline sysroot must
/// never make hostd touch the host's copy.
const REBOOT_MARKER: &str = "/run/reboot-required";

/// The host's `/run/reboot-required` as it was before a test: absent, or
/// present with this modification time (another tool's, left alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootMarker(Option<SystemTime>);

impl RebootMarker {
    /// Note the marker's current state.
    pub fn observe() -> RebootMarker {
        RebootMarker(std::fs::metadata(REBOOT_MARKER).and_then(|m| m.modified()).ok())
    }

    /// Fail when hostd created, removed or rewrote the host's marker.
    pub fn unchanged(&self) -> Result<()> {
        let now = RebootMarker::observe();
        ensure!(&now == self, "{REBOOT_MARKER} changed: was {:?}, is {:?}", self.0, now.0);
        Ok(())
    }
}

/// The deployment a bootloader following the BLS entries boots: the entry
/// with the highest `version`, resolved through its `ostree=` argument.
pub fn bls_default_checksum(sysroot: &Path) -> Result<String> {
    bls_checksums(sysroot)?.into_iter().next().context("no BLS entries")
}

/// The checksums the BLS entries boot, highest `version` first, as a
/// bootloader would list them.
pub fn bls_checksums(sysroot: &Path) -> Result<Vec<String>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(sysroot.join("boot/loader/entries")).context("reading the BLS entries")? {
        let conf = std::fs::read_to_string(entry?.path())?;
        let version: u32 = bls_field(&conf, "version").parse().context("BLS version")?;
        entries.push((version, deployment_of(sysroot, &bls_field(&conf, "options"))?));
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(entries.into_iter().map(|(_, checksum)| checksum).collect())
}

fn bls_field(conf: &str, key: &str) -> String {
    conf.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_default()
        .to_string()
}

/// The commit checksum of the deployment an entry's `ostree=` argument names.
fn deployment_of(sysroot: &Path, options: &str) -> Result<String> {
    let karg = options.split_whitespace().find_map(|a| a.strip_prefix("ostree=")).context("no ostree= karg")?;
    let deployment = std::fs::canonicalize(sysroot.join(karg.trim_start_matches('/')))
        .with_context(|| format!("the entry's deployment {karg} does not exist"))?;
    let name = deployment.file_name().context("deployment name")?.to_string_lossy().into_owned();
    Ok(name.split('.').next().unwrap_or_default().to_string())
}

/// Check everything a fault must leave intact; `allowed` says which
/// deployment lists (checksums in boot order) the host may be in: the one
/// from before the operation or the one after it. Returns the one found.
pub async fn check_host(
    sysroot: &TestSysroot,
    proxy: &Host1Proxy<'_>,
    allowed: &dyn Fn(&[String]) -> bool,
    marker: &RebootMarker,
) -> Result<Vec<String>> {
    let found = sysroot.deployment_checksums()?;
    ensure!(allowed(&found), "deployments {found:?} are neither the old nor the new ones");
    let boots = bls_checksums(sysroot.path())?;
    ensure!(boots == found, "BLS entries boot {boots:?}, deployments are {found:?}");
    check_daemon(proxy, found.len()).await?;
    wait_for_clean_up_behind_a_killed_daemon(sysroot).await?;
    sysroot.fsck().context("ostree fsck")?;
    marker.unchanged()?;
    Ok(found)
}

/// hostd's record of work under the sysroot lock; a new hostd that finds
/// it left behind cleans up (finishing an interrupted prune) and removes it.
const WORK_MARKER: &str = "ostree/hostd/work-in-progress";

/// How long the clean-up of a tmpfs test sysroot may take.
const CLEAN_UP_LIMIT: Duration = Duration::from_secs(30);

/// Wait until no hostd work is recorded as in progress. `Status` must have
/// started the daemon that does the clean-up.
async fn wait_for_clean_up_behind_a_killed_daemon(sysroot: &TestSysroot) -> Result<()> {
    let marker = sysroot.path().join(WORK_MARKER);
    let deadline = Instant::now() + CLEAN_UP_LIMIT;
    while marker.exists() {
        ensure!(Instant::now() < deadline, "{} still exists after {CLEAN_UP_LIMIT:?}", marker.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// `Status` answers (this re-activates a killed daemon) with `deployments`
/// entries, and no job is left behind.
pub async fn check_daemon(proxy: &Host1Proxy<'_>, deployments: usize) -> Result<()> {
    let json = proxy.status(HashMap::new()).await.context("Status")?;
    let host: hostd_interface::host::Host = serde_json::from_str(&json)?;
    ensure!(host.entries().count() == deployments, "Status lists {} deployments, not {deployments}", host.entries().count());
    let state = proxy.state().await?;
    let job = proxy.active_job().await?;
    if state != "idle" || job.as_str() != "/" {
        bail!("State is {state:?} with ActiveJob {job}, not idle");
    }
    Ok(())
}
