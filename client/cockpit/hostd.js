/* The hostd page for Cockpit. It talks only to org.hostd.Host1 on the
 * system bus (docs/dbus-api.md), through cockpit.dbus with superuser
 * "try": with administrative access on, calls run as root; without it, as
 * the logged-in user, and polkit decides (docs/cockpit.md). */
"use strict";

const _ = cockpit.gettext;
const NAME = "org.hostd.Host1";
const PATH = "/org/hostd/Host1";
const IFACE = "org.hostd.Host1";
const JOB_IFACE = "org.hostd.Host1.Job";
const ERROR = "org.hostd.Host1.Error.";

const $ = id => document.getElementById(id);

/* Dark mode as Cockpit's pages follow it: the shell's choice in
 * localStorage "shell:style" (auto, light, dark), "auto" following the
 * browser. */
function applyTheme() {
    let style = "auto";
    try {
        style = window.localStorage.getItem("shell:style") || "auto";
    } catch (e) {
        /* storage blocked: follow the browser */
    }
    const dark = style === "dark" ||
        (style === "auto" && window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches);
    document.documentElement.classList.toggle("pf-v5-theme-dark", dark);
}
applyTheme();
window.addEventListener("storage", ev => { if (ev.key === "shell:style") applyTheme(); });
if (window.matchMedia)
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);

/* What each error of the API means to the admin and what to do, by name
 * (docs/dbus-api.md, "Errors"). The daemon's message follows in the alert. */
const ERROR_SENTENCES = {
    NotAuthorized: _("You are not allowed to do this. Turn on administrative access, or ask an administrator to grant it."),
    Busy: _("Another update operation is running. Wait for it to finish, or cancel it."),
    InvalidArgument: _("hostd refused the request as given. The details below say what to change."),
    NotImageBased: _("This system does not boot an image-based (bootc or ostree) operating system, so there is nothing to update here."),
    ImageNotFound: _("The registry has no such image. Check the image name, tag and transport this system tracks."),
    Network: _("The image registry could not be reached. Check the network and that the registry is running, then try again."),
    AuthenticationRequired: _("The registry wants credentials. Store them in /etc/ostree/auth.json, for example with skopeo login --authfile /etc/ostree/auth.json, and try again."),
    AccessDenied: _("The registry refused access to the image. Check the credentials in /etc/ostree/auth.json, or ask the registry's owner."),
    NotBootable: _("The image is not a bootable (bootc) image. It must be built FROM a bootc base image; fix it and publish it again."),
    SignatureRejected: _("The image's signature was rejected by the containers policy. Check /etc/containers/policy.json and the image's signature."),
    NoSpace: _("There is not enough free disk space. Clean up old images, or free space, and try again."),
    NothingToStage: _("There is no downloaded update to install. Download the update first."),
    MalformedPackageDatabase: _("The package list of an image could not be read, so its package changes cannot be shown."),
    Cancelled: _("The operation was cancelled; nothing was changed."),
    Failed: _("The operation failed. The details below name the cause."),
};

function errorName(ex) {
    return (ex && ex.name) || "";
}

/* A sentence for an error: the API's own errors by their name, the bus's
 * (hostd not installed) as such, anything else with its message. */
function errorSentence(name, message) {
    if (name && name.startsWith(ERROR)) {
        const short = name.slice(ERROR.length);
        return ERROR_SENTENCES[short] || ERROR_SENTENCES.Failed;
    }
    if (name === "org.freedesktop.DBus.Error.ServiceUnknown" || name === "org.freedesktop.DBus.Error.NameHasNoOwner")
        return _("hostd is not installed on this system, or it cannot be started.");
    return message || name || _("Something went wrong.");
}

