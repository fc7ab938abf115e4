"""Numbers as the document and the dashboard write them: one format for each kind."""
from __future__ import annotations

import pandas as pd


def p3(x) -> str:
    """0.123 (three decimals), or n/a."""
    return "n/a" if pd.isna(x) else f"{x:.3f}"


def pct(x) -> str:
    """12.3% from 0.123, or n/a."""
    return "n/a" if pd.isna(x) else f"{100 * x:.1f}%"


def interval(value, low=None, high=None) -> str:
    """'0.700 (0.650 to 0.750)': a value with its 95% interval; the value alone where there is none."""
    if pd.isna(value):
        return "n/a"
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return p3(value)
    return f"{p3(value)} ({p3(low)} to {p3(high)})"


def ci(row) -> str:
    """``interval`` of a metrics row (value, ci_low, ci_high)."""
    return interval(row["value"], row.get("ci_low"), row.get("ci_high"))
