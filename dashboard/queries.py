"""Every read the dashboard makes: cached, keyed on the store file and its change time,
and the only bridge between pages and the store."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from data_store.store import StoreError, TriageStore


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


__all__ = ["StoreError", "db_path", "store_version", "datasets", "dataset_summary"]