function showAlert(kind, title, detail, errName) {
    const box = document.createElement("div");
    box.className = "pf-v5-c-alert pf-m-" + kind;
    if (errName)
        box.dataset.error = errName;
    const t = document.createElement("p");
    t.className = "pf-v5-c-alert__title";
    t.textContent = title;
    box.appendChild(t);
    if (detail) {
        const d = document.createElement("p");
        d.className = "pf-v5-c-alert__description";
        d.textContent = detail;
        box.appendChild(d);
    }
    const close = document.createElement("button");
    close.className = "pf-v5-c-button pf-m-link pf-m-small";
    close.textContent = _("Dismiss");
    close.addEventListener("click", () => box.remove());
    box.appendChild(close);
    const alerts = $("alerts");
    alerts.prepend(box);
    while (alerts.children.length > 3)
        alerts.lastChild.remove();
}

function showError(ex) {
    const name = errorName(ex);
    showAlert("danger", errorSentence(name, ex && ex.message), ex && ex.message, name);
    if (name === ERROR + "NotAuthorized")
        refreshPermissions();
}

/* cockpit.dbus gives variants as {t, v}. */
function unwrap(v) {
    if (v && typeof v === "object" && "t" in v && "v" in v)
        return unwrap(v.v);
    if (Array.isArray(v))
        return v.map(unwrap);
    if (v && typeof v === "object") {
        const out = {};
        for (const k in v)
            out[k] = unwrap(v[k]);
        return out;
    }
    return v;
}

function formatBytes(n) {
    if (n === undefined || n === null)
        return "";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    let x = Number(n);
    while (x >= 1000 && i < units.length - 1) {
        x /= 1000;
        i++;
    }
    return (i === 0 ? String(x) : x.toFixed(1)) + " " + units[i];
}

function formatTime(iso) {
    if (!iso)
        return _("unknown");
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
}

function formatUsec(us) {
    return us ? new Date(Number(us) / 1000).toLocaleString() : "";
}

function formatSeconds(s) {
    s = Math.round(Number(s));
    if (s < 60)
        return cockpit.format(_("$0 s"), s);
    return cockpit.format(_("$0 min $1 s"), Math.floor(s / 60), s % 60);
}

function shortDigest(d) {
    return d ? d.replace(/^sha256:/, "").slice(0, 12) : "";
}

/* State shared by the views. */
const state = {
    client: null,
    props: {},
    deployments: [],
    cached: {},
    job: null,
    jobPath: "/",
    canConfigure: true,
    configureWhy: "",
    settings: {},
    sources: {},
    lastCheckTime: null,
};

function call(method, args, signature, interactive) {
    return state.client.call(PATH, IFACE, method, args, { type: signature, flags: interactive === false ? "" : "i" });
}

function options(obj) {
    const out = {};
    for (const k in obj)
        out[k] = cockpit.variant("b", obj[k]);
    return out;
}

/* --- Deployments ------------------------------------------------------ */

function booted() {
    return state.deployments.find(d => d.role === "booted");
}

/* An offline sysroot (hostd --sysroot) has no booted deployment: nothing
 * runs from it, so there is nothing to restart (the API refuses apply). */
function offline() {
    return state.deployments.length > 0 && !booted();
}

function staged() {
    return state.deployments.find(d => d.role === "staged");
}

function roleLabel(d) {
    switch (d.role) {
    case "booted": return _("Booted");
    case "staged": return d["download-only"] ? _("Downloaded") : _("Staged for next boot");
    case "rollback": return _("Rollback");
    default:
        if (offline() && d.index === 0)
            return _("Default (offline sysroot)");
        return _("Other");
    }
}

function label(text, color) {
    const s = document.createElement("span");
    s.className = "pf-v5-c-label" + (color ? " pf-m-" + color : "");
    s.textContent = text;
    return s;
}

function cell(row, content) {
    const td = document.createElement("td");
    if (content instanceof Node)
        td.appendChild(content);
    else
        td.textContent = content === undefined ? "" : content;
    row.appendChild(td);
    return td;
}

