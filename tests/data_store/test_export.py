"""``python -m data_store export``: a run's tables as partitioned Parquet, read back by DuckDB
and pandas equal to the store, with no note, patient id or path unless asked."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from data_store.export import RUN_TABLES, export_run
from data_store.store import TriageStore

ROOT = Path(__file__).resolve().parents[2]


def _read_back(out: Path, table: str) -> pd.DataFrame:
    return duckdb.sql(f"SELECT * FROM read_parquet('{out}/{table}/**/*.parquet', hive_partitioning = true)").df()


def _store_table(db: Path, table: str, run_id: str) -> pd.DataFrame:
    with TriageStore(db, read_only=True) as store:
        return store.con.execute(f"SELECT * FROM {table} WHERE run_id = ?", [run_id]).df()


@pytest.fixture(scope="module")
def exported(quick_run, synth_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    written = export_run(synth_store, quick_run["run_id"], out)
    return out, written


def test_every_table_round_trips_through_duckdb(exported, quick_run, synth_store):
    out, written = exported
    run_id = quick_run["run_id"]
    for table in ("predictions", "metrics", "policies", "conformal", "splits", "runs"):
        stored = _store_table(synth_store, table, run_id)
        back = _read_back(out, table)
        assert written[table] == len(stored) == len(back) > 0, table
        assert set(back["run_id"]) == {run_id}
        keys = [c for c in ("model", "case_id", "split", "metric", "slice", "slice_value", "policy")
                if c in stored.columns]
        stored = stored.drop(columns=[c for c in stored.columns if c not in back.columns])
        back = back[stored.columns].astype(stored.dtypes.to_dict())
        pd.testing.assert_frame_equal(back.sort_values(keys).reset_index(drop=True),
                                      stored.sort_values(keys).reset_index(drop=True), check_dtype=False)
    probs = _read_back(out, "predictions").sort_values(["model", "case_id"])
    stored = _store_table(synth_store, "predictions", run_id).sort_values(["model", "case_id"])
    np.testing.assert_allclose(np.stack(probs["probs"]), np.stack(stored["probs"]))
    # partitioned by run and model, as a warehouse expects; pandas reads the same folder
    assert (out / "predictions" / f"run_id={run_id}" / "model=unified").is_dir()
    assert len(pd.read_parquet(out / "metrics")) == written["metrics"]


def test_no_note_patient_id_or_path_leaves_the_store(exported, quick_run):
    out, _ = exported
    cases = quick_run["cases"]
    secrets = set(cases["note"]) | set(cases["patient_id"]) | set(cases["image_path"])
    secrets.discard("")
    files = list(out.rglob("*.parquet"))
    assert files and not (out / "cases").exists()
    for file in files:
        frame = pd.read_parquet(file)
        assert not {"note", "patient_id", "image_path", "tokens", "artifacts_dir"} & set(frame.columns), file
        for column in frame.columns:
            cells = {str(v) for v in frame[column].dropna().astype(str)}
            assert not cells & secrets, (file, column)
    manifest = json.loads((out / f"{quick_run['run_id']}.json").read_text())
    assert manifest["columns_left_out"] == {"attributions": ["tokens"], "runs": ["artifacts_dir"]}
    assert set(manifest["rows"]) == set(RUN_TABLES)


def test_patient_data_only_when_asked_and_reexport_replaces(quick_run, synth_store, tmp_path):
    run_id = quick_run["run_id"]
    cmd = [sys.executable, "-m", "data_store", "export", "--db", str(synth_store), "--run", run_id, "--out",
           str(tmp_path), "--with-patient-data"]
    for _ in range(2):  # the second export replaces the first, nothing doubled
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    cases = _read_back(tmp_path, "cases")
    assert len(cases) == len(quick_run["splits"]) and {"note", "patient_id"} <= set(cases.columns)
    assert len(_read_back(tmp_path, "predictions")) == len(quick_run["preds"])
    bad = subprocess.run(cmd[:6] + ["--run", "no-such-run", "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "No run 'no-such-run'" in bad.stderr
