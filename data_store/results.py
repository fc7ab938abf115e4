"""A run's result tables written after ``fit``: policies saved from the dashboard, the
attributions of ``explain``, and the scores of ``predict`` on new cases. A part of
``TriageStore`` (``data_store/store.py``), kept in its own module; SQL stays in data_store."""
from __future__ import annotations

import pandas as pd

from data_store.rows import as_rows

# The policies fit writes; a policy saved by name may not take one of these names.
FITTED_POLICIES = ("review_budget", "target_accuracy", "urgent_sensitivity", "equal_group_accuracy",
                   "conformal_set")


class RunResults:
    """Methods of ``TriageStore`` (which provides ``con``, ``transaction`` and ``_columns``)."""

    def write_policy(self, run_id: str, model: str, policy: str, rows: pd.DataFrame) -> None:
        """Save a named policy (e.g. a threshold chosen in the dashboard), replacing one of that name."""
        if policy in FITTED_POLICIES or not policy.strip():
            raise ValueError(f"Choose another name than {policy!r}: it is empty or names a fitted policy.")
        con = self.con
        columns = [c for c in self._columns("policies") if c not in ("run_id", "model", "policy")]
        with self.transaction():
            con.execute("DELETE FROM policies WHERE run_id = ? AND model = ? AND policy = ?", [run_id, model, policy])
            con.register("new_policy", as_rows(rows, columns))
            con.execute(f"INSERT INTO policies (run_id, model, policy, {', '.join(columns)}) "
                        f"SELECT ?, ?, ?, {', '.join(columns)} FROM new_policy", [run_id, model, policy])
            con.unregister("new_policy")

    def delete_policy(self, run_id: str, model: str, policy: str) -> None:
        """Remove a policy a team saved by name; a fitted policy cannot be removed (posthoc owns it)."""
        if policy in FITTED_POLICIES:
            raise ValueError(f"{policy!r} is fitted by posthoc and cannot be deleted; only saved policies can.")
        with self.transaction():
            self.con.execute("DELETE FROM policies WHERE run_id = ? AND model = ? AND policy = ?",
                             [run_id, model, policy])

    # ---- attributions -------------------------------------------------------------
    def write_attributions(self, rows: pd.DataFrame) -> None:
        """Insert or replace attribution rows (keyed by run, model, case and method) in one transaction."""
        if rows.empty:
            return
        con = self.con
        columns = [c for c in self._columns("attributions") if c != "created_at"]
        with self.transaction():
            con.register("new_attr", as_rows(rows, columns))
            con.execute("""DELETE FROM attributions a USING new_attr n WHERE a.run_id = n.run_id
                           AND a.model = n.model AND a.case_id = n.case_id AND a.method = n.method""")
            con.execute(f"INSERT INTO attributions ({', '.join(columns)}, created_at) "
                        f"SELECT {', '.join(columns)}, now() FROM new_attr")
            con.unregister("new_attr")

    def read_attributions(self, run_id: str, model: str | None = None, case_id: str | None = None) -> pd.DataFrame:
        return self.con.execute(
            """SELECT * FROM attributions WHERE run_id = ? AND (? IS NULL OR model = ?)
               AND (? IS NULL OR case_id = ?) ORDER BY model, case_id, method""",
            [run_id, model, model, case_id, case_id]).df()


    # ---- scores of new cases (python -m trainer predict) ------------------------------
    def write_scores(self, run_id: str, dataset: str, rows: pd.DataFrame) -> None:
        """Replace the run's scores of ``dataset`` with ``rows`` (one per model and case), in one transaction."""
        con = self.con
        columns = [c for c in self._columns("scores") if c not in ("run_id", "dataset", "scored_at")]
        with self.transaction():
            con.execute("DELETE FROM scores WHERE run_id = ? AND dataset = ?", [run_id, dataset])
            con.register("new_scores", as_rows(rows, columns))
            con.execute(f"INSERT INTO scores (run_id, dataset, {', '.join(columns)}, scored_at) "
                        f"SELECT ?, ?, {', '.join(columns)}, now() FROM new_scores", [run_id, dataset])
            con.unregister("new_scores")

    def read_scores(self, run_id: str, dataset: str, model: str | None = None) -> pd.DataFrame:
        return self.con.execute(
            """SELECT * FROM scores WHERE run_id = ? AND dataset = ? AND (? IS NULL OR model = ?)
               ORDER BY model, case_id""", [run_id, dataset, model, model]).df()

    # ---- shift reports (python -m trainer shift) -------------------------------------------
    def write_shift(self, run_id: str, dataset: str, clinic: str, model: str, rows: pd.DataFrame,
                    corrections: pd.DataFrame | None = None) -> None:
        """Replace the run's shift report of one clinic and model (and the judgement of the
        label-free corrections, where the clinic has labels), in one transaction."""
        con = self.con
        keys = [run_id, dataset, clinic, model]
        with self.transaction():
            for table, frame in (("shift", rows), ("corrections", corrections)):
                con.execute(f"DELETE FROM {table} WHERE run_id = ? AND dataset = ? AND clinic = ? AND model = ?",
                            keys)
                if frame is None or frame.empty:
                    continue
                columns = [c for c in self._columns(table)
                           if c not in ("run_id", "dataset", "clinic", "model", "created_at")]
                con.register("new_rows", as_rows(frame, columns))
                con.execute(f"INSERT INTO {table} (run_id, dataset, clinic, model, {', '.join(columns)}, created_at) "
                            f"SELECT ?, ?, ?, ?, {', '.join(columns)}, now() FROM new_rows", keys)
                con.unregister("new_rows")

    def read_corrections(self, run_id: str, clinic: str | None = None) -> pd.DataFrame:
        if not self._columns("corrections"):  # a read-only store of an older schema
            return pd.DataFrame()
        return self.con.execute(
            """SELECT * FROM corrections WHERE run_id = ? AND (? IS NULL OR clinic = ?)
               ORDER BY dataset, clinic, model, correction, metric, slice_value""", [run_id, clinic, clinic]).df()

    def read_shift(self, run_id: str, clinic: str | None = None) -> pd.DataFrame:
        if not self._columns("shift"):  # a read-only store of an older schema
            return pd.DataFrame()
        return self.con.execute(
            """SELECT * FROM shift WHERE run_id = ? AND (? IS NULL OR clinic = ?)
               ORDER BY dataset, clinic, model, metric, slice_value""", [run_id, clinic, clinic]).df()

    # ---- local recalibration (python -m trainer adapt) ----------------------------------
    def write_variant(self, record: dict, predictions: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> None:
        """Store an adapted variant: its ``adaptations`` record, its predictions (the clinic's
        cases not used to adapt) and its post-hoc tables under the model name ``variant``,
        replacing a variant of that name, in one transaction."""
        con, run_id, variant = self.con, record["run_id"], record["variant"]
        with self.transaction():
            for table in ("adaptations", "predictions", *tables):
                column = "variant" if table == "adaptations" else "model"
                con.execute(f"DELETE FROM {table} WHERE run_id = ? AND {column} = ?", [run_id, variant])
            frames = {"adaptations": pd.DataFrame([record]).assign(created_at=pd.Timestamp.now()),
                      "predictions": predictions.assign(run_id=run_id, model=variant),
                      **{t: df.assign(run_id=run_id, model=variant) for t, df in tables.items()}}
            for table, df in frames.items():
                if df.empty:
                    continue
                columns = self._columns(table)
                con.register("new_rows", as_rows(df, columns))
                con.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM new_rows")
                con.unregister("new_rows")

    def read_adaptations(self, run_id: str) -> pd.DataFrame:
        if not self._columns("adaptations"):  # a read-only store of an older schema
            return pd.DataFrame()
        return self.con.execute("SELECT * FROM adaptations WHERE run_id = ? ORDER BY created_at",
                                [run_id]).df()

    def write_curve(self, run_id: str, dataset: str, clinic: str, model: str, select: str,
                    rows: pd.DataFrame) -> None:
        """Replace a run's learning curve of one clinic, model and way of drawing cases."""
        con = self.con
        keys = [run_id, dataset, clinic, model, select]
        with self.transaction():
            con.execute("""DELETE FROM adaptation_curve WHERE run_id = ? AND dataset = ? AND clinic = ?
                           AND model = ? AND select_method = ?""", keys)
            columns = [c for c in self._columns("adaptation_curve")
                       if c not in ("run_id", "dataset", "clinic", "model", "select_method", "created_at")]
            con.register("new_curve", as_rows(rows, columns))
            con.execute(f"""INSERT INTO adaptation_curve (run_id, dataset, clinic, model, select_method,
                                {', '.join(columns)}, created_at)
                            SELECT ?, ?, ?, ?, ?, {', '.join(columns)}, now() FROM new_curve""", keys)
            con.unregister("new_curve")

    def read_curve(self, run_id: str, clinic: str | None = None) -> pd.DataFrame:
        if not self._columns("adaptation_curve"):  # a read-only store of an older schema
            return pd.DataFrame()
        return self.con.execute(
            """SELECT * FROM adaptation_curve WHERE run_id = ? AND (? IS NULL OR clinic = ?)
               ORDER BY dataset, clinic, model, select_method, metric, slice, slice_value, k""",
            [run_id, clinic, clinic]).df()