function renderDeployments() {
    const body = $("deployments").querySelector("tbody");
    body.replaceChildren();
    for (const d of state.deployments) {
        const row = document.createElement("tr");
        row.dataset.role = d.role;
        row.dataset.index = d.index;
        cell(row, roleLabel(d));
        cell(row, d.image || _("(not from an image)"));
        cell(row, d.version || _("no version"));
        cell(row, formatTime(d.timestamp));
        const digest = cell(row, shortDigest(d.digest));
        digest.className = "hd-digest";
        digest.title = d.digest || "";
        const flags = document.createElement("span");
        if (d.pinned)
            flags.appendChild(label(_("Pinned")));
        if (d["download-only"])
            flags.appendChild(label(_("Download only"), "orange"));
        if (d.incompatible)
            flags.appendChild(label(_("Local package changes")));
        if (d.role === "booted" || (offline() && d.index === 0))
            flags.appendChild(label(_("Current"), "green"));
        cell(row, flags);
        const pin = document.createElement("button");
        pin.className = "pf-v5-c-button pf-m-link pf-m-small hd-pin";
        pin.textContent = d.pinned ? _("Unpin") : _("Pin");
        pin.addEventListener("click", () => {
            call("Pin", [String(d.index), !d.pinned], "sb").catch(showError);
        });
        cell(row, pin);
        body.appendChild(row);
    }
    renderButtons();
}

/* --- The update ------------------------------------------------------- */

function renderUpdate() {
    const c = state.cached;
    const summary = $("update-summary");
    const st = staged();
    if (st && !st["download-only"]) {
        summary.textContent = cockpit.format(_("$0 is installed and starts with the next boot."), st.version || shortDigest(st.digest));
    } else if (c.version || c.digest) {
        const parts = [];
        parts.push(cockpit.format(_("$0 ($1), built $2"), c.version || _("no version"), shortDigest(c.digest), formatTime(c.timestamp)));
        if (c.downgrade)
            parts.push(_("an older image than the deployed one: not installed"));
        if (c.downloaded)
            parts.push(_("downloaded, ready to install"));
        else if (c["download-bytes"] !== undefined)
            parts.push(cockpit.format(_("$0 to download in $1 of $2 layers"), formatBytes(c["download-bytes"]),
                                      c["layers-to-fetch"], c["layers-total"]));
        summary.textContent = parts.join("; ");
    } else {
        summary.textContent = _("None known. Check for updates to find out.");
    }
    summary.dataset.version = c.version || "";
    renderButtons();
    loadDiff();
}

function renderLastCheck(time, result) {
    const el = $("last-check");
    if (!time) {
        el.textContent = _("Never");
        return;
    }
    el.textContent = cockpit.format(_("$0: $1"), formatUsec(time), result || "");
}

const RESULTS = {
    succeeded: _("succeeded"),
    failed: _("failed"),
    cancelled: _("cancelled"),
};

/* How the last job of each kind ended (LastJobs, from daemons that keep
 * it), newest first; hidden where the property does not exist. */
function renderLastJobs(jobs) {
    const known = Array.isArray(jobs) && jobs.length > 0;
    $("last-jobs-label").hidden = !known;
    $("last-jobs").hidden = !known;
    const list = $("last-jobs").querySelector("ul");
    list.replaceChildren();
    for (const j of (known ? jobs.slice().reverse() : [])) {
        const li = document.createElement("li");
        li.dataset.kind = j.kind;
        li.dataset.result = j.result;
        const text = j.result === "succeeded"
            ? j.message
            : errorSentence(j["error-name"], j["error-message"]);
        li.textContent = cockpit.format(_("$0, $1 ($2): $3"), KINDS[j.kind] || j.kind, RESULTS[j.result] || j.result,
                                        formatUsec(j["end-time"]), text || "");
        list.appendChild(li);
    }
}

function renderReboot() {
    const m = state.props;
    $("reboot").hidden = !m.RebootRequired;
    $("reboot-reason").textContent = m.RebootPendingReason || "";
}

let diffSerial = 0;

/* The package changes of the pending update: the staged deployment, or
 * the downloaded one (Diff's default "to"). An update only checked, not
 * downloaded, has no tree to compare yet. */
