"""Every read the dashboard makes: cached, keyed on the store file and its change time,
and the only bridge between pages and the store."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from data_store.store import StoreError, TriageStore
from trainer.config import stored_default_policy
from trainer.uncertainty.operating_points import OperatingPoints, from_predictions


def db_path() -> Path:
    return Path(os.environ.get("TRIAGE_DB", "data/triage.duckdb"))


def store_version(path: Path) -> float | None:
    """Modification time of the store (and its WAL): part of every cache key."""
    if not path.exists():
        return None
    wal = path.with_name(path.name + ".wal")
    return max(path.stat().st_mtime, wal.stat().st_mtime if wal.exists() else 0.0)


@st.cache_data(show_spinner=False)
def datasets(path: str, version: float | None) -> pd.DataFrame:
    with TriageStore(path, read_only=True) as store:
        return store.list_datasets().drop(columns=["fingerprint"])


@st.cache_data(show_spinner=False)
def dataset_summary(path: str, version: float | None, dataset: str) -> dict[str, pd.DataFrame]:
    with TriageStore(path, read_only=True) as store:
        return {"clinic": store.count_cases(dataset, "clinic"),
                "fitzpatrick": store.count_cases(dataset, "fitzpatrick"),
                "label": store.count_cases(dataset, "label"),
                "rejected": store.count_rejected(dataset)}


@st.cache_data(show_spinner=False)
def is_simulated(path: str, version: float | None, dataset: str) -> bool:
    d = datasets(path, version).set_index("dataset")
    return bool(dataset in d.index and d.loc[dataset, "simulated"])


@st.cache_data(show_spinner=False)
def urgent_classes(path: str, version: float | None, dataset: str) -> tuple[str, ...]:
    urgent = datasets(path, version).set_index("dataset").loc[dataset, "urgent_classes"]
    return tuple(urgent) if urgent is not None else ()


def default_policy(run: pd.Series) -> str:
    """The policy behind a run's audit (its settings' default_policy)."""
    return stored_default_policy(run["config"])


@st.cache_data(show_spinner=False)
def runs(path: str, version: float | None) -> pd.DataFrame:
    """Complete runs of every dataset, newest first."""
    with TriageStore(path, read_only=True) as store:
        df = store.list_runs()
    return df[df["status"] == "complete"].reset_index(drop=True)


@st.cache_data(show_spinner=False)
def unfinished_runs(path: str, version: float | None) -> pd.DataFrame:
    """Runs that are not complete: running, interrupted (their process died) or failed."""
    with TriageStore(path, read_only=True) as store:
        df = store.list_runs()
    return df[df["status"] != "complete"][["run_id", "dataset", "status", "created_at", "error"]].reset_index(drop=True)


@st.cache_data(show_spinner=False)
def run_table(path: str, version: float | None, run_id: str, table: str, **where) -> pd.DataFrame:
    """One post-hoc table of a run (metrics, policies, conformal, ...), filtered by equality."""
    with TriageStore(path, read_only=True) as store:
        return store.read_table(table, run_id, **where)


@st.cache_data(show_spinner=False)
def predictions(path: str, version: float | None, run_id: str) -> pd.DataFrame:
    """A run's predictions with the case columns pages slice by (no notes, no patient ids)."""
    with TriageStore(path, read_only=True) as store:
        run = store.read_run(run_id)
        preds = store.read_predictions(run_id)
        cases = store.read_cases(run["dataset"]).set_index("case_id")
    for col in ("clinic", "fitzpatrick"):
        preds[col] = cases.loc[preds["case_id"], col].to_numpy()
    return preds.drop(columns=["probs_uncal"])


@st.cache_data(show_spinner=False)
def case(path: str, version: float | None, dataset: str, case_id: str) -> dict:
    with TriageStore(path, read_only=True) as store:
        return store.read_case(dataset, case_id)


@st.cache_data(show_spinner=False)
def attributions(path: str, version: float | None, run_id: str, model: str, case_id: str) -> pd.DataFrame:
    with TriageStore(path, read_only=True) as store:
        return store.read_attributions(run_id, model, case_id)


