//! `hostctl status`.

use std::collections::HashMap;
use std::io::Write;

use hostd_interface::host::Host;
use hostd_interface::proxy::Host1Proxy;
use hostd_interface::Error;

use crate::cli::StatusArgs;
use crate::render::Automation;
use crate::exit::Code;

/// The automatic-update settings and state, if hostd reports them.
async fn automation(host: &Host1Proxy<'_>) -> Option<Automation> {
    let micros = |t: u64| (t > 0).then(|| i64::try_from(t).ok()).flatten();
    Some(Automation {
        policy: host.automatic_update_policy().await.ok()?,
        strategy: host.update_strategy().await.ok()?,
        next_window_us: micros(host.next_maintenance_window().await.ok()?),
        last_check_us: micros(host.last_check_time().await.ok()?),
        last_check_result: host.last_check_result().await.ok()?,
        reboot_pending: Some(host.reboot_pending_reason().await.ok()?).filter(|r| !r.is_empty()),
    })
}

/// Print the status as text or JSON.
pub async fn run(host: &Host1Proxy<'_>, args: &StatusArgs) -> Result<Code, Error> {
    let json = host.status(HashMap::new()).await?;
    let mut out = std::io::stdout().lock();
    let doc: Host = serde_json::from_str(&json)
        .map_err(|e| Error::Failed(format!("hostd sent a Host document this client cannot read: {e}")))?;
    // `--booted` filters the document, text and JSON alike (bootc's `status --booted`).
    let doc = if args.booted { doc.filtered_to_booted() } else { doc };
    let written = if args.json {
        let value = if args.booted {
            serde_json::to_value(&doc)
        } else {
            serde_json::from_str::<serde_json::Value>(&json)
        }
        .map_err(|e| Error::Failed(e.to_string()))?;
        serde_json::to_writer_pretty(&mut out, &value)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        let cached = host.cached_update().await.unwrap_or_default();
        let downloaded = cached.downloaded.unwrap_or(false);
        let automation = if args.booted { None } else { automation(host).await };
        crate::render::status(&mut out, &doc, args.booted, downloaded)
            .and_then(|()| if args.booted { Ok(()) } else { crate::render::downgrade(&mut out, &cached) })
            .and_then(|()| match &automation {
                Some(a) => crate::render::automation(&mut out, a),
                None => Ok(()),
            })
    };
    written.map_err(|e| Error::Failed(format!("writing to stdout: {e}")))?;
    Ok(Code::Success)
}