function loadDiff() {
    const st = staged();
    const pending = st || state.cached.downloaded;
    const serial = ++diffSerial;
    if (!pending) {
        $("diff").hidden = !(state.cached.version || state.cached.digest);
        $("diff-summary").textContent = _("The package changes are shown once the update is downloaded.");
        $("diff-table").hidden = true;
        return;
    }
    state.client.call(PATH, IFACE, "Diff", ["", "", {}], { type: "ssa{sv}" })
        .then(([json]) => {
            if (serial !== diffSerial)
                return;
            renderDiff(JSON.parse(json));
        })
        .catch(ex => {
            if (serial !== diffSerial)
                return;
            $("diff").hidden = false;
            $("diff-table").hidden = true;
            $("diff-summary").textContent = errorSentence(errorName(ex), ex.message);
        });
}

const KIND_LABELS = {
    added: _("Added"),
    removed: _("Removed"),
    upgraded: _("Upgraded"),
    downgraded: _("Downgraded"),
};

function renderDiff(diff) {
    $("diff").hidden = false;
    const body = $("diff-table").querySelector("tbody");
    body.replaceChildren();
    const lines = [];
    if (diff.packages === null) {
        lines.push(_("The images have no package database hostd reads, so packages are not compared."));
    } else if (diff.packages.length === 0) {
        lines.push(_("No package changes."));
    } else {
        lines.push(cockpit.format(cockpit.ngettext("$0 package changes.", "$0 packages change.", diff.packages.length),
                                  diff.packages.length));
    }
    if (diff.kernelChanged)
        lines.push(cockpit.format(_("Kernel $0 → $1."), diff.from.kernel || "?", diff.to.kernel || "?"));
    if (diff.kargs && (diff.kargs.added.length || diff.kargs.removed.length))
        lines.push(cockpit.format(_("Kernel arguments: added $0; removed $1."),
                                  diff.kargs.added.join(" ") || "—", diff.kargs.removed.join(" ") || "—"));
    $("diff-summary").textContent = lines.join(" ");
    $("diff-table").hidden = !(diff.packages && diff.packages.length);
    for (const p of diff.packages || []) {
        const row = document.createElement("tr");
        row.dataset.kind = p.kind;
        cell(row, p.name);
        cell(row, KIND_LABELS[p.kind] || p.kind);
        cell(row, p.from || "");
        cell(row, p.to || "");
        body.appendChild(row);
    }
}

/* --- Buttons and why they are disabled -------------------------------- */

function setButton(id, enabled, why) {
    const b = $(id);
    b.disabled = !enabled;
    b.title = enabled ? "" : why;
    b.dataset.why = enabled ? "" : why;
}

function renderButtons() {
    const busy = state.jobPath !== "/";
    const busyWhy = _("Wait for the running operation to finish.");
    const c = state.cached;
    const st = staged();
    const hasUpdate = !!(c.version || c.digest) && !c.downgrade;
    setButton("check", !busy, busyWhy);
    setButton("download", !busy && hasUpdate && !c.downloaded,
              busy ? busyWhy : (c.downloaded ? _("The update is already downloaded.") : _("Check for updates first: no update is known.")));
    const installable = hasUpdate || (st && st["download-only"]);
    setButton("apply", !busy && installable,
              busy ? busyWhy : _("There is no update to install."));
    $("apply").textContent = offline() ? _("Update") : _("Update and restart");
    const note = $("apply-note");
    note.hidden = !offline();
    note.textContent = _("This is an offline system image (hostd manages a sysroot that is not running), so there is nothing to restart: an update is installed as the default for its next start.");
    const pending = st || c.downloaded;
    setButton("discard", !busy && pending, busy ? busyWhy : _("No update is waiting to be installed."));
    setButton("rollback", !busy && state.deployments.length > 1,
              busy ? busyWhy : _("There is no other deployment to roll back to."));
    setButton("cleanup", !busy, busyWhy);
    $("cancel").disabled = !busy;
    for (const b of document.querySelectorAll(".hd-pin"))
        b.disabled = busy;
    renderSettingsControls();
}

/* --- Jobs ------------------------------------------------------------- */

const PHASES = {
    checking: _("Checking"),
    pulling: _("Downloading"),
    importing: _("Importing"),
    staging: _("Installing"),
    cleanup: _("Cleaning up"),
    rebooting: _("Restarting"),
};

