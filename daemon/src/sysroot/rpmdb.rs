//! An rpm database listed by rpm itself: Debian's `rpm` (4.18, which reads
//! the sqlite databases of rpm ≥ 4.16), run on a copy of the database files
//! in a scratch directory.
//!
//! Why the rpm CLI: an rpm database is a sqlite table of header blobs in
//! rpm's own binary format (tags, types, regions, several generations of
//! it), and rpm is the reference reader of both. The crates that could
//! stand in for it do not fit: `rpm` (rpm-rs) reads and writes package
//! files, not databases; `rpmdb` (0.1, one author, a port of a Go reader)
//! is young and would parse an image's untrusted blobs inside the root
//! daemon; `librpm` binds the same C library in-process, with its global
//! configuration state, again as root in the daemon. A separate `rpm`
//! process can be run unprivileged and killed on a deadline.
//!
//! The database comes from an image, so rpm runs with as little as it
//! needs: as `nobody` with no supplementary groups and no new privileges,
//! with an empty environment (`HOME` is the scratch directory, so no
//! `~/.rpmmacros`), the sqlite backend named explicitly, header signatures
//! not checked (the headers' digests and structure still are), at most
//! [`QUERY_LIMIT`] (then killed), its output capped at [`MAX_OUTPUT`]. The
//! scratch directory (under `$TMPDIR`, private to hostd's unit) is owned by
//! `nobody`, since sqlite writes its shared-memory file beside the
//! database, and is removed when the [`Scratch`] is dropped.
//!
//! rpm exits non-zero when the sqlite file is not a database or has no
//! `Packages` table, and says on stderr what it skipped (a header it cannot
//! read) while still exiting 0: either is a malformed database.

use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::packages::RPM_QUERY_FORMAT;

/// Debian's rpm.
pub const RPM: &str = "/usr/bin/rpm";
/// How long rpm may take to list a database (a full Fedora workstation's
/// 2 500 packages take well under a second).
pub const QUERY_LIMIT: Duration = Duration::from_secs(20);
/// Larger database files are refused (a full Fedora workstation's
/// `rpmdb.sqlite` is about 200 MiB).
pub const MAX_DATABASE_BYTES: u64 = 1 << 30;
/// More output than this is refused (200 000 packages of long names).
pub const MAX_OUTPUT: u64 = 64 << 20;
/// The most of rpm's stderr kept for the message.
const MAX_COMPLAINT: u64 = 4096;

/// What became of a query.
#[derive(Debug)]
pub enum Answer {
    /// rpm's list, one line per package in [`RPM_QUERY_FORMAT`].
    Listed(String),
    /// rpm could not read the database: its exit status and what it said.
    Refused(String),
}

/// A scratch directory for one database's files, owned by the user rpm
/// runs as; removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
    /// Who rpm runs as: `nobody` when hostd is root, else hostd's own user.
    ids: Option<(u32, u32)>,
}

impl Scratch {
    /// A new empty directory.
    pub fn new() -> Result<Scratch> {
        let dir = tempfile::Builder::new().prefix("hostd-rpmdb-").tempdir().context("creating a scratch directory for rpm")?;
        let ids = nix::unistd::geteuid().is_root().then(super::skopeo::nobody_ids);
        let scratch = Scratch { dir, ids };
        scratch.give(scratch.dir.path())?;
        Ok(scratch)
    }

    /// A new file `name` in the directory, to write a database file to.
    pub fn create(&self, name: &str) -> Result<File> {
        let path = self.dir.path().join(name);
        let file = File::create_new(&path).with_context(|| format!("creating {}", path.display()))?;
        self.give(&path)?;
        Ok(file)
    }

    fn give(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).with_context(|| format!("giving {} to uid {uid}", path.display()))?;
        }
        Ok(())
    }

    /// rpm's list of the database in the directory, within [`QUERY_LIMIT`].
    /// An error is rpm not starting or not finishing in time.
    #[expect(clippy::disallowed_methods, reason = "runs on Diff's blocking thread")]
    pub fn query(&self) -> Result<Answer> {
        let mut child = self
            .command()
            .spawn()
            .with_context(|| format!("starting {RPM} (Debian's rpm package reads rpm databases)"))?;
        let capture = |pipe: Option<Box<dyn Read + Send>>, cap: u64| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(pipe) = pipe {
                    // The rest is drained so rpm does not block on a full pipe.
                    let mut pipe = pipe;
                    let _ = pipe.by_ref().take(cap).read_to_end(&mut bytes);
                    let _ = std::io::copy(&mut pipe, &mut std::io::sink());
                }
                bytes
            })
        };
        let stdout = capture(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>), MAX_OUTPUT + 1);
        let stderr = capture(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>), MAX_COMPLAINT);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for rpm")? {
                break status;
            }
            if started.elapsed() > QUERY_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("rpm did not list the database within {} s", QUERY_LIMIT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = stdout.join().map_err(|_| anyhow::anyhow!("reading rpm's output failed"))?;
        let err = stderr.join().map_err(|_| anyhow::anyhow!("reading rpm's errors failed"))?;
        let said = String::from_utf8_lossy(&err).trim().replace('\n', "; ");
        if !status.success() || !err.is_empty() {
            return Ok(Answer::Refused(format!("rpm {status}: {said}")));
        }
        if out.len() as u64 > MAX_OUTPUT {
            return Ok(Answer::Refused(format!("rpm listed more than {MAX_OUTPUT} bytes")));
        }
        match String::from_utf8(out) {
            Ok(text) => Ok(Answer::Listed(text)),
            Err(e) => Ok(Answer::Refused(format!("rpm's list is not UTF-8 at byte {}", e.utf8_error().valid_up_to()))),
        }
    }

    /// `rpm --dbpath <dir> -qa --qf …`, as the scratch directory's owner.
    #[expect(unsafe_code, reason = "pre_exec: the child's setup between fork and exec")]
    fn command(&self) -> Command {
        let dir = self.dir.path();
        let mut c = Command::new(RPM);
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", dir)
            .env("LC_ALL", "C")
            .current_dir(dir)
            .arg("--dbpath")
            .arg(dir)
            // Headers are listed, not trusted: signatures made with keys
            // or algorithms this rpm lacks are no reason to complain.
            .args(["--define", "_db_backend sqlite", "--nosignature", "-qa", "--qf", RPM_QUERY_FORMAT])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.ids {
            // std drops the supplementary groups when it changes the uid.
            c.uid(uid).gid(gid);
        }
        // SAFETY: prctl(2) only, which is async-signal-safe.
        unsafe {
            c.pre_exec(|| rustix::thread::set_no_new_privs(true).map_err(std::io::Error::from));
        }
        c
    }
}
