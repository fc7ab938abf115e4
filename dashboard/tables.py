"""Pure table shaping for pages: stored rows in, display frames out. No reads."""
from __future__ import annotations

import pandas as pd

from dashboard import words
from data_store.fitzpatrick import fitzpatrick_label
from trainer.config import MODEL_NAMES
from trainer.evaluation.audit import SLICE_FAMILIES
from trainer.evaluation.metrics import confusion_matrix
from trainer.evaluation.selection import select_model

HEADLINE = ("macro_f1", "accuracy", "ece", "defer_rate", "accepted_accuracy", "missed_urgent_rate")
PERCENT = {"defer_rate": "{:.1%}", "coverage": "{:.1%}", "accepted_accuracy": "{:.1%}",
           "missed_urgent_rate": "{:.1%}"}


def with_interval(df: pd.DataFrame) -> pd.Series:
    """Each row's value with its 95% interval, as text."""
    if not len(df):
        return pd.Series(dtype=str)
    return df.apply(lambda r: words.with_interval(r["value"], r["ci_low"], r["ci_high"], r["metric"]), axis=1)


def _pivot(rows: pd.DataFrame, index, columns: str) -> pd.DataFrame:
    return rows.assign(shown=with_interval(rows)).pivot_table(index=index, columns=columns, values="shown",
                                                              aggfunc="first")


def _model_order(index) -> list[str]:
    return [m for m in MODEL_NAMES if m in index] + [m for m in index if m not in MODEL_NAMES]


