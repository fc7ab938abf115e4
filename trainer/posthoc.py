"""After training: calibration, the deferral score, conformal sets, deferral policies and
the audit, from stored predictions to the tables the store keeps.

Everything is fitted on ``calib``. Rows of ``calib`` itself get out-of-fold values
(from fits on the other folds), so metrics on ``calib`` are honest in-distribution
estimates; ``val`` (training clinics) and ``test`` (the held-out clinic) get the fits on
all of ``calib``. Nothing is ever fitted on ``test``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

from trainer import metrics as M
from trainer.calibration import log_probs, select_calibrator
from trainer.conformal import SplitConformal
from trainer.deferral import (DeferralScorer, GroupAccuracy, ReviewBudget, TargetAccuracy, UrgentSensitivity,
                              doubtful_rule_out)

SPLITS = ("val", "calib", "test")
BASELINES = ("text_only", "image_only")


@dataclass
class ModelOutputs:
    """One model's post-hoc results, rows in ``frame`` order (case_id, sorted)."""

    frame: pd.DataFrame  # case_id, split, y (class index), patient_id, fitzpatrick, clinic, ...
    probs_uncal: np.ndarray
    probs: np.ndarray = None
    defer_score: np.ndarray = None
    needs_review: np.ndarray = None


def _folds(n: int, n_folds: int, seed: int):
    return KFold(min(n_folds, n), shuffle=True, random_state=seed).split(np.zeros(n))


def calibrate_model(out: ModelOutputs, cfg, log) -> dict:
    y, split = out.frame["y"].to_numpy(), out.frame["split"].to_numpy()
    calib = split == "calib"
    logits = log_probs(out.probs_uncal)
    choice = select_calibrator(logits[calib], y[calib], cfg.calibrators, cfg.calib_folds, cfg.seed)
    out.probs = choice.calibrator.predict_proba(logits)
    out.probs[calib] = choice.oof_probs
    log(f"  calibrator {choice.method} (out-of-fold NLL / ECE: " +
        ", ".join(f"{k} {v['nll']:.3f} / {v['ece']:.3f}" for k, v in choice.candidates.items()) + ")")
    return {"method": choice.method, "params": choice.calibrator.params(), "candidates": choice.candidates}


def score_deferral(out: ModelOutputs, signals: pd.DataFrame, urgent: np.ndarray, cfg) -> dict:
    y, calib = out.frame["y"].to_numpy(), out.frame["split"].to_numpy() == "calib"
    wrong = out.probs.argmax(1) != y
    rule_out = doubtful_rule_out(out.probs, urgent, cfg.urgent_doubt)
    scorer = DeferralScorer().fit(signals[calib], wrong[calib], rule_out[calib])
    out.defer_score = scorer.predict(signals, rule_out)
    ci = np.flatnonzero(calib)
    for fit_idx, pred_idx in _folds(len(ci), cfg.calib_folds, cfg.seed):
        fold = DeferralScorer().fit(signals.iloc[ci[fit_idx]], wrong[ci[fit_idx]], rule_out[ci[fit_idx]])
        out.defer_score[ci[pred_idx]] = fold.predict(signals.iloc[ci[pred_idx]], rule_out[ci[pred_idx]])
    out.needs_review = wrong | rule_out
    return {**scorer.params(), "urgent_doubt": cfg.urgent_doubt,
            "doubtful_rule_out_rate_calib": float(rule_out[calib].mean())}