const KINDS = {
    check: _("Checking for updates"),
    upgrade: _("Updating"),
    switch: _("Switching image"),
    stage: _("Installing the update"),
    rollback: _("Rolling back"),
    cleanup: _("Cleaning up"),
    discard: _("Discarding the pending update"),
};

function watchJob(path) {
    if (!path || path === "/" || (state.job && state.job.path === path))
        return;
    if (state.job)
        state.job.removeEventListener("changed", renderJob);
    state.jobPath = path;
    const job = state.client.proxy(JOB_IFACE, path);
    state.job = job;
    job.addEventListener("changed", renderJob);
    job.wait().then(renderJob);
    renderButtons();
}

function renderJob() {
    const job = state.job;
    if (!job || !job.valid)
        return;
    $("job").hidden = false;
    $("job").dataset.path = job.path;
    $("job").dataset.state = job.State || "";
    const kind = KINDS[job.Kind] || job.Kind || "";
    const ended = { failed: _("$0: failed"), cancelled: _("$0: cancelled") }[job.State];
    $("job-title").textContent = ended ? cockpit.format(ended, kind) : kind;
    $("job-progress").classList.toggle("pf-m-danger", !!ended);
    $("cancel").hidden = job.State !== "running";
    const progress = Math.max(0, Math.min(1, Number(job.Progress) || 0));
    const pct = job.State === "succeeded" ? 100 : Math.round(progress * 1000) / 10;
    $("job-indicator").style.width = pct + "%";
    $("job-bar").setAttribute("aria-valuenow", pct);
    const parts = [];
    if (job.State === "running") {
        parts.push(PHASES[job.Phase] || job.Phase || "");
        if (Number(job.BytesTotal) > 0)
            parts.push(cockpit.format(_("$0 of $1"), formatBytes(job.BytesDone), formatBytes(job.BytesTotal)));
        if (Number(job.LayersTotal) > 0)
            parts.push(cockpit.format(_("layer $0 of $1"), job.LayersDone, job.LayersTotal));
        if (Number(job.BytesPerSecond) > 0)
            parts.push(cockpit.format(_("$0/s"), formatBytes(job.BytesPerSecond)));
        /* SecondsLeft is UINT64_MAX while the rate is unknown. */
        if (Number(job.SecondsLeft) > 0 && Number(job.SecondsLeft) < 100 * 24 * 3600)
            parts.push(cockpit.format(_("$0 left"), formatSeconds(job.SecondsLeft)));
        if (job.Message)
            parts.push(job.Message);
    } else {
        parts.push(job.Message || "");
    }
    $("job-details").textContent = parts.filter(Boolean).join(" · ");
}

/* A job ended: its result as an alert, and the views re-read. */
function jobRemoved(path, result) {
    const job = state.job && state.job.path === path ? state.job : state.client.proxy(JOB_IFACE, path);
    job.wait().then(() => {
        if (result === "succeeded") {
            showAlert("info", job.Message || _("Done."), (job.Warnings || []).join(" "));
        } else {
            const name = job.ErrorName || "";
            showAlert("danger", errorSentence(name, job.ErrorMessage), job.ErrorMessage, name);
        }
        renderJob();
    });
    if (state.jobPath === path) {
        state.jobPath = "/";
        renderButtons();
    }
    refreshSettings();
    refreshManager();
}

function startJob(method, args, signature) {
    return call(method, args, signature)
        .then(([path]) => {
            if (path === "/")
                showAlert("info", _("Nothing to do."));
            else
                watchJob(path);
        })
        .catch(showError);
}

/* --- Settings --------------------------------------------------------- */

function refreshSettings() {
    return state.client.call(PATH, IFACE, "Settings", [{}], { type: "a{sv}" })
        .then(([settings, sources]) => {
            state.settings = unwrap(settings);
            state.sources = sources;
            renderSettings();
        })
        .catch(ex => console.warn("Settings:", ex.message));
}

function renderSettings() {
    const m = state.props;
    $("policy").value = state.settings["updates.policy"] || m.AutomaticUpdatePolicy || "none";
    $("strategy").value = state.settings["updates.strategy"] || m.UpdateStrategy || "immediate";
    $("next-window").textContent = m.NextMaintenanceWindow ? formatUsec(m.NextMaintenanceWindow) : _("none configured");
    const files = new Set(Object.values(state.sources || {}));
    $("settings-sources").textContent = files.size ? Array.from(files).join(", ") : _("built-in defaults");
    renderSettingsControls();
}

