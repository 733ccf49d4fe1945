//! Text rendering of the Host document, into any `Write` so tests see the exact output.

use std::io::{self, Write};

use hostd_interface::host::{
    BootEntry, DeploymentHealth, FilesystemOverlay, FilesystemOverlayAccessMode, FilesystemOverlayPersistence, Host, ImageStatus,
};
use hostd_interface::job::{JobKind, JobProperties, Phase};
use hostd_interface::manager::{CachedUpdate, LastJob, UpdatePolicy, UpdateStrategy};

/// Human-readable status, in the spirit of `bootc status`. `downloaded`:
/// the cached update is already fetched (offline `upgrade --download-only`).
///
/// `booted_only` renders the document [filtered to the booted
/// deployment](Host::filtered_to_booted), as `--booted --json` prints it: on
/// an offline sysroot that is no deployment, and a note says so.
pub fn status(out: &mut impl Write, host: &Host, booted_only: bool, downloaded: bool) -> io::Result<()> {
    let s = &host.status;
    if booted_only && s.booted.is_none() {
        return writeln!(
            out,
            "No booted deployment: the sysroot is offline (not booted). `hostctl status` lists its deployments in boot order."
        );
    }
    if s.booted.is_none() {
        if s.other_deployments.is_empty() {
            return writeln!(out, "No deployments.");
        }
        writeln!(out, "Offline sysroot (not booted); deployments in boot order:")?;
        for (i, entry) in s.other_deployments.iter().enumerate() {
            let label = if i == 0 { "Default" } else { "Other" };
            writeln!(out)?;
            entry_block(out, label, entry, downloaded)?;
        }
        if downloaded {
            writeln!(out, "\nThe update is downloaded; `hostctl stage` deploys it.")?;
        }
        return Ok(());
    }
    if booted_only {
        entry_block(out, "Booted", s.booted.as_ref().expect("checked above"), downloaded)?;
        return usr_overlay(out, s.usr_overlay.as_ref());
    }
    let labelled = [("Staged", &s.staged), ("Booted", &s.booted), ("Rollback", &s.rollback)]
        .into_iter()
        .filter_map(|(label, e)| e.as_ref().map(|e| (label, e)))
        .chain(s.other_deployments.iter().map(|e| ("Other", e)));
    for (i, (label, e)) in labelled.enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        entry_block(out, label, e, downloaded)?;
    }
    usr_overlay(out, s.usr_overlay.as_ref())?;
    if s.rollback_queued {
        writeln!(out, "\nRollback queued: the rollback deployment boots next.")?;
    }
    if s.staged.as_ref().is_some_and(|e| e.download_only) {
        writeln!(out, "\nThe staged update is download-only: a reboot keeps the booted deployment; `hostctl stage` queues it.")?;
    }
    if s.staged.as_ref().is_some_and(|e| !e.download_only) || s.rollback_queued {
        writeln!(out, "Reboot required to apply the pending change.")?;
    }
    Ok(())
}

/// The line about an overlay on the booted deployment's `/usr`; nothing
/// without one.
fn usr_overlay(out: &mut impl Write, overlay: Option<&FilesystemOverlay>) -> io::Result<()> {
    let Some(o) = overlay else { return Ok(()) };
    let access = match o.access_mode {
        FilesystemOverlayAccessMode::ReadWrite => "writable",
        FilesystemOverlayAccessMode::ReadOnly => "read-only",
    };
    let lasts = match o.persistence {
        FilesystemOverlayPersistence::Transient => "its changes are discarded at the next reboot",
        FilesystemOverlayPersistence::Persistent => "persistent: its changes stay across reboots of this deployment",
    };
    writeln!(out, "\n/usr overlay: {access}, {lasts}.")
}

/// The line for an image the last check found that is older than the
/// deployed one (`CachedUpdate` with `downgrade`); nothing for anything else.
pub fn downgrade(out: &mut impl Write, cached: &CachedUpdate) -> io::Result<()> {
    let Some(digest) = cached.digest.as_deref().filter(|_| cached.is_downgrade()) else { return Ok(()) };
    writeln!(
        out,
        "\nDowngrade available, not installed: {} ({digest}) was built before the deployed image; \
         `hostctl upgrade --allow-downgrade` installs it.",
        cached.version.as_deref().unwrap_or("no version"),
    )
}

