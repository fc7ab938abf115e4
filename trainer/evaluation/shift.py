"""Label-free signs that a new clinic differs from the training clinics. NumPy and scikit-learn.

- ``domain_auroc``: how well a classifier tells the new clinic's cases from the training
  clinics' (AUROC on held-out folds, with a bootstrap interval); 0.5 means it cannot.
- ``bbse_class_mix`` (black-box shift estimation, Lipton et al. 2018, on probabilities) and
  ``em_class_mix`` (Saerens et al. 2002): the new clinic's class mix from the model's outputs alone, valid
  under label shift (the classes' look unchanged, only their shares move).
Each estimate comes with a 95% percentile interval from resampling the new clinic's cases
(and, for BBSE, the calib cases behind its confusion matrix). ``shift_rows`` puts them
together with rates the training clinics can be compared on (deferral, distance to the
training data, photo quality, empty notes) and a plain verdict.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import nnls
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True)
class Estimate:
    value: np.ndarray | float
    ci_low: np.ndarray | float
    ci_high: np.ndarray | float


def _interval(replicates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.nanpercentile(replicates, 2.5, axis=0), np.nanpercentile(replicates, 97.5, axis=0)


def domain_auroc(source: np.ndarray, target: np.ndarray, seed: int = 0, folds: int = 2, n_boot: int = 1000,
                 max_per_side: int = 4000) -> Estimate:
    """How well a logistic regression (features standardised) tells ``target`` rows (the new
    clinic) from ``source`` rows (the training clinics): the mean over ``folds`` stratified
    folds of the AUROC on the fold it never saw, each side subsampled to ``max_per_side``.
    Each fold is scored on its own (AUROCs pooled across folds' models lean below 0.5 on
    data with no shift); the interval resamples the cases of every fold."""
    rng = np.random.default_rng(seed)
    source = source[rng.permutation(len(source))[:max_per_side]]
    target = target[rng.permutation(len(target))[:max_per_side]]
    x = np.vstack([source, target]).astype(np.float64)
    is_target = np.r_[np.zeros(len(source), bool), np.ones(len(target), bool)]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"))
    scored = []  # (labels, scores) of each fold, from the model fitted on the others
    for fit_idx, out_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, is_target):
        scored.append((is_target[out_idx], model.fit(x[fit_idx], is_target[fit_idx]).predict_proba(x[out_idx])[:, 1]))
    value = float(np.mean([roc_auc_score(t, s) for t, s in scored]))
    reps = np.empty(n_boot)
    for b in range(n_boot):
        aucs = []
        for t, s in scored:
            i = rng.integers(0, len(t), len(t))
            aucs.append(roc_auc_score(t[i], s[i]) if 0 < t[i].sum() < len(i) else np.nan)
        reps[b] = np.mean(aucs)
    low, high = _interval(reps)
    return Estimate(value, float(low), float(high))


def _bbse(probs_calib: np.ndarray, y_calib: np.ndarray, probs_target: np.ndarray) -> np.ndarray:
    """Class shares q solving C w = mu with the model's probabilities (soft BBSE:
    C[i, j] = E_calib[p_i(x) 1(y = j)], mu the target's mean probabilities), w >= 0,
    q = w * p_calib(y), normalised. The soft confusion matrix varies less than counts of
    hard predictions on a calib split of a few hundred cases."""
    k = probs_calib.shape[1]
    joint = np.stack([probs_calib[y_calib == j].sum(0) for j in range(k)], axis=1) / len(y_calib)
    w, _ = nnls(joint, probs_target.mean(0))
    q = w * joint.sum(0)
    return q / q.sum() if q.sum() > 0 else np.full(k, 1 / k)


def bbse_class_mix(probs_calib: np.ndarray, y_calib: np.ndarray, probs_target: np.ndarray, seed: int = 0,
                   n_boot: int = 1000) -> Estimate:
    """The target's class shares by soft BBSE (Lipton et al. 2018) on calibrated probabilities."""
    rng = np.random.default_rng(seed)
    nc, nt = len(y_calib), len(probs_target)
    reps = np.array([_bbse(probs_calib[i], y_calib[i], probs_target[j]) for i, j in
                     ((rng.integers(0, nc, nc), rng.integers(0, nt, nt)) for _ in range(n_boot))])
    low, high = _interval(reps)
    return Estimate(_bbse(probs_calib, y_calib, probs_target), low, high)


def _em(probs: np.ndarray, prior_source: np.ndarray, iterations: int = 200, tol: float = 1e-8) -> np.ndarray:
    """Saerens et al.: reweight each case's calibrated probabilities by q / p_source and
    average them into q, until q stops moving."""
    q = prior_source.copy()
    for _ in range(iterations):
        post = probs * (q / prior_source)
        post /= post.sum(1, keepdims=True)
        new = post.mean(0)
        if np.abs(new - q).max() < tol:
            return new
        q = new
    return q


def em_class_mix(probs_target: np.ndarray, prior_source: np.ndarray, seed: int = 0, n_boot: int = 1000) -> Estimate:
    """The target's class shares by EM on calibrated probabilities; ``prior_source``: the
    class shares the probabilities were calibrated under (calib's)."""
    prior = np.clip(np.asarray(prior_source, float), 1e-6, None)
    prior /= prior.sum()
    rng = np.random.default_rng(seed)
    reps = np.array([_em(probs_target[rng.integers(0, len(probs_target), len(probs_target))], prior)
                     for _ in range(n_boot)])
    low, high = _interval(reps)
    return Estimate(_em(probs_target, prior), low, high)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion k / n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (
        1 + z * z / n)
    return float(centre - half), float(centre + half)


