"""The deferral score and the policies that turn it into "a clinician reviews this case".

A case needs review when the model's output is wrong, or when it rules out every urgent
category while still giving them at least ``urgent_doubt`` of calibrated probability.
The second condition is known from the output itself, so its cases score exactly 1; for
the others the score is a logistic model of P(wrong | signals), fitted on ``calib``.

Policies: ``fit(...) -> self`` on calib, ``decide(defer_score) -> bool`` (True = defer).
NumPy and scikit-learn only.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

SIGNALS = ("confidence", "margin", "entropy", "p_urgent", "text_image_tv", "text_image_disagree",
           "train_distance", "note_missing", "photo_sharpness", "photo_overexposed")
MIN_EACH = 5  # right and wrong outputs each, below which the logistic model is not fitted


def doubtful_rule_out(probs: np.ndarray, urgent: np.ndarray, urgent_doubt: float) -> np.ndarray:
    """(n,) bool: the prediction is a non-urgent class yet urgent classes hold >= urgent_doubt."""
    pred_urgent = urgent[probs.argmax(1)]
    return ~pred_urgent & (probs[:, urgent].sum(1) >= urgent_doubt)


def deferral_signals(probs: np.ndarray, urgent: np.ndarray, probs_text: np.ndarray | None = None,
                     probs_image: np.ndarray | None = None, **per_case: np.ndarray | None) -> pd.DataFrame:
    """One row of signals per case. ``per_case``: train_distance, note_missing,
    photo_sharpness, photo_overexposed. Absent inputs (a run without the single-modality
    models, a run stored before these signals) give a constant column the model ignores."""
    n = len(probs)
    top2 = np.sort(probs, 1)[:, -2:]
    out = {"confidence": top2[:, 1], "margin": top2[:, 1] - top2[:, 0],
           "entropy": -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(1), "p_urgent": probs[:, urgent].sum(1)}
    if probs_text is not None and probs_image is not None:
        out["text_image_tv"] = 0.5 * np.abs(probs_text - probs_image).sum(1)
        out["text_image_disagree"] = (probs_text.argmax(1) != probs_image.argmax(1)).astype(float)
    else:
        out["text_image_tv"] = out["text_image_disagree"] = np.zeros(n)
    for name in SIGNALS[6:]:
        value = per_case.get(name)
        out[name] = np.zeros(n) if value is None else np.nan_to_num(np.asarray(value, float))
    return pd.DataFrame(out)[list(SIGNALS)]


class DeferralScorer:
    """defer_score = 1 for a doubtful rule-out of urgent classes, else P(wrong | signals)."""

    def __init__(self, C: float = 1.0):
        self.C = C

    def fit(self, signals: pd.DataFrame, wrong: np.ndarray, rule_out: np.ndarray) -> "DeferralScorer":
        keep = ~np.asarray(rule_out, bool)
        wrong = np.asarray(wrong, bool)[keep]
        # With too few right or wrong outputs to learn from, the score is the observed error
        # rate (Laplace-smoothed) for every case; params() says so.
        self.base_rate_ = float((wrong.sum() + 1) / (len(wrong) + 2))
        self.model_ = None
        if min(wrong.sum(), (~wrong).sum()) >= MIN_EACH:
            self.model_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=1000))
            self.model_.fit(signals.to_numpy()[keep], wrong)
        return self

    def predict(self, signals: pd.DataFrame, rule_out: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            p_wrong = np.full(len(signals), self.base_rate_)
        else:
            p_wrong = self.model_.predict_proba(signals.to_numpy())[:, 1]
        return np.where(np.asarray(rule_out, bool), 1.0, p_wrong)

    def params(self) -> dict:
        if self.model_ is None:
            return {"model": "base_rate", "base_rate": self.base_rate_,
                    "why": f"fewer than {MIN_EACH} right or wrong outputs in calib outside doubtful rule-outs"}
        scaler, lr = self.model_.named_steps["standardscaler"], self.model_.named_steps["logisticregression"]
        return {"model": "logistic", "signals": list(SIGNALS), "mean": scaler.mean_.tolist(),
                "scale": scaler.scale_.tolist(), "coef": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0])}


# ---- policies ----------------------------------------------------------------------
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


class ReviewBudget:
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

    def decide(self, defer_score: np.ndarray, groups=None) -> np.ndarray:
        return np.asarray(defer_score) >= self.threshold_

    def params(self) -> dict:
        return {"budget": self.budget}


class TargetAccuracy:
    """Defer as few cases as possible while the accepted ones reach ``target`` accuracy."""

    name = "target_accuracy"

    def __init__(self, target: float = 0.9):
        self.target = target

    def fit(self, defer_score: np.ndarray, correct: np.ndarray, **_) -> "TargetAccuracy":
        self.threshold_ = _accepted_accuracy_threshold(np.asarray(defer_score), np.asarray(correct), self.target)
        return self

    def decide(self, defer_score: np.ndarray, groups=None) -> np.ndarray:
        return np.asarray(defer_score) >= self.threshold_

    def params(self) -> dict:
        return {"target_accuracy": self.target}


class UrgentSensitivity:
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

    def decide(self, defer_score: np.ndarray, groups=None) -> np.ndarray:
        return np.asarray(defer_score) >= self.threshold_

    def params(self) -> dict:
        return {"urgent_sensitivity_floor": self.floor}


class GroupAccuracy:
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

    def decide(self, defer_score: np.ndarray, groups=None) -> np.ndarray:
        t = np.array([self.thresholds_.get(g, self.threshold_) for g in np.asarray(groups)])
        return np.asarray(defer_score) >= t

    def params(self) -> dict:
        return {"target_accuracy": self.target, "thresholds": {str(k): v for k, v in self.thresholds_.items()}}
