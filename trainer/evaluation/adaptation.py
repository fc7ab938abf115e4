"""How many labelled local cases a new clinic needs: draw k of its cases by patient, refit
the run's rules on them (``trainer/posthoc/adapt.py``) and judge the promises on the
clinic's other cases only.

- ``draw``: k cases, whole patients at a time (a patient's other cases never land in the
  evaluation), at random, stratified by skin-tone group (equal shares, so every Mondrian
  group gets local cases), or by uncertainty (deferral-score quartiles, the upper ones
  drawn more); each case carries the weight that makes the draw stand for the clinic.
- ``figures``: the promises on the evaluation cases: the deferral score's ECE against the
  need for review, urgent cases caught under ``urgent_sensitivity``, accepted accuracy
  under ``target_accuracy``, every policy's deferral rate, Mondrian coverage per skin-tone
  group, macro F1.
- ``curve``: ``figures`` for each k over repeated draws; ``summarise``: the mean, the
  2.5-97.5% spread and the worst draw, and whether each promise holds; ``smallest_k``: the
  labels each promise needs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from trainer.evaluation import metrics as M
from trainer.posthoc.adapt import CONFIDENCE, Adaptation, ClinicCases, fit_adaptation, outputs
from trainer.posthoc.replay import Rules

SELECT = ("random", "stratified", "uncertainty")
CURVE_K = (0, 25, 50, 100, 200, 400)
CURVE_DRAWS = 10
ECE_TARGET = 0.05  # the deferral score's ECE a clinic can rely on
TOLERANCE = {"urgent_caught": (0.02, 0.05), "accepted_accuracy": 0.03, "coverage": (0.03, 0.05)}
MIN_GROUP_N = 100  # a skin-tone group's coverage is judged only with this many evaluation cases
SHARE_OF_DRAWS = 0.9  # the urgent floor (less its tolerance) must hold in this share of draws
PROMISES = {  # metric -> (policy whose decisions it judges, the promise's parameter)
    "urgent_caught": ("urgent_sensitivity", "urgent_sensitivity_floor"),
    "accepted_accuracy": ("target_accuracy", "target_accuracy"),
}


def strata(cases: ClinicCases, method: str, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each case's stratum and each stratum's share of the draw (random: one stratum)."""
    if method == "random":
        return np.zeros(len(cases.y), int), np.ones(1)
    if method == "stratified":
        labels, codes = np.unique(cases.groups, return_inverse=True)
        return codes, np.full(len(labels), 1 / len(labels))
    if method == "uncertainty":
        codes = np.searchsorted(np.quantile(score, [0.25, 0.5, 0.75]), score, side="right")
        mean = np.array([score[codes == q].mean() if (codes == q).any() else 0 for q in range(4)])
        return codes, mean / mean.sum()
    raise ValueError(f"--select must be one of {', '.join(SELECT)}, got {method!r}.")


def draw(cases: ClinicCases, k: int, method: str, seed: int, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the k local cases, their weights). Patients are taken whole, in random
    order within each stratum, skipping one who would overshoot the stratum's quota."""
    n = len(cases.y)
    if not 0 <= k < n:
        raise ValueError(f"--labels must be between 0 and {n - 1} (the clinic has {n} cases), got {k}.")
    code, share = strata(cases, method, score)
    quota = np.floor(share * k).astype(int)
    quota[: k - quota.sum()] += 1  # the remainder, one each
    rng = np.random.default_rng(seed)
    chosen = []
    for s in range(len(share)):
        idx = np.flatnonzero(code == s)
        patients = pd.unique(cases.patients[idx][rng.permutation(len(idx))])
        by_patient = pd.Series(idx).groupby(cases.patients[idx]).apply(list)
        taken = 0
        for p in patients:
            rows = by_patient[p]
            if taken + len(rows) <= quota[s]:
                chosen += rows
                taken += len(rows)
            if taken == quota[s]:
                break
    chosen = np.sort(np.asarray(chosen, int))
    stratum_n = np.bincount(code, minlength=len(share)).astype(float)
    drawn_n = np.bincount(code[chosen], minlength=len(share)).astype(float)
    weights = stratum_n[code[chosen]] / np.maximum(drawn_n[code[chosen]], 1)
    return chosen, weights / weights.mean() if len(chosen) else weights


def figures(rules: Rules, a: Adaptation, cases: ClinicCases, urgent: np.ndarray) -> list[dict]:
    """The promises on ``cases`` (the clinic's cases not used for adaptation): rows of
    metric, slice, slice_value, value, n."""
    out = outputs(rules, a, cases, urgent)
    pred, y = out["probs"].argmax(1), cases.y
    correct = pred == y
    needs_review = ~correct | out["doubtful_rule_out"]
    urgent_true, missed = urgent[y], urgent[y] & ~urgent[pred]
    n = len(y)
    rows = [("defer_ece", "overall", "all", M.binary_ece(out["defer_score"], needs_review), n),
            ("macro_f1", "overall", "all", M.macro_f1(y, pred, out["probs"].shape[1]), n)]
    for name, deferred in out["decisions"].items():
        rows.append(("defer_rate", "policy", name, float(deferred.mean()), n))
        if name == PROMISES["urgent_caught"][0]:
            caught = ~(missed & ~deferred)
            rows.append(("urgent_caught", "overall", "all", float(caught[urgent_true].mean()) if urgent_true.any()
                         else np.nan, int(urgent_true.sum())))
        if name == PROMISES["accepted_accuracy"][0]:
            rows.append(("accepted_accuracy", "overall", "all", float(correct[~deferred].mean())
                         if (~deferred).any() else np.nan, int((~deferred).sum())))
    covered = out["sets"][np.arange(n), y]
    rows.append(("coverage", "overall", "all", float(covered.mean()), n))
    for g in sorted(set(cases.groups)):
        m = cases.groups == g
        rows.append(("coverage", "fitzpatrick_group", g, float(covered[m].mean()), int(m.sum())))
    return [dict(zip(("metric", "slice", "slice_value", "value", "n"), r)) for r in rows]