@dataclass
class ShiftInputs:
    """What the report compares: the training clinics' ``calib`` cases (no model or encoder
    trained on them) against the new clinic's cases. Signals: train_distance,
    photo_sharpness, photo_overexposed, note_missing, one row per case."""

    photo_calib: np.ndarray  # (n_calib, d) each case's mean image token, unit length
    photo_new: np.ndarray
    note_calib: np.ndarray  # (n_calib, d) each note's mean token, unit length
    note_new: np.ndarray
    probs_calib: np.ndarray  # (n_calib, k) calibrated
    y_calib: np.ndarray
    probs_new: np.ndarray  # (n_new, k) calibrated
    signals_calib: pd.DataFrame
    signals_new: pd.DataFrame
    deferred_calib: np.ndarray  # (n_calib,) bool under the default policy
    deferred_new: np.ndarray


def shift_rows(x: ShiftInputs, classes: list[str], seed: int = 0, n_boot: int = 1000) -> pd.DataFrame:
    """The label-free shift report: one row per figure (metric, slice_value, value, ci_low,
    ci_high, reference: the training clinics' value, n), then the verdict (detail)."""
    rows = []
    for name, (a, b) in {"photo": (x.photo_calib, x.photo_new), "note": (x.note_calib, x.note_new)}.items():
        e = domain_auroc(a, b, seed, n_boot=n_boot)
        rows.append({"metric": "domain_auroc", "slice_value": name, "value": e.value, "ci_low": e.ci_low,
                     "ci_high": e.ci_high, "reference": 0.5, "n": len(b)})
    prior = np.bincount(x.y_calib, minlength=len(classes)) / len(x.y_calib)
    for method, e in (("class_share_bbse", bbse_class_mix(x.probs_calib, x.y_calib, x.probs_new, seed, n_boot)),
                      ("class_share_em", em_class_mix(x.probs_new, prior, seed, n_boot))):
        rows += [{"metric": method, "slice_value": c, "value": float(e.value[i]), "ci_low": float(e.ci_low[i]),
                  "ci_high": float(e.ci_high[i]), "reference": float(prior[i]), "n": len(x.probs_new)}
                 for i, c in enumerate(classes)]
    old, new = x.signals_calib, x.signals_new
    rates = {"defer_rate": (x.deferred_calib, x.deferred_new),
             "far_from_training": _beyond(old["train_distance"], new["train_distance"]),
             "blurred_photo": _beyond(-old["photo_sharpness"], -new["photo_sharpness"]),
             "overexposed_photo": _beyond(old["photo_overexposed"], new["photo_overexposed"]),
             "empty_note": (old["note_missing"].to_numpy(bool), new["note_missing"].to_numpy(bool))}
    for metric, (ref, now) in rates.items():
        low, high = wilson(int(now.sum()), len(now))
        rows.append({"metric": metric, "slice_value": "all", "value": float(now.mean()), "ci_low": low,
                     "ci_high": high, "reference": float(ref.mean()), "n": len(now)})
    table = pd.DataFrame(rows)
    reasons = verdict_reasons(table)
    detail = ("Calibration is likely to hold: no label-free sign of a shift." if not reasons else
              "Calibration is unlikely to hold: " + "; ".join(reasons) + ". Validate on labelled local cases first.")
    return pd.concat([table, pd.DataFrame([{"metric": "verdict", "slice_value": "all", "value": float(bool(reasons)),
                                            "n": len(x.probs_new), "detail": detail}])], ignore_index=True)


def _beyond(calib, new, percentile: float = 95) -> tuple[np.ndarray, np.ndarray]:
    """Whether each case lies beyond calib's ``percentile`` (calib's own rate: 1 - percentile/100)."""
    cut = np.percentile(np.asarray(calib, float), percentile)
    return np.asarray(calib, float) > cut, np.asarray(new, float) > cut


def verdict_reasons(table) -> list[str]:
    """Plain reasons a report gives for doubting the training clinics' calibration."""
    reasons = []
    for r in table[table["metric"] == "domain_auroc"].itertuples():
        if r.ci_low > 0.6:
            what = "photos look" if r.slice_value == "photo" else "notes read"
            reasons.append(f"{what} different from the training clinics' (a classifier tells them apart, AUROC "
                           f"{r.value:.2f})")
    em = table[table["metric"] == "class_share_em"]
    moved = em[((em["value"] - em["reference"]).abs() > 0.05) & ((em["ci_low"] > em["reference"])
                                                                 | (em["ci_high"] < em["reference"]))]
    if len(moved):  # a real change of mix, or the model reading these cases differently: EM cannot tell
        reasons.append("the model's outputs imply another class mix (" + ", ".join(
            f"{r.slice_value} {r.reference:.0%} -> {r.value:.0%}" for r in moved.itertuples())
            + "; a real change, or the model reading these cases differently)")
    for metric, words in (("far_from_training", "of cases lie far from the training data"),
                          ("defer_rate", "of cases would be deferred"),
                          ("blurred_photo", "of photos are blurred"), ("empty_note", "of notes are empty")):
        r = table[table["metric"] == metric].iloc[0]
        if r["ci_low"] > r["reference"] + 0.02 or r["ci_high"] < r["reference"] - 0.02:
            reasons.append(f"{r['value']:.0%} {words} ({r['reference']:.0%} at the training clinics)")
    return reasons
