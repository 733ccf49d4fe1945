//! The daemon's shared state, owned by an `Arc` that every bus object holds.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use hostd_interface::Error;

use crate::config::{Config, ConfigError, Loader};
use crate::idle::Idle;
use crate::jobs::records::Records;
use crate::jobs::Jobs;
use crate::sysroot::cache::StatusCache;
use crate::sysroot::SysrootPath;

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
    /// What finished jobs left for the manager's properties.
    pub records: Records,
    config_root: PathBuf,
    config: RwLock<Config>,
    config_loader: Loader,
}

impl Context {
    /// Daemon state for `sysroot`, configured from files under
    /// `config_root`, with the records restored from the state file.
    pub fn new(sysroot: SysrootPath, config_root: PathBuf, config: Config, records: Records) -> Arc<Context> {
        Arc::new(Context {
            status: StatusCache::new(sysroot.clone()),
            sysroot,
            jobs: Jobs::default(),
            idle: Idle::new(config.idle_exit),
            config_root,
            records,
            config: RwLock::new(config),
            config_loader: Loader::default(),
        })
    }

    /// The current settings.
    pub fn config(&self) -> Config {
        self.config.read().expect("config lock poisoned").clone()
    }

    /// Re-read the configuration, off the bus threads and within a time
    /// limit; on error the previous one stays in force.
    pub async fn reload_config(&self) -> Result<(), Error> {
        match self.config_loader.load(&self.config_root).await {
            Ok(config) => {
                self.idle.set_timeout(config.idle_exit);
                *self.config.write().expect("config lock poisoned") = config;
                tracing::info!("configuration reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!("configuration not reloaded, keeping the previous one: {e:#}");
                let message = format!("configuration not reloaded, keeping the previous one: {e:#}");
                Err(match e {
                    ConfigError::TimedOut => Error::Failed(message),
                    ConfigError::Read { .. }
                    | ConfigError::List { .. }
                    | ConfigError::Syntax { .. }
                    | ConfigError::Invalid { .. }
                    | ConfigError::Refused { .. } => Error::InvalidArgument(message),
                })
            }
        }
    }
}
