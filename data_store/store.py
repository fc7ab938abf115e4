"""The triage store: the only module that holds SQL and the only one that imports duckdb.

Every statement binds its parameters; identifiers that cannot be bound (a column to
group by) are checked against a fixed allow-list first.
"""
from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import duckdb
import pandas as pd

SCHEMA_VERSION = 1
DEFAULT_DB = Path("data/triage.duckdb")
_CASE_GROUPS = {"clinic", "label", "fitzpatrick"}


class StoreError(RuntimeError):
    """A store problem a user can act on (missing file, locked, read-only)."""


class TriageStore:
    """A DuckDB file with the public schema in schema.sql.

    Use as a context manager; ``read_only=True`` never creates or changes the file.
    """

    def __init__(self, path: str | Path = DEFAULT_DB, read_only: bool = False, retries: int = 20):
        self.path = Path(path)
        if read_only and not self.path.exists():
            raise StoreError(f"No store at {self.path}. Create one with "
                             f"`python -m data_store ingest --db {self.path} ...` or `./run.sh`.")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = self._connect(read_only, retries)
        if not read_only:
            self._apply_schema()

    def _connect(self, read_only: bool, retries: int) -> duckdb.DuckDBPyConnection:
        # Another process may hold the write lock for a moment (an ingest or fit commit).
        for attempt in range(retries + 1):
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or attempt == retries:
                    raise StoreError(f"Cannot open the store {self.path}: {exc}") from exc
                time.sleep(0.25)
        raise AssertionError("unreachable")

    def _apply_schema(self) -> None:
        ddl = resources.files("data_store").joinpath("schema.sql").read_text()
        self.con.execute("BEGIN")
        self.con.execute(ddl)
        if self.con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
            self.con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION])
        self.con.execute("COMMIT")

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "TriageStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- datasets and cases -------------------------------------------------------
    def schema_version(self) -> int:
        return int(self.con.execute("SELECT max(version) FROM schema_version").fetchone()[0])

    def dataset_fingerprint(self, dataset: str) -> str | None:
        row = self.con.execute("SELECT fingerprint FROM datasets WHERE dataset = ?", [dataset]).fetchone()
        return row[0] if row else None

    def replace_dataset(self, info: dict, cases: pd.DataFrame, rejected: pd.DataFrame) -> None:
        """Write one dataset's rows in a single transaction: all of it, or nothing."""
        con = self.con
        con.execute("BEGIN")
        try:
            for table in ("cases", "rejected_rows", "datasets"):
                con.execute(f"DELETE FROM {table} WHERE dataset = ?", [info["dataset"]])
            con.execute(
                "INSERT INTO datasets VALUES (?, ?, ?, now(), ?, ?, ?, ?, ?, ?, ?)",
                [info["dataset"], info["manifest_path"], info["image_root"], len(cases), len(rejected),
                 list(info["classes"]), info.get("urgent_classes"), info.get("heldout_clinic"),
                 bool(info.get("simulated", False)), info["fingerprint"]])
            con.register("new_cases", cases)
            con.execute("""INSERT INTO cases SELECT ?, case_id, patient_id, clinic, image_path, image_sha256,
                                  note, label, fitzpatrick, flags, extra FROM new_cases""", [info["dataset"]])
            con.unregister("new_cases")
            con.register("new_rejected", rejected)
            con.execute("""INSERT INTO rejected_rows SELECT ?, source_row, case_id, reason, detail
                           FROM new_rejected""", [info["dataset"]])
            con.unregister("new_rejected")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def list_datasets(self) -> pd.DataFrame:
        return self.con.execute("SELECT * FROM datasets ORDER BY ingested_at DESC").df()

    def read_dataset(self, dataset: str) -> dict:
        df = self.con.execute("SELECT * FROM datasets WHERE dataset = ?", [dataset]).df()
        if df.empty:
            known = ", ".join(self.list_datasets()["dataset"]) or "none"
            raise StoreError(f"No dataset named {dataset!r} in {self.path} (datasets: {known}).")
        return df.iloc[0].to_dict()

    def read_cases(self, dataset: str) -> pd.DataFrame:
        return self.con.execute("SELECT * FROM cases WHERE dataset = ? ORDER BY case_id", [dataset]).df()

    def read_rejected(self, dataset: str) -> pd.DataFrame:
        return self.con.execute(
            "SELECT * FROM rejected_rows WHERE dataset = ? ORDER BY source_row", [dataset]).df()

    def count_cases(self, dataset: str, by: str) -> pd.DataFrame:
        """Case counts grouped by one of clinic, label or fitzpatrick."""
        if by not in _CASE_GROUPS:
            raise ValueError(f"by must be one of {sorted(_CASE_GROUPS)}, got {by!r}.")
        return self.con.execute(
            f"SELECT {by}, count(*) AS n FROM cases WHERE dataset = ? GROUP BY {by} ORDER BY {by}",
            [dataset]).df()

    def dataset_has_runs(self, dataset: str) -> bool:
        return self.con.execute("SELECT count(*) FROM runs WHERE dataset = ?", [dataset]).fetchone()[0] > 0

    # ---- runs ---------------------------------------------------------------------
    def start_run(self, run_id: str, dataset: str, config_json: str, classes: list[str],
                  heldout_clinic: str, artifacts_dir: str) -> None:
        self.con.execute("INSERT INTO runs VALUES (?, ?, 'running', now(), NULL, ?, ?, ?, NULL, ?, NULL)",
                         [run_id, dataset, config_json, list(classes), heldout_clinic, artifacts_dir])

    def finish_run(self, run_id: str, splits: pd.DataFrame, predictions: pd.DataFrame, timings_json: str) -> None:
        """Write splits and predictions and mark the run complete, in one transaction."""
        con = self.con
        con.execute("BEGIN")
        try:
            con.execute("DELETE FROM splits WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM predictions WHERE run_id = ?", [run_id])
            con.register("new_splits", splits)
            con.execute("INSERT INTO splits SELECT ?, case_id, split FROM new_splits", [run_id])
            con.unregister("new_splits")
            con.register("new_predictions", predictions)
            con.execute("""INSERT INTO predictions SELECT ?, model, case_id, split, y_true, y_pred,
                           probs::DOUBLE[], NULL FROM new_predictions""", [run_id])
            con.unregister("new_predictions")
            con.execute("""UPDATE runs SET status = 'complete', finished_at = now(), timings = ?
                           WHERE run_id = ?""", [timings_json, run_id])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def fail_run(self, run_id: str, error: str) -> None:
        self.con.execute("UPDATE runs SET status = 'failed', finished_at = now(), error = ? WHERE run_id = ?",
                         [error[:2000], run_id])

    def list_runs(self) -> pd.DataFrame:
        return self.con.execute("SELECT * FROM runs ORDER BY created_at DESC, run_id DESC").df()

    def read_run(self, run_id: str) -> dict:
        df = self.con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]).df()
        if df.empty:
            raise StoreError(f"No run {run_id!r} in {self.path}.")
        return df.iloc[0].to_dict()

    def read_splits(self, run_id: str) -> pd.DataFrame:
        return self.con.execute("SELECT case_id, split FROM splits WHERE run_id = ? ORDER BY case_id",
                                [run_id]).df()

    def read_predictions(self, run_id: str, model: str | None = None) -> pd.DataFrame:
        if model is None:
            return self.con.execute("SELECT * FROM predictions WHERE run_id = ? ORDER BY model, case_id",
                                    [run_id]).df()
        return self.con.execute("SELECT * FROM predictions WHERE run_id = ? AND model = ? ORDER BY case_id",
                                [run_id, model]).df()

    def count_rejected(self, dataset: str) -> pd.DataFrame:
        return self.con.execute(
            """SELECT reason, count(*) AS n FROM rejected_rows WHERE dataset = ?
               GROUP BY reason ORDER BY n DESC, reason""", [dataset]).df()