@st.cache_resource(show_spinner=False)
def operating_points(path: str, version: float | None, run_id: str, model: str, split: str,
                     urgent: tuple[str, ...]) -> OperatingPoints:
    """Deferral at any threshold for one model and split, sorted once and kept for the slider."""
    preds = predictions(path, version, run_id)
    return from_predictions(preds[(preds.model == model) & (preds.split == split)], urgent)


@st.cache_data(show_spinner=False)
def case_reasons(path: str, version: float | None, run_id: str, model: str, split: str) -> pd.DataFrame:
    """Why each case scores what it does on the deferral score, in words (the run's rules
    replayed on its stored predictions; empty for an adapted variant)."""
    from trainer.posthoc.case_reasons import case_reasons as reasons

    return reasons(path, run_id, model, split)


@st.cache_data(show_spinner=False)
def model_policies(path: str, version: float | None, run_id: str, model: str) -> pd.DataFrame:
    """A model's stored policies (overall rows), as fitted: on calib for a trained model; an
    adapted variant has its own, refitted on its clinic's labelled cases and stored on the
    split it is judged on."""
    with TriageStore(path, read_only=True) as store:
        rows = store.read_table("policies", run_id, model=model, slice="overall")
    if rows.empty:
        return rows
    first = "calib" if "calib" in set(rows["split"]) else sorted(set(rows["split"]))[0]
    return rows[rows["split"] == first].reset_index(drop=True)


def explain_now(path: str, run_id: str, model: str, case_id: str, target: str | None = None) -> pd.DataFrame:
    """Compute a case's attributions on demand (imports torch only now): stored for its
    predicted class, returned without storing for another ``target`` class."""
    from trainer.commands.explain import explain_case

    return explain_case(path, run_id, model, case_id, target=target)


def build_handoff(path: str, run_id: str, model: str | None = None,
                  policy: str | None = None) -> tuple[dict, dict[str, bytes]]:
    """Write the run's handoff document for ``model`` at ``policy`` into a temporary folder
    (imports the writer only now); returns write_report's summary and the bytes of
    handoff.pdf and handoff.md."""
    import tempfile

    from trainer.commands.report import write_report

    out = Path(tempfile.mkdtemp(prefix="handoff-"))
    result = write_report(path, run_id, out, policy, model)
    return result, {name: (out / name).read_bytes() for name in ("handoff.pdf", "handoff.md")}


@st.cache_data(show_spinner=False)
def new_clinic(path: str, version: float | None, run_id: str) -> dict[str, pd.DataFrame]:
    """A run's shift reports, learning curves, adapted variants and judged corrections
    (empty for a store written before they existed)."""
    with TriageStore(path, read_only=True) as store:
        return {"shift": store.read_shift(run_id), "curve": store.read_curve(run_id),
                "adaptations": store.read_adaptations(run_id), "corrections": store.read_corrections(run_id)}


def variants(path: str, version: float | None, run_id: str) -> list[str]:
    """The run's adapted variants (``python -m trainer adapt``), oldest first."""
    adaptations = new_clinic(path, version, run_id)["adaptations"]
    return adaptations["variant"].tolist() if len(adaptations) else []


def save_policy(path: str, run_id: str, model: str, name: str, rows: pd.DataFrame) -> None:
    with TriageStore(path) as store:
        store.write_policy(run_id, model, name, rows)


def delete_policy(path: str, run_id: str, model: str, name: str) -> None:
    with TriageStore(path) as store:
        store.delete_policy(run_id, model, name)


__all__ = ["StoreError", "db_path", "store_version", "datasets", "dataset_summary", "is_simulated", "urgent_classes",
           "default_policy", "runs", "unfinished_runs", "run_table", "predictions", "case", "attributions",
           "operating_points", "model_policies", "case_reasons", "explain_now", "build_handoff", "new_clinic",
           "variants", "save_policy", "delete_policy"]
