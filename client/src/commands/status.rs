//! `hostctl status`.

use std::collections::HashMap;
use std::io::Write;

use hostd_interface::host::Host;
use hostd_interface::proxy::Host1Proxy;
use hostd_interface::Error;

use crate::cli::StatusArgs;
use crate::exit::Code;

/// Print the status as text or JSON.
pub async fn run(host: &Host1Proxy<'_>, args: &StatusArgs) -> Result<Code, Error> {
    let json = host.status(HashMap::new()).await?;
    let mut out = std::io::stdout().lock();
    let doc: Host = serde_json::from_str(&json)
        .map_err(|e| Error::Failed(format!("hostd sent a Host document this client cannot read: {e}")))?;
    let written = if args.json {
        let value = if args.booted {
            serde_json::to_value(&doc.status.booted)
        } else {
            serde_json::from_str::<serde_json::Value>(&json)
        }
        .map_err(|e| Error::Failed(e.to_string()))?;
        serde_json::to_writer_pretty(&mut out, &value)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        let downloaded = host
            .cached_update()
            .await
            .ok()
            .and_then(|u| u.get("downloaded").and_then(|v| bool::try_from(&**v).ok()))
            .unwrap_or(false);
        crate::render::status(&mut out, &doc, args.booted, downloaded)
    };
    written.map_err(|e| Error::Failed(format!("writing to stdout: {e}")))?;
    Ok(Code::Success)
}