def adapt_once(rules: Rules, cases: ClinicCases, urgent: np.ndarray, k: int, method: str, seed: int,
               confidence: float | None = CONFIDENCE) -> tuple[Adaptation, np.ndarray, np.ndarray]:
    """(the adaptation from k local cases, the local indices, the evaluation indices)."""
    base = outputs(rules, Adaptation(0), cases, urgent)["defer_score"]
    local, weights = draw(cases, k, method, seed, base)
    rest = np.setdiff1d(np.arange(len(cases.y)), local)
    return fit_adaptation(rules, cases.take(local), urgent, weights, confidence=confidence), local, rest


def curve(rules: Rules, cases: ClinicCases, urgent: np.ndarray, ks=CURVE_K, draws: int = CURVE_DRAWS,
          seed: int = 0, method: str = "random", progress=None, confidence: float | None = CONFIDENCE) -> pd.DataFrame:
    """``figures`` for each k on the clinic's other cases, one row per draw (k = 0: one
    draw, the run's own rules on every case)."""
    rows = []
    for k in ks:
        for d in range(1 if k == 0 else draws):
            a, _, rest = adapt_once(rules, cases, urgent, k, method, seed + 1000 * k + d, confidence)
            rows += [{**r, "k": k, "draw": d, "n_eval": len(rest)}
                     for r in figures(rules, a, cases.take(rest), urgent)]
            if progress is not None:
                progress.update(1)
    return pd.DataFrame(rows)



def targets(rules: Rules) -> dict[str, float]:
    """Each promise's target: the run's policies' settings, 1 - alpha, and ``ECE_TARGET``."""
    out = {"defer_ece": ECE_TARGET, "coverage": 1 - rules.conformal.alpha}
    for metric, (policy, key) in PROMISES.items():
        if policy in rules.policy_params:
            out[metric] = float(rules.policy_params[policy][key])
    return out


def _holds(metric: str, target: float, values: np.ndarray, n_eval: int) -> bool | None:
    mean = float(np.nanmean(values))
    if metric == "defer_ece":
        return mean <= target
    if metric == "urgent_caught":
        on_average, per_draw = TOLERANCE[metric]
        return mean >= target - on_average and np.mean(values >= target - per_draw) >= SHARE_OF_DRAWS
    if metric == "accepted_accuracy":
        return abs(mean - target) <= TOLERANCE[metric]
    if metric == "coverage":
        below, above = TOLERANCE[metric]
        return None if n_eval < MIN_GROUP_N else target - below <= mean <= target + above
    return None


def summarise(raw: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """One row per k and figure: value the mean over draws, ci_low and ci_high the 2.5% and
    97.5% points, worst the worst draw, target and whether the promise holds."""
    goal = targets(rules)
    rows = []
    for (k, metric, slice_, value), g in raw.groupby(["k", "metric", "slice", "slice_value"], sort=False):
        v, n_eval = g["value"].to_numpy(float), int(g["n"].min())
        target = goal.get(metric) if slice_ != "policy" else None
        if np.isnan(v).all():  # e.g. no urgent case left to judge, no case accepted
            rows.append({"k": k, "metric": metric, "slice": slice_, "slice_value": value, "draws": len(v),
                         "n_eval": int(g["n_eval"].min()), "target": target, "holds": None})
            continue
        rows.append({"k": k, "metric": metric, "slice": slice_, "slice_value": value, "value": float(np.nanmean(v)),
                     "ci_low": float(np.nanpercentile(v, 2.5)), "ci_high": float(np.nanpercentile(v, 97.5)),
                     "worst": float(np.nanmax(v) if metric == "defer_ece" else np.nanmin(v)), "draws": len(v),
                     "n_eval": int(g["n_eval"].min()), "target": target,
                     "holds": None if target is None else _holds(metric, target, v, n_eval)})
    return pd.DataFrame(rows)


def smallest_k(table: pd.DataFrame) -> dict[str, float]:
    """Each promise's smallest k at which it holds (for coverage: in every judged group),
    and keeps holding at every larger k on the curve; NaN where it never does."""
    out = {}
    for metric, g in table[table["holds"].notna()].groupby("metric", sort=False):
        by_k = g.groupby("k")["holds"].agg(lambda h: bool(all(h)))
        failing = by_k.index[~by_k.to_numpy()]
        ok = by_k.index[by_k.to_numpy() & (by_k.index > (failing.max() if len(failing) else -1))]
        out[metric] = float(ok.min()) if len(ok) else float("nan")
    return out
