"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

Starts ``streamlit run dashboard/Home.py`` on the fixture store and walks a meeting's flow:
the Deferral slider, a stored policy side by side with another, the Cases page at that
policy filtered to missed urgent patients, a row clicked and its reason (screenshots go to
test-artifacts/); no page logs a Vega warning; hostile notes and clinic names show as text;
the server listens on this machine only. (docs/regenerate.py photographs every page.)
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_store.store import TriageStore
from tests.dashboard.browser import CHROMIUM, PAGES, ROOT, Server, browser, free_port, metric, settle

URGENT = ["emergency", "urgent_cancer"]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("Chromium is missing: .ci/run installs Debian's chromium package.")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def _pick(page, label: str, option: str) -> None:
    """Choose ``option`` in the selectbox or multiselect labelled ``label``."""
    box = page.locator('[data-testid="stSelectbox"], [data-testid="stMultiSelect"]', has_text=label).first
    box.scroll_into_view_if_needed()
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    if box.get_attribute("data-testid") == "stMultiSelect":
        page.keyboard.press("Escape")  # a multiselect stays open for more
    settle(page)


def _markdown(page, start: str) -> str:
    settle(page)
    texts = page.locator('[data-testid="stMarkdownContainer"]').all_inner_texts()
    found = [t for t in texts if t.startswith(start)]
    assert found, [t[:80] for t in texts if t[:3] == start[:3]]
    return found[0]


def _every_page(page, server: Server, run_id: str) -> None:
    for name in PAGES:
        page.goto(server.url(name, run=run_id, model="late_fusion", split="test"))
        page.locator('[data-testid="stMain"]').first.wait_for(timeout=90_000)
        settle(page)
        page.wait_for_timeout(1000)  # charts render after the script ends
        assert not page.locator('[data-testid="stException"]').count(), name


def _press(page, key: str) -> None:
    """Press ``key`` on the Deferral slider and wait for the share reviewed to change."""
    before = metric(page, "Reviewed")
    handle = page.locator('[data-testid="stSlider"] input[type="range"]').first
    handle.focus()
    handle.press(key)
    page.wait_for_function(
        "(b) => { const m = [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
        ".find(e => e.innerText.includes('Reviewed'));"
        " return m && !m.innerText.includes(b); }", arg=before, timeout=60_000)


def _open_a_missed_case(page, preds, threshold: float) -> None:
    """On the Cases page of text_only at ``threshold``: filter the urgent patients missed and
    not reviewed (recounted from the predictions), click the first row, read its reason."""
    page.get_by_text(f"Reviewed: deferral score at or above {threshold:.3f}").first.wait_for(timeout=90_000)
    _pick(page, "Show only cases that are", "missed urgent, not reviewed")
    p = preds[(preds.model == "text_only") & (preds.split == "test")]
    missed = p[p.y_true.isin(URGENT) & ~p.y_pred.isin(URGENT) & (p.defer_score < threshold)]
    assert len(missed) and _markdown(page, f"{len(missed):,} of {len(p):,} cases")  # the fixture holds some
    if True:
        first = missed.sort_values(["defer_score", "case_id"], ascending=[False, True])["case_id"].iloc[0]
        grid = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
        page.mouse.click(grid["x"] + 12, grid["y"] + 53)  # the first row's selector
        page.wait_for_function("(c) => location.search.includes('case=' + c)", arg=first, timeout=60_000)
        assert _markdown(page, f"Case {first}")
        assert _markdown(page, "Why the score: ")


def test_a_meeting_moves_the_slider_compares_policies_and_opens_a_missed_case(quick_run, synth_store, tmp_path):
    """Deferral: the slider, a stored policy, side by side with another; the Cases page
    (reached by its link) at that policy; the Cases page of a shared link filtered to urgent
    patients missed and not reviewed, a row clicked and its reason read; then every page.
    No Vega warning on the way."""
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    run_id = quick_run["run_id"]
    with TriageStore(synth_store, read_only=True) as store:
        policies = store.read_table("policies", run_id, model="late_fusion", slice="overall").set_index(
            ["policy", "split"])
    server = Server(synth_store)
    pw, context = browser(tmp_path)
    warnings = []
    try:
        page = context.new_page()
        page.on("console", lambda m: warnings.append(m.text) if "WARN" in m.text else None)
        page.goto(server.url("Deferral", run=run_id, model="late_fusion", split="test"))
        page.locator('[data-testid="stMetric"]').first.wait_for(timeout=90_000)
        settle(page)
        _press(page, "Home")  # threshold 0: every case is reviewed
        assert metric(page, "Reviewed") == "100.0%" and "threshold=0.000" in page.url

        _pick(page, "Start from a stored policy", "review_budget")
        budget, urgent = policies.loc[("review_budget", "test")], policies.loc[("urgent_sensitivity", "test")]
        assert metric(page, "Reviewed") == f"{100 * budget['defer_rate']:.1f}%"
        _pick(page, "The other operating point", "urgent_sensitivity")
        said = _markdown(page, "All cases, now vs policy: urgent_sensitivity")
        change = 100 * (urgent["defer_rate"] - budget["defer_rate"])
        assert (f"reviewed {100 * budget['defer_rate']:.1f}% vs {100 * urgent['defer_rate']:.1f}% "
                f"({change:+.1f} pts)") in said
        page.screenshot(path=str(out / "deferral.png"), full_page=True)
        page.get_by_role("link", name="Cases").click()  # the operating point and the model carry
        caption = page.get_by_text("Reviewed: deferral score at or above").first
        caption.wait_for(timeout=60_000)
        fitted = policies.loc[("review_budget", "calib"), "threshold"]
        assert f"at or above {fitted:.3f} (review_budget)" in caption.inner_text()
        # A shared link at a threshold that reviews nothing (the fixture's rule-out rule
        # reviews every urgent patient a model misses at any threshold up to 1).
        page.goto(server.url("Cases", run=run_id, model="text_only", split="test", threshold="1.5"))
        _open_a_missed_case(page, quick_run["preds"], 1.5)
        page.screenshot(path=str(out / "cases.png"), full_page=True)
        _every_page(page, server, run_id)
        assert not warnings, warnings
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
