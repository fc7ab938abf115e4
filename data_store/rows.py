"""Frames shaped for the store's tables before they are written (no SQL here)."""
from __future__ import annotations

import json

import pandas as pd


def as_rows(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``df`` with exactly ``columns``, in that order: a missing column or value becomes NULL,
    and a dict (parameters, modality shares) becomes JSON text."""
    df = df.copy()
    for c in columns:
        if c not in df:
            df[c] = None
        elif df[c].map(lambda v: isinstance(v, dict)).any():
            df[c] = df[c].map(lambda v: json.dumps(v, default=float) if isinstance(v, dict)
                              else None if v is None or (isinstance(v, float) and v != v) else v)
    return df[columns]
