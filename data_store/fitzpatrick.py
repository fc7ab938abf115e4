"""Fitzpatrick skin types: parsing what manifests say and naming them, in one place."""
from __future__ import annotations

import math
import re

ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}
_FROM_ROMAN = {v: k for k, v in ROMAN.items()}


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
