#!/usr/bin/python3
"""Drive hostd's Cockpit page in Debian's Chromium (headless, through
chromedriver and python3-selenium) for tests/tests/cockpit.rs.

    page.py SCENARIO

Environment: HOSTD_COCKPIT_URL (the page), HOSTD_COCKPIT_ARTIFACTS (where a
failing scenario leaves its screenshot and page text), HOSTD_COCKPIT_SHOTS
(optional: every scenario's final state is saved there too, for the demo),
HOSTCTL and DBUS_SYSTEM_BUS_ADDRESS (scenarios that start a job elsewhere).
Exit status 0 when the scenario's assertions hold, 1 otherwise."""

import os
import subprocess
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

TIMEOUT = 60


class Page:
    def __init__(self):
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1100", "--no-first-run", "--disable-extensions"]:
            opts.add_argument(arg)
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        self.driver.get(os.environ["HOSTD_COCKPIT_URL"])

    def el(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def els(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css):
        return self.el(css).text

    def wait(self, what, cond, timeout=TIMEOUT):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(lambda d: cond())
        except TimeoutException:
            raise AssertionError("timed out waiting for " + what) from None

    def wait_text(self, css, needle, timeout=TIMEOUT):
        def cond():
            found = self.els(css)
            return any(needle in e.text for e in found)
        self.wait(f"{needle!r} in {css}", cond, timeout)

    def click(self, css):
        self.wait(f"{css} enabled", lambda: self.el(css).is_enabled())
        self.el(css).click()

    def confirm(self):
        self.wait("the confirmation", lambda: self.el("#confirm").is_displayed())
        self.el("#confirm-yes").click()

    def loaded(self):
        self.wait("the page", lambda: self.el("#page").is_displayed() or self.el("#unavailable").is_displayed())

    def deployments(self):
        """(role label, version, flags) of each row, in boot order; read in
        one go, as the table is redrawn whenever hostd announces a change."""
        return [tuple(r) for r in self.driver.execute_script(
            "return Array.from(document.querySelectorAll('#deployments tbody tr'))"
            ".map(r => Array.from(r.cells).map(c => c.innerText)).map(c => [c[0], c[2], c[5]])")]

    def idle(self):
        self.wait("the job to end", lambda: not self.el("#cancel").is_enabled(), timeout=120)

    def job_error(self):
        return [a.get_attribute("data-error") for a in self.els("#alerts .pf-m-danger")]

    def save(self, folder, name):
        os.makedirs(folder, exist_ok=True)
        self.driver.save_screenshot(os.path.join(folder, name + ".png"))
        with open(os.path.join(folder, name + ".txt"), "w") as f:
            f.write(self.el("body").text + "\n")
            for entry in self.driver.get_log("browser"):
                f.write(str(entry) + "\n")


def hostctl(*args, background=False):
    cmd = [os.environ["HOSTCTL"], *args]
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return subprocess.run(cmd, check=True, capture_output=True)


# --- scenarios --------------------------------------------------------------

def booted(p):
    p.loaded()
    p.wait("deployments", lambda: len(p.deployments()) >= 1)
    rows = p.deployments()
    assert rows[0][1] == "v1" and "Current" in rows[0][2], rows
    assert "Default (offline sysroot)" in rows[0][0], rows
    assert p.el("#apply-note").is_displayed(), "the offline note is shown"
    assert "nothing to restart" in p.text("#apply-note"), p.text("#apply-note")
    assert p.text("#apply") == "Update", "an offline sysroot offers no restart"
    assert not p.el("#download").is_enabled(), "nothing to download before a check"
    assert "Check for updates first" in p.el("#download").get_attribute("title")


def check(p):
    p.loaded()
    p.click("#check")
    p.wait_text("#update-summary", "v2")
    summary = p.text("#update-summary")
    assert "MB to download" in summary and "layers" in summary, summary
    p.wait_text("#last-check", "Update available")
    assert "once the update is downloaded" in p.text("#diff-summary"), p.text("#diff-summary")


def download(p):
    p.loaded()
    p.click("#download")
    p.wait("the job", lambda: p.el("#job").is_displayed())
    widths = []
    details = set()
    deadline = time.time() + 120
    while p.el("#cancel").is_enabled() and time.time() < deadline:
        widths.append(p.el("#job-bar").get_attribute("aria-valuenow"))
        details.add(p.text("#job-details"))
        shots = os.environ.get("HOSTD_COCKPIT_SHOTS")
        if shots and "/s" in p.text("#job-details") and not os.path.exists(os.path.join(shots, "download-progress.png")):
            p.save(shots, "download-progress")
        time.sleep(0.1)
    moving = sorted({float(w) for w in widths if w not in (None, "") and 0 < float(w) < 100})
    assert len(moving) >= 2, f"the progress bar did not move: {widths}"
    assert any(" of " in d and "layer" in d for d in details), details
    assert any("/s" in d and " left" in d for d in details), f"no rate and time left: {details}"
    p.wait_text("#update-summary", "downloaded, ready to install")
    p.wait("the package diff", lambda: p.el("#diff-table").is_displayed())
    changes = {r.find_elements(By.TAG_NAME, "td")[0].text: r.get_attribute("data-kind")
               for r in p.els("#diff-table tbody tr")}
    assert changes == {"hello": "added", "libfoo": "upgraded"}, changes


def discard(p):
    p.loaded()
    p.wait("a pending update", lambda: p.el("#discard").is_enabled())
    p.click("#discard")
    p.wait("the discard", lambda: "downloaded" not in p.text("#update-summary"))
    p.idle()
    assert not p.el("#discard").is_enabled(), "nothing pending any more"
    assert "No update is waiting" in p.el("#discard").get_attribute("title")


def update(p):
    p.loaded()
    p.click("#apply")
    p.confirm()
    p.wait("v2 deployed", lambda: [r[1] for r in p.deployments()][:2] == ["v2", "v1"])
    p.idle()


def rollback(p):
    p.loaded()
    p.click("#rollback")
    p.confirm()
    p.wait("v1 first again", lambda: [r[1] for r in p.deployments()][:2] == ["v1", "v2"])
    p.idle()


def pin_and_clean_up(p):
    p.loaded()
    p.wait("two deployments", lambda: len(p.deployments()) == 2)
    p.el("#deployments tbody tr[data-index='1'] .hd-pin").click()
    p.wait("v2 pinned", lambda: "Pinned" in p.deployments()[1][2])
    assert p.el("#deployments tbody tr[data-index='1'] .hd-pin").text == "Unpin"
    p.click("#cleanup")
    p.wait_text("#job-title", "Cleaning up")
    p.idle()
    assert not p.job_error(), p.job_error()
    p.wait("the pinned deployment kept", lambda: [r[1] for r in p.deployments()] == ["v1", "v2"])
    p.el("#deployments tbody tr[data-index='1'] .hd-pin").click()
    p.wait("v2 unpinned", lambda: "Pinned" not in p.deployments()[1][2])


def job_elsewhere(p):
    p.loaded()
    started = hostctl("upgrade", "--download-only", "--quiet", background=True)
    try:
        p.wait("the job started by hostctl", lambda: p.el("#job").is_displayed()
               and p.el("#job").get_attribute("data-state") == "running")
        p.wait_text("#job-details", " of ")
        assert p.text("#job-title") == "Updating", p.text("#job-title")
        assert p.el("#cancel").is_enabled()
    finally:
        out, _ = started.communicate(timeout=120)
    assert started.returncode == 0, out
    p.idle()
    p.wait_text("#job-details", "Downloaded v3")


def dead_registry(p):
    p.loaded()
    p.click("#check")
    p.wait("an error", lambda: p.job_error())
    assert "org.hostd.Host1.Error.Network" in p.job_error(), p.job_error()
    p.wait_text("#alerts", "The image registry could not be reached. Check the network")
    p.wait("the check among the recent operations",
           lambda: p.els("#last-jobs li[data-kind='check'][data-result='failed']"))
    assert "could not be reached" in p.text("#last-jobs li[data-kind='check']"), p.text("#last-jobs")


def configure(p):
    p.loaded()
    p.wait("the settings", lambda: p.el("#policy").is_enabled())
    p.el("#policy").find_element(By.CSS_SELECTOR, "option[value='check']").click()
    p.click("#save-settings")
    p.wait_text("#alerts", "The update settings were saved.")


def plain_user(p):
    p.loaded()
    p.wait("the settings disabled", lambda: not p.el("#policy").is_enabled())
    why = p.text("#settings-denied")
    assert "org.hostd.host1.configure" in why, why
    assert "org.hostd.host1.configure" in p.el("#save-settings").get_attribute("title")


def not_installed(p):
    p.wait("the page", lambda: p.el("#unavailable").is_displayed())
    assert "hostd is not available" in p.text("#unavailable-title")
    assert "not installed" in p.text("#unavailable-body")


def not_image_based(p):
    p.wait("the page", lambda: p.el("#unavailable").is_displayed())
    assert "not image-based" in p.text("#unavailable-title"), p.text("#unavailable-title")
    assert "nothing to update" in p.text("#unavailable-body"), p.text("#unavailable-body")


def dark(p):
    # Cockpit's shell keeps the choice in localStorage "shell:style".
    p.driver.execute_script("window.localStorage.setItem('shell:style', 'dark')")
    p.driver.refresh()
    p.loaded()
    p.wait("dark mode", lambda: "pf-v5-theme-dark" in (p.el("html").get_attribute("class") or ""))
    bg = p.driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(27, 29, 33)", bg


SCENARIOS = {f.__name__.replace("_", "-"): f for f in [
    booted, check, download, discard, update, rollback, pin_and_clean_up, job_elsewhere, dead_registry,
    configure, plain_user, not_installed, not_image_based, dark]}


def main():
    name = sys.argv[1]
    scenario = SCENARIOS[name]
    page = Page()
    try:
        scenario(page)
        shots = os.environ.get("HOSTD_COCKPIT_SHOTS")
        if shots:
            time.sleep(0.3)
            page.save(shots, name)
        return 0
    except Exception as e:  # AssertionError and WebDriver errors alike
        page.save(os.environ["HOSTD_COCKPIT_ARTIFACTS"], name)
        print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        page.driver.quit()


if __name__ == "__main__":
    sys.exit(main())