/// What fetching the update the last check found costs, when that check
/// measured it: "Update size: 1234 bytes in 1 of 3 layers to fetch".
pub fn update_size(out: &mut impl Write, cached: &CachedUpdate) -> io::Result<()> {
    if !cached.pending() {
        return Ok(());
    }
    let (Some(bytes), Some(layers), Some(total)) = (cached.download_bytes, cached.layers_to_fetch, cached.layers_total)
    else {
        return Ok(());
    };
    writeln!(out, "
Update size: {bytes} bytes in {layers} of {total} layers to fetch")
}

/// The running job (verb, image, phase, percent), and how to follow it.
pub fn running_job(out: &mut impl Write, job: &JobProperties) -> io::Result<()> {
    let kind = job.kind.map_or("job", JobKind::as_str);
    let image = job.image.as_deref().filter(|i| !i.is_empty()).map(|i| format!(" {i}")).unwrap_or_default();
    let phase = job.phase.map_or("starting", Phase::as_str);
    // Whole percents, never 100 before the end.
    let percent = (job.progress.unwrap_or(0.0).clamp(0.0, 1.0) * 100.0).floor().min(99.0);
    writeln!(out, "\nRunning: {kind}{image}, {phase}, {percent}%")?;
    writeln!(out, "`hostctl watch` follows it, `hostctl cancel` stops it.")
}

/// The automatic-update settings and state, as the manager's properties report them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Automation {
    /// `AutomaticUpdatePolicy`
    pub policy: UpdatePolicy,
    /// `UpdateStrategy`
    pub strategy: UpdateStrategy,
    /// `NextMaintenanceWindow`, when a window is configured.
    pub next_window_us: Option<i64>,
    /// `LastCheckTime`, when there was one.
    pub last_check_us: Option<i64>,
    /// `LastCheckResult`
    pub last_check_result: String,
    /// `RebootPendingReason`, when a reboot is required.
    pub reboot_pending: Option<String>,
    /// `LastJobs`, oldest end first.
    pub last_jobs: Vec<LastJob>,
}

/// The "Automatic updates" block after the deployments.
pub fn automation(out: &mut impl Write, a: &Automation) -> io::Result<()> {
    writeln!(out, "\nAutomatic updates: policy {}, strategy {}", a.policy, a.strategy)?;
    if let Some(t) = a.next_window_us {
        writeln!(out, "{:>16}: {}", "Next window", local_time(t))?;
    }
    match a.last_check_us {
        Some(t) => writeln!(out, "{:>16}: {} — {}", "Last check", local_time(t), a.last_check_result)?,
        None => writeln!(out, "{:>16}: never", "Last check")?,
    }
    if let Some(why) = &a.reboot_pending {
        writeln!(out, "{:>16}: {why}", "Reboot pending")?;
    }
    for job in a.last_jobs.iter().rev() {
        let label = format!("Last {} job", job.kind);
        let end = i64::try_from(job.end_time).unwrap_or(i64::MAX);
        let outcome = match job.error_name.rsplit('.').next().filter(|_| !job.error_name.is_empty()) {
            Some(name) => format!("{}: {name}: {}", job.result, job.error_message),
            None => format!("{}: {}", job.result, job.message),
        };
        writeln!(out, "{label:>16}: {} — {outcome}", local_time(end))?;
    }
    Ok(())
}

fn local_time(micros: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) => t.with_timezone(&chrono::Local).format("%a %Y-%m-%d %H:%M %Z").to_string(),
        None => format!("{micros} µs after the epoch"),
    }
}

