//! `hostctl config get|set|unset`: the update settings through hostd's
//! `Settings`, `SetSettings` and `ResetSettings` (hostctl writes no file).

use std::collections::HashMap;
use std::io::{self, Write};

use hostd_interface::settings::{self as keys, Settings, WindowSetting, KEYS};
use hostd_interface::Error;
use zbus::{OwnedVariant, Variant};

use super::Caller;
use crate::cli::{ConfigCommand, ConfigGetArgs, ConfigSetArgs, ConfigUnsetArgs};
use crate::exit::Code;

/// The settings in force and the file that set each key, as `Settings` answers.
type Answer = (HashMap<String, OwnedVariant>, HashMap<String, String>);

/// Run a `config` verb.
pub async fn run(call: &Caller<'_>, command: &ConfigCommand) -> Result<Code, Error> {
    match command {
        ConfigCommand::Get(args) => get(call, args).await,
        ConfigCommand::Set(args) => set(call, args).await,
        ConfigCommand::Unset(args) => unset(call, args).await,
    }
}

/// `updates.policy` for `policy` too: the table's name may be left out.
pub fn full_key(key: &str) -> String {
    let prefixed = format!("updates.{key}");
    if KEYS.contains(&prefixed.as_str()) {
        prefixed
    } else {
        key.to_string()
    }
}

async fn get(call: &Caller<'_>, args: &ConfigGetArgs) -> Result<Code, Error> {
    let no_options: HashMap<&str, Variant<'_>> = HashMap::new();
    let (values, sources): Answer = call.host.settings(no_options).await?;
    let settings = Settings::parse("Settings", &values)?;
    let key = args.key.as_deref().map(full_key);
    if let Some(k) = &key {
        if !KEYS.contains(&k.as_str()) {
            return Err(Error::InvalidArgument(format!("unknown setting '{k}' (known: {})", KEYS.join(", "))));
        }
    }
    let mut out = io::stdout().lock();
    let written = match (&key, args.json) {
        (Some(k), false) => render_value(&mut out, &settings, k),
        (None, false) => render_all(&mut out, &settings, &sources),
        (k, true) => render_json(&mut out, &settings, &sources, k.as_deref()),
    };
    if let Err(e) = written.and_then(|()| out.flush()) {
        crate::output::stdout_failed(&e);
    }
    Ok(Code::Success)
}

async fn set(call: &Caller<'_>, args: &ConfigSetArgs) -> Result<Code, Error> {
    let key = full_key(&args.key);
    let settings = settings_of(&key, &args.values)?;
    let no_options: HashMap<&str, Variant<'_>> = HashMap::new();
    call.call::<()>("SetSettings", &(settings, no_options)).await?;
    Ok(Code::Success)
}

async fn unset(call: &Caller<'_>, args: &ConfigUnsetArgs) -> Result<Code, Error> {
    let names: Vec<String> = if args.all { KEYS.iter().map(|k| k.to_string()).collect() } else { args.keys.iter().map(|k| full_key(k)).collect() };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let no_options: HashMap<&str, Variant<'_>> = HashMap::new();
    call.call::<()>("ResetSettings", &(names, no_options)).await?;
    Ok(Code::Success)
}

/// The `SetSettings` dictionary for `key` set to `values` as typed: one
/// value for each key, and for `updates.window` one `DAYS START LENGTH`
/// per window (none: no windows). Only the shape is read here; hostd
/// judges the values.
pub fn settings_of(key: &str, values: &[String]) -> Result<HashMap<String, OwnedVariant>, Error> {
    if key == keys::WINDOW {
        let windows = values.iter().map(|v| parse_window(v)).collect::<Result<Vec<_>, _>>()?;
        let list: Vec<HashMap<&str, Variant<'_>>> = windows
            .iter()
            .map(|(days, start, length)| {
                HashMap::from([
                    (keys::WINDOW_DAYS, Variant::from(days.clone())),
                    (keys::WINDOW_START, Variant::from(start.as_str())),
                    (keys::WINDOW_LENGTH, Variant::from(*length)),
                ])
            })
            .collect();
        let value = Variant::from(list).try_to_owned().map_err(|e| Error::Failed(e.to_string()))?;
        return Ok(HashMap::from([(key.to_string(), value)]));
    }
    let [value] = values else {
        return Err(Error::InvalidArgument(format!("{key} takes one value, got {}", values.len())));
    };
    let value = Variant::from(value.as_str()).try_to_owned().map_err(|e| Error::Failed(e.to_string()))?;
    Ok(HashMap::from([(key.to_string(), value)]))
}

