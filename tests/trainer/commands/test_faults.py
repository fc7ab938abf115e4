"""Faults: real ``fit`` and ``report`` processes killed with SIGKILL at several points, the
dashboard open during a fit, a full disk and a read-only store.

After every kill nothing half-written may look complete, and the next command must work.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from data_store.store import StoreError, TriageStore

pytestmark = pytest.mark.slow  # real processes killed mid-write and whole fits: `./run.sh test-slow`

ROOT = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture()
def store_copy(synth_store, tmp_path) -> Path:
    db = tmp_path / "triage.duckdb"
    shutil.copy(synth_store, db)
    return db


def _fit_cmd(db: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "trainer", "fit", "--db", str(db), "--dataset", "dermsynth", "--preset", "quick",
            "--cache-dir", str(cache)]


def _kill_when(cmd: list[str], marker: str, timeout: float = 300) -> list[str]:
    """Run ``cmd`` and SIGKILL it as soon as a line containing ``marker`` reaches stderr."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines, deadline = [], time.time() + timeout
    for line in proc.stderr:
        lines.append(line)
        if marker in line:
            proc.send_signal(signal.SIGKILL)
            break
        assert time.time() < deadline, "".join(lines[-20:])
    assert proc.wait(timeout=60) == -signal.SIGKILL, f"{marker!r} never logged:\n" + "".join(lines[-20:])
    return lines


def _runs(db: Path):
    with TriageStore(db, read_only=True) as store:
        return store.list_runs()


# In the middle of the transaction that completes the run: the script kills its own process
# after the predictions are inserted, before the run is marked complete.
_DIE_IN_FINISH = """
import os, signal, sys
from data_store.store import TriageStore
from trainer.__main__ import main
def dying(self, run_id, posthoc):
    os.kill(os.getpid(), signal.SIGKILL)
TriageStore._replace_posthoc = dying
sys.exit(main(sys.argv[1:]))
"""


