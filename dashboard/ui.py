"""Widgets every page shares: the store check, the run picker and query-parameter state.

State that matters lives in the URL (``?run=...&model=...``) so a shared link reopens the
same view; session keys are namespaced by page.
"""
from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from dashboard import queries

MODELS = ("text_only", "image_only", "late_fusion", "cross_attention", "unified")


def store_or_stop() -> tuple[str, float]:
    path = queries.db_path()
    version = queries.store_version(path)
    if version is None:
        st.info(f"No store at `{path}` yet. Run `./run.sh` to simulate DermSynth-14k, ingest it and train, or "
                f"`python -m data_store ingest --db {path} ...` and `python -m trainer fit` for your own data.")
        st.stop()
    return str(path), version


def run_or_stop(path: str, version: float) -> pd.Series:
    """The run named by the `run` query parameter (default: the newest complete one)."""
    try:
        runs = queries.runs(path, version)
    except queries.StoreError as exc:
        st.error(str(exc))
        st.stop()
    if runs.empty:
        st.info("The store holds no complete run yet. Train one with `./run.sh fit` or "
                "`python -m trainer fit --dataset NAME`.")
        st.stop()
    ids = runs["run_id"].tolist()
    wanted = st.query_params.get("run", ids[0])
    run_id = st.sidebar.selectbox("Run", ids, index=ids.index(wanted) if wanted in ids else 0, key="run")
    st.query_params["run"] = run_id
    run = runs.set_index("run_id").loc[run_id]
    datasets = queries.datasets(path, version).set_index("dataset")
    if run["dataset"] in datasets.index and datasets.loc[run["dataset"], "simulated"]:
        st.sidebar.warning("Simulated data (DermSynth): results test the pipeline; they are not clinical evidence.")
    return pd.Series({**run.to_dict(), "run_id": run_id})


def choose(label: str, options: list, param: str, default=None, where=st.sidebar):
    """A selectbox whose value lives in the query parameter ``param``."""
    options = list(options)
    wanted = st.query_params.get(param, default if default in options else options[0])
    value = where.selectbox(label, options, index=options.index(wanted) if wanted in options else 0, key=param)
    st.query_params[param] = value
    return value


def plain(value) -> str:
    """``value`` as literal text inside Markdown (st.caption, st.error, metric values, labels):
    every ASCII punctuation mark escaped, so a clinic, label or note that holds Markdown, HTML,
    a link, an image or a Streamlit directive (``:red[...]``) is shown as typed, never rendered."""
    text = " ".join(str(value).split())  # one line: a newline could start a Markdown block
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


def interval(value, low, high, digits: int = 3) -> str:
    if pd.isna(value):
        return "n/a"
    if pd.isna(low) or pd.isna(high):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