/// `Sat,Sun 23:30 90` → (["Sat", "Sun"], "23:30", 90).
fn parse_window(text: &str) -> Result<(Vec<String>, String, u32), Error> {
    let bad = || {
        Error::InvalidArgument(format!(
            "{}: '{text}' is not DAYS START LENGTH, e.g. 'Sat,Sun 23:30 90' (minutes)",
            keys::WINDOW
        ))
    };
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [days, start, length] = parts[..] else { return Err(bad()) };
    let length = length.parse::<u32>().map_err(|_| bad())?;
    Ok((days.split(',').map(str::to_string).collect(), start.to_string(), length))
}

/// A window as `config set` takes it.
fn window_text(w: &WindowSetting) -> String {
    format!(
        "{} {} {}",
        w.days.as_deref().unwrap_or_default().join(","),
        w.start.as_deref().unwrap_or_default(),
        w.length.unwrap_or_default()
    )
}

/// Each key's value as text (windows one per line); `None` when unset.
fn values(settings: &Settings, key: &str) -> Option<Vec<String>> {
    let one = |v: Option<String>| v.map(|v| vec![v]);
    match key {
        keys::POLICY => one(settings.policy.map(|p| p.to_string())),
        keys::STRATEGY => one(settings.strategy.map(|s| s.to_string())),
        keys::TIME_ZONE => one(settings.time_zone.clone()),
        keys::WINDOW => settings.windows.as_ref().map(|w| w.iter().map(window_text).collect()),
        keys::FLEET_LOCK_URL => one(settings.fleet_lock_url.clone()),
        keys::FLEET_LOCK_GROUP => one(settings.fleet_lock_group.clone()),
        _ => None,
    }
}