def headline(metrics: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Models x headline metrics (value with its 95% interval) on the overall slice of a split."""
    m = metrics[(metrics["split"] == split) & (metrics["slice"] == "overall") & metrics["metric"].isin(HEADLINE)]
    table = _pivot(m, "model", "metric")
    return table.reindex(index=_model_order(table.index), columns=[c for c in HEADLINE if c in table.columns])


def overall(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One metric's overall rows, one per model (as ``group``, for interval charts)."""
    rows = metrics[(metrics.slice == "overall") & (metrics.metric == metric)]
    return rows.rename(columns={"model": "group"})


def chosen_model(val_metrics: pd.DataFrame) -> str:
    """The run's model as the selection rule picks it on val (``trainer.evaluation.selection``)."""
    return select_model(val_metrics).model


def value_of(rows: pd.DataFrame, group: str, metric: str = "") -> str:
    """One group's value in ``overall`` rows, as text in ``words.number``'s format (n/a where
    the split has none)."""
    picked = rows[rows["group"] == group]["value"]
    return words.number(picked.iloc[0], metric) if len(picked) else "n/a"


def by_category(metrics: pd.DataFrame) -> pd.DataFrame:
    """Models x true category: accuracy (recall) with intervals."""
    return _pivot(metrics[metrics.metric == "category_accuracy"], "model", "slice_value")


def comparisons(comp: pd.DataFrame) -> pd.DataFrame:
    out = comp.assign(difference=with_interval(comp), metric=comp["metric"].map(words.name))
    return out[["model", "baseline", "metric", "difference", "n"]]


def confusion(preds: pd.DataFrame, model: str, split: str, classes: list[str], kept=None) -> pd.DataFrame:
    """Long table (true, predicted, n) of one model's confusion matrix on a split; ``kept``
    (a function of the model's rows, True for the cases it decides alone): after deferral."""
    p = preds[(preds.model == model) & (preds.split == split)]
    p = p[kept(p)] if kept is not None else p
    cm = confusion_matrix(p["y_true"].map(classes.index), p["y_pred"].map(classes.index), len(classes))
    return pd.DataFrame([{"true": classes[i], "predicted": classes[j], "n": int(cm[i, j])}
                         for i in range(len(classes)) for j in range(len(classes))])


def ece_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Groups x (ece, ece_uncalibrated, defer_ece), with intervals where bootstrapped."""
    table = _pivot(metrics[metrics.metric.isin(["ece", "ece_uncalibrated", "defer_ece"])], "slice_value", "metric")
    return table.rename_axis(index="group", columns=None)


def reliability_groups(bins: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Calibrated and uncalibrated bins of each group, and the deferral score's bins under "defer"."""
    top = bins[bins.kind.isin(["calibrated", "uncalibrated"])]
    return {g: top[top.slice_value == g] for g in sorted(top["slice_value"].unique())}


def defer_bins(bins: pd.DataFrame) -> pd.DataFrame:
    return bins[bins.kind == "defer"]


def conformal_coverage(conf: pd.DataFrame) -> pd.DataFrame:
    """Per method (LAC, APS) and mode (one threshold, or one per skin-tone group), the share of
    cases whose prediction set holds the true category, per group."""
    table = conf.pivot_table(index=["method", "mode"], columns="slice_value", values="coverage").reset_index()
    table.columns.name = None
    return table.assign(method=table["method"].str.upper(),
                        mode=table["mode"].map({"mondrian": "per skin-tone group", "marginal": "one for all"}))


def slice_families(metrics: pd.DataFrame) -> list[str]:
    """Slice families of a metrics table: the standard ones first, then any extra column."""
    present = set(metrics["slice"])
    return [f for f in SLICE_FAMILIES if f in present] + sorted(present - set(SLICE_FAMILIES) - {"overall"})


def metric_names(metrics: pd.DataFrame, family: str) -> list[str]:
    return sorted(metrics[metrics.slice == family]["metric"].unique())


def slice_table(metrics: pd.DataFrame, family: str, metric: str) -> pd.DataFrame:
    """Rows of one metric for one slice family, ready to show and download."""
    rows = metrics[(metrics.slice == family) & (metrics.metric == metric)]
    cols = ["slice_value", "n", "value", "ci_low", "ci_high", "gap", "gap_low", "gap_high", "gap_reference",
            "too_small", "flagged"]
    out = rows[[c for c in cols if c in rows]].sort_values("slice_value").reset_index(drop=True)
    return out.rename(columns={"slice_value": "group"})


def slice_findings(table: pd.DataFrame) -> dict:
    """From a slice table: flagged groups, the reference group, and groups too small to judge."""
    reference = table["gap_reference"].dropna()
    return {"flagged": table[table["flagged"]]["group"].tolist(), "small": table[table["too_small"]]["group"].tolist(),
            "reference": reference.iloc[0] if len(reference) else None}


def handoff_sections(metrics: pd.DataFrame, calibrators: pd.DataFrame,
                     policies: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """The tables of the Handoff page, by title (held-out clinic only): what the page shows,
    and what its download holds (numbers in value, ci_low and ci_high columns)."""
    head = metrics[(metrics.split == "test") & (metrics.slice == "overall") & metrics.metric.isin(HEADLINE)]
    tone = metrics[(metrics.split == "test") & (metrics.slice == "fitzpatrick_group") &
                   metrics.metric.isin(["accuracy", "macro_f1", "ece", "defer_rate", "missed_urgent_rate"])]
    long = ["model", "slice_value", "metric", "value", "ci_low", "ci_high", "n"]
    policy_cols = ["model", "policy", "threshold", "defer_rate", "accepted_accuracy", "missed_urgent_rate"]
    return {
        "Held-out clinic, every model": (words.columns(headline(metrics)).reset_index(), head[long]),
        "Skin-tone groups on the held-out clinic": (
            words.columns(_pivot(tone, ["model", "slice_value"], "metric")).reset_index(), tone[long]),
        "Calibrators": (calibrators[["model", "method"]], calibrators[["model", "method"]]),
        "Deferral policies on the held-out clinic": (words.columns(policies[policy_cols]), policies[policy_cols]),
    }


def fitzpatrick_counts(counts: pd.DataFrame) -> pd.DataFrame:
    """Case counts with Fitzpatrick types named I..VI (unknown for blanks)."""
    return counts.assign(fitzpatrick=counts["fitzpatrick"].map(fitzpatrick_label))


def status_counts(runs: pd.DataFrame) -> str:
    """'2 interrupted, 1 failed': how many runs have each status."""
    return ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items())


def row(frame: pd.DataFrame, column: str, value) -> pd.Series:
    """The row of ``frame`` whose ``column`` is ``value``."""
    return frame.set_index(column).loc[value]
