//! The update settings callers change over the bus (`SetSettings`,
//! `ResetSettings`), kept in one drop-in that hostd owns:
//! `/etc/hostd/hostd.d/90-settings.toml` ([`DROPIN`]).
//!
//! It is an ordinary drop-in: drop-ins apply in file name order, so an
//! administrator's drop-in with a later name (`95-site.toml`) overrides
//! what was set over the bus, one with an earlier name is overridden by it,
//! and `/run/hostd/hostd.d/90-settings.toml` (or a `/dev/null` symlink
//! there) replaces it. A value is set only when the file then decides it;
//! otherwise the call names the file that does. Values are checked by
//! [`crate::config`] reading the whole configuration as it would be with
//! the new file, before anything is written; the file is written
//! atomically (a temporary file renamed over it), root's, mode 0644.
//!
//! Here: the file's table and its edits, as pure functions, and the write.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use hostd_interface::settings::{self as keys, Settings, WindowSetting};
use toml::{Table, Value};

use crate::config::Explained;

/// The drop-in, relative to the config root.
pub const DROPIN: &str = "etc/hostd/hostd.d/90-settings.toml";

/// The comment opening the drop-in.
const HEADER: &str = "\
# Written by hostd: the update settings changed over D-Bus (`hostctl config
# set`, SetSettings). hostd rewrites this file when they change; put your own
# settings in another drop-in. Drop-ins apply in file name order, so one
# named after this file (e.g. 95-site.toml) overrides it. See hostd.toml(5).
";

/// What a call does to the drop-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// `SetSettings`: set each key given.
    Set(Settings),
    /// `ResetSettings`: drop the keys, so the other files decide them.
    Reset(Vec<&'static str>),
}

impl Edit {
    /// The keys the edit touches.
    pub fn keys(&self) -> Vec<&'static str> {
        match self {
            Edit::Set(s) => s.keys(),
            Edit::Reset(k) => k.clone(),
        }
    }
}

/// The drop-in's table after `edit`. Keys the bus does not set (an
/// administrator's edit of the file) stay as they are.
pub fn edited(mut table: Table, edit: &Edit) -> Table {
    match edit {
        Edit::Set(s) => {
            let mut set = |key: &str, value: Value| {
                let (path, leaf) = split(key);
                let mut t = &mut table;
                for part in path {
                    let entry = t.entry(part.to_string()).or_insert_with(|| Value::Table(Table::new()));
                    if !entry.is_table() {
                        *entry = Value::Table(Table::new());
                    }
                    t = entry.as_table_mut().expect("made a table above");
                }
                t.insert(leaf.to_string(), value);
            };
            if let Some(p) = s.policy {
                set(keys::POLICY, Value::String(p.to_string()));
            }
            if let Some(st) = s.strategy {
                set(keys::STRATEGY, Value::String(st.to_string()));
            }
            if let Some(z) = &s.time_zone {
                set(keys::TIME_ZONE, Value::String(z.clone()));
            }
            if let Some(w) = &s.windows {
                set(keys::WINDOW, Value::Array(w.iter().map(window_value).collect()));
            }
            if let Some(u) = &s.fleet_lock_url {
                set(keys::FLEET_LOCK_URL, Value::String(u.clone()));
            }
            if let Some(g) = &s.fleet_lock_group {
                set(keys::FLEET_LOCK_GROUP, Value::String(g.clone()));
            }
        }
        Edit::Reset(reset) => {
            for key in reset {
                remove(&mut table, key);
            }
        }
    }
    table
}

/// `updates.fleet_lock.url` → (["updates", "fleet_lock"], "url").
fn split(key: &str) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let leaf = parts.pop().expect("keys are dotted names");
    (parts, leaf)
}

/// Remove `key` and the tables it leaves empty.
fn remove(table: &mut Table, key: &str) {
    let (path, leaf) = split(key);
    fn go(t: &mut Table, path: &[&str], leaf: &str) {
        match path.split_first() {
            None => {
                t.remove(leaf);
            }
            Some((first, rest)) => {
                if let Some(Value::Table(inner)) = t.get_mut(*first) {
                    go(inner, rest, leaf);
                    if inner.is_empty() {
                        t.remove(*first);
                    }
                }
            }
        }
    }
    go(table, &path, leaf);
}

fn window_value(w: &WindowSetting) -> Value {
    let mut t = Table::new();
    if let Some(days) = &w.days {
        t.insert(keys::WINDOW_DAYS.into(), Value::Array(days.iter().cloned().map(Value::String).collect()));
    }
    if let Some(start) = &w.start {
        t.insert(keys::WINDOW_START.into(), Value::String(start.clone()));
    }
    if let Some(length) = w.length {
        t.insert(keys::WINDOW_LENGTH.into(), Value::Integer(i64::from(length)));
    }
    Value::Table(t)
}

/// The drop-in's text for `table`; `None` (no file) when it is empty.
pub fn render(table: &Table) -> Option<String> {
    if table.is_empty() {
        return None;
    }
    let body = toml::to_string(table).expect("a table of strings, integers and arrays serializes");
    Some(format!("{HEADER}\n{body}"))
}

/// The drop-in's table; empty when there is none.
pub fn parse(text: Option<&str>) -> Result<Table, String> {
    match text {
        None => Ok(Table::new()),
        Some(text) => text.parse::<Table>().map_err(|e| e.message().trim().replace('\n', "; ")),
    }
}

