//! The daemon's shared state, owned by an `Arc` that every bus object holds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use hostd_interface::Error;
use zbus::{OwnedVariant, Variant};

use crate::config::Config;
use crate::idle::Idle;
use crate::jobs::Jobs;
use crate::sysroot::cache::StatusCache;
use crate::sysroot::{SysrootPath, UpdateSummary};

/// Everything the bus objects and jobs share.
#[derive(Debug)]
pub struct Context {
    /// The managed sysroot.
    pub sysroot: SysrootPath,
    /// The status snapshot served to callers.
    pub status: Arc<StatusCache>,
    /// The job slot.
    pub jobs: Jobs,
    /// Idle-exit bookkeeping.
    pub idle: Idle,
    config_root: PathBuf,
    config: RwLock<Config>,
    last_check: Mutex<Option<UpdateSummary>>,
    last_check_time_us: AtomicU64,
    last_check_result: Mutex<String>,
    reboot_postponed: Mutex<Option<String>>,
}

impl Context {
    /// Daemon state for `sysroot`, configured from files under `config_root`.
    pub fn new(sysroot: SysrootPath, config_root: PathBuf, config: Config) -> Arc<Context> {
        Arc::new(Context {
            status: StatusCache::new(sysroot.clone()),
            sysroot,
            jobs: Jobs::default(),
            idle: Idle::new(config.idle_exit),
            config_root,
            config: RwLock::new(config),
            last_check: Mutex::new(None),
            last_check_time_us: AtomicU64::new(0),
            last_check_result: Mutex::new(String::new()),
            reboot_postponed: Mutex::new(None),
        })
    }

    /// The current settings.
    pub fn config(&self) -> Config {
        self.config.read().expect("config lock poisoned").clone()
    }

    /// Re-read the configuration; on error the previous one stays in force.
    pub fn reload_config(&self) -> Result<(), Error> {
        match Config::load(&self.config_root) {
            Ok(config) => {
                self.idle.set_timeout(config.idle_exit);
                *self.config.write().expect("config lock poisoned") = config;
                tracing::info!("configuration reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!("configuration not reloaded, keeping the previous one: {e:#}");
                Err(Error::InvalidArgument(format!(
                    "configuration not reloaded, keeping the previous one: {e:#}"
                )))
            }
        }
    }

    /// Remember what a finished `Check` found.
    pub fn record_check(&self, summary: Option<UpdateSummary>) {
        *self.last_check.lock().expect("check lock poisoned") = summary;
    }

    /// Remember when a check (a `Check`, or an unattended run) ended and how.
    pub fn record_check_result(&self, result: &str) {
        *self.last_check_result.lock().expect("check lock poisoned") = result.to_string();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.last_check_time_us.store(now.as_micros() as u64, Ordering::Relaxed);
    }

    /// `LastCheckResult`.
    pub fn last_check_result(&self) -> String {
        self.last_check_result.lock().expect("check lock poisoned").clone()
    }

    /// Why the last reboot `apply` asked for did not happen, or `None`.
    pub fn set_reboot_postponed(&self, reason: Option<String>) {
        *self.reboot_postponed.lock().expect("postponement lock poisoned") = reason;
    }

    /// `RebootPendingReason`: why a reboot is needed and, if one was
    /// postponed, why it has not happened; empty when none is needed.
    pub fn reboot_pending_reason(&self) -> String {
        let loaded = self.status.peek();
        let Some(Ok(snapshot)) = loaded.as_deref() else { return String::new() };
        if !snapshot.reboot_required {
            return String::new();
        }
        let why = crate::reboot::marker::reason(snapshot)
            .unwrap_or_else(|| "a change is queued for the next boot".to_string());
        match &*self.reboot_postponed.lock().expect("postponement lock poisoned") {
            Some(postponed) => format!("{}; {postponed}", why.trim_end()),
            None => why.trim_end().to_string(),
        }
    }

    /// `LastCheckTime`.
    pub fn last_check_time(&self) -> u64 {
        self.last_check_time_us.load(Ordering::Relaxed)
    }

    /// `CachedUpdate`: the persisted cached update from the sysroot, plus the
    /// download size from this daemon's last check of the same digest.
    pub fn cached_update_dict(&self) -> HashMap<String, OwnedVariant> {
        let mut m: HashMap<String, Variant<'static>> = HashMap::new();
        let loaded = self.status.peek();
        let cached = match loaded.as_deref() {
            Some(Ok(s)) => s.cached_update().cloned(),
            _ => None,
        };
        if let Some(update) = &cached {
            m.insert("digest".into(), Variant::from(update.image_digest.clone()));
            let downloaded = matches!(loaded.as_deref(), Some(Ok(s))
                if s.downloaded_update.as_deref() == Some(update.image_digest.as_str()));
            m.insert("downloaded".into(), Variant::Bool(downloaded));
            if let Some(v) = &update.version {
                m.insert("version".into(), Variant::from(v.clone()));
            }
            if let Some(t) = &update.timestamp {
                m.insert("timestamp".into(), Variant::from(t.clone()));
            }
            let last = self.last_check.lock().expect("check lock poisoned");
            if let Some(summary) = last.as_ref().filter(|s| s.digest == update.image_digest) {
                m.insert("download-bytes".into(), Variant::U64(summary.bytes_to_fetch));
                m.insert("layers-to-fetch".into(), Variant::U32(summary.layers_to_fetch));
                m.insert("layers-total".into(), Variant::U32(summary.layers_total));
            }
        }
        m.into_iter()
            .map(|(k, v)| (k, OwnedVariant::try_from(v).expect("no file descriptors")))
            .collect()
    }
}
