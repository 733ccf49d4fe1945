//! `hostctl status`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use hostd_interface::host::Host;
use hostd_interface::job::JobProperties;
use hostd_interface::proxy::Host1Proxy;
use hostd_interface::Error;
use zbus::Connection;

use crate::cli::{Format, StatusArgs};
use crate::exit::Code;
use crate::output;
use crate::render::Automation;

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
        // An older hostd has no LastJobs.
        last_jobs: host.last_jobs().await.unwrap_or_default(),
    })
}

/// The running job's properties, if a job runs (and has not ended meanwhile).
async fn running_job(conn: &Connection, host: &Host1Proxy<'_>) -> Option<JobProperties> {
    let path = host.active_job().await.ok()?;
    if path.as_str() == "/" {
        return None;
    }
    crate::watch::all_properties(conn, &path).await.ok()
}

/// Print the status as text, YAML or JSON.
pub async fn run(conn: &Connection, host: &Host1Proxy<'_>, args: &StatusArgs) -> Result<Code, Error> {
    let json = host.status(HashMap::new()).await?;
    let doc: Host = serde_json::from_str(&json)
        .map_err(|e| Error::Failed(format!("hostd sent a Host document this client cannot read: {e}")))?;
    // `--booted` filters the document, text and documents alike (bootc's
    // `status --booted`): the Host document keeps only the booted entry.
    let doc = if args.booted { doc.filtered_to_booted() } else { doc };
    let mut text = Vec::new();
    match args.format(std::io::stdout().is_terminal()) {
        Format::Json => {
            let value = if args.booted {
                serde_json::to_value(&doc)
            } else {
                serde_json::from_str::<serde_json::Value>(&json)
            }
            .map_err(|e| Error::Failed(e.to_string()))?;
            serde_json::to_writer_pretty(&mut text, &value).map_err(|e| Error::Failed(e.to_string()))?;
            text.push(b'\n');
        }
        Format::Yaml => serde_yaml::to_writer(&mut text, &doc).map_err(|e| Error::Failed(e.to_string()))?,
        Format::Humanreadable => {
            let cached = host.cached_update().await.unwrap_or_default();
            let downloaded = cached.downloaded.unwrap_or(false);
            let automation = if args.booted { None } else { automation(host).await };
            let job = if args.booted { None } else { running_job(conn, host).await };
            crate::render::status(&mut text, &doc, args.booted, downloaded)
                .and_then(|()| if args.booted { Ok(()) } else { crate::render::downgrade(&mut text, &cached) })
                .and_then(|()| if args.booted { Ok(()) } else { crate::render::update_size(&mut text, &cached) })
                .and_then(|()| match &job {
                    Some(job) => crate::render::running_job(&mut text, job),
                    None => Ok(()),
                })
                .and_then(|()| match &automation {
                    Some(a) => crate::render::automation(&mut text, a),
                    None => Ok(()),
                })
                .map_err(|e| Error::Failed(e.to_string()))?;
        }
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&text).and_then(|()| out.flush()) {
        output::stdout_failed(&e);
    }
    Ok(Code::Success)
}
