"""Label-free corrections for a new clinic, and their honest evaluation there.

Each correction reads no label of the clinic, only its cases' outputs and features:

- ``prior_shift``: the probabilities re-weighted to the clinic's class mix as EM estimates
  it (Saerens et al. 2002): p'(y | x) proportional to p(y | x) q(y) / p_calib(y). Right
  under pure label shift; wrong where the model reads the clinic's cases differently.
- ``weighted_conformal``: Mondrian conformal sets whose calib scores are weighted by the
  likelihood ratio of the clinic against calib (Tibshirani et al. 2019), estimated by a
  domain classifier cross-fitted on the two (2 folds: each case weighted by the model that
  never saw it), clipped at ``MAX_RATIO`` times the median; on the cases' features, or on
  the model's outputs.
- ``weighted_thresholds``: the policy thresholds refitted on calib with the same weights,
  so calib looks like the clinic.

``evaluate_corrections`` then reads the clinic's labels to judge each against the run's
own rules: the rows say whether it helps; the product offers none that does not.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from trainer.evaluation import metrics as M
from trainer.evaluation.shift import _em
from trainer.posthoc.adapt import accuracy_threshold, budget_threshold, urgent_threshold
from trainer.uncertainty.conformal import class_scores
from trainer.uncertainty.operating_points import OperatingPoints

MAX_RATIO = 20.0  # likelihood ratios are clipped at this many times their median


def likelihood_ratios(calib: np.ndarray, new: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """w(x) = p(x | clinic) / p(x | calib) for calib's and the clinic's cases, from a
    logistic domain classifier (as ``domain_auroc``'s) cross-fitted on 2 folds."""
    x = np.vstack([calib, new]).astype(np.float64)
    is_new = np.r_[np.zeros(len(calib), bool), np.ones(len(new), bool)]
    p = np.empty(len(x))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    for fit_idx, out_idx in StratifiedKFold(2, shuffle=True, random_state=seed).split(x, is_new):
        p[out_idx] = model.fit(x[fit_idx], is_new[fit_idx]).predict_proba(x[out_idx])[:, 1]
    p = np.clip(p, 1e-6, 1 - 1e-6)
    w = p / (1 - p) * len(calib) / len(new)
    w = np.minimum(w, MAX_RATIO * np.median(w))
    return w[: len(calib)], w[len(calib):]


def prior_shift(probs: np.ndarray, prior_calib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the clinic's probabilities re-weighted to EM's class mix, that mix)."""
    prior = np.clip(prior_calib, 1e-6, None) / np.clip(prior_calib, 1e-6, None).sum()
    q = _em(probs, prior)
    out = probs * (q / prior)
    return out / out.sum(1, keepdims=True), q


def weighted_sets(scores_calib: np.ndarray, groups_calib: np.ndarray, w_calib: np.ndarray, class_scores_new,
                  groups_new: np.ndarray, w_new: np.ndarray, alpha: float) -> np.ndarray:
    """Mondrian weighted split-conformal sets (n_new, n_classes): a case's threshold is the
    weighted quantile of its group's calib scores with its own weight at +infinity."""
    sets = np.zeros(class_scores_new.shape, bool)
    for g in np.unique(groups_new):
        src, dst = groups_calib == g, np.flatnonzero(groups_new == g)
        s, w = scores_calib[src], w_calib[src]
        order = np.argsort(s)
        s, cum = s[order], np.cumsum(w[order])
        need = (1 - alpha) * (cum[-1] + w_new[dst]) if len(s) else np.full(len(dst), np.inf)
        i = np.searchsorted(cum, need - 1e-12) if len(s) else np.zeros(len(dst), int)
        q = np.where(i < len(s), s[np.minimum(i, len(s) - 1)] if len(s) else np.inf, np.inf)
        sets[dst] = class_scores_new[dst] <= q[:, None]
    return sets


def weighted_thresholds(score: np.ndarray, correct: np.ndarray, urgent_true: np.ndarray, flagged: np.ndarray,
                        w: np.ndarray, params: dict[str, dict]) -> dict[str, float]:
    """The three fitted threshold policies refitted on calib with importance weights (the
    urgent floor as fit sets it: no binomial bound, so the comparison is with the run)."""
    out = {}
    if "review_budget" in params:
        out["review_budget"] = budget_threshold(score, w, params["review_budget"]["budget"])
    if "target_accuracy" in params:
        out["target_accuracy"] = accuracy_threshold(score, correct, w, params["target_accuracy"]["target_accuracy"])
    if "urgent_sensitivity" in params:
        out["urgent_sensitivity"] = urgent_threshold(score, urgent_true, flagged, w,
                                                     params["urgent_sensitivity"]["urgent_sensitivity_floor"], None)
    return out


def evaluate_corrections(x: dict, params: dict[str, dict], thresholds: dict[str, float], qhat: dict,
                         method: str, alpha: float, urgent: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Each correction against the run's own rules at the clinic, reading its labels.
    ``x``: embedding_calib/new, probs_calib/new, y_calib/new, score_calib/new, groups_calib/new,
    u_calib/new. The likelihood ratios come from the cases' features (photo and note
    embeddings) or from the model's outputs (log probabilities): a clinic whose features a
    classifier tells apart perfectly leaves calib almost no weight, its outputs much more.
    Rows: correction, metric, slice_value, before, after, target, helps."""
    y, probs, groups = x["y_new"], x["probs_new"], x["groups_new"]
    prior = np.bincount(x["y_calib"], minlength=probs.shape[1]) / len(x["y_calib"])
    shifted, _ = prior_shift(probs, prior)
    k = probs.shape[1]
    rows = [_row("prior_shift", metric, "all", f(probs), f(shifted), higher)
            for metric, f, higher in (("macro_f1", lambda p: M.macro_f1(y, p.argmax(1), k), True),
                                      ("ece", lambda p: M.ece(y, p), False), ("nll", lambda p: M.nll(y, p), False))]
    cs_new = class_scores(probs, method, x["u_new"])
    true_calib = class_scores(x["probs_calib"], method, x["u_calib"])[np.arange(len(x["y_calib"])), x["y_calib"]]
    plain = cs_new <= np.array([qhat.get(g, np.inf) for g in groups])[:, None]
    sources = {"features": (x["embedding_calib"], x["embedding_new"]),
               "outputs": (np.log(np.clip(x["probs_calib"], 1e-9, 1)), np.log(np.clip(probs, 1e-9, 1)))}
    for source, (a, b) in sources.items():
        w_calib, w_new = likelihood_ratios(a, b, seed)
        weighted = weighted_sets(true_calib, x["groups_calib"], w_calib, cs_new, groups, w_new, alpha)
        for g in ["all", *sorted(set(groups))]:
            m = np.ones(len(y), bool) if g == "all" else groups == g
            rows.append(_row(f"weighted_conformal:{source}", "coverage", g, plain[m, y[m]].mean(),
                             weighted[m, y[m]].mean(), None, target=1 - alpha))
            rows.append(_row(f"weighted_conformal:{source}", "set_size", g, plain[m].sum(1).mean(),
                             weighted[m].sum(1).mean(), None))
        rows += _threshold_rows(x, params, thresholds, w_calib, urgent, source)
        rows.append(_row(f"likelihood_ratio:{source}", "effective_calib_share", "all", 1.0,
                         float(w_calib.sum() ** 2 / (w_calib ** 2).sum() / len(w_calib)), None))
    return pd.DataFrame(rows)


def _threshold_rows(x: dict, params: dict, thresholds: dict, w_calib: np.ndarray, urgent: np.ndarray,
                    source: str) -> list:
    """Each refitted policy's promise and workload at the clinic, before and after."""
    pc, pn = x["probs_calib"].argmax(1), x["probs_new"].argmax(1)
    yc, yn = x["y_calib"], x["y_new"]
    refit = weighted_thresholds(x["score_calib"], pc == yc, urgent[yc], urgent[pc], w_calib, params)
    points = OperatingPoints(x["score_new"], pn == yn, urgent[yn], urgent[pn], {})

    def at(threshold: float) -> dict[str, float]:
        row = points.at(threshold).iloc[0]  # overall
        return {"defer_rate": row["defer_rate"], "accepted_accuracy": row["accepted_accuracy"],
                "urgent_caught": 1 - row["missed_urgent_rate"]}

    promises = {"review_budget": ("defer_rate", "budget"), "target_accuracy": ("accepted_accuracy", "target_accuracy"),
                "urgent_sensitivity": ("urgent_caught", "urgent_sensitivity_floor")}
    rows = []
    for name, t in refit.items():
        before, after = at(thresholds[name]), at(t)
        metric, key = promises[name]
        rows.append(_row(f"weighted_thresholds:{source}:{name}", metric, "all", before[metric], after[metric], None,
                         target=params[name][key]))
        if metric != "defer_rate":
            rows.append(_row(f"weighted_thresholds:{source}:{name}", "defer_rate", "all", before["defer_rate"],
                             after["defer_rate"], None))
    return rows


def _row(correction: str, metric: str, slice_value: str, before: float, after: float, higher: bool | None,
         target: float | None = None) -> dict:
    """helps: closer to ``target`` (when given), else better in the metric's direction."""
    if target is not None:
        helps = abs(after - target) < abs(before - target)
    else:
        helps = None if higher is None else (after > before if higher else after < before)
    return {"correction": correction, "metric": metric, "slice_value": slice_value, "before": float(before),
            "after": float(after), "target": target, "helps": helps}
