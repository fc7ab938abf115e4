"""A run's tables as Parquet that a warehouse can read (``python -m data_store export``).

Each table that holds rows of the run goes to ``OUT/<table>/run_id=<run>[/model=<model>]/``
(hive partitions: DuckDB, pandas with pyarrow and Spark read the folder as one table with
the partition columns back). By default nothing identifies a patient or tells their
story: no notes (the attributions' note words are left out), no patient ids, no photo or
artifact paths; the cases travel by case id. ``with_patient_data`` adds them, and the
cases table of the run, for a user who asks. ``OUT/<run>.json`` lists what was written.
"""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from data_store.store import TriageStore

# Columns that carry a note, a patient id or a path, by table; left out unless asked.
PRIVATE = {"attributions": ("tokens",), "runs": ("artifacts_dir",)}
RUN_TABLES = ("runs", "splits", "predictions", "calibrators", "deferral_scorers", "metrics", "reliability_bins",
              "risk_coverage", "policies", "comparisons", "conformal", "attributions", "scores", "shift",
              "adaptations", "adaptation_curve", "corrections")


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def export_run(db: str | Path, run_id: str, out: str | Path, with_patient_data: bool = False) -> dict:
    """Write the run's tables under ``out``; returns {table: rows written}. A second export
    of the same run replaces its partitions and leaves other runs' alone."""
    out = Path(out)
    written, left_out = {}, {}
    with TriageStore(db, read_only=True) as store:
        con = store.con
        run = con.execute("SELECT dataset FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if run is None:
            raise ValueError(f"No run {run_id!r} in {db}; `python -m data_store info` lists the datasets and the "
                             "dashboard's Runs page the runs.")
        tables = list(RUN_TABLES) + (["cases"] if with_patient_data else [])
        for table in tables:
            columns = store._columns(table)
            drop = () if with_patient_data else PRIVATE.get(table, ())
            keep = [c for c in columns if c not in drop]
            if table == "cases":  # only when asked: the run's own cases, with their notes and patient ids
                query = (f"SELECT ? AS run_id, {', '.join(keep)} FROM cases WHERE dataset = ? AND case_id IN "
                         "(SELECT case_id FROM splits WHERE run_id = ?)")
                params = [run_id, run[0], run_id]
            else:
                query, params = f"SELECT {', '.join(keep)} FROM {table} WHERE run_id = ?", [run_id]
            n = con.execute(f"SELECT count(*) FROM ({query})", params).fetchone()[0]
            target = out / table
            shutil.rmtree(target / f"run_id={run_id}", ignore_errors=True)  # a re-export replaces this run only
            if n:
                partition = "run_id, model" if "model" in keep else "run_id"
                target.mkdir(parents=True, exist_ok=True)
                con.execute(f"COPY ({query}) TO {_quoted(target)} (FORMAT parquet, PARTITION_BY ({partition}), "
                            "OVERWRITE_OR_IGNORE true)", params)
            written[table] = int(n)
            if drop:
                left_out[table] = list(drop)
    manifest = {"run_id": run_id, "dataset": run[0], "exported_at": datetime.now(timezone.utc).isoformat(),
                "with_patient_data": with_patient_data, "rows": written, "columns_left_out": left_out,
                "read_back": f"SELECT * FROM read_parquet('{out}/<table>/**/*.parquet', hive_partitioning = true)"}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{run_id}.json").write_text(json.dumps(manifest, indent=2))
    return written
