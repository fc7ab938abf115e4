"""The post-hoc steps of one model, each a pure function: arrays in, arrays and rows out.

Everything is fitted on ``calib``. Rows of ``calib`` itself get out-of-fold values (from
fits on the other folds), so metrics on ``calib`` are honest in-distribution estimates;
``val`` (training clinics) and ``test`` (the held-out clinic) get the fits on all of
``calib``. Nothing is ever fitted on ``test``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

from data_store.splits import EVAL_SPLITS
from trainer.evaluation import metrics as M
from trainer.uncertainty.calibration import log_probs, select_calibrator
from trainer.uncertainty.conformal import SplitConformal
from trainer.uncertainty.deferral import DeferralScorer, doubtful_rule_out
from trainer.uncertainty.policies import GroupAccuracy, ReviewBudget, TargetAccuracy, UrgentSensitivity

SPLITS = EVAL_SPLITS


@dataclass(frozen=True)
class PolicySettings:
    """What the policies promise, from the run's config."""

    review_budget: float
    target_accuracy: float
    urgent_sensitivity: float
    default_policy: str
    conformal: dict  # the default conformal sets' method, alpha and mode, stored with the conformal_set rule


def folds(n: int, n_folds: int, seed: int):
    return KFold(min(n_folds, n), shuffle=True, random_state=seed).split(np.zeros(n))


def calibrate(probs_uncal: np.ndarray, y: np.ndarray, calib: np.ndarray, methods: tuple[str, ...], n_folds: int,
              seed: int) -> tuple[np.ndarray, dict]:
    """Calibrated probabilities (n, n_classes), out-of-fold on calib, and the chosen
    calibrator's description (method, params, every candidate's out-of-fold NLL and ECE)."""
    logits = log_probs(probs_uncal)
    choice = select_calibrator(logits[calib], y[calib], methods, n_folds, seed)
    probs = choice.calibrator.predict_proba(logits)
    probs[calib] = choice.oof_probs
    return probs, {"method": choice.method, "params": choice.calibrator.params(), "candidates": choice.candidates}


