//! Logs go to the journal when it is there (with structured fields), to
//! stderr otherwise. `HOSTD_LOG` takes an env-filter directive.
//!
//! What libostree and GLib log (`g_warning`, `g_critical`, `g_debug`, and
//! libostree's `g_print` of "Freed objects") goes the same way, with the
//! target `glib`, a level and the GLib domain, instead of raw lines on
//! stderr and stdout.

use ostree_ext::glib;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber.
pub fn init() {
    let filter = EnvFilter::try_from_env("HOSTD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let journal = std::path::Path::new("/run/systemd/journal/socket")
        .exists()
        .then(tracing_journald::layer)
        .and_then(Result::ok);
    match journal {
        // Unprefixed fields, so journal entries carry MESSAGE_ID, NEW_CHECKSUM, ...
        Some(layer) => registry
            .with(layer.with_syslog_identifier("hostd".into()).with_field_prefix(None))
            .init(),
        None => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false))
            .init(),
    }
    route_glib_log();
}

/// Send GLib's log and its `g_print`/`g_printerr` to `tracing`. A GLib
/// `CRITICAL` (a failed precondition: a bug of hostd or a library) is an
/// error and keeps GLib's `<domain>-CRITICAL` in its text, so it stands out.
fn route_glib_log() {
    glib::log_set_writer_func(|level, fields| {
        let field = |key: &str| fields.iter().find(|f| f.key() == key).and_then(|f| f.value_str());
        let domain = field("GLIB_DOMAIN").unwrap_or("GLib");
        let message = field("MESSAGE").unwrap_or_default();
        match glib_level(level) {
            (tracing::Level::ERROR, name) => tracing::error!(target: "glib", glib_domain = domain, "{domain}-{name}: {message}"),
            (tracing::Level::WARN, name) => tracing::warn!(target: "glib", glib_domain = domain, "{domain}-{name}: {message}"),
            (tracing::Level::INFO, name) => tracing::info!(target: "glib", glib_domain = domain, "{domain}-{name}: {message}"),
            (_, name) => tracing::debug!(target: "glib", glib_domain = domain, "{domain}-{name}: {message}"),
        }
        glib::LogWriterOutput::Handled
    });
    glib::set_print_handler(|text| tracing::info!(target: "glib", "{}", text.trim_end()));
    glib::set_printerr_handler(|text| tracing::warn!(target: "glib", "{}", text.trim_end()));
}

/// The `tracing` level of a GLib level, and GLib's name for it.
fn glib_level(level: glib::LogLevel) -> (tracing::Level, &'static str) {
    match level {
        glib::LogLevel::Error => (tracing::Level::ERROR, "ERROR"),
        glib::LogLevel::Critical => (tracing::Level::ERROR, "CRITICAL"),
        glib::LogLevel::Warning => (tracing::Level::WARN, "WARNING"),
        glib::LogLevel::Message => (tracing::Level::INFO, "Message"),
        glib::LogLevel::Info => (tracing::Level::INFO, "INFO"),
        glib::LogLevel::Debug => (tracing::Level::DEBUG, "DEBUG"),
    }
}


#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What the test subscriber wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn glib_log_and_print_reach_the_log_with_a_level() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            route_glib_log();
            glib::g_critical!("Hostd-Test", "assertion '{}' failed", "G_IS_FILE_INPUT_STREAM (stream)");
            glib::g_warning!("Hostd-Test", "a warning");
            glib::g_print!("Freed objects: {}\n", "1.2 kB");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line = |needle: &str| text.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} in {text}")).to_string();
        let critical = line("Hostd-Test-CRITICAL: assertion 'G_IS_FILE_INPUT_STREAM (stream)' failed");
        assert!(critical.contains("ERROR") && critical.contains("glib_domain=\"Hostd-Test\""), "{critical}");
        assert!(line("Hostd-Test-WARNING: a warning").contains("WARN"), "{text}");
        let freed = line("Freed objects: 1.2 kB");
        assert!(freed.contains("INFO") && freed.contains("glib"), "{freed}");
    }
}
