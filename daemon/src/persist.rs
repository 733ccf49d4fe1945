//! The state file: what the manager's properties report about the past
//! (the last check, the last job of each kind, a postponed reboot, the
//! last update announced), kept in `<state dir>/state.json` so it
//! survives an idle exit, a crash and a reboot (docs/state.md).
//!
//! Written whole and atomically (a temporary file in the same directory,
//! fsync, rename, fsync of the directory), readable by root only. A file
//! that is missing, unreadable, corrupt or written by a newer format is
//! logged once and ignored: the daemon starts fresh and the next save
//! replaces it. Nothing here is fatal.

use std::fs::{DirBuilder, File};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use hostd_interface::manager::{CachedUpdate, LastJob};
use serde::{Deserialize, Serialize};

/// The default state directory (systemd's `StateDirectory=hostd`).
pub const DEFAULT_DIR: &str = "/var/lib/hostd";

/// The file's name in the state directory.
pub const FILE_NAME: &str = "state.json";

/// The format this daemon writes and reads. A file with a higher one was
/// written by a newer hostd and is ignored rather than misread.
pub const FORMAT_VERSION: u32 = 1;

/// The last check (a `Check`, or an unattended run) as it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SavedCheck {
    /// When it ended, µs since the epoch (`LastCheckTime`).
    pub time: u64,
    /// How it ended (`LastCheckResult`).
    pub result: String,
    /// The update it found, as `CachedUpdate` carries it on the bus
    /// (with the download size and layer counts); `None` when none.
    pub update: Option<CachedUpdate>,
}

/// Everything the file keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct Saved {
    /// The last check; its time is 0 when there was none.
    pub last_check: SavedCheck,
    /// The last finished job of each kind, as `LastJobs` carries them.
    pub last_jobs: Vec<LastJob>,
    /// Why the last reboot `apply` asked for did not happen.
    pub reboot_postponed: Option<String>,
    /// The digest of the last update `UpdateAvailable` announced.
    pub announced_update: Option<String>,
}

/// The file on disk: the format version, then the state.
#[derive(Debug, Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    #[serde(flatten)]
    saved: Saved,
}

/// Only the version, read first so a newer format is recognized even when
/// the rest would not parse.
#[derive(Debug, Deserialize)]
struct VersionOnly {
    version: u32,
}

/// Why a state file was not used.
#[derive(Debug, thiserror::Error)]
pub enum Ignored {
    /// There is none yet.
    #[error("no saved state at {0}")]
    Missing(PathBuf),
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a state file this daemon can read.
    #[error("{path} is corrupt ({source})")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser says.
        source: serde_json::Error,
    },
    /// A newer hostd wrote it.
    #[error("{path} has format version {found}, newer than the {FORMAT_VERSION} this hostd reads")]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
}

/// The state file in a directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    /// The state file in `dir`.
    pub fn new(dir: &Path) -> StateFile {
        StateFile { dir: dir.to_path_buf() }
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The saved state, or why there is none to use.
    pub fn load(&self) -> Result<Saved, Ignored> {
        let path = self.path();
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(Ignored::Missing(path)),
            Err(source) => return Err(Ignored::Unreadable { path, source }),
        };
        parse(&text).map_err(|e| match e {
            Parse::Newer(found) => Ignored::Newer { path: path.clone(), found },
            Parse::Corrupt(source) => Ignored::Corrupt { path: path.clone(), source },
        })
    }

    /// The saved state, or a fresh one with why the file was not used
    /// logged (once: this is read once, at start-up).
    pub fn load_or_fresh(&self) -> Saved {
        match self.load() {
            Ok(saved) => saved,
            Err(e @ Ignored::Missing(_)) => {
                tracing::info!("{e}; starting fresh");
                Saved::default()
            }
            Err(e) => {
                tracing::warn!("ignoring the saved state, starting fresh: {e}");
                Saved::default()
            }
        }
    }

    /// Replace the file with `saved`, atomically: readers and a crash
    /// find either the old file or the new one, never a part.
    pub fn save(&self, saved: &Saved) -> Result<()> {
        let text = serde_json::to_vec_pretty(&FileFormat { version: FORMAT_VERSION, saved: saved.clone() })
            .context("serializing the state")?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        // Created 0600 by tempfile; the rename keeps that.
        let mut temp = tempfile::Builder::new()
            .prefix(".state.json.")
            .tempfile_in(&self.dir)
            .with_context(|| format!("creating a temporary file in {}", self.dir.display()))?;
        temp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
        temp.write_all(&text).and_then(|()| temp.write_all(b"\n")).context("writing the state")?;
        temp.as_file().sync_all().context("syncing the state")?;
        let path = self.path();
        temp.persist(&path).with_context(|| format!("renaming into {}", path.display()))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", self.dir.display()))?;
        Ok(())
    }
}