/* Whether the user may change the settings, asked of hostd itself without
 * a prompt: ResetSettings of a key that /etc/hostd/hostd.d/90-settings.toml
 * does not set changes nothing, and needs the same authorization
 * (org.hostd.host1.configure) as SetSettings. */
const SETTINGS_KEYS = ["updates.fleet_lock.group", "updates.fleet_lock.url", "updates.time_zone",
    "updates.window", "updates.strategy", "updates.policy"];

function refreshPermissions() {
    const untouched = SETTINGS_KEYS.find(k => !(state.sources[k] || "").endsWith("/90-settings.toml"));
    if (!untouched)
        return Promise.resolve();
    return call("ResetSettings", [[untouched], {}], "asa{sv}", false)
        .then(() => {
            state.canConfigure = true;
            state.configureWhy = "";
        })
        .catch(ex => {
            state.canConfigure = false;
            state.configureWhy = errorName(ex) === ERROR + "NotAuthorized"
                ? _("You may not change the update settings: this needs the org.hostd.host1.configure authorization. Turn on administrative access, or ask an administrator.")
                : errorSentence(errorName(ex), ex.message);
        })
        .then(renderSettingsControls);
}

function renderSettingsControls() {
    const ok = state.canConfigure;
    for (const id of ["policy", "strategy", "save-settings"]) {
        $(id).disabled = !ok;
        $(id).title = ok ? "" : state.configureWhy;
    }
    $("settings-denied").hidden = ok;
    $("settings-denied").textContent = state.configureWhy;
}

function saveSettings(ev) {
    ev.preventDefault();
    const change = {};
    const policy = $("policy").value;
    const strategy = $("strategy").value;
    if (policy !== (state.settings["updates.policy"] || state.props.AutomaticUpdatePolicy))
        change["updates.policy"] = cockpit.variant("s", policy);
    if (strategy !== (state.settings["updates.strategy"] || state.props.UpdateStrategy))
        change["updates.strategy"] = cockpit.variant("s", strategy);
    if (Object.keys(change).length === 0) {
        showAlert("info", _("The settings are unchanged."));
        return;
    }
    call("SetSettings", [change, {}], "a{sv}a{sv}")
        .then(() => {
            showAlert("info", _("The update settings were saved."));
            return refreshSettings();
        })
        .catch(showError);
}

/* --- Confirmation ----------------------------------------------------- */

function confirmThen(title, body, yes, action) {
    const dialog = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-body").textContent = body;
    $("confirm-yes").textContent = yes;
    $("confirm-yes").onclick = () => {
        dialog.close();
        action();
    };
    $("confirm-no").onclick = () => dialog.close();
    dialog.showModal();
}

/* --- Wiring ----------------------------------------------------------- */

function bindActions() {
    $("check").addEventListener("click", () => startJob("Check", [{}], "a{sv}"));
    $("download").addEventListener("click", () => startJob("Upgrade", [options({ "download-only": true })], "a{sv}"));
    $("apply").addEventListener("click", () => {
        const st = staged();
        const downloaded = state.cached.downloaded || (st && st["download-only"]);
        const method = downloaded ? "Stage" : "Upgrade";
        if (offline()) {
            confirmThen(_("Install the update?"),
                        _("The update becomes the default deployment of this offline system image. Nothing is restarted."),
                        _("Update"), () => startJob(method, [{}], "a{sv}"));
        } else {
            confirmThen(_("Update and restart?"),
                        _("The update is installed and the system restarts into it at once. Running programs are stopped."),
                        _("Update and restart"), () => startJob(method, [options({ apply: true })], "a{sv}"));
        }
    });
    $("discard").addEventListener("click", () => startJob("Discard", [{}], "a{sv}"));
    $("rollback").addEventListener("click", () => {
        confirmThen(_("Roll back?"),
                    offline()
                        ? _("The other deployment becomes the default of this offline system image.")
                        : _("The rollback deployment becomes the default for the next boot; a staged update is discarded."),
                    _("Roll back"), () => startJob("Rollback", [{}], "a{sv}"));
    });
    $("cleanup").addEventListener("click", () => startJob("Cleanup", [{}], "a{sv}"));
    $("cancel").addEventListener("click", () => {
        if (state.job)
            state.job.call("Cancel", []).catch(showError);
    });
    $("settings").addEventListener("submit", saveSettings);
}