def test_fit_killed_at_several_points_leaves_no_complete_looking_run(store_copy, tmp_path):
    cache = tmp_path / "cache"
    killed = []
    for marker in ("features ready", "text_only: trained"):
        before = set(_runs(store_copy).run_id)
        _kill_when(_fit_cmd(store_copy, cache), marker)
        killed.append((set(_runs(store_copy).run_id) - before).pop())
    before = set(_runs(store_copy).run_id)
    proc = subprocess.run([sys.executable, "-c", _DIE_IN_FINISH, *_fit_cmd(store_copy, cache)[3:]], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    killed.append((set(_runs(store_copy).run_id) - before).pop())

    runs = _runs(store_copy).set_index("run_id")
    with TriageStore(store_copy, read_only=True) as store:
        for run_id in killed:
            assert runs.loc[run_id, "status"] == "interrupted"
            assert "killed" in runs.loc[run_id, "error"]
            assert store.read_predictions(run_id).empty  # the killed transaction left nothing
            assert store.read_table("metrics", run_id).empty
    report = subprocess.run([sys.executable, "-m", "trainer", "report", "--db", str(store_copy), "--run", killed[0],
                             "--out", str(tmp_path / "r")], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert report.returncode == 2 and "interrupted" in report.stderr and not (tmp_path / "r").exists()

    # The next command works: a fit completes on the same store and cache.
    done = subprocess.run(_fit_cmd(store_copy, cache), cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = _runs(store_copy).set_index("run_id")
    assert runs.loc[done.stdout.strip().splitlines()[-1], "status"] == "complete"
    assert (runs.loc[killed, "status"] == "interrupted").all()


def _report_cmd(db: Path, run_id: str, out: Path) -> list[str]:
    return ["--db", str(db), "--run", run_id, "--out", str(out)]


# Dies inside write_report at the given step, after part of the document is on disk.
_DIE_IN_REPORT = """
import os, signal, sys
from pathlib import Path
import trainer.commands.report as report
from trainer.__main__ import main

step = sys.argv.pop(1)
original = getattr(report, step)
def dying(doc, paths, *rest):
    result = original(doc, paths, *rest)
    if rest:  # to_pdf: leave half a PDF behind
        Path(rest[0]).write_bytes(Path(rest[0]).read_bytes()[:1000])
    os.kill(os.getpid(), signal.SIGKILL)
setattr(report, step, dying)
sys.exit(main(["report"] + sys.argv[1:]))
"""


@pytest.mark.parametrize("step", ["to_markdown", "to_pdf"])
def test_report_killed_midway_keeps_the_previous_document(quick_run, synth_store, tmp_path, step):
    out = tmp_path / "handoff"
    args = _report_cmd(synth_store, quick_run["run_id"], out)
    first = subprocess.run([sys.executable, "-m", "trainer", "report", *args], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    pdf = (out / "handoff.pdf").read_bytes()
    files = sorted(p.relative_to(out) for p in out.rglob("*"))

    proc = subprocess.run([sys.executable, "-c", _DIE_IN_REPORT, step, *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (out / "handoff.pdf").read_bytes() == pdf  # the previous, complete document
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == files

    again = subprocess.run([sys.executable, "-m", "trainer", "report", *args], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert (out / "handoff.pdf").read_bytes()[:5] == b"%PDF-" and len((out / "handoff.pdf").read_bytes()) > 10_000
    assert not list(tmp_path.glob(".handoff.partial-*"))  # the killed run's staging folder is gone


def test_dashboard_reads_the_store_while_a_fit_writes_it(store_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("TRIAGE_DB", str(store_copy))
    proc = subprocess.Popen(_fit_cmd(store_copy, tmp_path / "cache"), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    views, seen_running = 0, False
    try:
        while proc.poll() is None:
            at = AppTest.from_file(str(ROOT / "dashboard" / "Home.py"), default_timeout=120).run()
            assert not at.exception, at.exception
            views += 1
            # The page says a run is in progress (and lists it nowhere as a result) while the fit runs.
            seen_running |= any("1 running" in c.value for c in at.caption)
            time.sleep(1)
    finally:
        out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0
    assert views >= 3 and seen_running
    run_id = out.strip().splitlines()[-1]
    assert _runs(store_copy).set_index("run_id").loc[run_id, "status"] == "complete"
    at = AppTest.from_file(str(ROOT / "dashboard" / "Home.py"), default_timeout=120).run()
    assert not at.exception and run_id in str([s.value for s in at.selectbox] + [s.options for s in at.selectbox])


# ---- full disk and read-only store: real file systems (tmpfs) where we may mount them ----
@pytest.fixture()
def small_fs(tmp_path):
    """A 2 MiB tmpfs: as root (CI) a real full disk and, remounted, a real read-only file system."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root); the messages are covered in tests/data_store/test_store.py")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_full_disk_gives_a_clear_message_and_keeps_the_store(small_fs, synth_dir):
    db = small_fs / "triage.duckdb"
    with TriageStore(db) as store:
        store.con.execute("CHECKPOINT")
    with open(small_fs / "filler", "wb") as f:  # take every byte that is left
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    proc = subprocess.run([sys.executable, "-m", "data_store", "ingest", "--db", str(db), "--dataset", "d",
                           "--manifest", str(synth_dir / "manifest.csv")], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: Cannot ") and str(db) in err and "the disk is full" in err, err
    assert "Traceback" not in proc.stderr
    with TriageStore(db, read_only=True) as store:  # the store opens and holds what it held before
        assert store.list_datasets().empty


def test_read_only_store_gives_a_clear_message_and_still_serves_reads(small_fs, synth_dir):
    from data_store.ingest import ingest

    db = small_fs / "triage.duckdb"
    with TriageStore(db) as store:
        ingest(store, "dermsynth", synth_dir / "manifest.csv")
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.raises(StoreError, match="read-only.*dashboard and reports only need to read"):
        TriageStore(db)
    proc = subprocess.run([sys.executable, "-m", "trainer", "fit", "--db", str(db), "--dataset", "dermsynth",
                           "--preset", "quick"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "read-only" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    with TriageStore(db, read_only=True) as store:
        assert len(store.read_cases("dermsynth")) > 0
