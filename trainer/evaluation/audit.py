"""The audit: metrics per slice (skin tone, clinic, category, ...) with 95% intervals
from a bootstrap that resamples patients, and each group's gap to the best-served one.

One mechanism for every slice and metric (after fairlearn's MetricFrame): each case
contributes a row of additive statistics (is it correct, its bin, its class, is it
deferred, ...); a resample is a vector of patient counts, so every metric of every
resample and group is a weighted sum, one matrix product per group. Row 0 of every
result holds the point estimate (all weights 1), rows 1.. the resamples. Intervals are
percentile intervals; the binned calibration errors are stored bias-corrected with a
recentred interval (``BIAS_CORRECTED``), so every interval holds its value. NumPy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trainer.evaluation.metrics import N_BINS, bin_index

# The slice families of every audit, in the order pages show them ("overall" aside).
SLICE_FAMILIES = ("fitzpatrick_group", "fitzpatrick", "clinic", "category", "fitzpatrick_group x clinic")
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "balanced_accuracy": True, "accepted_accuracy": True,
                    "category_accuracy": True, "ece": False, "ece_uncalibrated": False, "nll": False,
                    "brier": False, "defer_rate": False, "missed_urgent_rate": False}
# Coverage should sit at its target and set size trades against it: no "best" group.
NO_GAP = {"conformal_coverage", "conformal_set_size"}
# Binned calibration errors overstate the true error in small samples (noise inside a bin adds
# to |accuracy - confidence|) and a resample overstates it again, so their plug-in value can lie
# below its own percentile interval. They are stored bias-corrected (``_bias_corrected``).
BIAS_CORRECTED = {"ece", "ece_uncalibrated"}


@dataclass
class CaseOutcomes:
    """What the audit needs of one model on one split, one entry per case."""

    y_true: np.ndarray  # (n,) class index
    probs: np.ndarray  # (n, n_classes) calibrated
    probs_uncal: np.ndarray  # (n, n_classes) as the model gave them
    deferred: np.ndarray  # (n,) bool, at the default policy
    urgent: np.ndarray  # (n_classes,) bool: classes whose miss is urgent
    covered: np.ndarray  # (n,) bool: the conformal set holds the true class
    set_size: np.ndarray  # (n,) classes in the conformal set


def _bins_onehot(probs: np.ndarray, correct: np.ndarray) -> list[np.ndarray]:
    conf = probs.max(1)
    onehot = np.eye(N_BINS)[bin_index(conf, np.linspace(0, 1, N_BINS + 1))]
    return [onehot, onehot * conf[:, None], onehot * correct[:, None]]


def case_statistics(o: CaseOutcomes) -> tuple[np.ndarray, dict[str, slice]]:
    """(n, m) additive per-case statistics and the column range of each."""
    n, k = o.probs.shape
    pred = o.probs.argmax(1)
    correct = (pred == o.y_true).astype(float)
    true_1h, pred_1h = np.eye(k)[o.y_true], np.eye(k)[pred]
    urgent_true = o.urgent[o.y_true]
    missed = urgent_true & ~o.urgent[pred] & ~o.deferred
    blocks = {
        "count": np.ones((n, 1)), "correct": correct[:, None],
        "tp": true_1h * pred_1h, "true": true_1h, "pred": pred_1h,
        "nll": -np.log(np.clip(o.probs[np.arange(n), o.y_true], np.finfo(float).eps, 1))[:, None],
        "brier": ((o.probs - true_1h) ** 2).sum(1)[:, None],
        "deferred": o.deferred[:, None].astype(float),
        "accepted": (~o.deferred)[:, None].astype(float),
        "accepted_correct": (correct * ~o.deferred)[:, None],
        "urgent_true": urgent_true[:, None].astype(float), "missed": missed[:, None].astype(float),
        "covered": o.covered[:, None].astype(float), "set_size": o.set_size[:, None].astype(float),
    }
    for prefix, p in (("cal", o.probs), ("uncal", o.probs_uncal)):
        c = (p.argmax(1) == o.y_true).astype(float)
        blocks.update(zip((f"{prefix}_bin_n", f"{prefix}_bin_conf", f"{prefix}_bin_correct"), _bins_onehot(p, c)))
    layout, start = {}, 0
    for name, block in blocks.items():
        layout[name] = slice(start, start + block.shape[1])
        start += block.shape[1]
    return np.hstack(list(blocks.values())), layout


def metrics_from_sums(sums: np.ndarray, layout: dict[str, slice]) -> dict[str, np.ndarray]:
    """Every audit metric, (rows,), from weighted sums (rows, m) of case_statistics."""
    col = {name: sums[:, s] for name, s in layout.items()}
    one = {name: v[:, 0] for name, v in col.items() if v.shape[1] == 1}
    with np.errstate(invalid="ignore", divide="ignore"):
        count = one["count"]
        denom = col["true"] + col["pred"]
        f1 = np.where(denom > 0, 2 * col["tp"] / denom, np.nan)
        recall = np.where(col["true"] > 0, col["tp"] / col["true"], np.nan)
        out = {
            "count": count, "accuracy": one["correct"] / count,
            "macro_f1": _nanmean(f1), "balanced_accuracy": _nanmean(recall),
            "ece": np.abs(col["cal_bin_correct"] - col["cal_bin_conf"]).sum(1) / count,
            "ece_uncalibrated": np.abs(col["uncal_bin_correct"] - col["uncal_bin_conf"]).sum(1) / count,
            "nll": one["nll"] / count, "brier": one["brier"] / count,
            "defer_rate": one["deferred"] / count,
            "accepted_accuracy": one["accepted_correct"] / one["accepted"],
            "missed_urgent_rate": one["missed"] / one["urgent_true"],
            "conformal_coverage": one["covered"] / count, "conformal_set_size": one["set_size"] / count,
        }
    out["ece"][count == 0] = out["ece_uncalibrated"][count == 0] = np.nan
    return out


def _nanmean(x: np.ndarray) -> np.ndarray:
    present = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present.any(1), np.nansum(x, 1) / present.sum(1), np.nan)


def patient_weights(patients: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(1 + n_boot, n_cases) weights: row 0 all ones, then one row per resample of
    patients with replacement (a patient drawn twice counts all of their cases twice)."""
    codes, uniques = pd.factorize(pd.Series(patients), sort=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(uniques), np.full(len(uniques), 1 / len(uniques)), size=n_boot)  # (B, patients)
    return np.vstack([np.ones(len(codes)), counts[:, codes]]).astype(float)