/// The settings in force as the bus shows them, and the file that set
/// each key (a key no file set is left out: it has its default).
pub fn in_force(explained: &Explained) -> (Settings, BTreeMap<String, String>) {
    let config = &explained.config;
    let windows = config
        .windows
        .windows()
        .iter()
        .map(|w| WindowSetting {
            days: Some(w.days().iter(chrono::Weekday::Mon).map(|d| d.to_string()).collect()),
            start: Some(w.start().format("%H:%M").to_string()),
            length: Some(w.length_minutes()),
        })
        .collect();
    let settings = Settings {
        policy: Some(config.policy),
        strategy: Some(config.strategy.name()),
        time_zone: Some(config.windows.zone().name().to_string()),
        windows: Some(windows),
        fleet_lock_url: explained.fleet_lock_url.as_ref().map(|u| u.as_str().to_string()),
        fleet_lock_group: explained.fleet_lock_group.as_ref().map(|g| g.as_str().to_string()),
    };
    let sources = explained.sources.iter().map(|(k, p)| (k.to_string(), p.display().to_string())).collect();
    (settings, sources)
}

/// Each key in `set` must be decided by `dropin` once it is written: the
/// first that another file decides, with that file (`None`: no file
/// decides it, so the drop-in is masked or replaced).
pub fn overridden<'a>(explained: &Explained, set: &[&'a str], dropin: &Path) -> Option<(&'a str, Option<String>)> {
    set.iter().find_map(|key| match explained.sources.get(key) {
        Some(file) if file == dropin => None,
        Some(file) => Some((*key, Some(file.display().to_string()))),
        None => Some((*key, None)),
    })
}

/// The drop-in's text, `None` when there is none. Only a regular file is
/// read: a mask (a symbolic link to /dev/null) or anything else put in its
/// place by an administrator is theirs, and hostd leaves it alone.
pub fn read(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(std::io::Error::other(format!(
                "{} is not a regular file (a mask?); remove it to change settings over the bus",
                path.display()
            )))
        }
        Ok(_) => {}
    }
    std::fs::read_to_string(path).map(Some)
}

/// Put `text` at `path` atomically (or remove the file when `None`): a
/// temporary file in the same directory, written, synced, mode 0644, then
/// renamed over it, and the directory synced. The directory is created
/// (0755) when missing.
pub fn write(path: &Path, text: Option<&str>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().ok_or_else(|| std::io::Error::other("the drop-in has no directory"))?;
    let Some(text) = text else {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => return sync_dir(dir),
        }
    };
    if !dir.exists() {
        // 0755 for every directory made (also /etc/hostd): the reader
        // refuses one others may write, whatever the umask.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    let mut file = tempfile::Builder::new().prefix(".90-settings.").suffix(".tmp").tempfile_in(dir)?;
    file.write_all(text.as_bytes())?;
    file.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostd_interface::manager::{UpdatePolicy, UpdateStrategy};

    fn set(s: Settings) -> Edit {
        Edit::Set(s)
    }

    #[test]
    fn set_and_reset_edit_only_their_keys() {
        let admin_edit = parse(Some("[daemon]\nidle_exit_secs = 5\n")).unwrap();
        let t = edited(
            admin_edit,
            &set(Settings {
                policy: Some(UpdatePolicy::Stage),
                strategy: Some(UpdateStrategy::Periodic),
                windows: Some(vec![WindowSetting {
                    days: Some(vec!["Sat".into()]),
                    start: Some("02:00".into()),
                    length: Some(60),
                }]),
                fleet_lock_group: Some("workers".into()),
                ..Settings::default()
            }),
        );
        let text = render(&t).unwrap();
        assert!(text.starts_with("# Written by hostd"), "{text}");
        let back = parse(Some(&text)).unwrap();
        assert_eq!(back, t);
        assert_eq!(back["updates"]["policy"].as_str(), Some("stage"));
        assert_eq!(back["updates"]["window"][0]["length"].as_integer(), Some(60));
        assert_eq!(back["updates"]["fleet_lock"]["group"].as_str(), Some("workers"));
        assert_eq!(back["daemon"]["idle_exit_secs"].as_integer(), Some(5), "an admin's key stays");

        let t = edited(back, &Edit::Reset(vec![keys::FLEET_LOCK_GROUP, keys::WINDOW, keys::POLICY]));
        assert!(t["updates"].get("fleet_lock").is_none(), "an emptied table goes: {t:?}");
        assert!(t["updates"].get("window").is_none());
        assert_eq!(t["updates"]["strategy"].as_str(), Some("periodic"));
        let t = edited(t, &Edit::Reset(vec![keys::STRATEGY]));
        let t = edited(t, &Edit::Reset(vec![keys::STRATEGY]));
        assert_eq!(render(&t).unwrap().lines().last(), Some("idle_exit_secs = 5"));
        let t = edited(t, &Edit::Reset(vec![keys::POLICY]));
        assert!(render(&edited(parse(None).unwrap(), &Edit::Reset(vec![keys::POLICY]))).is_none(), "no file");
        assert!(t.contains_key("daemon"));
    }

    #[test]
    fn an_empty_window_list_is_kept_as_a_clearing() {
        let t = edited(Table::new(), &set(Settings { windows: Some(Vec::new()), ..Settings::default() }));
        assert!(render(&t).unwrap().contains("window = []"), "{t:?}");
    }

    #[test]
    fn written_atomically_root_readable_and_removable() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("etc/hostd/hostd.d/90-settings.toml");
        write(&path, Some("[updates]\npolicy = \"check\"\n")).unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some("[updates]\npolicy = \"check\"\n"));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o644);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o7777, 0o755);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["90-settings.toml"], "no temporary file is left");
        write(&path, None).unwrap();
        assert_eq!(read(&path).unwrap(), None);
        std::os::unix::fs::symlink("/dev/null", &path).unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("not a regular file"));
    }
}
