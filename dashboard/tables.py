"""Pure table shaping for pages: stored rows in, display frames out. No reads, no maths."""
from __future__ import annotations

import pandas as pd

HEADLINE = ("macro_f1", "accuracy", "ece", "defer_rate", "accepted_accuracy", "missed_urgent_rate")
MODEL_ORDER = ("text_only", "image_only", "late_fusion", "cross_attention", "unified")


def with_interval(df: pd.DataFrame, digits: int = 3) -> pd.Series:
    def fmt(r):
        if pd.isna(r["value"]):
            return "n/a"
        if pd.isna(r.get("ci_low")) or pd.isna(r.get("ci_high")):
            return f"{r['value']:.{digits}f}"
        return f"{r['value']:.{digits}f} [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]"
    return df.apply(fmt, axis=1) if len(df) else pd.Series(dtype=str)


def headline(metrics: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Models x headline metrics (value [95% CI]) on the overall slice of a split."""
    m = metrics[(metrics["split"] == split) & (metrics["slice"] == "overall") & metrics["metric"].isin(HEADLINE)]
    m = m.assign(shown=with_interval(m))
    table = m.pivot(index="model", columns="metric", values="shown")
    order = [x for x in MODEL_ORDER if x in table.index] + [x for x in table.index if x not in MODEL_ORDER]
    return table.reindex(index=order, columns=[c for c in HEADLINE if c in table.columns])


def slice_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows of one metric for one slice family, ready to show and download."""
    cols = ["slice_value", "n", "value", "ci_low", "ci_high", "gap", "gap_low", "gap_high", "gap_reference",
            "too_small", "flagged"]
    out = metrics[[c for c in cols if c in metrics]].sort_values("slice_value").reset_index(drop=True)
    return out.rename(columns={"slice_value": "group"})