/// `config get KEY`: the value alone (a window per line), as `config set` takes it.
pub fn render_value(out: &mut impl Write, settings: &Settings, key: &str) -> io::Result<()> {
    for line in values(settings, key).unwrap_or_default() {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `config get`: every key, its value and the file that set it.
pub fn render_all(out: &mut impl Write, settings: &Settings, sources: &HashMap<String, String>) -> io::Result<()> {
    let width = KEYS.iter().map(|k| k.len()).max().unwrap_or(0);
    for key in KEYS {
        let source = match sources.get(key) {
            Some(file) => file.clone(),
            None if key == keys::TIME_ZONE => "(default: the host's time zone)".to_string(),
            None => "(default)".to_string(),
        };
        let lines = values(settings, key).unwrap_or_default();
        let first = match lines.first() {
            Some(v) => v.clone(),
            None if key == keys::WINDOW => "(none)".to_string(),
            None => "(not set)".to_string(),
        };
        let value_width = lines.iter().map(String::len).chain([first.len(), 16]).max().unwrap_or(16);
        writeln!(out, "{key:width$}  {first:value_width$}  {source}")?;
        for more in lines.iter().skip(1) {
            writeln!(out, "{:width$}  {more}", "")?;
        }
    }
    Ok(())
}

/// `config get --json`: {"settings": {key: value}, "sources": {key: file}},
/// windows as objects with days, start and length.
pub fn render_json(
    out: &mut impl Write,
    settings: &Settings,
    sources: &HashMap<String, String>,
    only: Option<&str>,
) -> io::Result<()> {
    let mut values = serde_json::Map::new();
    let keep = |k: &str| only.is_none_or(|o| o == k);
    let mut put = |k: &str, v: Option<serde_json::Value>| {
        if let (true, Some(v)) = (keep(k), v) {
            values.insert(k.to_string(), v);
        }
    };
    put(keys::POLICY, settings.policy.map(|p| p.as_str().into()));
    put(keys::STRATEGY, settings.strategy.map(|s| s.as_str().into()));
    put(keys::TIME_ZONE, settings.time_zone.clone().map(Into::into));
    put(
        keys::WINDOW,
        settings.windows.as_ref().map(|w| {
            w.iter()
                .map(|w| serde_json::json!({"days": w.days, "start": w.start, "length": w.length}))
                .collect::<Vec<_>>()
                .into()
        }),
    );
    put(keys::FLEET_LOCK_URL, settings.fleet_lock_url.clone().map(Into::into));
    put(keys::FLEET_LOCK_GROUP, settings.fleet_lock_group.clone().map(Into::into));
    let sources: serde_json::Map<String, serde_json::Value> =
        sources.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), v.clone().into())).collect();
    serde_json::to_writer_pretty(&mut *out, &serde_json::json!({"settings": values, "sources": sources}))?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostd_interface::manager::{UpdatePolicy, UpdateStrategy};

    fn example() -> (Settings, HashMap<String, String>) {
        let settings = Settings {
            policy: Some(UpdatePolicy::Stage),
            strategy: Some(UpdateStrategy::Periodic),
            time_zone: Some("UTC".into()),
            windows: Some(vec![
                WindowSetting { days: Some(vec!["Sat".into(), "Sun".into()]), start: Some("23:30".into()), length: Some(90) },
                WindowSetting { days: Some(vec!["Wed".into()]), start: Some("03:00".into()), length: Some(30) },
            ]),
            fleet_lock_url: None,
            fleet_lock_group: None,
        };
        let sources = HashMap::from([
            (keys::POLICY.to_string(), "/etc/hostd/hostd.d/90-settings.toml".to_string()),
            (keys::STRATEGY.to_string(), "/etc/hostd/hostd.toml".to_string()),
            (keys::WINDOW.to_string(), "/etc/hostd/hostd.toml".to_string()),
        ]);
        (settings, sources)
    }

    fn text(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_key_with_its_value_and_source() {
        let (s, sources) = example();
        assert_eq!(
            text(|o| render_all(o, &s, &sources)),
            "\
updates.policy            stage             /etc/hostd/hostd.d/90-settings.toml
updates.strategy          periodic          /etc/hostd/hostd.toml
updates.time_zone         UTC               (default: the host's time zone)
updates.window            Sat,Sun 23:30 90  /etc/hostd/hostd.toml
                          Wed 03:00 30
updates.fleet_lock.url    (not set)         (default)
updates.fleet_lock.group  (not set)         (default)
"
        );
    }

    #[test]
    fn one_value_as_set_takes_it() {
        let (s, _) = example();
        assert_eq!(text(|o| render_value(o, &s, keys::POLICY)), "stage\n");
        assert_eq!(text(|o| render_value(o, &s, keys::WINDOW)), "Sat,Sun 23:30 90\nWed 03:00 30\n");
        assert_eq!(text(|o| render_value(o, &s, keys::FLEET_LOCK_URL)), "");
        let json = text(|o| render_json(o, &s, &HashMap::new(), Some(keys::WINDOW)));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["settings"]["updates.window"][0]["length"], 90);
        assert_eq!(v["settings"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn set_builds_the_dictionary_hostd_parses() {
        let dict = settings_of(keys::WINDOW, &["Sat,Sun 23:30 90".into(), "Wed 03:00 30".into()]).unwrap();
        let parsed = Settings::parse("SetSettings", &dict).unwrap();
        assert_eq!(parsed.windows, example().0.windows);
        assert_eq!(Settings::parse("SetSettings", &settings_of(keys::WINDOW, &[]).unwrap()).unwrap().windows, Some(vec![]));
        let dict = settings_of(&full_key("policy"), &["apply".into()]).unwrap();
        assert_eq!(Settings::parse("SetSettings", &dict).unwrap().policy, Some(UpdatePolicy::Apply));
        assert!(matches!(settings_of(keys::WINDOW, &["Sat 23:30".into()]), Err(Error::InvalidArgument(m)) if m.contains("DAYS START LENGTH")));
        assert!(matches!(settings_of(keys::POLICY, &[]), Err(Error::InvalidArgument(m)) if m.contains("takes one value")));
        assert_eq!(full_key("fleet_lock.url"), keys::FLEET_LOCK_URL);
        assert_eq!(full_key("bogus"), "bogus", "hostd names unknown keys");
    }
}
