"""Pure table shaping for the Error analysis page: the largest flagged gaps over every slice
family and key metric, and a skin type x category table of one measure. No reads."""
from __future__ import annotations

import numpy as np
import pandas as pd

from dashboard import words
from data_store.fitzpatrick import fitzpatrick_group, fitzpatrick_label
from trainer.posthoc.replay import decide

KEY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "category_accuracy", "missed_urgent_rate",
               "accepted_accuracy", "defer_rate", "ece", "conformal_coverage")
SPLIT_ORDER = ("calib", "val", "test")


def ranked_gaps(metrics: pd.DataFrame, metrics_kept=KEY_METRICS) -> pd.DataFrame:
    """Every flagged gap (its 95% interval excludes 0, its group has at least 30 cases) of
    the key metrics over every slice family and split, largest first (by its size)."""
    m = metrics[metrics["flagged"].fillna(False).astype(bool) & metrics["metric"].isin(metrics_kept)
                & (metrics["slice"] != "overall")]
    m = m.assign(size=m["gap"].abs()).sort_values(["size", "split", "slice", "slice_value"],
                                                  ascending=[False, True, True, True])
    return pd.DataFrame({"split": m["split"], "by": m["slice"].map(words.name), "group": m["slice_value"],
                         "metric": m["metric"].map(words.name), "value": m["value"], "95% low": m["ci_low"],
                         "95% high": m["ci_high"], "gap": m["gap"], "gap 95% low": m["gap_low"],
                         "gap 95% high": m["gap_high"], "best-served group": m["gap_reference"],
                         "cases": m["n"]}).reset_index(drop=True)


GAP_NUMBERS = ("value", "95% low", "95% high", "gap", "gap 95% low", "gap 95% high")


MEASURES = ("accuracy", "reviewed", "urgent missed")


def tone_by_category(preds: pd.DataFrame, model: str, threshold: float, per_group: dict[str, float],
                     urgent: tuple[str, ...], measure: str) -> pd.DataFrame:
    """Per split, Fitzpatrick type and true category: ``measure`` (the share right, the share
    reviewed at the operating point, or the share of urgent patients missed and not reviewed:
    urgent categories only), its cases and a cell label."""
    p = preds[(preds["model"] == model) & preds["split"].isin(SPLIT_ORDER)]
    deferred = decide((threshold, per_group), p["defer_score"].to_numpy(),
                      np.asarray(fitzpatrick_group(p["fitzpatrick"])))
    value = {"accuracy": p["y_true"] == p["y_pred"], "reviewed": pd.Series(deferred, index=p.index),
             "urgent missed": ~p["y_pred"].isin(urgent) & ~pd.Series(deferred, index=p.index)}[measure]
    keep = p["y_true"].isin(urgent) if measure == "urgent missed" else pd.Series(True, index=p.index)
    frame = pd.DataFrame({"split": p["split"], "type": p["fitzpatrick"], "category": p["y_true"],
                          "value": value.astype(float)})[keep]
    out = frame.groupby(["split", "type", "category"], dropna=False)["value"].agg(["mean", "size"]).reset_index()
    out = out.rename(columns={"mean": measure, "size": "n"})
    out["order"] = out["split"].map({s: i for i, s in enumerate(SPLIT_ORDER)})
    out = out.sort_values(["order", "type", "category"], na_position="last").drop(columns="order")
    out["fitzpatrick"] = out["type"].map(fitzpatrick_label)
    out["label"] = [f"{v:.0%} ({n})" for v, n in zip(out[measure], out["n"])]
    out["split"] = out["split"].map(words.SPLIT_NAMES)
    return out.drop(columns="type").reset_index(drop=True)
