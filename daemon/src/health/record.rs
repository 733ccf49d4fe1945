//! The health record: what the checks said about each deployment's first
//! boot, the deployments waiting for theirs, and the image digests that
//! failed them, in `health.json` in hostd's state directory (versioned
//! JSON, replaced atomically).
//!
//! The record is keyed by the deployment's ostree commit. hostd marks a
//! deployment it stages as pending; its first boot assesses it and clears
//! the mark, so the checks (and an automatic rollback) run at most once per
//! staging, and deployments other tools made are left alone.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use hostd_interface::host::DeploymentHealth;

/// The record's file name in hostd's state directory (`--state-dir`,
/// [`crate::persist::DEFAULT_DIR`] by default).
pub const RECORD_FILE: &str = "health.json";
/// The lock file beside the record: every change is a read-modify-write
/// under it, because the daemon (staging) and `hostd --health-check` (an
/// assessment) may change the record at the same time.
pub const LOCK_FILE: &str = "health.lock";
/// The format version written; a file with another version is refused.
const FORMAT_VERSION: u32 = 1;

/// Why the record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read (permissions, I/O).
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The record file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// The file is not a health record: it is set aside by the next change.
    #[error("{} is not a health record: {source}", path.display())]
    Corrupt {
        /// The record file.
        path: PathBuf,
        /// Where parsing it failed.
        source: serde_json::Error,
    },
    /// A newer hostd wrote it (before a rollback to an older image): it is
    /// left as it is, and not used.
    #[error("{} has format version {found}, newer than this hostd's {FORMAT_VERSION}; it is left as it is", path.display())]
    Newer {
        /// The record file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
}

/// One failed image, so unattended upgrades do not install it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedImage {
    /// The deployment (ostree commit) that failed its checks.
    pub checksum: String,
    /// When, RFC 3339 in UTC.
    pub failed_at: String,
}

/// A deployment hostd staged, to be assessed on its first boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    /// The image's manifest digest, when it came from a container image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// When it was staged, RFC 3339 in UTC.
    pub staged_at: String,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthRecord {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Assessments by deployment commit.
    #[serde(default)]
    pub deployments: BTreeMap<String, DeploymentHealth>,
    /// Deployments hostd staged that no boot has assessed yet, by commit.
    #[serde(default)]
    pub pending: BTreeMap<String, Pending>,
    /// The commit assessed last, whatever the clock said then: the fleet
    /// rule follows the latest assessment, not the latest timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_assessed: Option<String>,
    /// Image manifest digests (`sha256:…`) whose deployment failed its checks.
    #[serde(default)]
    pub failed_digests: BTreeMap<String, FailedImage>,
}

impl Default for HealthRecord {
    fn default() -> HealthRecord {
        HealthRecord {
            version: FORMAT_VERSION,
            deployments: BTreeMap::new(),
            pending: BTreeMap::new(),
            last_assessed: None,
            failed_digests: BTreeMap::new(),
        }
    }
}

impl HealthRecord {
    /// The record at `dir/health.json`; empty when the file does not exist.
    pub fn load(dir: &Path) -> Result<HealthRecord, LoadError> {
        let path = dir.join(RECORD_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HealthRecord::default()),
            Err(source) => return Err(LoadError::Io { path, source }),
        };
        let record: HealthRecord = match serde_json::from_str(&text) {
            Ok(record) => record,
            Err(source) => return Err(LoadError::Corrupt { path, source }),
        };
        if record.version > FORMAT_VERSION {
            return Err(LoadError::Newer { path, found: record.version });
        }
        Ok(record)
    }

    /// Change the record in `dir` with `change` and save it, holding
    /// [`LOCK_FILE`] from the read to the rename, so a change made meanwhile
    /// by the other writer is never lost. A corrupt record is renamed to
    /// `health.json.unreadable-<seconds since the epoch>` (logged) and the
    /// change applies to an empty one, rather than the feature stopping for
    /// good; one that cannot be read, or is newer, is an error and stays.
    /// What `change` returned.
    pub fn update<T>(dir: &Path, change: impl FnOnce(&mut HealthRecord) -> T) -> Result<T> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;
        let mut record = match HealthRecord::load(dir) {
            Ok(record) => record,
            Err(e @ LoadError::Corrupt { .. }) => {
                set_aside(dir, &e);
                HealthRecord::default()
            }
            Err(e) => return Err(e.into()),
        };
        let out = change(&mut record);
        record.save(dir)?;
        Ok(out)
    }

    /// Mark deployment `checksum` (of image `image_digest`), just staged by
    /// hostd, for assessment on its first boot, in the record in `dir`.
    /// A new staging of a commit assessed before (a kernel-argument change,
    /// a retried image) is assessed again.
    pub fn expect_assessment(dir: &Path, checksum: &str, image_digest: Option<&str>) -> Result<()> {
        let staged_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let pending = Pending { image_digest: image_digest.map(str::to_string), staged_at };
        HealthRecord::update(dir, |record| {
            record.pending.insert(checksum.to_string(), pending);
        })
    }

    /// Write to `dir/health.json` atomically: a temporary file in `dir`,
    /// synced, then renamed over the old one. Changes go through
    /// [`HealthRecord::update`].
    fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing in {}", dir.display()))?;
        serde_json::to_writer_pretty(&mut tmp, self)?;
        tmp.write_all(b"\n")?;
        tmp.as_file().sync_all()?;
        let path: PathBuf = dir.join(RECORD_FILE);
        tmp.persist(&path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }

    /// Forget that image `digest` failed, and the assessment of its
    /// deployment `checksum`, in the record in `dir`: an explicit retry
    /// (`retry-failed`) gets assessed, and may be rolled back, once more.
    /// Whether anything was forgotten.
    pub fn forget(dir: &Path, digest: &str, checksum: &str) -> Result<bool> {
        HealthRecord::update(dir, |record| {
            let forgot_digest = record.failed_digests.remove(digest).is_some();
            let forgot_checksum = record.deployments.remove(checksum).is_some();
            forgot_digest || forgot_checksum
        })
    }

    /// The image digests that failed their checks, from the record in
    /// `dir`; none when it cannot be read (logged).
    pub fn failed_images(dir: &Path) -> BTreeMap<String, FailedImage> {
        match HealthRecord::load(dir) {
            Ok(record) => record.failed_digests,
            Err(e) => {
                tracing::warn!("boot health record: {e}");
                BTreeMap::new()
            }
        }
    }

    /// Whether the image `digest` failed its checks before.
    pub fn digest_failed(&self, digest: &str) -> bool {
        self.failed_digests.contains_key(digest)
    }
}

