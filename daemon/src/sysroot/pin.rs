//! Pinning: a pinned deployment is kept by libostree through new
//! deployments and cleanups until it is unpinned.

use std::time::{Duration, Instant};

use anyhow::Context;
use ostree_ext::{gio, ostree};

use super::{Error, SysrootPath};

/// How long `Pin` and `UsrOverlay` wait for another process to release the sysroot lock.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(10);
const LOCK_POLL: Duration = Duration::from_millis(100);

/// Which deployment a caller means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Position in the `Deployments` property (boot order, staged first).
    Index(usize),
    /// The commit checksum, and the deploy serial when several deployments
    /// share the commit.
    Checksum {
        /// The deployment's commit checksum.
        checksum: String,
        /// Its deploy serial (`<checksum>.<serial>`), if given.
        serial: Option<i32>,
    },
}

impl Selector {
    /// `3`, `<sha256 hex>` or `<sha256 hex>.<serial>`.
    pub fn parse(text: &str) -> Result<Selector, Error> {
        let invalid = || {
            Error::Refused(format!(
                "'{}' is neither a deployment index nor a checksum[.serial]",
                text.escape_debug()
            ))
        };
        if !text.is_empty() && text.len() <= 4 && text.bytes().all(|b| b.is_ascii_digit()) {
            return text.parse().map(Selector::Index).map_err(|_| invalid());
        }
        let (checksum, serial) = match text.split_once('.') {
            Some((c, s)) => (c, Some(s.parse::<i32>().map_err(|_| invalid())?)),
            None => (text, None),
        };
        let is_sha256_hex = checksum.len() == 64
            && checksum.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_sha256_hex {
            return Err(invalid());
        }
        Ok(Selector::Checksum { checksum: checksum.to_string(), serial })
    }

    fn find(&self, deployments: &[ostree::Deployment]) -> Result<ostree::Deployment, Error> {
        let found: Vec<&ostree::Deployment> = match self {
            Selector::Index(i) => deployments.get(*i).into_iter().collect(),
            Selector::Checksum { checksum, serial } => deployments
                .iter()
                .filter(|d| d.csum() == checksum.as_str() && serial.is_none_or(|s| d.deployserial() == s))
                .collect(),
        };
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::Refused(format!("no deployment {}", self.describe()))),
            _ => Err(Error::Refused(format!(
                "several deployments match {}; add the deploy serial (checksum.serial)",
                self.describe()
            ))),
        }
    }

    fn describe(&self) -> String {
        match self {
            Selector::Index(i) => format!("at index {i}"),
            Selector::Checksum { checksum, serial: None } => checksum.clone(),
            Selector::Checksum { checksum, serial: Some(s) } => format!("{checksum}.{s}"),
        }
    }
}

/// Pin or unpin the selected deployment; returns it as `checksum.serial`.
pub async fn set_pinned(sysroot: &SysrootPath, selector: Selector, pinned: bool) -> Result<String, Error> {
    let path = sysroot.path().to_path_buf();
    tokio::task::spawn_blocking(move || set_pinned_blocking(&path, &selector, pinned))
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("pinning panicked: {e}").into()))
}

fn set_pinned_blocking(path: &std::path::Path, selector: &Selector, pinned: bool) -> Result<String, Error> {
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(path)));
    lock_within(&sysroot, LOCK_WAIT)?;
    let result = (|| {
        sysroot.load(gio::Cancellable::NONE).context("loading sysroot")?;
        let deployment = selector.find(&sysroot.deployments())?;
        if deployment.is_staged() {
            return Err(Error::Refused(
                "the staged deployment cannot be pinned before it is finalized at the next boot".into(),
            ));
        }
        let name = format!("{}.{}", deployment.csum(), deployment.deployserial());
        if deployment.is_pinned() != pinned {
            sysroot
                .deployment_set_pinned(&deployment, pinned)
                .with_context(|| format!("setting pinned={pinned} on {name}"))?;
        }
        Ok(name)
    })();
    sysroot.unlock();
    result
}

#[expect(clippy::disallowed_methods, reason = "Pin runs on a blocking-pool thread, the /usr overlay helper has no runtime")]
pub(crate) fn lock_within(sysroot: &ostree::Sysroot, wait: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + wait;
    loop {
        match sysroot.try_lock() {
            Ok(true) => return Ok(()),
            Ok(false) if Instant::now() < deadline => std::thread::sleep(LOCK_POLL),
            Ok(false) => {
                return Err(Error::LockHeld(format!(
                    "another process has held the sysroot lock for over {}s",
                    wait.as_secs()
                )))
            }
            Err(e) => return Err(anyhow::Error::new(e).context("locking the sysroot").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM: &str = "5b2c8e2f1a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5061728394a5b";

    #[test]
    fn selectors_parse_indexes_and_checksums() {
        assert_eq!(Selector::parse("0").unwrap(), Selector::Index(0));
        assert_eq!(Selector::parse("12").unwrap(), Selector::Index(12));
        assert_eq!(
            Selector::parse(SUM).unwrap(),
            Selector::Checksum { checksum: SUM.into(), serial: None }
        );
        assert_eq!(
            Selector::parse(&format!("{SUM}.1")).unwrap(),
            Selector::Checksum { checksum: SUM.into(), serial: Some(1) }
        );
    }

    #[test]
    fn anything_else_is_invalid() {
        for bad in ["", "-1", "99999", "abc", &SUM[1..], &SUM.to_uppercase(), &format!("{SUM}.x"), &format!("{SUM}.")] {
            assert!(matches!(Selector::parse(bad), Err(Error::Refused(_))), "{bad:?}");
        }
    }
}
