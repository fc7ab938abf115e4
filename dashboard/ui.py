"""Widgets every page shares: the page header (store check, simulated-data banner, run,
model and split pickers) and query-parameter state.

State that matters lives in the URL (``?run=...&model=...``) so a shared link reopens the
same view; session keys are namespaced by page.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from dashboard import exports, queries, words
from trainer.config import MODEL_NAMES

SPLITS = ("test", "val", "calib")  # test: the held-out clinic; val: the validation clinic; calib: training clinics
DEFAULT_MODEL = "late_fusion"


@dataclass(frozen=True)
class PageContext:
    """What the header resolved: the store, the run, and the model and split picked."""

    path: str
    version: float
    run: pd.Series
    model: str | None
    split: str | None

    def about(self, **more) -> dict:
        """What an export of this page holds (``exports``): the run, its dataset, whether it is
        simulated, and ``more`` (model, split, metric, threshold)."""
        return {"run_id": self.run["run_id"], "dataset": self.run["dataset"],
                "simulated": bool(queries.is_simulated(self.path, self.version, self.run["dataset"])), **more}


def header(title: str, caption: str | None = None, model: bool = True, split: bool = True) -> PageContext:
    """Page config, title, store check, run picker and banner, then the model and split
    pickers asked for (in the sidebar). Stops the page with guidance when there is nothing to show."""
    path, version = page_start(title, caption)
    run = run_or_stop(path, version)
    picked = model_picker(variants=queries.variants(path, version, run["run_id"])) if model else None
    return PageContext(path, version, run, picked,
                       choose("Split", SPLITS, "split") if split else None)


def page_start(title: str, caption: str | None = None) -> tuple[str, float]:
    """Page config and title, then the store (stops the page with guidance when there is none)."""
    st.set_page_config(page_title=title, layout="wide")
    st.title(title)
    if caption:
        st.caption(caption)
    return store_or_stop()


def model_picker(label: str = "Model", where=st.sidebar, variants=()) -> str:
    """The five models, then the run's adapted variants (``python -m trainer adapt``; judged
    on the held-out clinic only, so their figures are on ``test``)."""
    return choose(label, [*MODEL_NAMES, *variants], "model", default=DEFAULT_MODEL, where=where)


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
    runs = read_or_stop(queries.runs, path, version)
    if runs.empty:
        st.info("The store holds no complete run yet. Train one with `./run.sh fit` or "
                "`python -m trainer fit --dataset NAME`.")
        st.stop()
    run_id = choose("Run", runs["run_id"].tolist(), "run")
    run = runs.set_index("run_id").loc[run_id]
    if queries.is_simulated(path, version, run["dataset"]):
        st.sidebar.warning("Simulated data (DermSynth): results test the pipeline; they are not clinical evidence.")
    return pd.Series({**run.to_dict(), "run_id": run_id})


def read_or_stop(read, *args):
    """``read(*args)``, or the store's error on the page and nothing more."""
    try:
        return read(*args)
    except queries.StoreError as exc:
        st.error(str(exc))
        st.stop()


def choose(label: str, options, param: str, default=None, where=st.sidebar, format_func=str):
    """A selectbox whose value lives in the query parameter ``param`` and, so that it survives a
    change of page (Streamlit clears the query parameters then), in the session (``carried``)."""
    options = list(options)
    wanted = st.query_params.get(param, carried(param, default))
    wanted = wanted if wanted in options else default if default in options else options[0]
    value = where.selectbox(label, options, index=options.index(wanted), key=param, format_func=format_func)
    st.query_params[param] = st.session_state[f"carried.{param}"] = value
    return value


def carried(name: str, default=None):
    """A value a page left for the others (``choose`` and the Deferral page's operating point)."""
    return st.session_state.get(f"carried.{name}", default)


def carry(**values) -> None:
    for name, value in values.items():
        st.session_state[f"carried.{name}"] = value


def point_from_link() -> None:
    """A shared link's operating point (``?policy=NAME`` and ``?threshold=T``), when the
    session has none yet; a threshold that is not a number is refused with a warning."""
    if carried("point") is not None or not {"policy", "threshold"} & set(st.query_params):
        return
    point = {}
    if "threshold" in st.query_params:
        try:
            point["threshold"] = float(st.query_params["threshold"])
        except ValueError:
            st.warning(f"The link's threshold {plain(st.query_params['threshold'])} is not a number; it is ignored.")
    if "policy" in st.query_params:
        point["policy"] = st.query_params["policy"]
    if point:
        carry(point=point)


def glossary(*terms: str) -> None:
    """The page's glossary, folded, at the foot of the sidebar."""
    with st.sidebar.expander("Glossary"):
        st.markdown(words.glossary(terms))


def plain(value) -> str:
    """``value`` as literal text inside Markdown (st.caption, st.error, metric values, labels):
    every ASCII punctuation mark escaped, so a clinic, label or note that holds Markdown, HTML,
    a link, an image or a Streamlit directive (``:red[...]``) is shown as typed, never rendered."""
    text = " ".join(str(value).split())  # one line: a newline could start a Markdown block
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


def download_buttons(table: pd.DataFrame, stem: str, key: str, about: dict) -> None:
    """CSV and Markdown downloads of a table that say inside the file what they hold
    (``exports.csv``, ``exports.markdown``: run, model, split, metric, threshold, date, and
    whether the data are simulated)."""
    c1, c2 = st.columns(2)
    about = {**about, "exported_at": exports.now()}
    c1.download_button("Download CSV", exports.csv(table, about), f"{stem}.csv", "text/csv", key=f"{key}.csv")
    c2.download_button("Download Markdown", exports.markdown(table, about), f"{stem}.md", "text/markdown",
                       key=f"{key}.md")


# How ``table`` shows a column: (scale, printf format). Formatting by column configuration costs
# about 1 ms a table where a pandas Styler costs about 30 (measured on this page's tables).
KINDS = {"pct": (100, "%.1f%%"), "pts": (100, "%+.1f pts"), "p3": (1, "%.3f"), "int": (1, "%d"),
         "n0": (1, "%.0f")}


def table(frame: pd.DataFrame, kinds: dict[str, str], where=st, **kwargs):
    """``st.dataframe`` of ``frame`` with each column of ``kinds`` shown in its ``KINDS`` format
    (rates as percentages with one decimal: the values shown are the rates x 100)."""
    shown = frame.copy()
    config = {}
    for column, kind in kinds.items():
        if column in shown:
            scale, fmt = KINDS[kind]
            shown[column] = pd.to_numeric(shown[column], errors="coerce") * scale
            config[column] = st.column_config.NumberColumn(format=fmt)
    return where.dataframe(shown, column_config=config, hide_index=True, width="stretch", **kwargs)