/// Why a text is no state file of this format.
#[derive(Debug)]
enum Parse {
    Newer(u32),
    Corrupt(serde_json::Error),
}

fn parse(text: &[u8]) -> Result<Saved, Parse> {
    let version = serde_json::from_slice::<VersionOnly>(text).map_err(Parse::Corrupt)?.version;
    if version > FORMAT_VERSION {
        return Err(Parse::Newer(version));
    }
    Ok(serde_json::from_slice::<FileFormat>(text).map_err(Parse::Corrupt)?.saved)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use hostd_interface::job::{JobKind, JobStatus};

    use super::*;

    fn saved() -> Saved {
        Saved {
            last_check: SavedCheck {
                time: 1_700_000_000_000_000,
                result: "Update available: 2 (sha256:2), 1 of 3 layers to fetch, 10 bytes.".into(),
                update: Some(CachedUpdate {
                    digest: Some("sha256:2".into()),
                    downgrade: Some(false),
                    version: Some("2".into()),
                    download_bytes: Some(10),
                    layers_to_fetch: Some(1),
                    layers_total: Some(3),
                    ..CachedUpdate::default()
                }),
            },
            last_jobs: vec![LastJob {
                kind: JobKind::Check,
                result: JobStatus::Succeeded,
                message: "m".into(),
                error_name: String::new(),
                error_message: String::new(),
                start_time: 1,
                end_time: 2,
                image: "quay.io/os:latest".into(),
                initiator_uid: 0,
            }],
            reboot_postponed: Some("an inhibitor".into()),
            announced_update: Some("sha256:2".into()),
        }
    }

    #[test]
    fn saved_state_reads_back_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(&dir.path().join("hostd"));
        assert!(matches!(file.load(), Err(Ignored::Missing(_))));
        file.save(&saved()).unwrap();
        assert_eq!(file.load().unwrap(), saved());
        assert_eq!(std::fs::metadata(file.path()).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.path().join("hostd")).unwrap().mode() & 0o777, 0o700);
        file.save(&Saved::default()).unwrap();
        assert_eq!(file.load().unwrap(), Saved::default(), "a save replaces the file whole");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("hostd")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [FILE_NAME], "no temporary file is left behind");
    }

    #[test]
    fn corrupt_and_newer_files_are_told_apart() {
        assert!(matches!(parse(b"{\"version\": 1, \"last-check\": 7}"), Err(Parse::Corrupt(_))));
        assert!(matches!(parse(b"\0\0garbage"), Err(Parse::Corrupt(_))));
        assert!(matches!(parse(b"{\"version\": 2, \"whatever\": {}}"), Err(Parse::Newer(2))));
        assert!(matches!(parse(b"{\"version\": 2, \"last-check\": 7}"), Err(Parse::Newer(2))), "newer wins over corrupt");
        assert_eq!(parse(b"{\"version\": 1}").unwrap(), Saved::default(), "absent parts are empty");
    }
}
