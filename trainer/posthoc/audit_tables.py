"""The audit tables of one model: metrics per slice with patient-bootstrap intervals,
reliability bins, risk-coverage curves, and the paired comparisons of fusion models with
the single-modality baselines."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trainer.config import BASELINES
from trainer.evaluation import metrics as M
from data_store.fitzpatrick import fitzpatrick_group, fitzpatrick_type
from trainer.evaluation.audit import SLICE_FAMILIES, CaseOutcomes, audit_rows, bootstrap_slices
from trainer.posthoc.steps import SPLITS

GRID = np.linspace(0.01, 1.0, 100)  # coverages of the stored risk-coverage curves
CURVE_SLICES = ("overall", "fitzpatrick_group", "clinic")
POINT_SLICES = ("overall", "fitzpatrick_group", "clinic")


@dataclass(frozen=True)
class Scored:
    """One model's post-hoc outputs, one row per case in ``frame`` order (sorted by case_id)."""

    frame: pd.DataFrame  # case_id, split, y (class index), patient_id, fitzpatrick_group, clinic, ...
    probs_uncal: np.ndarray  # (n, n_classes)
    probs: np.ndarray  # (n, n_classes), calibrated
    defer_score: np.ndarray  # (n,)
    needs_review: np.ndarray  # (n,) bool: wrong, or a doubtful rule-out of urgent classes


def case_frame(preds: pd.DataFrame, cases: pd.DataFrame, classes: list[str], extra_columns=()) -> pd.DataFrame:
    """One model's predictions joined to the case columns the audit slices by, sorted by case_id."""
    c = cases.set_index("case_id")
    missing = [col for col in extra_columns if not c["extra"].map(lambda e: col in _json(e)).any()]
    if missing:
        raise ValueError(f"Audit columns {missing} are not in the dataset's extra columns.")
    f = preds.sort_values("case_id").reset_index(drop=True)
    f["y"] = f["y_true"].map({name: i for i, name in enumerate(classes)}).to_numpy()
    for col in ("patient_id", "clinic", "fitzpatrick", "note"):
        f[col] = c.loc[f["case_id"], col].to_numpy()
    f["fitzpatrick_group"] = fitzpatrick_group(f["fitzpatrick"])
    f["fitzpatrick_type"] = fitzpatrick_type(f["fitzpatrick"])
    for col in extra_columns:
        f[f"extra:{col}"] = c.loc[f["case_id"], "extra"].map(lambda e: _json(e).get(col)).to_numpy()
    return f


def _json(value) -> dict:
    return json.loads(value) if isinstance(value, str) else (value or {})


def audit_model(out: Scored, deferred: np.ndarray, sets: np.ndarray, urgent: np.ndarray, weights: dict,
                families: dict[str, np.ndarray], min_slice_n: int) -> tuple[dict[str, pd.DataFrame], dict]:
    """The model's audit tables (metrics, reliability_bins, risk_coverage) and its macro F1
    bootstrap replicates per split (for the paired comparisons). ``deferred``: the default
    policy's decisions (n,); ``sets``: the default conformal sets (n, n_classes);
    ``weights``: patient-bootstrap weights per split; ``families``: slice name -> (n,) values."""
    split = out.frame["split"].to_numpy()
    metric_rows, bins_rows, curve_rows, f1 = [], [], [], {}
    for s in SPLITS:
        m = split == s
        if not m.any():
            continue
        rows, f1[s] = _bootstrap_rows(out, m, deferred, sets, urgent, weights[s], families, min_slice_n)
        metric_rows += [rows.assign(split=s)] + _point_rows(out, m, s, families, min_slice_n)
        for fam in CURVE_SLICES:
            for value in sorted(set(families[fam][m])):
                g = m & (families[fam] == value)
                bins_rows += _bins(out, g, s, fam, value)
                curve_rows += _curve(out, g, s, fam, value)
    tables = {"metrics": pd.concat(metric_rows, ignore_index=True), "reliability_bins": pd.DataFrame(bins_rows),
              "risk_coverage": pd.DataFrame(curve_rows)}
    return tables, f1


def _bootstrap_rows(out: Scored, m, deferred, sets, urgent, weights, families, min_slice_n):
    """Metric rows with intervals for the cases ``m`` of one split, and its macro F1 replicates."""
    y = out.frame["y"].to_numpy()
    o = CaseOutcomes(y[m], out.probs[m], out.probs_uncal[m], deferred[m], urgent,
                     sets[m][np.arange(m.sum()), y[m]], sets[m].sum(1))
    reps = bootstrap_slices(o, weights, {k: v[m] for k, v in families.items()})
    rows = audit_rows(reps, min_slice_n)
    rows.loc[(rows["slice"] == "category") & (rows["metric"] == "accuracy"), "metric"] = "category_accuracy"
    return rows, reps[("overall", "all")]["macro_f1"]