function unavailable(title, body) {
    $("loading").hidden = true;
    $("page").hidden = true;
    $("unavailable").hidden = false;
    $("unavailable-title").textContent = title;
    $("unavailable-body").textContent = body;
}

function onManagerChanged() {
    const m = state.props;
    state.deployments = unwrap(m.Deployments || []);
    state.cached = unwrap(m.CachedUpdate || {});
    renderDeployments();
    renderUpdate();
    renderReboot();
    renderLastCheck(m.LastCheckTime, m.LastCheckResult);
    renderLastJobs(m.LastJobs);
    if (m.LastCheckTime !== state.lastCheckTime) {
        /* A daemon that announces only LastCheckTime when a check ends:
         * read the result that goes with it. */
        state.lastCheckTime = m.LastCheckTime;
        state.client.call(PATH, "org.freedesktop.DBus.Properties", "Get", [IFACE, "LastCheckResult"], { type: "ss" })
            .then(([v]) => renderLastCheck(state.lastCheckTime, unwrap(v)))
            .catch(ex => console.warn("LastCheckResult:", ex.message));
    }
    if (m.ActiveJob && m.ActiveJob !== "/")
        watchJob(m.ActiveJob);
    renderSettings();
}

/* The manager's properties, read whole; PropertiesChanged updates them,
 * and they are read again when a job ends, so that what a daemon changes
 * without announcing it (the update a download found) shows too. */
function refreshManager() {
    return state.client.call(PATH, "org.freedesktop.DBus.Properties", "GetAll", [IFACE], { type: "s" })
        .then(([props]) => {
            Object.assign(state.props, unwrap(props));
            onManagerChanged();
        })
        .catch(ex => console.warn("GetAll:", ex.message));
}

function start() {
    cockpit.translate();
    state.client = cockpit.dbus(NAME, { bus: "system", superuser: "try" });
    bindActions();
    /* Status first: it activates hostd and tells an image-based host from
     * one that is not, and a host without hostd from both. */
    state.client.call(PATH, IFACE, "Status", [{}], { type: "a{sv}" })
        .then(() => {
            $("loading").hidden = true;
            $("page").hidden = false;
            state.client.subscribe({ interface: "org.freedesktop.DBus.Properties", path: PATH, member: "PropertiesChanged" },
                                   (path, iface, signal, args) => {
                                       if (args[0] !== IFACE)
                                           return;
                                       Object.assign(state.props, unwrap(args[1]));
                                       if (args[2] && args[2].length)
                                           refreshManager();
                                       else
                                           onManagerChanged();
                                   });
            state.client.subscribe({ interface: IFACE, path: PATH, member: "JobNew" },
                                   (path, iface, signal, args) => watchJob(args[1]));
            state.client.subscribe({ interface: IFACE, path: PATH, member: "JobRemoved" },
                                   (path, iface, signal, args) => jobRemoved(args[1], args[2]));
            return refreshManager()
                .then(refreshSettings)
                .then(refreshPermissions);
        })
        .catch(ex => {
            const name = errorName(ex);
            if (name === ERROR + "NotImageBased")
                unavailable(_("This system is not image-based"), ERROR_SENTENCES.NotImageBased);
            else if (name.startsWith(ERROR))
                unavailable(_("hostd cannot read this system"), errorSentence(name, ex.message) + " " + ex.message);
            else
                unavailable(_("hostd is not available"),
                            _("hostd is not installed on this system, or it cannot be started. Install the hostd package and reload this page.") +
                            (ex.message ? " (" + ex.message + ")" : ""));
        });
}

start();