def _percentiles(rep: np.ndarray) -> tuple[float, float]:
    rep = rep[np.isfinite(rep)]
    if len(rep) == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(rep, [2.5, 97.5])
    return float(lo), float(hi)


def _recentred(estimate: float, rep: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of the resamples ``rep``, moved so that their mean sits on ``estimate``."""
    rep = rep[np.isfinite(rep)]
    if len(rep) == 0 or not np.isfinite(estimate):
        return float("nan"), float("nan")
    lo, hi = np.percentile(rep, [2.5, 97.5]) - rep.mean()
    return float(estimate + lo), float(estimate + hi)


def _bias_corrected(rep: np.ndarray) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) of a metric that cannot be negative, from its plug-in value
    ``rep[0]`` and resamples ``rep[1:]``: the bootstrap bias-corrected estimate 2 * plug-in -
    mean(resamples) (Efron and Tibshirani 1993, ch. 10), with the resamples' percentile interval
    recentred on it, all clipped at 0. The interval holds the value whenever the resamples' mean
    lies inside their own 2.5-97.5% range."""
    resamples = rep[1:][np.isfinite(rep[1:])]
    if not np.isfinite(rep[0]) or len(resamples) == 0:
        return float(rep[0]), float("nan"), float("nan")
    value = 2 * float(rep[0]) - float(resamples.mean())
    lo, hi = _recentred(value, resamples)
    return max(value, 0.0), max(lo, 0.0), max(hi, 0.0)


def _estimates(rep: np.ndarray, metric: str) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) from the plug-in value ``rep[0]`` and the resamples ``rep[1:]``."""
    return _bias_corrected(rep) if metric in BIAS_CORRECTED else (float(rep[0]), *_percentiles(rep[1:]))


def bootstrap_slices(outcomes: CaseOutcomes, weights: np.ndarray, families: dict[str, np.ndarray]
                     ) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """{(slice, slice_value): {metric: (1 + n_boot,) values}} for every group of every family."""
    stats, layout = case_statistics(outcomes)
    result = {}
    for family, labels in families.items():
        labels = np.asarray(labels, dtype=object)
        for value in sorted(set(labels), key=str):
            idx = np.flatnonzero(labels == value)
            result[(family, str(value))] = metrics_from_sums(weights[:, idx] @ stats[idx], layout)
    return result


def audit_rows(replicates: dict[tuple[str, str], dict[str, np.ndarray]], min_n: int) -> pd.DataFrame:
    """Tidy rows (slice, slice_value, metric, value, ci_low, ci_high, n, too_small, gap,
    gap_low, gap_high, gap_reference, flagged) from ``bootstrap_slices``."""
    rows = []
    by_family: dict[str, list[str]] = {}
    for family, value in replicates:
        by_family.setdefault(family, []).append(value)
    for family, values in by_family.items():
        n = {v: int(round(replicates[(family, v)]["count"][0])) if "count" in replicates[(family, v)] else 0
             for v in values}
        for metric in replicates[(family, values[0])]:
            if metric == "count":
                continue
            reps = {v: replicates[(family, v)][metric] for v in values}
            point = {v: _estimates(r, metric) for v, r in reps.items()}
            reference = _best_group({v: p[0] for v, p in point.items()}, n, metric, min_n) \
                if family != "overall" else None
            for v in values:
                value, lo, hi = point[v]
                row = {"slice": family, "slice_value": v, "metric": metric, "value": value,
                       "ci_low": lo, "ci_high": hi, "n": n[v], "too_small": n[v] < min_n,
                       "gap": np.nan, "gap_low": np.nan, "gap_high": np.nan, "gap_reference": None, "flagged": False}
                if reference is not None:
                    diff = reps[v] - reps[reference]
                    if metric in BIAS_CORRECTED:  # the difference of the stored values, its interval recentred
                        gap = value - point[reference][0]
                        row["gap_low"], row["gap_high"] = _recentred(gap, diff[1:])
                    else:
                        gap = float(diff[0])
                        row["gap_low"], row["gap_high"] = _percentiles(diff[1:])
                    row.update(gap=gap, gap_reference=reference)
                    excludes_zero = row["gap_low"] > 0 or row["gap_high"] < 0
                    row["flagged"] = bool(v != reference and n[v] >= min_n and excludes_zero)
                rows.append(row)
    return pd.DataFrame(rows)


def _best_group(value: dict[str, float], n: dict[str, int], metric: str, min_n: int) -> str | None:
    if metric in NO_GAP or metric not in HIGHER_IS_BETTER:
        return None
    judged = {v: x for v, x in value.items() if n[v] >= min_n and np.isfinite(x)}
    if len(judged) < 2:
        return None
    pick = max if HIGHER_IS_BETTER[metric] else min
    return pick(judged, key=judged.get)
