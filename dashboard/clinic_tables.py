"""Pure table shaping for the New clinic page: stored shift, curve, adaptation and
correction rows in, display frames out. No reads."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from trainer.evaluation.adaptation import smallest_k

PROMISES = {"urgent_caught": "Urgent cases caught (urgent_sensitivity)",
            "accepted_accuracy": "Accuracy of accepted cases (target_accuracy)",
            "defer_ece": "Deferral score calibration error (ECE)",
            "coverage": "Prediction sets cover the true category (per skin-tone group)"}
WORKLOAD = {"urgent_caught": "urgent_sensitivity", "accepted_accuracy": "target_accuracy"}
SHIFT_NAMES = {"domain_auroc": "Domain AUROC (0.5: alike)",
               "class_share_bbse": "Class share (BBSE)", "class_share_em": "Class share (EM)",
               "defer_rate": "Deferred under the default policy", "far_from_training": "Far from the training data",
               "blurred_photo": "Blurred photo", "overexposed_photo": "Overexposed photo", "empty_note": "Empty note"}


def shift_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The shift report's figures with their intervals, beside the training clinics' value."""
    order = {m: i for i, m in enumerate(SHIFT_NAMES)}
    r = rows[rows["metric"] != "verdict"].sort_values("metric", key=lambda m: m.map(order), kind="stable")
    return pd.DataFrame({"figure": r["metric"].map(SHIFT_NAMES).fillna(r["metric"]), "of": r["slice_value"],
                         "this clinic": r["value"].round(3),
                         "95% interval": [f"{lo:.3f} to {hi:.3f}" for lo, hi in zip(r["ci_low"], r["ci_high"])],
                         "training clinics": r["reference"].round(3), "cases": r["n"]}).reset_index(drop=True)


def promise_table(curve: pd.DataFrame) -> pd.DataFrame:
    """Each promise: its target, the run's own figure (k = 0), the smallest k at which it
    holds, and the figure and clinician workload there."""
    firsts = smallest_k(curve)
    rows = []
    for metric, label in PROMISES.items():
        c = curve[curve["metric"] == metric]
        if c.empty:
            continue
        k = firsts.get(metric, np.nan)
        at = c[c["k"] == k] if np.isfinite(k) else c.iloc[:0]
        work = curve[(curve["metric"] == "defer_rate") & (curve["slice_value"] == WORKLOAD.get(metric)) &
                     (curve["k"] == k)]
        rows.append({"promise": label, "target": c["target"].iloc[0],
                     "without local labels": _values(c[c["k"] == 0]),
                     "labels needed": "not reached by k = 400" if not np.isfinite(k) else f"{int(k)}",
                     "cases deferred there": f"{work['value'].iloc[0]:.0%}" if len(work) else "",
                     "there (mean over draws)": _values(at) if len(at) else ""})
    return pd.DataFrame(rows)


def _values(rows: pd.DataFrame) -> str:
    if len(rows) == 1:
        return f"{rows['value'].iloc[0]:.3f}"
    return ", ".join(f"{v} {x:.3f}" for v, x in zip(rows["slice_value"], rows["value"]))


def before_after(baseline, variant: pd.DataFrame, conf_variant: pd.DataFrame) -> pd.DataFrame:
    """Per skin-tone group, the run's model (``baseline``: the adaptation record's JSON of its
    policy and conformal rows on the same cases) and its adapted variant at the clinic: each
    policy's deferral, accepted accuracy and missed urgent rate, and the conformal coverage."""
    base = json.loads(baseline) if isinstance(baseline, str) else baseline
    keys = ["policy", "slice_value"]
    cols = ["defer_rate", "accepted_accuracy", "missed_urgent_rate"]
    b = pd.DataFrame(base["policies"]).set_index(keys)[cols].astype(float).add_suffix(" before")
    a = variant.set_index(keys)[cols].add_suffix(" after")
    table = b.join(a, how="inner").reset_index()
    cov = pd.DataFrame(base["conformal"]).set_index("slice_value")["coverage"].astype(float).rename(
        "coverage before").to_frame().join(conf_variant.set_index("slice_value")["coverage"].rename("coverage after"),
                                           how="inner")
    table = table.merge(cov, left_on="slice_value", right_index=True, how="left")
    order = [c for pair in zip([f"{c} before" for c in cols], [f"{c} after" for c in cols]) for c in pair]
    table = table[keys + order + ["coverage before", "coverage after"]].rename(columns={"slice_value": "skin tone"})
    return table.round(3)
