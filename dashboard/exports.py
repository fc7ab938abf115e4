"""Downloads that describe themselves: every CSV row and every Markdown file says which run,
model, split, metric and threshold it holds, when it was exported and whether the data are
simulated. Values stay numbers (value, ci_low, ci_high columns), never "0.562 [0.539, 0.583]".
Pure: no reads, no Streamlit."""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

ABOUT = ("run_id", "dataset", "simulated", "model", "split", "metric", "slice", "threshold", "exported_at")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _about(about: dict) -> dict:
    """The description's fields in ``ABOUT`` order ("all" where a table holds several)."""
    return {k: about.get(k, "all") for k in ABOUT if k in about or k in ("model", "split", "metric", "threshold")}


def csv(table: pd.DataFrame, about: dict) -> str:
    """The table with the description as its first columns, one value per row (a column the
    table already has, such as ``model``, keeps the table's own values)."""
    head = {k: v for k, v in _about(about).items() if k not in table.columns}
    return pd.concat([pd.DataFrame(head, index=table.index), table], axis=1).to_csv(index=False)


def markdown(table: pd.DataFrame, about: dict) -> str:
    """A header list of the description, then the table (rates and values to 3 decimals)."""
    head = "\n".join(f"- {k}: {v}" for k, v in _about(about).items())
    note = "\n\nSimulated data: results test the pipeline; they are not clinical evidence." \
        if about.get("simulated") else ""
    return f"{head}{note}\n\n{table.to_markdown(index=False, floatfmt='.3f')}\n"