/// Rename the corrupt record in `dir` out of the way, logging why.
fn set_aside(dir: &Path, why: &LoadError) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let aside = dir.join(format!("{RECORD_FILE}.unreadable-{secs}"));
    match std::fs::rename(dir.join(RECORD_FILE), &aside) {
        Ok(()) => tracing::warn!("boot health record: {why}; moved to {} and started afresh", aside.display()),
        Err(e) => tracing::warn!("boot health record: {why}; moving it aside failed ({e}); starting afresh"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostd_interface::host::HealthResult;

    #[test]
    fn round_trips_and_refuses_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(HealthRecord::load(dir.path()).unwrap(), HealthRecord::default());
        let mut record = HealthRecord::default();
        record.deployments.insert(
            "abc".into(),
            DeploymentHealth {
                result: HealthResult::Failed,
                checked_at: "2026-01-01T00:00:00Z".into(),
                failures: vec!["unit x.service: failed".into()],
                action: Some("rolled-back".into()),
            },
        );
        record.failed_digests.insert("sha256:1".into(), FailedImage { checksum: "abc".into(), failed_at: "t".into() });
        record.save(dir.path()).unwrap();
        let read = HealthRecord::load(dir.path()).unwrap();
        assert_eq!(read, record);
        assert!(read.digest_failed("sha256:1"));
        assert!(HealthRecord::forget(dir.path(), "sha256:1", "abc").unwrap());
        assert_eq!(HealthRecord::load(dir.path()).unwrap(), HealthRecord::default());
        assert!(!HealthRecord::forget(dir.path(), "sha256:1", "abc").unwrap());
        std::fs::write(dir.path().join(RECORD_FILE), r#"{"version": 2}"#).unwrap();
        assert!(HealthRecord::load(dir.path()).is_err());
    }

    #[test]
    fn a_corrupt_record_is_set_aside_and_a_newer_one_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RECORD_FILE), "{ not json").unwrap();
        assert!(matches!(HealthRecord::load(dir.path()), Err(LoadError::Corrupt { .. })));
        // Staging on it sets it aside and still marks the deployment.
        HealthRecord::expect_assessment(dir.path(), "abc", Some("sha256:1")).unwrap();
        let record = HealthRecord::load(dir.path()).unwrap();
        assert_eq!(record.pending["abc"].image_digest.as_deref(), Some("sha256:1"));
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("health.json.unreadable-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read_to_string(aside[0].path()).unwrap(), "{ not json");
        // A newer hostd's record is neither used nor replaced.
        let newer = r#"{"version": 7, "pending": {}}"#;
        std::fs::write(dir.path().join(RECORD_FILE), newer).unwrap();
        assert!(matches!(HealthRecord::load(dir.path()), Err(LoadError::Newer { found: 7, .. })));
        assert!(HealthRecord::expect_assessment(dir.path(), "def", None).is_err());
        assert_eq!(std::fs::read_to_string(dir.path().join(RECORD_FILE)).unwrap(), newer);
    }

    #[test]
    #[expect(clippy::disallowed_methods, reason = "a plain test thread, no runtime")]
    fn changes_made_at_the_same_time_by_two_writers_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let writers: Vec<_> = ["staging", "assessing"]
            .into_iter()
            .map(|who| {
                let dir = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    for i in 0..40 {
                        HealthRecord::expect_assessment(&dir, &format!("{who}-{i}"), None).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(HealthRecord::load(dir.path()).unwrap().pending.len(), 80);
    }
}
