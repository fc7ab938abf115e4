"""Fitzpatrick skin types: parsing what manifests say and naming them, in one place."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}
_FROM_ROMAN = {v: k for k, v in ROMAN.items()}
FITZPATRICK_GROUPS = {1: "I-II", 2: "I-II", 3: "III-IV", 4: "III-IV", 5: "V-VI", 6: "V-VI"}


def fitzpatrick_label(value) -> str:
    """1..6 -> 'I'..'VI'; None or NaN -> 'unknown'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    try:
        return ROMAN[int(value)]
    except (TypeError, ValueError, KeyError):
        return "unknown"


def parse_fitzpatrick(raw: str) -> tuple[int | None, str | None]:
    """1-6, Roman numerals or text such as 'type IV' -> (type or None, flag or None)."""
    text = raw.strip()
    if not text:
        return None, "fitzpatrick_unknown"
    token = re.sub(r"(?i)^(fitzpatrick|fst|skin)?\s*(type)?\s*", "", text).strip().upper()
    value = _FROM_ROMAN.get(token)
    if value is None and re.fullmatch(r"\d+(\.0+)?", token):
        value = int(float(token))
    if value is not None and 1 <= value <= 6:
        return value, None
    return None, f"fitzpatrick_unparsed:{text[:20]}"


def fitzpatrick_group(fitzpatrick) -> np.ndarray:
    """'I-II', 'III-IV', 'V-VI' or 'unknown' for each Fitzpatrick type 1..6 (NaN: unknown)."""
    return np.array([FITZPATRICK_GROUPS.get(int(f), "unknown") if pd.notna(f) else "unknown" for f in fitzpatrick],
                    dtype=object)


def fitzpatrick_type(fitzpatrick) -> np.ndarray:
    """'I'..'VI' or 'unknown' for each Fitzpatrick type 1..6 (NaN: unknown)."""
    return np.array([fitzpatrick_label(f) for f in fitzpatrick], dtype=object)
