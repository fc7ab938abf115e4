"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

Starts ``streamlit run dashboard/Home.py`` on the fixture store, opens the Deferral page,
moves the threshold with the keyboard and waits for the deferral rate to change; saves
screenshots to test-artifacts/. With TRIAGE_SCREENSHOT_DB set to a store (the default
run's), it also photographs every page of that store into docs/screenshots/.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from data_store.store import TriageStore

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
PAGES = ("", "Models", "Reliability", "Deferral", "Slices", "Cases", "Handoff")

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("Chromium is missing: .ci/run installs Debian's chromium package.")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, db: Path):
        self.port = _free_port()
        env = {**os.environ, "TRIAGE_DB": str(db), "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "Home.py"), "--server.port",
             str(self.port), "--server.address", "127.0.0.1", "--server.headless", "true",
             "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_stcore/health", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("streamlit did not start within 60 s")

    def url(self, page: str, **params) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"http://127.0.0.1:{self.port}/{page}?{query}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def _browser(tmp_path: Path):
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    context = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                    headless=True, args=ARGS, viewport={"width": 1400, "height": 1000})
    return pw, context


def _metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]', has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def _settle(page) -> None:
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)


def test_moving_the_threshold_changes_the_deferral_rate(quick_run, synth_store, tmp_path):
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    server = Server(synth_store)
    pw, context = _browser(tmp_path)
    try:
        page = context.new_page()
        page.goto(server.url("Deferral", run=quick_run["run_id"], model="late_fusion", split="test"))
        page.get_by_text("Deferral rate").first.wait_for(timeout=90_000)
        _settle(page)
        before = _metric(page, "Deferral rate")
        handle = page.locator('[data-testid="stSlider"] input[type="range"]').first
        handle.focus()
        handle.press("Home")  # threshold 0: every case is deferred
        page.wait_for_function(
            "(b) => { const m = [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
            ".find(e => e.innerText.includes('Deferral rate'));"
            " return m && !m.innerText.includes(b); }", arg=before, timeout=60_000)
        after = _metric(page, "Deferral rate")
        assert after != before and after == "100.0%"
        assert "threshold=0.000" in page.url
        page.screenshot(path=str(out / "deferral.png"), full_page=True)
    finally:
        context.close()
        pw.stop()
        server.stop()


@pytest.mark.skipif(not os.environ.get("TRIAGE_SCREENSHOT_DB"), reason="set TRIAGE_SCREENSHOT_DB to photograph a store")
def test_screenshots_of_every_page(tmp_path):
    db = Path(os.environ["TRIAGE_SCREENSHOT_DB"]).resolve()
    with TriageStore(db, read_only=True) as store:
        runs = store.list_runs()
    run_id = runs[runs.status == "complete"]["run_id"].iloc[-1] if "TRIAGE_SCREENSHOT_RUN" not in os.environ \
        else os.environ["TRIAGE_SCREENSHOT_RUN"]
    out = ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    server = Server(db)
    pw, context = _browser(tmp_path)
    try:
        page = context.new_page()
        for name in PAGES:
            page.goto(server.url(name, run=run_id, model="late_fusion", split="test"))
            page.wait_for_selector('[data-testid="stMain"]', timeout=90_000)
            page.wait_for_timeout(1500)
            _settle(page)
            page.screenshot(path=str(out / f"{name or 'Home'}.png"), full_page=True)
    finally:
        context.close()
        pw.stop()
        server.stop()
