//! Configuration: `/etc/hostd/hostd.toml` plus drop-ins, in three stages —
//! fragments (every key optional, unknown keys rejected) → merged in order →
//! validated [`Config`].
//!
//! Drop-ins live in `/usr/lib/hostd/hostd.d`, `/etc/hostd/hostd.d` and
//! `/run/hostd/hostd.d`; a file name in a later directory replaces the same
//! name in an earlier one, a symlink to `/dev/null` masks it, and the
//! survivors apply in file name order after the main file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

/// Drop-in directories, lowest priority first, relative to the config root.
const DROPIN_DIRS: [&str; 3] = ["usr/lib/hostd/hostd.d", "etc/hostd/hostd.d", "run/hostd/hostd.d"];
/// The main file, relative to the config root.
const MAIN_FILE: &str = "etc/hostd/hostd.toml";

/// What to do when an update is found unattended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpdatePolicy {
    /// Nothing.
    #[default]
    None,
    /// Only look.
    Check,
    /// Fetch, keep finalization-locked.
    Download,
    /// Fetch and stage for the next boot.
    Stage,
    /// Stage and reboot.
    Apply,
}

impl UpdatePolicy {
    /// The name used in files and on the bus.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdatePolicy::None => "none",
            UpdatePolicy::Check => "check",
            UpdatePolicy::Download => "download",
            UpdatePolicy::Stage => "stage",
            UpdatePolicy::Apply => "apply",
        }
    }
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Exit after this long without calls or jobs; `None` never exits.
    pub idle_exit: Option<Duration>,
    /// Cancel jobs running longer than this.
    pub job_timeout: Duration,
    /// Unattended update policy.
    pub policy: UpdatePolicy,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            idle_exit: Some(Duration::from_secs(60)),
            job_timeout: Duration::from_secs(3600),
            policy: UpdatePolicy::None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fragment {
    daemon: Option<DaemonFragment>,
    updates: Option<UpdatesFragment>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonFragment {
    idle_exit_secs: Option<u64>,
    job_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdatesFragment {
    policy: Option<UpdatePolicy>,
}

impl Config {
    /// Read the main file and drop-ins under `root` (`/` in production).
    pub fn load(root: &Path) -> Result<Config> {
        let mut config = Config::default();
        for file in config_files(root)? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let fragment: Fragment =
                toml::from_str(&text).with_context(|| format!("in {}", file.display()))?;
            config.apply(fragment).with_context(|| format!("in {}", file.display()))?;
        }
        Ok(config)
    }

    fn apply(&mut self, f: Fragment) -> Result<()> {
        if let Some(d) = f.daemon {
            if let Some(secs) = d.idle_exit_secs {
                self.idle_exit = (secs > 0).then(|| Duration::from_secs(secs));
            }
            if let Some(secs) = d.job_timeout_secs {
                anyhow::ensure!(secs > 0, "daemon.job_timeout_secs must be greater than 0");
                self.job_timeout = Duration::from_secs(secs);
            }
        }
        if let Some(u) = f.updates {
            if let Some(p) = u.policy {
                self.policy = p;
            }
        }
        Ok(())
    }
}

/// The main file (if present) followed by the surviving drop-ins in name order.
fn config_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let main = root.join(MAIN_FILE);
    if main.exists() {
        files.push(main);
    }
    let mut dropins: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in DROPIN_DIRS.iter().map(|d| root.join(d)) {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".toml") {
                dropins.insert(name, entry.path());
            }
        }
    }
    files.extend(dropins.into_values().filter(|p| !is_masked(p)));
    Ok(files)
}

fn is_masked(p: &Path) -> bool {
    std::fs::read_link(p).is_ok_and(|target| target == Path::new("/dev/null"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn defaults_without_files() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Config::load(d.path()).unwrap(), Config::default());
    }

    #[test]
    fn later_directories_win_and_dev_null_masks() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, MAIN_FILE, "[daemon]\nidle_exit_secs = 5\n");
        write(r, "usr/lib/hostd/hostd.d/10-a.toml", "[daemon]\nidle_exit_secs = 7\n");
        write(r, "etc/hostd/hostd.d/10-a.toml", "[daemon]\nidle_exit_secs = 9\n");
        write(r, "usr/lib/hostd/hostd.d/20-b.toml", "[daemon]\njob_timeout_secs = 11\n");
        std::fs::create_dir_all(r.join("run/hostd/hostd.d")).unwrap();
        std::os::unix::fs::symlink("/dev/null", r.join("run/hostd/hostd.d/20-b.toml")).unwrap();
        let c = Config::load(r).unwrap();
        assert_eq!(c.idle_exit, Some(Duration::from_secs(9)));
        assert_eq!(c.job_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn zero_idle_means_never() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), MAIN_FILE, "[daemon]\nidle_exit_secs = 0\n");
        assert_eq!(Config::load(d.path()).unwrap().idle_exit, None);
    }

    #[test]
    fn unknown_keys_name_file_and_key() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), MAIN_FILE, "[daemon]\nidle_exit = 5\n");
        let e = format!("{:#}", Config::load(d.path()).unwrap_err());
        assert!(e.contains("etc/hostd/hostd.toml"), "{e}");
        assert!(e.contains("unknown field `idle_exit`"), "{e}");
    }

    #[test]
    fn bad_policy_value_is_rejected() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), MAIN_FILE, "[updates]\npolicy = \"sometimes\"\n");
        let e = format!("{:#}", Config::load(d.path()).unwrap_err());
        assert!(e.contains("unknown variant `sometimes`"), "{e}");
    }
}
