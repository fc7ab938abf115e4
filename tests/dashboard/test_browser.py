"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

Starts ``streamlit run dashboard/Home.py`` on the fixture store, opens the Deferral page,
moves the threshold with the keyboard and waits for the deferral rate to change (a
screenshot goes to test-artifacts/); hostile notes and clinic names show as text; the
server listens on this machine only. (docs/regenerate.py photographs every page.)
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_store.store import TriageStore
from tests.dashboard.browser import CHROMIUM, ROOT, Server, browser, free_port, metric, settle

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("Chromium is missing: .ci/run installs Debian's chromium package.")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def test_moving_the_threshold_changes_the_deferral_rate(quick_run, synth_store, tmp_path):
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    server = Server(synth_store)
    pw, context = browser(tmp_path)
    try:
        page = context.new_page()
        page.goto(server.url("Deferral", run=quick_run["run_id"], model="late_fusion", split="test"))
        page.get_by_text("Deferral rate").first.wait_for(timeout=90_000)
        settle(page)
        before = metric(page, "Deferral rate")
        handle = page.locator('[data-testid="stSlider"] input[type="range"]').first
        handle.focus()
        handle.press("Home")  # threshold 0: every case is deferred
        page.wait_for_function(
            "(b) => { const m = [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
            ".find(e => e.innerText.includes('Deferral rate'));"
            " return m && !m.innerText.includes(b); }", arg=before, timeout=60_000)
        after = metric(page, "Deferral rate")
        assert after != before and after == "100.0%"
        assert "threshold=0.000" in page.url
        page.screenshot(path=str(out / "deferral.png"), full_page=True)
    finally:
        context.close()
        pw.stop()
        server.stop()


# ---- security: hostile text is shown as text; the server listens on this machine only ----
PAYLOADS = [
    "<script>window.__xss = 1</script>",
    '<img src=x onerror="window.__xss = 2">',
    "**bold** [click](javascript:window.__xss=3) ![t](http://127.0.0.1:9/track.png)",
    '<svg onload="window.__xss = 4"></svg> :red[alert] $x^2$',
    '</div><iframe srcdoc="<script>parent.__xss = 5</script>"></iframe>',
]
HOSTILE_CLINIC = '<b onmouseover="window.__xss = 6">c</b> **x** :blue[y]'


@pytest.fixture(scope="module")
def hostile_run(synth_dir, tmp_path_factory):
    """The fixture dataset with hostile notes on every held-out case and a hostile held-out clinic name."""
    import json

    import pandas as pd

    from data_store.ingest import ingest
    from trainer.config import load_config
    from trainer.commands.fit import fit

    folder = tmp_path_factory.mktemp("hostile")
    info = json.loads((synth_dir / "dataset.json").read_text())
    m = pd.read_csv(synth_dir / "manifest.csv", dtype=str, keep_default_na=False)
    held = m["clinic"] == info["heldout_clinic"]
    m.loc[held, "note"] = [PAYLOADS[i % len(PAYLOADS)] for i in range(int(held.sum()))]
    m.loc[held, "clinic"] = HOSTILE_CLINIC
    m.to_csv(folder / "manifest.csv", index=False)
    (folder / "dataset.json").write_text(json.dumps({**info, "heldout_clinic": HOSTILE_CLINIC}))
    db = folder / "triage.duckdb"
    with TriageStore(db) as store:
        ingest(store, "hostile", folder / "manifest.csv", image_root=synth_dir)
    run_id = fit(db, "hostile", load_config(preset="quick", cache_dir=str(folder / "cache")), log=lambda m: None)
    return db, run_id, m[held].groupby("note")["case_id"].first().to_dict()


def test_hostile_notes_and_names_are_shown_as_text_and_no_script_runs(hostile_run, tmp_path):
    db, run_id, case_of = hostile_run
    server = Server(db)
    pw, context = browser(tmp_path)
    requests, dialogs = [], []
    try:
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        for payload in PAYLOADS:
            page.goto(server.url("Cases", run=run_id, model="late_fusion", split="test", case=case_of[payload]))
            page.get_by_text("Referring note").first.wait_for(timeout=90_000)
            settle(page)
            note = page.locator('[data-testid="stText"]').first.inner_text()
            assert note == payload  # the note, character for character, as plain text
            page.locator("[data-testid='stMain']").hover()
        for name in ("", "Slices"):
            page.goto(server.url(name, run=run_id, model="late_fusion", split="test", family="clinic"))
            page.wait_for_selector('[data-testid="stMain"]', timeout=90_000)
            page.wait_for_timeout(1500)
            settle(page)
            page.mouse.move(200, 300)
            if name == "":
                assert HOSTILE_CLINIC in page.locator('[data-testid="stMain"]').inner_text()
        assert page.evaluate("() => window.__xss") is None
        # No element the payloads could create: a script holding them, or an attribute that runs or loads them.
        found = page.evaluate("""() => [...document.querySelectorAll('*')].filter(e => e.tagName === 'SCRIPT'
            ? e.textContent.includes('__xss') : [...e.attributes].some(a => (a.name.startsWith('on')
            || ['src', 'href', 'srcdoc'].includes(a.name)) && (a.value.includes('__xss') || a.value === 'x'
            || a.value.includes('127.0.0.1:9/')))).map(e => e.outerHTML.slice(0, 200))""")
        assert not found, found
        assert not dialogs and not [u for u in requests if "127.0.0.1:9/" in u or u.startswith("javascript:")]
    finally:
        context.close()
        pw.stop()
        server.stop()


def _listeners(port: int) -> set[str]:
    """Local addresses (hex, as the kernel writes them) listening on ``port``, IPv4 and IPv6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.parametrize("command", ["streamlit", "run.sh"])
def test_the_dashboard_listens_on_localhost_only_by_default(synth_store, command):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("TRIAGE_ADDRESS", "STREAMLIT_SERVER_ADDRESS")}
    env.update(TRIAGE_DB=str(synth_store), TRIAGE_PORT=str(port), PYTHONPATH=str(ROOT))
    cmd = ([sys.executable, "-m", "streamlit", "run", "dashboard/Home.py", "--server.port", str(port)]
           if command == "streamlit" else ["./run.sh", "serve"])
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 90
        while not _listeners(port) and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(1)
        assert _listeners(port) == {"0100007F"}  # 127.0.0.1, and nothing on 0.0.0.0 or ::
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=20)