def score_deferral(probs: np.ndarray, y: np.ndarray, calib: np.ndarray, signals: pd.DataFrame, urgent: np.ndarray,
                   urgent_doubt: float, n_folds: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The deferral score (n,), out-of-fold on calib; whether each case needs review (n,);
    the fitted scorer's parameters."""
    wrong = probs.argmax(1) != y
    rule_out = doubtful_rule_out(probs, urgent, urgent_doubt)
    scorer = DeferralScorer().fit(signals[calib], wrong[calib], rule_out[calib])
    score = scorer.predict(signals, rule_out)
    ci = np.flatnonzero(calib)
    for fit_idx, pred_idx in folds(len(ci), n_folds, seed):
        fold = DeferralScorer().fit(signals.iloc[ci[fit_idx]], wrong[ci[fit_idx]], rule_out[ci[fit_idx]])
        score[ci[pred_idx]] = fold.predict(signals.iloc[ci[pred_idx]], rule_out[ci[pred_idx]])
    params = {**scorer.params(), "urgent_doubt": urgent_doubt,
              "doubtful_rule_out_rate_calib": float(rule_out[calib].mean())}
    return score, wrong | rule_out, params


def conformal_sets(probs: np.ndarray, y: np.ndarray, split: np.ndarray, groups: np.ndarray, u: np.ndarray,
                   alpha: float, default_method: str, n_folds: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Sets for LAC and APS, marginal and Mondrian (by skin-tone group): their coverage
    rows (split, method, mode, slice_value, ...) and the default (``default_method``,
    Mondrian) sets, bool (n, n_classes). Calib rows are cross-conformal."""
    ci = np.flatnonzero(split == "calib")
    rows, default = [], None
    for method in ("lac", "aps"):
        for mode in ("marginal", "mondrian"):
            g = groups if mode == "mondrian" else np.full(len(y), "all", dtype=object)
            full = SplitConformal(method, alpha).fit(probs[ci], y[ci], g[ci], u[ci])
            sets = full.predict_sets(probs, g, u)
            for fit_idx, pred_idx in folds(len(ci), n_folds, seed):
                a, b = ci[fit_idx], ci[pred_idx]
                sets[b] = SplitConformal(method, alpha).fit(probs[a], y[a], g[a], u[a]).predict_sets(
                    probs[b], g[b], u[b])
            rows += _coverage_rows(sets, y, split, groups, full, method, mode, alpha)
            if method == default_method and mode == "mondrian":
                default = sets
    return pd.DataFrame(rows), default


def _coverage_rows(sets, y, split, groups, fitted: SplitConformal, method: str, mode: str, alpha: float) -> list:
    """Coverage and set size per split, overall and per group: marginal sets are judged per
    group too, since that is where they fail."""
    covered, size = sets[np.arange(len(y)), y], sets.sum(1)
    rows = []
    for s in SPLITS:
        for value in ["all"] + sorted(set(groups[split == s])):
            m = (split == s) & ((groups == value) if value != "all" else True)
            key = value if mode == "mondrian" else "all"
            if not m.any() or (mode == "mondrian" and value == "all"):
                continue
            rows.append({"split": s, "method": method, "mode": mode, "slice_value": value, "alpha": alpha,
                         "qhat": fitted.qhat_.get(key, np.inf), "n_calib": fitted.n_.get(key, 0), "n": int(m.sum()),
                         "coverage": float(covered[m].mean()), "set_size": float(size[m].mean())})
    return rows


def fit_policies(probs: np.ndarray, y: np.ndarray, split: np.ndarray, groups: np.ndarray, defer_score: np.ndarray,
                 urgent: np.ndarray, sets: np.ndarray, settings: PolicySettings) -> tuple[pd.DataFrame, np.ndarray]:
    """Fit each policy on calib; evaluate every split overall and per skin-tone group.
    Returns the rows and the default policy's decisions (n,)."""
    calib = split == "calib"
    pred = probs.argmax(1)
    correct, urgent_true, flagged = pred == y, urgent[y], urgent[pred]
    s = defer_score
    policies = {"review_budget": ReviewBudget(settings.review_budget).fit(s[calib]),
                "target_accuracy": TargetAccuracy(settings.target_accuracy).fit(s[calib], correct[calib])}
    if urgent_true[calib].any():
        policies["urgent_sensitivity"] = UrgentSensitivity(settings.urgent_sensitivity).fit(
            s[calib], urgent_true=urgent_true[calib], flagged_urgent=flagged[calib])
    if settings.default_policy not in policies:
        raise ValueError(f"default_policy {settings.default_policy!r} cannot be fitted here; fitted: "
                         f"{list(policies)}.")
    base = policies[settings.default_policy].decide(s)
    target = M.accuracy(y[calib & ~base], pred[calib & ~base])
    policies["equal_group_accuracy"] = GroupAccuracy(target).fit(s[calib], correct[calib], groups[calib])
    decisions = {name: p.decide(s, groups) for name, p in policies.items()}
    decisions["conformal_set"] = sets.sum(1) != 1  # an alternative rule: defer unless exactly one class
    outcome = {"correct": correct, "missed": urgent_true & ~flagged, "urgent": urgent_true, "base": base}
    rows = []
    for name, d in decisions.items():
        p = policies.get(name)
        params, threshold_of = (p.params(), lambda v, p=p: p.threshold_for([v])[0]) if p else (settings.conformal,
                                                                                               lambda v: np.nan)
        rows += policy_rows(name, params, threshold_of, d, split, groups, outcome)
    return pd.DataFrame(rows), decisions[settings.default_policy]


def policy_rows(name: str, params: dict, threshold_of, deferred, split, groups, outcome: dict) -> list:
    """One policy's workload and outcomes per split, overall and per skin-tone group.
    ``threshold_of(group)``: the threshold a group is held to ("all": the overall one);
    ``outcome``: correct, missed (urgent called non-urgent), urgent, base (the default
    policy's decisions), each (n,) bool."""
    correct, base = outcome["correct"], outcome["base"]
    rows = []
    for sp in SPLITS:
        for slice_, value in [("overall", "all")] + [("fitzpatrick_group", v) for v in sorted(set(groups))]:
            m = (split == sp) & ((groups == value) if slice_ != "overall" else True)
            if not m.any():
                continue
            rows.append({"policy": name, "params": params, "threshold": float(threshold_of(value)), "split": sp,
                         "slice": slice_, "slice_value": value, "n": int(m.sum()),
                         "defer_rate": float(deferred[m].mean()),
                         "accepted_accuracy": float(correct[m & ~deferred].mean()) if (m & ~deferred).any()
                         else np.nan,
                         "missed_urgent_rate": _rate(outcome["missed"] & ~deferred, outcome["urgent"], m),
                         "extra_defer_rate": float(deferred[m].mean() - base[m].mean())})
    return rows


def _rate(event: np.ndarray, among: np.ndarray, mask) -> float:
    m = among & mask
    return float(event[m].mean()) if m.any() else float("nan")
