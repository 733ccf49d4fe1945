//! Logs go to the journal when it is there (with structured fields), to
//! stderr otherwise. `HOSTD_LOG` takes an env-filter directive.

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
}