fn entry_block(out: &mut dyn Write, label: &str, e: &BootEntry, downloaded: bool) -> io::Result<()> {
    let marker = if label == "Booted" { "●" } else { " " };
    let mut flags = Vec::new();
    if e.pinned {
        flags.push("pinned");
    }
    if e.download_only {
        flags.push("download-only");
    }
    if e.incompatible {
        flags.push("incompatible");
    }
    let flags = if flags.is_empty() { String::new() } else { format!(" [{}]", flags.join(", ")) };
    match &e.image {
        Some(img) => {
            writeln!(out, "{marker} {label} image: {} ({}){flags}", img.image.image, img.image.transport)?;
            image_lines(out, img)?;
        }
        None => writeln!(out, "{marker} {label}: ostree commit (no image){flags}")?,
    }
    if let Some(o) = &e.ostree {
        writeln!(out, "{:>16}: {}.{} ({})", "Commit", o.checksum, o.deploy_serial, o.stateroot)?;
    }
    if let Some(h) = &e.health {
        health_lines(out, h)?;
    }
    for (i, b) in e.bound_images.iter().enumerate() {
        let label = if i == 0 { "Bound images:" } else { "" };
        writeln!(out, "{label:>17} {} ({})", b.image, b.file)?;
    }
    if let Some(u) = &e.cached_update {
        writeln!(
            out,
            "{:>16}: {} ({})",
            if downloaded { "Update downloaded" } else { "Update available" },
            u.version.as_deref().unwrap_or("no version"),
            u.image_digest
        )?;
    }
    Ok(())
}

/// `Health: passed (checked …)`, or failed with what hostd did and one
/// line per failed check.
fn health_lines(out: &mut dyn Write, h: &DeploymentHealth) -> io::Result<()> {
    let action = match h.action.as_deref() {
        Some("rolled-back") => ", rolled back",
        Some("rolling-back") => ", rolling back",
        Some("rollback-failed") => ", the rollback failed",
        Some("reported") => ", reported only",
        _ => "",
    };
    writeln!(out, "{:>16}: {}{action} (first boot checked {})", "Health", h.result, h.checked_at)?;
    for failure in &h.failures {
        writeln!(out, "{:>16}  {failure}", "")?;
    }
    Ok(())
}

