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

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use hostd_interface::host::DeploymentHealth;

/// The record's file name in hostd's state directory (`--state-dir`,
/// [`crate::persist::DEFAULT_DIR`] by default).
pub const RECORD_FILE: &str = "health.json";
/// The format version written; a file with another version is refused.
const FORMAT_VERSION: u32 = 1;

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
    pub fn load(dir: &Path) -> Result<HealthRecord> {
        let path = dir.join(RECORD_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HealthRecord::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let record: HealthRecord =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if record.version != FORMAT_VERSION {
            bail!("{}: format version {} is not {FORMAT_VERSION}", path.display(), record.version);
        }
        Ok(record)
    }

    /// The record at `dir/health.json` for its writer, `hostd
    /// --health-check`: one that cannot be read (corrupt, or of another
    /// format version) is renamed to `health.json.unreadable` and logged,
    /// and the assessment starts from an empty record rather than never
    /// assessing anything again.
    pub fn load_or_set_aside(dir: &Path) -> HealthRecord {
        match HealthRecord::load(dir) {
            Ok(record) => record,
            Err(e) => {
                let path = dir.join(RECORD_FILE);
                let aside = dir.join(format!("{RECORD_FILE}.unreadable"));
                match std::fs::rename(&path, &aside) {
                    Ok(()) => tracing::warn!("boot health record: {e:#}; moved to {} and started afresh", aside.display()),
                    Err(r) => tracing::warn!("boot health record: {e:#}; moving it aside failed ({r}); starting afresh"),
                }
                HealthRecord::default()
            }
        }
    }

    /// Mark deployment `checksum` (of image `image_digest`), just staged by
    /// hostd, for assessment on its first boot, in the record in `dir`.
    /// A new staging of a commit assessed before (a kernel-argument change,
    /// a retried image) is assessed again. An unreadable record is set
    /// aside ([`HealthRecord::load_or_set_aside`]), so the new deployment
    /// is still checked.
    pub fn expect_assessment(dir: &Path, checksum: &str, image_digest: Option<&str>) -> Result<()> {
        let mut record = HealthRecord::load_or_set_aside(dir);
        let staged_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        record.pending.insert(checksum.to_string(), Pending { image_digest: image_digest.map(str::to_string), staged_at });
        record.save(dir)
    }

    /// Write to `dir/health.json` atomically: a temporary file in `dir`,
    /// synced, then renamed over the old one.
    pub fn save(&self, dir: &Path) -> Result<()> {
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
        let mut record = HealthRecord::load(dir)?;
        let forgot_digest = record.failed_digests.remove(digest).is_some();
        let forgot_checksum = record.deployments.remove(checksum).is_some();
        if forgot_digest || forgot_checksum {
            record.save(dir)?;
        }
        Ok(forgot_digest || forgot_checksum)
    }

    /// Whether the image `digest` failed its checks before.
    pub fn digest_failed(&self, digest: &str) -> bool {
        self.failed_digests.contains_key(digest)
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
    fn an_unreadable_record_is_set_aside_and_assessment_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RECORD_FILE), "{ not json").unwrap();
        assert_eq!(HealthRecord::load_or_set_aside(dir.path()), HealthRecord::default());
        assert!(!dir.path().join(RECORD_FILE).exists());
        let aside = dir.path().join(format!("{RECORD_FILE}.unreadable"));
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), "{ not json");
        // Staging on an unreadable record sets it aside too, and marks the deployment.
        std::fs::write(dir.path().join(RECORD_FILE), r#"{"version": 7}"#).unwrap();
        HealthRecord::expect_assessment(dir.path(), "abc", Some("sha256:1")).unwrap();
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), r#"{"version": 7}"#);
        let record = HealthRecord::load(dir.path()).unwrap();
        assert_eq!(record.pending["abc"].image_digest.as_deref(), Some("sha256:1"));
    }
}