def _point_rows(out: Scored, m, split: str, families, min_slice_n: int) -> list[pd.DataFrame]:
    """Metrics without intervals (ranking and deferral-score quality) per point slice."""
    rows = []
    for fam in POINT_SLICES:
        for value in sorted(set(families[fam][m])):
            g = m & (families[fam] == value)
            point = point_only_metrics(out, g)
            rows.append(pd.DataFrame(
                [{"split": split, "slice": fam, "slice_value": value, "metric": k, "value": v, "n": int(g.sum()),
                  "too_small": g.sum() < min_slice_n, "flagged": False} for k, v in point.items()]))
    return rows


def _bins(out: Scored, g: np.ndarray, split: str, fam: str, value: str) -> list[dict]:
    y = out.frame["y"].to_numpy()[g]
    kinds = {"calibrated": (out.probs[g].max(1), out.probs[g].argmax(1) == y),
             "uncalibrated": (out.probs_uncal[g].max(1), out.probs_uncal[g].argmax(1) == y),
             "defer": (out.defer_score[g], out.needs_review[g])}
    rows = []
    for kind, (conf, event) in kinds.items():
        b = M.reliability_bins(conf, event)
        for i in range(len(b["count"])):
            rows.append({"split": split, "kind": kind, "slice": fam, "slice_value": value, "bin": i,
                         "lower": b["lower"][i], "upper": b["upper"][i], "n": int(b["count"][i]),
                         "confidence": b["confidence"][i], "accuracy": b["accuracy"][i]})
    return rows


def _curve(out: Scored, g: np.ndarray, split: str, fam: str, value: str) -> list[dict]:
    """Risk when keeping the cases with the lowest defer score, at 1%..100% coverage."""
    correct = out.probs[g].argmax(1) == out.frame["y"].to_numpy()[g]
    rc = M.risk_coverage(correct, -out.defer_score[g])
    k = np.maximum(np.ceil(GRID * len(correct)).astype(int), 1) - 1
    return [{"split": split, "slice": fam, "slice_value": value, "coverage": float(GRID[i]), "risk": rc["risk"][j],
             "generalized_risk": rc["generalized_risk"][j], "threshold": -rc["threshold"][j]}
            for i, j in enumerate(k)]


def comparisons(f1: dict[str, dict[str, np.ndarray]], n: dict[str, int]) -> pd.DataFrame:
    """Paired bootstrap differences of macro F1: each fusion model minus each baseline."""
    rows = []
    for model, reps in f1.items():
        if model in BASELINES:
            continue
        for base in BASELINES:
            if base not in f1:
                continue
            for split, r in reps.items():
                diff = r - f1[base][split]
                lo, hi = np.nanpercentile(diff[1:], [2.5, 97.5])
                rows.append({"split": split, "model": model, "baseline": base, "metric": "macro_f1",
                             "value": float(diff[0]), "ci_low": float(lo), "ci_high": float(hi), "n": n[split]})
    return pd.DataFrame(rows)


def slice_families(frame: pd.DataFrame, extra_columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Slice family -> (n,) group of each case: the standard families, then the extra columns."""
    values = {"fitzpatrick": frame["fitzpatrick_type"], "fitzpatrick_group": frame["fitzpatrick_group"],
              "clinic": frame["clinic"], "category": frame["y_true"],
              "fitzpatrick_group x clinic": frame["fitzpatrick_group"] + " | " + frame["clinic"]}
    assert set(values) == set(SLICE_FAMILIES)  # the dashboard lists SLICE_FAMILIES
    fam = {"overall": np.full(len(frame), "all", dtype=object), **{k: v.to_numpy() for k, v in values.items()}}
    for col in extra_columns:
        fam[col] = frame[f"extra:{col}"].astype(str).to_numpy()
    return fam


def point_only_metrics(out: Scored, m: np.ndarray) -> dict[str, float]:
    y, p, s = out.frame["y"].to_numpy()[m], out.probs[m], out.defer_score[m]
    correct = p.argmax(1) == y
    return {"adaptive_ece": M.adaptive_ece(y, p), "classwise_ece": M.classwise_ece(y, p), "auroc": M.auroc_ovr(y, p),
            "aurc": M.aurc(correct, -s), "augrc": M.augrc(correct, -s),
            "defer_ece": M.binary_ece(s, out.needs_review[m]), "defer_auroc": M.binary_auroc(s, ~correct)}