def conformal_sets(out: ModelOutputs, cfg, u: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Sets for every method and mode; rows (split, method, mode, group, ...) and the
    default (cfg.conformal_method, Mondrian) sets, (n, n_classes)."""
    y, split = out.frame["y"].to_numpy(), out.frame["split"].to_numpy()
    groups = out.frame["fitzpatrick_group"].to_numpy()
    ci = np.flatnonzero(split == "calib")
    rows, default = [], None
    for method in ("lac", "aps"):
        for mode in ("marginal", "mondrian"):
            g = groups if mode == "mondrian" else np.full(len(y), "all", dtype=object)
            full = SplitConformal(method, cfg.alpha).fit(out.probs[ci], y[ci], g[ci], u[ci])
            sets = full.predict_sets(out.probs, g, u)
            for fit_idx, pred_idx in _folds(len(ci), cfg.calib_folds, cfg.seed):  # calib: cross-conformal
                a, b = ci[fit_idx], ci[pred_idx]
                sets[b] = SplitConformal(method, cfg.alpha).fit(out.probs[a], y[a], g[a], u[a]).predict_sets(
                    out.probs[b], g[b], u[b])
            covered, size = sets[np.arange(len(y)), y], sets.sum(1)
            for s in SPLITS:  # marginal sets are judged per group too: that is where they fail
                for value in ["all"] + sorted(set(groups[split == s])):
                    m = (split == s) & ((groups == value) if value != "all" else True)
                    key = value if mode == "mondrian" else "all"
                    if not m.any() or (mode == "mondrian" and value == "all"):
                        continue
                    rows.append({"split": s, "method": method, "mode": mode, "slice_value": value,
                                 "alpha": cfg.alpha, "qhat": full.qhat_.get(key, np.inf),
                                 "n_calib": full.n_.get(key, 0), "n": int(m.sum()),
                                 "coverage": float(covered[m].mean()), "set_size": float(size[m].mean())})
            if method == cfg.conformal_method and mode == "mondrian":
                default = sets
    return pd.DataFrame(rows), default


def fit_policies(out: ModelOutputs, urgent: np.ndarray, sets: np.ndarray, cfg) -> tuple[pd.DataFrame, np.ndarray]:
    """Fit each policy on calib; evaluate on every split overall and per skin-tone group.
    Returns the rows and the default policy's decisions (n,)."""
    f = out.frame
    y, split, groups = f["y"].to_numpy(), f["split"].to_numpy(), f["fitzpatrick_group"].to_numpy()
    calib = split == "calib"
    pred = out.probs.argmax(1)
    correct, urgent_true, flagged = pred == y, urgent[y], urgent[pred]
    s = out.defer_score
    policies = {"review_budget": ReviewBudget(cfg.review_budget).fit(s[calib]),
                "target_accuracy": TargetAccuracy(cfg.target_accuracy).fit(s[calib], correct[calib])}
    if urgent_true[calib].any():
        policies["urgent_sensitivity"] = UrgentSensitivity(cfg.urgent_sensitivity).fit(
            s[calib], urgent_true=urgent_true[calib], flagged_urgent=flagged[calib])
    if cfg.default_policy not in policies:
        raise ValueError(f"default_policy {cfg.default_policy!r} cannot be fitted here; fitted: {list(policies)}.")
    default = policies[cfg.default_policy]
    base = default.decide(s)
    target = M.accuracy(y[calib & ~base], pred[calib & ~base])
    policies["equal_group_accuracy"] = GroupAccuracy(target).fit(s[calib], correct[calib], groups[calib])
    decisions = {name: p.decide(s, groups) for name, p in policies.items()}
    decisions["conformal_set"] = sets.sum(1) != 1  # an alternative rule: defer unless exactly one class
    rows = []
    for name, d in decisions.items():
        p = policies.get(name)
        params = p.params() if p else {"method": cfg.conformal_method, "alpha": cfg.alpha, "mode": "mondrian"}
        for sp in SPLITS:
            for slice_, value in [("overall", "all")] + [("fitzpatrick_group", v) for v in sorted(set(groups))]:
                m = (split == sp) & ((groups == value) if slice_ != "overall" else True)
                if not m.any():
                    continue
                thr = p.thresholds_.get(value, p.threshold_) if isinstance(p, GroupAccuracy) else getattr(
                    p, "threshold_", np.nan)
                rows.append({"policy": name, "params": params, "threshold": float(thr), "split": sp,
                             "slice": slice_, "slice_value": value, "n": int(m.sum()),
                             "defer_rate": float(d[m].mean()),
                             "accepted_accuracy": float(correct[m & ~d].mean()) if (m & ~d).any() else np.nan,
                             "missed_urgent_rate": _rate(urgent_true & ~flagged & ~d, urgent_true, m),
                             "extra_defer_rate": float(d[m].mean() - base[m].mean())})
    return pd.DataFrame(rows), decisions[cfg.default_policy]


def _rate(event: np.ndarray, among: np.ndarray, mask) -> float:
    m = among & mask
    return float(event[m].mean()) if m.any() else float("nan")


def slice_families(frame: pd.DataFrame, extra_columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    fam = {"overall": np.full(len(frame), "all", dtype=object),
           "fitzpatrick": frame["fitzpatrick_type"].to_numpy(),
           "fitzpatrick_group": frame["fitzpatrick_group"].to_numpy(),
           "clinic": frame["clinic"].to_numpy(), "category": frame["y_true"].to_numpy(),
           "fitzpatrick_group x clinic": (frame["fitzpatrick_group"] + " | " + frame["clinic"]).to_numpy()}
    for col in extra_columns:
        fam[col] = frame[f"extra:{col}"].astype(str).to_numpy()
    return fam


def point_only_metrics(out: ModelOutputs, m: np.ndarray) -> dict[str, float]:
    y, p, s = out.frame["y"].to_numpy()[m], out.probs[m], out.defer_score[m]
    correct = p.argmax(1) == y
    return {"adaptive_ece": M.adaptive_ece(y, p), "classwise_ece": M.classwise_ece(y, p), "auroc": M.auroc_ovr(y, p),
            "aurc": M.aurc(correct, -s), "augrc": M.augrc(correct, -s),
            "defer_ece": M.binary_ece(s, out.needs_review[m]), "defer_auroc": M.binary_auroc(s, ~correct)}
