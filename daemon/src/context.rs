//! The daemon's shared state, owned by an `Arc` that every bus object holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use hostd_interface::settings::Settings;
use hostd_interface::Error;

use crate::config::{Config, ConfigError, Explained, Loader, Replacement};
use crate::idle::Idle;
use crate::jobs::records::Records;
use crate::jobs::Jobs;
use crate::settings::{self, Edit};
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
    config: RwLock<Explained>,
    config_loader: Loader,
    /// One settings change at a time: each reads, edits and writes the drop-in.
    settings_turn: tokio::sync::Mutex<()>,
}

impl Context {
    /// Daemon state for `sysroot`, configured from files under
    /// `config_root`, with the records restored from the state file.
    pub fn new(sysroot: SysrootPath, config_root: PathBuf, config: Explained, records: Records) -> Arc<Context> {
        Arc::new(Context {
            status: StatusCache::new(sysroot.clone()),
            sysroot,
            jobs: Jobs::default(),
            idle: Idle::new(config.config.idle_exit),
            config_root,
            records,
            config: RwLock::new(config),
            config_loader: Loader::default(),
            settings_turn: tokio::sync::Mutex::new(()),
        })
    }

    /// The current settings.
    pub fn config(&self) -> Config {
        self.config.read().expect("config lock poisoned").config.clone()
    }

    /// The update settings in force as the bus shows them, and the file
    /// that set each key.
    pub fn settings(&self) -> (Settings, BTreeMap<String, String>) {
        settings::in_force(&self.config.read().expect("config lock poisoned"))
    }

    /// Re-read the configuration, off the bus threads and within a time
    /// limit; on error the previous one stays in force.
    pub async fn reload_config(&self) -> Result<(), Error> {
        match self.config_loader.explain(&self.config_root, None).await {
            Ok(explained) => {
                self.idle.set_timeout(explained.config.idle_exit);
                *self.config.write().expect("config lock poisoned") = explained;
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

    /// Make `edit` to hostd's settings drop-in ([`settings`]) for the call
    /// `method` and apply the configuration as `ReloadConfig` does. The
    /// whole configuration, as it would be with the edited file, is read
    /// first: a value the files would refuse, or a key another file
    /// overrides, is `InvalidArgument` naming the key, and nothing is
    /// written. The settings in force before and after.
    pub async fn change_settings(&self, method: &str, edit: Edit) -> Result<(Config, Config), Error> {
        let _turn = self.settings_turn.lock().await;
        let SettingsPlan { path, before, text } = self.plan_settings(method, &edit).await?;
        let old = self.config();
        if text == before {
            return Ok((old.clone(), old));
        }
        write(&path, text).await.map_err(|e| Error::Failed(format!("{method}: writing {}: {e}", path.display())))?;
        if let Err(e) = self.reload_config().await {
            // Read a moment ago as valid: another file changed meanwhile.
            if let Err(restore) = write(&path, before).await {
                tracing::error!("restoring {}: {restore}", path.display());
            }
            return Err(e);
        }
        tracing::info!(keys = ?edit.keys(), "{method}: settings changed in {}", path.display());
        Ok((old, self.config()))
    }

    /// What [`Context::change_settings`] would write, checked as it
    /// checks it; nothing is written. For checking a call before it is
    /// authorized.
    pub async fn check_settings(&self, method: &str, edit: &Edit) -> Result<(), Error> {
        self.plan_settings(method, edit).await.map(|_| ())
    }

    async fn plan_settings(&self, method: &str, edit: &Edit) -> Result<SettingsPlan, Error> {
        let path = self.config_root.join(settings::DROPIN);
        let before = blocking(path.clone(), |p| settings::read(&p))
            .await?
            .map_err(|e| Error::Failed(format!("{method}: reading {}: {e}", path.display())))?;
        let table = settings::parse(before.as_deref())
            .map_err(|e| Error::InvalidArgument(format!("{method}: {}: {e}; fix or remove it", path.display())))?;
        let text = settings::render(&settings::edited(table, edit));
        let replacement = Replacement { path: path.clone(), text: text.clone() };
        let explained = self
            .config_loader
            .explain(&self.config_root, Some(replacement))
            .await
            .map_err(|e| refused_setting(method, &path, e))?;
        if let Edit::Set(s) = edit {
            if let Some((key, by)) = settings::overridden(&explained, &s.keys(), &path) {
                return Err(Error::InvalidArgument(match by {
                    Some(file) => format!("{method}: {key} is also set by {file}, which overrides {}", path.display()),
                    None => format!("{method}: {} is masked or replaced by a file of the same name", path.display()),
                }));
            }
        }
        Ok(SettingsPlan { path, before, text })
    }
}

/// The drop-in's text now and after a settings change.
struct SettingsPlan {
    path: PathBuf,
    before: Option<String>,
    text: Option<String>,
}

/// `f(arg)` on a blocking thread (the file system may be slow).
async fn blocking<A: Send + 'static, T: Send + 'static>(arg: A, f: impl FnOnce(A) -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(move || f(arg)).await.map_err(|e| Error::Failed(format!("a blocking step failed: {e}")))
}

async fn write(path: &Path, text: Option<String>) -> Result<(), Error> {
    let path = path.to_path_buf();
    blocking((path, text), |(p, t)| settings::write(&p, t.as_deref()))
        .await?
        .map_err(|e| Error::Failed(e.to_string()))
}

/// Why the configuration with the edited drop-in is refused, as the
/// caller's error: a value of the drop-in names its key; another file's
/// problem is named as such.
fn refused_setting(method: &str, dropin: &Path, e: ConfigError) -> Error {
    match e {
        ConfigError::Invalid { path, key, problem } if path == dropin => {
            Error::InvalidArgument(format!("{method}: {key}: {problem}"))
        }
        ConfigError::TimedOut => Error::Failed(format!("{method}: {e}")),
        other => Error::InvalidArgument(format!(
            "{method}: the configuration cannot be read, so nothing was changed: {other}"
        )),
    }
}
