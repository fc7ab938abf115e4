"""Local recalibration: a run's post-hoc rules refitted for a new clinic from k of its
cases with labels. Pure: arrays in, rules and decisions out.

The run's rules were fitted on ``calib`` of the training clinics. A clinic the models never
saw breaks them; k labelled local cases refit, on top of what calib gave:

- the class probabilities: a vector-scaling layer (a scale and a bias per class on the
  log of the run's calibrated probabilities), pulled towards the identity, so the calib
  calibrator is the prior and k local cases move it only as far as they support;
- the deferral score: the run's scorer on the signals of the adapted probabilities, then
  a Platt layer (a slope and an intercept on its logit) fitted to the local need for
  review, pulled towards the identity in the same way;
- the policy thresholds, on the local cases' adapted scores only (calib's scores are not
  exchangeable with the clinic's): the review budget and the accepted-accuracy target as
  fitted before; the urgent-sensitivity floor with a conservative binomial bound, so the
  floor holds with probability ``confidence`` over the draw of the k cases, not merely on
  average;
- the Mondrian conformal thresholds, from the local cases alone (exchangeable with the
  clinic's, unlike calib's), per skin-tone group; a group with too few local cases for
  1 - alpha uses the pooled local threshold.

Cases may carry weights (a stratified draw: each case stands for its stratum's share of
the clinic); with equal weights every fit is the unweighted one. With k = 0 the rules are
the run's own, unchanged.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, log_softmax, logit, softmax
from scipy.stats import binom

from trainer.posthoc.replay import Rules, rule_outputs
from trainer.uncertainty.conformal import SplitConformal, class_scores

PULL = 10.0  # penalty on the squared distance of each layer from the identity, against the summed local NLL
CONFIDENCE = 0.9  # the urgent floor holds for at least this share of draws of the local cases
MIN_GROUP = 30  # local cases of a skin-tone group below which equal_group_accuracy uses the overall threshold


@dataclass
class ClinicCases:
    """The clinic's cases as the run's rules see them, one row per case."""

    y: np.ndarray  # (n,) class index (labels are read only for the local cases and the evaluation)
    probs: np.ndarray  # (n, k) calibrated by the run's calibrator
    single: dict[str, np.ndarray]  # calibrated text_only / image_only probabilities (agreement signals)
    per_case: pd.DataFrame  # note_missing, train_distance, photo_sharpness, photo_overexposed
    groups: np.ndarray  # (n,) skin-tone group
    patients: np.ndarray  # (n,)
    u: np.ndarray  # (n,) the run's randomised-APS draws

    def take(self, idx: np.ndarray) -> "ClinicCases":
        return ClinicCases(self.y[idx], self.probs[idx], {m: p[idx] for m, p in self.single.items()},
                           self.per_case.iloc[idx].reset_index(drop=True), self.groups[idx], self.patients[idx],
                           self.u[idx])


@dataclass
class Adaptation:
    """What k local cases changed; the identity when k = 0."""

    k: int
    scale: np.ndarray | None = None  # vector scaling of log probabilities, (n_classes,)
    bias: np.ndarray | None = None
    platt: tuple[float, float] = (0.0, 1.0)  # deferral score: expit(a + b * logit(score))
    thresholds: dict = field(default_factory=dict)  # policy -> (threshold, per-group thresholds); empty: the run's
    qhat: dict = field(default_factory=dict)  # conformal threshold per group; empty: the run's

    def params(self) -> dict:
        return {"k": self.k, "scale": None if self.scale is None else self.scale.tolist(),
                "bias": None if self.bias is None else self.bias.tolist(), "platt": list(self.platt),
                "thresholds": {p: [t, g] for p, (t, g) in self.thresholds.items()},
                "qhat": {str(g): q for g, q in self.qhat.items()}}


def adapted_probs(a: Adaptation, probs: np.ndarray) -> np.ndarray:
    if a.scale is None:
        return probs
    return softmax(np.log(np.clip(probs, 1e-12, 1)) * a.scale + a.bias, axis=1)


def outputs(rules: Rules, a: Adaptation, cases: ClinicCases, urgent: np.ndarray) -> dict:
    """The adapted probabilities, deferral score, conformal sets and every policy's decisions
    (``replay.rule_outputs`` with the adaptation's layers, thresholds and conformal thresholds)."""
    conformal = (SplitConformal.from_thresholds(rules.conformal.method, rules.conformal.alpha, a.qhat) if a.qhat
                 else rules.conformal)
    adapted = replace(rules, conformal=conformal, thresholds={**rules.thresholds, **a.thresholds})
    return rule_outputs(adapted, adapted_probs(a, cases.probs), urgent, cases.single, cases.per_case, cases.groups,
                        cases.u, None if a.platt == (0.0, 1.0) else functools.partial(_rescore, a.platt))


def _rescore(platt: tuple[float, float], score: np.ndarray, rule_out: np.ndarray) -> np.ndarray:
    """The Platt layer on the scorer's deferral score; a doubtful rule-out stays at 1."""
    p = expit(platt[0] + platt[1] * logit(np.clip(score, 1e-6, 1 - 1e-6)))
    return np.where(rule_out, 1.0, p)


def fit_adaptation(rules: Rules, local: ClinicCases, urgent: np.ndarray, weights: np.ndarray | None = None,
                   pull: float = PULL, confidence: float = CONFIDENCE) -> Adaptation:
    """Refit the run's rules on the local cases (with their labels)."""
    k = len(local.y)
    if k == 0:
        return Adaptation(0)
    w = np.ones(k) if weights is None else np.asarray(weights, float) * k / np.sum(weights)
    scale, bias = _vector_scaling(np.log(np.clip(local.probs, 1e-12, 1)), local.y, w, pull)
    a = Adaptation(k, scale, bias)
    first = outputs(rules, a, local, urgent)  # the adapted probabilities; the run's scorer
    wrong = first["probs"].argmax(1) != local.y
    keep = ~first["doubtful_rule_out"]
    a.platt = _platt(first["defer_score"][keep], wrong[keep], w[keep], pull)
    out = outputs(rules, a, local, urgent)
    a.thresholds = _thresholds(rules, out, local, urgent, w, confidence)
    a.qhat = _conformal(rules, out["probs"], local, w)
    return a


def _vector_scaling(logp: np.ndarray, y: np.ndarray, w: np.ndarray, pull: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted NLL of softmax(scale * logp + bias) + pull * (|scale - 1|^2 + |bias|^2)."""
    n, c = logp.shape
    onehot = np.eye(c)[y]

    def loss_grad(theta):
        s, b = theta[:c], theta[c:]
        lp = log_softmax(logp * s + b, axis=1)
        resid = (np.exp(lp) - onehot) * w[:, None]
        loss = -(lp * onehot * w[:, None]).sum() + pull * (((s - 1) ** 2).sum() + (b ** 2).sum())
        grad = np.concatenate([(resid * logp).sum(0) + 2 * pull * (s - 1), resid.sum(0) + 2 * pull * b])
        return float(loss), grad

    res = minimize(loss_grad, np.r_[np.ones(c), np.zeros(c)], jac=True, method="L-BFGS-B")
    return res.x[:c], res.x[c:]


def _platt(score: np.ndarray, event: np.ndarray, w: np.ndarray, pull: float) -> tuple[float, float]:
    """(a, b) of expit(a + b * logit(score)) by weighted NLL, pulled towards (0, 1)."""
    if len(score) == 0:
        return 0.0, 1.0
    x, t = logit(np.clip(score, 1e-6, 1 - 1e-6)), event.astype(float)

    def loss_grad(theta):
        p = expit(theta[0] + theta[1] * x)
        ll = -(w * (t * np.log(np.clip(p, 1e-12, 1)) + (1 - t) * np.log(np.clip(1 - p, 1e-12, 1)))).sum()
        r = w * (p - t)
        return (float(ll + pull * (theta[0] ** 2 + (theta[1] - 1) ** 2)),
                np.array([r.sum() + 2 * pull * theta[0], (r * x).sum() + 2 * pull * (theta[1] - 1)]))

    res = minimize(loss_grad, np.array([0.0, 1.0]), jac=True, method="L-BFGS-B")
    return float(res.x[0]), float(res.x[1])


def _thresholds(rules: Rules, out: dict, local: ClinicCases, urgent: np.ndarray, w: np.ndarray,
                confidence: float) -> dict:
    """Each fitted threshold policy refitted on the local cases' adapted deferral scores; a
    policy saved by name (a threshold chosen in the dashboard) keeps its threshold."""
    s, pred = out["defer_score"], out["probs"].argmax(1)
    correct = pred == local.y
    result = {}
    for name, params in rules.policy_params.items():
        if name == "review_budget":
            t = budget_threshold(s, w, params["budget"])
        elif name == "target_accuracy":
            t = accuracy_threshold(s, correct, w, params["target_accuracy"])
        elif name == "urgent_sensitivity":
            t = urgent_threshold(s, urgent[local.y], urgent[pred], w, params["urgent_sensitivity_floor"], confidence)
        elif name == "equal_group_accuracy":
            target = params["target_accuracy"]
            t = accuracy_threshold(s, correct, w, target)
            result[name] = (t, {g: accuracy_threshold(s[m], correct[m], w[m], target)
                                for g in np.unique(local.groups) if (m := local.groups == g).sum() >= MIN_GROUP})
            continue
        else:
            continue
        result[name] = (t, {})
    return result



def budget_threshold(score: np.ndarray, w: np.ndarray, budget: float) -> float:
    """The threshold deferring a weighted ``budget`` share of the cases (``ReviewBudget``)."""
    order = np.argsort(-score, kind="stable")
    share = np.cumsum(w[order]) / w.sum()
    i = int(np.searchsorted(share, budget - 1e-12))
    return float(score[order][min(i, len(score) - 1)]) if budget > 0 else float("inf")


def accuracy_threshold(score: np.ndarray, correct: np.ndarray, w: np.ndarray, target: float) -> float:
    """The highest threshold whose accepted cases (score below it) reach ``target`` weighted
    accuracy (``TargetAccuracy``); none: the lowest score."""
    if len(score) == 0:
        return float("inf")
    order = np.argsort(score, kind="stable")
    s, c, ww = score[order], correct[order].astype(float), w[order]
    candidates = np.append(np.unique(s), np.inf)
    kept = np.searchsorted(s, candidates, side="left")
    mass, hits = np.r_[0.0, np.cumsum(ww)][kept], np.r_[0.0, np.cumsum(ww * c)][kept]
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (kept > 0) & (hits / mass >= target - 1e-12)
    return float(candidates[ok].max()) if ok.any() else float(s.min())


def allowed_misses(n_urgent: float, floor: float, confidence: float | None) -> int:
    """The most urgent cases the local sample may miss below the threshold so that the
    clinic's miss rate stays under 1 - floor with probability ``confidence``: the largest m
    with P(Binomial(n, 1 - floor) > m) >= confidence (the (m+1)-th smallest missable score
    leaves a Beta(m + 1, n - m) share of the clinic's urgent cases below it); -1: none may
    be missed even at m = 0, so every non-urgent call is deferred. ``confidence`` None: the
    plain rule, which holds the floor on the sample only (about half the draws miss it)."""
    n = int(np.floor(n_urgent))
    if confidence is None:  # the plain rule of ``UrgentSensitivity``: the floor on the sample itself
        return int(np.floor((1 - floor) * n_urgent + 1e-9))
    m = -1
    while m + 1 < n and binom.sf(m + 1, n, 1 - floor) >= confidence:
        m += 1
    return m


def urgent_threshold(score: np.ndarray, urgent_true: np.ndarray, flagged: np.ndarray, w: np.ndarray, floor: float,
                     confidence: float | None) -> float:
    """The least deferral at which urgent cases are caught at least ``floor`` of the time
    with probability ``confidence`` (``UrgentSensitivity`` with a binomial bound)."""
    n_eff = w[urgent_true].sum() ** 2 / max((w[urgent_true] ** 2).sum(), 1e-12)
    m = allowed_misses(n_eff, floor, confidence)
    missable = urgent_true & ~flagged
    if m < 0 or not missable.any():
        return 0.0 if m < 0 else float("inf")
    order = np.argsort(score[missable], kind="stable")
    s, mass = score[missable][order], np.cumsum(w[missable][order]) * n_eff / w[urgent_true].sum()
    i = int(np.searchsorted(mass, m + 1 - 1e-9))  # the threshold leaves at most m cases' worth below it
    return float(s[i]) if i < len(s) else float("inf")


def _conformal(rules: Rules, probs: np.ndarray, local: ClinicCases, w: np.ndarray) -> dict:
    """Mondrian thresholds from the local cases: per skin-tone group, or the pooled local one
    for a group too small for 1 - alpha (and for a group absent locally)."""
    scores = class_scores(probs, rules.conformal.method, local.u)[np.arange(len(local.y)), local.y]
    alpha = rules.conformal.alpha
    pooled = weighted_quantile(scores, w, alpha)
    qhat = {g: pooled for g in set(rules.conformal.qhat_) | set(local.groups)}
    for g in np.unique(local.groups):
        q = weighted_quantile(scores[local.groups == g], w[local.groups == g], alpha)
        if np.isfinite(q):
            qhat[g] = q
    return qhat


def weighted_quantile(scores: np.ndarray, w: np.ndarray, alpha: float) -> float:
    """The split-conformal threshold with weights (mean 1 over the pool; the new case
    counts 1): the smallest score whose cumulative weight reaches (1 - alpha)(W + 1). With
    equal weights, the ceil((n + 1)(1 - alpha))-th smallest score (``conformal_quantile``)."""
    if len(scores) == 0:
        return float("inf")
    order = np.argsort(scores, kind="stable")
    cum = np.cumsum(w[order] / np.mean(w))
    i = int(np.searchsorted(cum, (1 - alpha) * (cum[-1] + 1) - 1e-9))
    return float(scores[order][i]) if i < len(scores) else float("inf")
