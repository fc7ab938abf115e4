"""The triage store: with ``results.py`` (a run's result tables) the only module that holds
SQL, and the only one that imports duckdb. Every statement binds its parameters;
identifiers that cannot be bound (a column to group by) are checked against a fixed
allow-list first."""
from __future__ import annotations

import time
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import duckdb
import pandas as pd

from data_store.errors import StoreError, explain
from data_store.results import FITTED_POLICIES, RunResults
from data_store.rows import as_rows
from data_store.runlock import INTERRUPTED, live_status, run_alive

SCHEMA_VERSION = 4
DEFAULT_DB = Path("data/triage.duckdb")
_CASE_GROUPS = {"clinic", "label", "fitzpatrick"}
_POSTHOC_TABLES = ("calibrators", "deferral_scorers", "metrics", "reliability_bins", "risk_coverage", "policies",
                   "comparisons", "conformal")


class TriageStore(RunResults):
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
                    raise StoreError(explain(self.path, exc, "open")) from exc
                time.sleep(0.25)
        raise AssertionError("unreachable")

    def _apply_schema(self) -> None:
        ddl = resources.files("data_store").joinpath("schema.sql").read_text()
        with self.transaction():
            self.con.execute(ddl)
            current = self.con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
            if current < SCHEMA_VERSION:  # schema.sql brings an older file up to date (ADD COLUMN IF NOT EXISTS)
                self.con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION])

    @contextmanager
    def transaction(self):
        """All of the block's writes, or none: a failure (disk full, Ctrl-C) rolls back, and a
        DuckDB error becomes a StoreError that says what to do."""
        self.con.execute("BEGIN")
        try:
            yield self.con
            self.con.execute("COMMIT")
        except BaseException as exc:
            try:
                self.con.execute("ROLLBACK")
            except duckdb.Error:
                pass  # a failed COMMIT has already ended the transaction
            if isinstance(exc, duckdb.Error):
                raise StoreError(explain(self.path, exc, "write to")) from exc
            raise

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
        with self.transaction():
            for table in ("cases", "rejected_rows", "datasets"):
                con.execute(f"DELETE FROM {table} WHERE dataset = ?", [info["dataset"]])
            con.execute(
                """INSERT INTO datasets (dataset, manifest_path, image_root, ingested_at, n_cases, n_rejected, classes,
                   urgent_classes, heldout_clinic, simulated, fingerprint, labelled)
                   VALUES (?, ?, ?, now(), ?, ?, ?, ?, ?, ?, ?, ?)""",
                [info["dataset"], info["manifest_path"], info["image_root"], len(cases), len(rejected),
                 list(info["classes"]), info.get("urgent_classes"), info.get("heldout_clinic"),
                 bool(info.get("simulated", False)), info["fingerprint"], bool(info.get("labelled", True))])
            con.register("new_cases", cases)
            con.execute("""INSERT INTO cases SELECT ?, case_id, patient_id, clinic, image_path, image_sha256,
                                  note, label, fitzpatrick, flags, extra FROM new_cases""", [info["dataset"]])
            con.unregister("new_cases")
            con.register("new_rejected", rejected)
            con.execute("""INSERT INTO rejected_rows SELECT ?, source_row, case_id, reason, detail
                           FROM new_rejected""", [info["dataset"]])
            con.unregister("new_rejected")

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

    def count_cases(self, dataset: str, by: str | tuple[str, ...]) -> pd.DataFrame:
        """Case counts grouped by clinic, label or fitzpatrick (one, or a tuple of them)."""
        columns = (by,) if isinstance(by, str) else tuple(by)
        if not columns or not set(columns) <= _CASE_GROUPS:
            raise ValueError(f"by must be one of {sorted(_CASE_GROUPS)} (or a tuple of them), got {by!r}.")
        cols = ", ".join(columns)
        return self.con.execute(
            f"SELECT {cols}, count(*) AS n FROM cases WHERE dataset = ? GROUP BY {cols} ORDER BY {cols}",
            [dataset]).df()

    def dataset_has_runs(self, dataset: str) -> bool:
        return self.con.execute("SELECT count(*) FROM runs WHERE dataset = ?", [dataset]).fetchone()[0] > 0

    # ---- runs ---------------------------------------------------------------------
    def start_run(self, run_id: str, dataset: str, config_json: str, classes: list[str],
                  heldout_clinic: str, artifacts_dir: str) -> None:
        """Register a run as running. The caller holds ``data_store.runlock.RunLock(artifacts_dir)``
        until it exits; runs left 'running' by a process that died are marked interrupted here."""
        with self.transaction():
            running = self.con.execute("SELECT run_id, artifacts_dir FROM runs WHERE status = 'running'").fetchall()
            for other, folder in running:
                if not run_alive(folder):
                    self.con.execute("UPDATE runs SET status = 'interrupted', error = ? WHERE run_id = ?",
                                     [INTERRUPTED, other])
            self.con.execute("INSERT INTO runs VALUES (?, ?, 'running', now(), NULL, ?, ?, ?, NULL, ?, NULL)",
                             [run_id, dataset, config_json, list(classes), heldout_clinic, artifacts_dir])

    def finish_run(self, run_id: str, splits: pd.DataFrame, predictions: pd.DataFrame, timings_json: str,
                   posthoc: dict[str, pd.DataFrame], config_json: str | None = None) -> None:
        """Write splits, predictions and the post-hoc tables and mark the run complete, in one
        transaction. ``predictions``: probs_uncal and per-case signals; ``posthoc``: posthoc_tables
        (its "predictions" fills probs, y_pred, defer_score); ``config_json``: resolved settings."""
        con = self.con
        with self.transaction():
            con.execute("DELETE FROM splits WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM predictions WHERE run_id = ?", [run_id])
            con.register("new_splits", splits)
            con.execute("INSERT INTO splits SELECT ?, case_id, split FROM new_splits", [run_id])
            con.unregister("new_splits")
            con.register("new_predictions", predictions)
            con.execute("""INSERT INTO predictions (run_id, model, case_id, split, y_true, y_pred, probs,
                                                   probs_uncal, train_distance, photo_sharpness, photo_overexposed)
                           SELECT ?, model, case_id, split, y_true, y_pred, probs_uncal::DOUBLE[],
                                  probs_uncal::DOUBLE[], train_distance, photo_sharpness, photo_overexposed
                           FROM new_predictions""", [run_id])
            con.unregister("new_predictions")
            self._replace_posthoc(run_id, posthoc)
            con.execute("""UPDATE runs SET status = 'complete', finished_at = now(), timings = ?,
                           config = coalesce(?, config) WHERE run_id = ?""", [timings_json, config_json, run_id])

    def write_posthoc(self, run_id: str, posthoc: dict[str, pd.DataFrame], config_json: str | None = None) -> None:
        """Replace a run's post-hoc tables (``python -m trainer posthoc``), in one transaction."""
        con = self.con
        with self.transaction():
            # Predictions of schema 1 held the raw probabilities in probs: keep them as probs_uncal.
            con.execute("UPDATE predictions SET probs_uncal = probs WHERE run_id = ? AND probs_uncal IS NULL",
                        [run_id])
            # Adapted variants refit the rules being replaced: they go with them (re-run adapt).
            con.execute("""DELETE FROM predictions WHERE run_id = ? AND model IN
                           (SELECT variant FROM adaptations WHERE run_id = ?)""", [run_id, run_id])
            con.execute("DELETE FROM adaptations WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM adaptation_curve WHERE run_id = ?", [run_id])
            self._replace_posthoc(run_id, posthoc)
            if config_json is not None:
                con.execute("UPDATE runs SET config = ? WHERE run_id = ?", [config_json, run_id])

    def _replace_posthoc(self, run_id: str, posthoc: dict[str, pd.DataFrame]) -> None:
        con = self.con
        con.register("new_calibrated", posthoc["predictions"])
        con.execute("""UPDATE predictions p SET probs = n.probs::DOUBLE[], y_pred = n.y_pred,
                              defer_score = n.defer_score
                       FROM new_calibrated n WHERE p.run_id = ? AND p.model = n.model AND p.case_id = n.case_id""",
                    [run_id])
        con.unregister("new_calibrated")
        for table in _POSTHOC_TABLES:
            if table == "policies":  # policies a team saved by name (dashboard) survive a re-calibration
                marks = ", ".join("?" * len(FITTED_POLICIES))
                con.execute(f"DELETE FROM policies WHERE run_id = ? AND policy IN ({marks})",
                            [run_id, *FITTED_POLICIES])
            else:
                con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            df = posthoc[table]
            if df.empty:
                continue
            columns = [c for c in self._columns(table) if c != "run_id"]
            con.register("new_rows", as_rows(df, columns))
            con.execute(f"INSERT INTO {table} (run_id, {', '.join(columns)}) SELECT ?, * FROM new_rows", [run_id])
            con.unregister("new_rows")

    def _columns(self, table: str) -> list[str]:
        return [r[0] for r in self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
            [table]).fetchall()]

    def read_table(self, table: str, run_id: str, **where) -> pd.DataFrame:
        """Rows of one post-hoc table for a run, filtered on allowed columns: equal to a
        value, or (a tuple or list) to any of several."""
        if table not in _POSTHOC_TABLES:
            raise ValueError(f"table must be one of {list(_POSTHOC_TABLES)}, got {table!r}.")
        allowed = set(self._columns(table))
        bad = [k for k in where if k not in allowed]
        if bad:
            raise ValueError(f"Cannot filter {table} by {bad}; columns: {sorted(allowed)}.")
        values = {k: list(v) if isinstance(v, (tuple, list)) else [v] for k, v in where.items()}
        if not all(values.values()):
            raise ValueError(f"Filters of {table} need at least one value each; got {where}.")
        clauses = "".join(f" AND {k} IN ({', '.join('?' * len(v))})" for k, v in values.items())
        return self.con.execute(f"SELECT * FROM {table} WHERE run_id = ?{clauses}",
                                [run_id, *(x for v in values.values() for x in v)]).df()

    def fail_run(self, run_id: str, error: str) -> None:
        self.con.execute("UPDATE runs SET status = 'failed', finished_at = now(), error = ? WHERE run_id = ?",
                         [error[:2000], run_id])

    def list_runs(self) -> pd.DataFrame:
        """Every run, newest first; a 'running' run whose process has ended shows as 'interrupted'."""
        return live_status(self.con.execute("SELECT * FROM runs ORDER BY created_at DESC, run_id DESC").df())

    def read_run(self, run_id: str) -> dict:
        df = live_status(self.con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]).df())
        if df.empty:
            raise StoreError(f"No run {run_id!r} in {self.path}.")
        return df.iloc[0].to_dict()

    def read_splits(self, run_id: str) -> pd.DataFrame:
        return self.con.execute("SELECT case_id, split FROM splits WHERE run_id = ? ORDER BY case_id",
                                [run_id]).df()

    def read_predictions(self, run_id: str, model: str | None = None) -> pd.DataFrame:
        return self.con.execute("""SELECT * FROM predictions WHERE run_id = ? AND (? IS NULL OR model = ?)
                                   ORDER BY model, case_id""", [run_id, model, model]).df()

    def read_case(self, dataset: str, case_id: str) -> dict:
        df = self.con.execute("SELECT * FROM cases WHERE dataset = ? AND case_id = ?", [dataset, case_id]).df()
        if df.empty:
            raise StoreError(f"No case {case_id!r} in dataset {dataset!r}.")
        return df.iloc[0].to_dict()

    def count_rejected(self, dataset: str) -> pd.DataFrame:
        return self.con.execute(
            """SELECT reason, count(*) AS n FROM rejected_rows WHERE dataset = ?
               GROUP BY reason ORDER BY n DESC, reason""", [dataset]).df()
