"""Deferral policies: each turns the deferral score into "a clinician reviews this case".

``fit(...) -> self`` on calib; ``decide(defer_score, groups) -> bool (n,)`` (True = defer);
``threshold_for(groups) -> (n,)`` the threshold each case is held to; ``params()`` the
settings to store. Every policy defers at ``defer_score >= threshold``; ``promise(params)``
reads back what a stored policy promises and judges it. NumPy only.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np


def _accepted_accuracy_threshold(score: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The highest threshold t (defer score >= t) whose accepted cases reach ``target`` accuracy."""
    order = np.argsort(score, kind="stable")
    s, c = score[order], correct[order].astype(float)
    candidates = np.append(np.unique(s), np.inf)  # accept score < t
    kept = np.searchsorted(s, candidates, side="left")
    hits = np.concatenate([[0.0], np.cumsum(c)])[kept]
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (kept > 0) & (hits / kept >= target)
    return float(candidates[ok].max()) if ok.any() else float(s.min(initial=0.0))


class ThresholdPolicy:
    """Defer when the deferral score reaches ``threshold_`` (set by ``fit``)."""

    name = "threshold"

    def threshold_for(self, groups) -> np.ndarray:
        """(n,) the threshold each case is held to (one for everyone here)."""
        return np.full(len(groups), self.threshold_, dtype=float)

    def decide(self, defer_score: np.ndarray, groups=None) -> np.ndarray:
        """(n,) bool, True = defer to a clinician. ``groups`` matters only to per-group policies."""
        defer_score = np.asarray(defer_score)
        groups = np.full(len(defer_score), "all", dtype=object) if groups is None else groups
        return defer_score >= self.threshold_for(groups)


class ReviewBudget(ThresholdPolicy):
    """Defer the top ``budget`` share of cases by defer score."""

    name = "review_budget"

    def __init__(self, budget: float = 0.2):
        if not 0 <= budget <= 1:
            raise ValueError(f"budget must be in [0, 1], got {budget}.")
        self.budget = budget

    def fit(self, defer_score: np.ndarray, **_) -> "ReviewBudget":
        k = int(np.ceil(self.budget * len(defer_score)))
        self.threshold_ = float(np.sort(defer_score)[::-1][k - 1]) if k > 0 else float("inf")
        return self

    def params(self) -> dict:
        return {"budget": self.budget}


class TargetAccuracy(ThresholdPolicy):
    """Defer as few cases as possible while the accepted ones reach ``target`` accuracy."""

    name = "target_accuracy"

    def __init__(self, target: float = 0.9):
        self.target = target

    def fit(self, defer_score: np.ndarray, correct: np.ndarray, **_) -> "TargetAccuracy":
        self.threshold_ = _accepted_accuracy_threshold(np.asarray(defer_score), np.asarray(correct), self.target)
        return self

    def params(self) -> dict:
        return {"target_accuracy": self.target}


class UrgentSensitivity(ThresholdPolicy):
    """The least clinician workload at which urgent cases are caught (flagged urgent by
    the model, or deferred) at least ``floor`` of the time: a CoDoC-style operating point."""

    name = "urgent_sensitivity"

    def __init__(self, floor: float = 0.95):
        self.floor = floor

    def fit(self, defer_score: np.ndarray, urgent_true: np.ndarray, flagged_urgent: np.ndarray,
            **_) -> "UrgentSensitivity":
        s = np.asarray(defer_score)[np.asarray(urgent_true, bool) & ~np.asarray(flagged_urgent, bool)]
        n_urgent = int(np.sum(urgent_true))
        # Missed urgent cases are those the model calls non-urgent and does not defer;
        # at most (1 - floor) * n_urgent of them may stay below the threshold.
        allowed = int(np.floor((1 - self.floor) * n_urgent + 1e-9))
        s = np.sort(s)  # defer score >= s[allowed] leaves exactly the `allowed` lowest (or fewer, on ties)
        self.threshold_ = float("inf") if allowed >= len(s) else float(s[allowed])
        return self

    def params(self) -> dict:
        return {"urgent_sensitivity_floor": self.floor}


class GroupAccuracy(ThresholdPolicy):
    """One threshold per group (skin tone), each the least deferral at which that
    group's accepted cases reach ``target`` accuracy: equal accepted accuracy at the
    cost of more reviews for the groups the model serves worse."""

    name = "equal_group_accuracy"

    def __init__(self, target: float):
        self.target = target

    def fit(self, defer_score: np.ndarray, correct: np.ndarray, groups: np.ndarray, **_) -> "GroupAccuracy":
        defer_score, correct, groups = np.asarray(defer_score), np.asarray(correct), np.asarray(groups)
        self.thresholds_ = {g: _accepted_accuracy_threshold(defer_score[groups == g], correct[groups == g],
                                                            self.target) for g in np.unique(groups)}
        # A group unseen in calib falls back to one threshold fitted on everyone.
        self.threshold_ = _accepted_accuracy_threshold(defer_score, correct, self.target)
        return self

    def threshold_for(self, groups) -> np.ndarray:
        return np.array([self.thresholds_.get(g, self.threshold_) for g in np.asarray(groups)], dtype=float)

    def params(self) -> dict:
        return {"target_accuracy": self.target, "thresholds": {str(k): v for k, v in self.thresholds_.items()}}


@dataclass(frozen=True)
class Promise:
    """What a stored policy promises, read back from its stored ``params``: the ``policies``
    column it is judged on, the goal and its direction, and whether every skin-tone group must
    keep it (``equal_group_accuracy``). ``column`` None: no promise with a single figure (a
    conformal set, a threshold chosen by hand)."""

    column: str | None = None
    goal: float | None = None
    direction: str | None = None  # "at most" | "at least"
    per_group: bool = False

    def held(self, overall: Mapping, groups: Iterable[Mapping] = ()) -> bool | None:
        """Whether the promise holds on one split's ``policies`` rows (its overall row and,
        for a per-group promise, its skin-tone group rows); None when it cannot be judged."""
        if self.column is None:
            return None
        rows = list(groups) if self.per_group else [overall]
        values = [float(r[self.column]) for r in rows if r[self.column] is not None and np.isfinite(r[self.column])]
        if not values:
            return None
        if self.direction == "at most":
            return all(v <= self.goal + 1e-9 for v in values)
        return all(v >= self.goal - 1e-9 for v in values)


def promise(params: Mapping) -> Promise:
    """The promise of a policy with these stored ``params`` (``ThresholdPolicy.params``)."""
    if "thresholds" in params and "target_accuracy" in params:
        return Promise("accepted_accuracy", float(params["target_accuracy"]), "at least", per_group=True)
    if "budget" in params:
        return Promise("defer_rate", float(params["budget"]), "at most")
    if "target_accuracy" in params:
        return Promise("accepted_accuracy", float(params["target_accuracy"]), "at least")
    if "urgent_sensitivity_floor" in params:
        return Promise("missed_urgent_rate", 1 - float(params["urgent_sensitivity_floor"]), "at most")
    return Promise()