fn image_lines(out: &mut dyn Write, img: &ImageStatus) -> io::Result<()> {
    let version = img.version.as_deref().unwrap_or("(none)");
    match &img.timestamp {
        Some(t) => writeln!(out, "{:>16}: {version} ({t})", "Version")?,
        None => writeln!(out, "{:>16}: {version}", "Version")?,
    }
    writeln!(out, "{:>16}: {}", "Digest", img.image_digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostd_interface::host::*;

    fn entry(version: &str) -> BootEntry {
        BootEntry {
            image: Some(ImageStatus {
                image: ImageReference {
                    image: "quay.io/example/os:latest".into(),
                    transport: Transport::Registry,
                    signature: Some(ImageSignature::Insecure),
                },
                version: Some(version.into()),
                timestamp: Some("2026-01-01T00:00:00Z".into()),
                image_digest: format!("sha256:{version}"),
                architecture: "amd64".into(),
                labels: Default::default(),
            }),
            cached_update: None,
            incompatible: false,
            pinned: false,
            download_only: false,
            ostree: Some(BootEntryOstree {
                stateroot: "default".into(),
                checksum: format!("c{version}"),
                deploy_serial: 0,
            }),
            health: None,
            bound_images: Vec::new(),
        }
    }

    fn render(host: &Host, booted_only: bool) -> String {
        let mut out = Vec::new();
        status(&mut out, host, booted_only, false).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn health_is_shown_with_the_failed_checks_and_what_was_done() {
        let mut rollback = entry("2");
        rollback.health = Some(DeploymentHealth {
            result: hostd_interface::host::HealthResult::Failed,
            checked_at: "2026-01-02T03:04:05Z".into(),
            failures: vec!["unit app.service: failed (failed)".into(), "check /etc/hostd/health.d/net: exit status: 1".into()],
            action: Some("rolled-back".into()),
        });
        let host = Host::new(
            HostSpec::default(),
            HostStatus { booted: Some(entry("1")), rollback: Some(rollback), ..Default::default() },
        );
        let text = render(&host, false);
        assert!(
            text.contains(
                "          Health: failed, rolled back (first boot checked 2026-01-02T03:04:05Z)
                  unit app.service: failed (failed)
                  check /etc/hostd/health.d/net: exit status: 1
"
            ),
            "{text}"
        );
    }

    #[test]
    fn booted_with_staged_and_rollback() {
        let mut staged = entry("3");
        staged.download_only = true;
        let mut rollback = entry("1");
        rollback.pinned = true;
        let host = Host::new(
            HostSpec::default(),
            HostStatus {
                staged: Some(staged),
                booted: Some(entry("2")),
                rollback: Some(rollback),
                ty: Some(HostType::BootcHost),
                ..Default::default()
            },
        );
        let text = render(&host, false);
        assert_eq!(
            text,
            "  Staged image: quay.io/example/os:latest (registry) [download-only]
         Version: 3 (2026-01-01T00:00:00Z)
          Digest: sha256:3
          Commit: c3.0 (default)

● Booted image: quay.io/example/os:latest (registry)
         Version: 2 (2026-01-01T00:00:00Z)
          Digest: sha256:2
          Commit: c2.0 (default)

  Rollback image: quay.io/example/os:latest (registry) [pinned]
         Version: 1 (2026-01-01T00:00:00Z)
          Digest: sha256:1
          Commit: c1.0 (default)

The staged update is download-only: a reboot keeps the booted deployment; `hostctl stage` queues it.
"
        );
        assert!(render(&host, true).starts_with("● Booted image"));
        assert_eq!(render(&host, true).lines().count(), 4);
    }

    #[test]
    fn a_downgrade_gets_its_own_line_and_an_update_none() {
        let older = CachedUpdate {
            digest: Some("sha256:0".into()),
            downgrade: Some(true),
            version: Some("0".into()),
            ..CachedUpdate::default()
        };
        let shown = |cached: &CachedUpdate| {
            let mut out = Vec::new();
            downgrade(&mut out, cached).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            shown(&older),
            "\nDowngrade available, not installed: 0 (sha256:0) was built before the deployed image; \
             `hostctl upgrade --allow-downgrade` installs it.\n"
        );
        let update = CachedUpdate { downgrade: Some(false), downloaded: Some(false), ..older };
        assert_eq!(shown(&update), "");
        assert_eq!(shown(&CachedUpdate::default()), "");
    }

    #[test]
    fn a_running_job_names_verb_image_phase_percent_and_how_to_follow_it() {
        let job = JobProperties {
            kind: Some(JobKind::Switch),
            image: Some("quay.io/os:v2".into()),
            phase: Some(Phase::Pulling),
            progress: Some(0.427),
            ..Default::default()
        };
        let mut out = Vec::new();
        running_job(&mut out, &job).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\nRunning: switch quay.io/os:v2, pulling, 42%\n`hostctl watch` follows it, `hostctl cancel` stops it.\n"
        );
    }

    #[test]
    fn automation_block_names_settings_and_pending_reboot() {
        let mut out = Vec::new();
        let a = Automation {
            policy: UpdatePolicy::Apply,
            strategy: UpdateStrategy::Periodic,
            next_window_us: Some(1_800_000_000_000_000),
            last_check_us: None,
            last_check_result: String::new(),
            reboot_pending: Some("staged deployment c3 (3 sha256:3); reboot postponed: outside the maintenance windows".into()),
            last_jobs: Vec::new(),
        };
        automation(&mut out, &a).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("\nAutomatic updates: policy apply, strategy periodic\n     Next window: "), "{text}");
        assert!(text.contains("      Last check: never\n"), "{text}");
        assert!(text.ends_with("  Reboot pending: staged deployment c3 (3 sha256:3); reboot postponed: outside the maintenance windows\n"), "{text}");
    }

    #[test]
    fn last_jobs_newest_first_with_their_outcome() {
        let job = |kind, result, error_name: &str, message: &str| LastJob {
            kind,
            result,
            message: message.into(),
            error_name: error_name.into(),
            error_message: if error_name.is_empty() { String::new() } else { message.into() },
            start_time: 1_800_000_000_000_000,
            end_time: 1_800_000_000_000_000,
            image: String::new(),
            initiator_uid: 0,
        };
        let a = Automation {
            policy: UpdatePolicy::None,
            strategy: UpdateStrategy::Immediate,
            next_window_us: None,
            last_check_us: None,
            last_check_result: String::new(),
            reboot_pending: None,
            last_jobs: vec![
                job(JobKind::Check, hostd_interface::job::JobStatus::Succeeded, "", "No update available."),
                job(JobKind::Upgrade, hostd_interface::job::JobStatus::Failed, "org.hostd.Host1.Error.Network", "refused"),
            ],
        };
        let mut out = Vec::new();
        automation(&mut out, &a).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().skip(3).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("Last upgrade job: ") && lines[0].ends_with(" — failed: Network: refused"), "{text}");
        assert!(lines[1].starts_with("  Last check job: ") && lines[1].ends_with(" — succeeded: No update available."), "{text}");
    }

    #[test]
    fn update_size_only_for_a_measured_pending_update() {
        let shown = |u: &CachedUpdate| {
            let mut out = Vec::new();
            update_size(&mut out, u).unwrap();
            String::from_utf8(out).unwrap()
        };
        let update = CachedUpdate {
            digest: Some("sha256:2".into()),
            downgrade: Some(false),
            downloaded: Some(false),
            download_bytes: Some(1234),
            layers_to_fetch: Some(1),
            layers_total: Some(3),
            ..CachedUpdate::default()
        };
        assert_eq!(shown(&update), "\nUpdate size: 1234 bytes in 1 of 3 layers to fetch\n");
        assert_eq!(shown(&CachedUpdate { downloaded: Some(true), ..update.clone() }), "");
        assert_eq!(shown(&CachedUpdate { download_bytes: None, ..update }), "");
    }

    #[test]
    fn offline_lists_boot_order_and_queued_notes() {
        let host = Host::new(
            HostSpec::default(),
            HostStatus { other_deployments: vec![entry("2"), entry("1")], ..Default::default() },
        );
        let text = render(&host, false);
        assert!(text.starts_with("Offline sysroot (not booted); deployments in boot order:\n\n  Default image"));
        assert!(text.contains("\n  Other image"));
        // `--booted`: the filtered document has no deployment, and says why.
        for doc in [&host, &host.filtered_to_booted()] {
            assert_eq!(
                render(doc, true),
                "No booted deployment: the sysroot is offline (not booted). `hostctl status` lists its deployments in boot order.\n"
            );
        }
        let host = Host::new(
            HostSpec::default(),
            HostStatus {
                booted: Some(entry("2")),
                rollback: Some(entry("1")),
                rollback_queued: true,
                ..Default::default()
            },
        );
        let text = render(&host, false);
        assert!(text.contains("Rollback queued"));
        assert!(text.contains("Reboot required"));
    }

    #[test]
    fn a_usr_overlay_is_named_with_its_persistence() {
        let mut host = Host::new(
            HostSpec::default(),
            HostStatus { booted: Some(entry("2")), ty: Some(HostType::BootcHost), ..Default::default() },
        );
        assert!(!render(&host, false).contains("/usr overlay"));
        host.status.usr_overlay = Some(FilesystemOverlay {
            access_mode: FilesystemOverlayAccessMode::ReadWrite,
            persistence: FilesystemOverlayPersistence::Transient,
        });
        let line = "\n/usr overlay: writable, its changes are discarded at the next reboot.\n";
        assert!(render(&host, false).ends_with(line), "{}", render(&host, false));
        assert!(render(&host, true).ends_with(line));
        host.status.usr_overlay = Some(FilesystemOverlay {
            access_mode: FilesystemOverlayAccessMode::ReadWrite,
            persistence: FilesystemOverlayPersistence::Persistent,
        });
        assert!(render(&host, false).ends_with(
            "\n/usr overlay: writable, persistent: its changes stay across reboots of this deployment.\n"
        ));
    }
}
