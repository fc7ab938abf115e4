"""Driving the dashboard in Debian's Chromium, headless, with Playwright: a Streamlit server
on a free local port and a browser context. Used by tests/dashboard/test_browser.py and by
docs/regenerate.py (screenshots)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
PAGES = ("", "Models", "Reliability", "Deferral", "Slices", "Cases", "Handoff", "New_clinic", "Error_analysis")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``streamlit run dashboard/Home.py`` of the checkout at ``root`` (default: this one) on
    ``db``, on a free local port."""

    def __init__(self, db: Path, root: Path = ROOT):
        self.port = free_port()
        env = {**os.environ, "TRIAGE_DB": str(db), "PYTHONPATH": str(root)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(root / "dashboard" / "Home.py"), "--server.port",
             str(self.port), "--server.address", "127.0.0.1", "--server.headless", "true",
             "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def browser(tmp_path: Path):
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    context = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                    headless=True, args=ARGS, viewport={"width": 1400, "height": 1000})
    return pw, context


def metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]', has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def settle(page) -> None:
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
