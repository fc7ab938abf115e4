"""A run's post-hoc rules, exactly as its tables store them, applied to new cases.

``fit`` fits the calibrator, the deferral scorer, the conformal thresholds and the
policies on ``calib`` and stores each one's parameters. Scoring a case the run never saw
refits nothing: it takes those rows back (``load_rules``) and applies them
(``apply_rules``), so a case scores the same whether it was in the run's ``test`` split or
arrives later.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_store.fitzpatrick import fitzpatrick_group
from trainer.uncertainty.calibration import calibrator_from_params, log_probs
from trainer.uncertainty.conformal import SplitConformal
from trainer.uncertainty.deferral import DeferralScorer, deferral_signals, doubtful_rule_out


@dataclass
class Rules:
    """One model's stored post-hoc rules."""

    calibrator: object
    scorer: DeferralScorer
    urgent_doubt: float
    conformal: SplitConformal  # Mondrian, one threshold per skin-tone group (a group calib never saw: every class)
    thresholds: dict[str, tuple[float, dict[str, float]]]  # policy -> (threshold, per-group thresholds)
    policy_params: dict[str, dict]  # policy -> what it promises (as stored: budget, target_accuracy, ...)


def _params(value) -> dict:
    return json.loads(value) if isinstance(value, str) else dict(value)


RULE_TABLES = ("calibrators", "deferral_scorers", "conformal", "policies")


def load_rules(tables: dict[str, pd.DataFrame], model: str, conformal_method: str, alpha: float) -> Rules:
    """One model's rules from a run's ``RULE_TABLES`` (as the store reads them)."""
    rows = {name: t[t["model"] == model] for name, t in tables.items()}
    cal, scorer = rows["calibrators"], rows["deferral_scorers"]
    if cal.empty or scorer.empty:
        raise ValueError(f"The run has no post-hoc tables for {model!r}; run `python -m trainer posthoc`.")
    scorer_params = _params(scorer["params"].iloc[0])
    conf = rows["conformal"]
    conf = conf[(conf["method"] == conformal_method) & (conf["mode"] == "mondrian")]
    sets = SplitConformal.from_thresholds(conformal_method, alpha,
                                          dict(zip(conf["slice_value"], conf["qhat"].astype(float))))
    policies = rows["policies"]
    thresholds = policy_thresholds(policies)
    params = {name: _params(policies[policies["policy"] == name]["params"].iloc[0]) for name in thresholds}
    return Rules(calibrator_from_params(cal["method"].iloc[0], _params(cal["params"].iloc[0])),
                 DeferralScorer.from_params(scorer_params), float(scorer_params["urgent_doubt"]),
                 sets, thresholds, params)


def policy_thresholds(policies: pd.DataFrame) -> dict[str, tuple[float, dict[str, float]]]:
    """Each threshold policy of a run's ``policies`` rows: (its threshold, per-group thresholds)."""
    out = {}
    for name, rows in policies[policies["policy"] != "conformal_set"].groupby("policy", sort=True):
        overall = rows[rows["slice"] == "overall"]["threshold"]
        per_group = _params(rows["params"].iloc[0]).get("thresholds", {})
        out[name] = (float(overall.iloc[0]), {str(k): float(v) for k, v in per_group.items()})
    return out


def decide(threshold: tuple[float, dict[str, float]], defer_score: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(n,) True where a clinician reviews: the score reaches the case's group threshold
    (a group without its own: the overall one), as ``ThresholdPolicy.decide``."""
    overall, per_group = threshold
    return np.asarray(defer_score) >= np.array([per_group.get(g, overall) for g in groups], dtype=float)


def calibrated(rules: Rules, probs_uncal: np.ndarray) -> np.ndarray:
    return rules.calibrator.predict_proba(log_probs(probs_uncal))


def apply_rules(rules: Rules, probs_uncal: np.ndarray, urgent: np.ndarray, single: dict[str, np.ndarray],
                per_case: pd.DataFrame, fitzpatrick: np.ndarray, u: np.ndarray) -> dict:
    """Calibrated probabilities, the deferral score with its signals, the conformal sets and
    every policy's decision (True: a clinician reviews the case) for new cases.
    ``single``: the calibrated text_only and image_only probabilities (for the agreement
    signals); ``per_case``: note_missing, train_distance, photo_sharpness, photo_overexposed."""
    return rule_outputs(rules, calibrated(rules, probs_uncal), urgent, single, per_case,
                        fitzpatrick_group(pd.Series(fitzpatrick)), u)


def rule_outputs(rules: Rules, probs: np.ndarray, urgent: np.ndarray, single: dict[str, np.ndarray],
                 per_case: pd.DataFrame, groups: np.ndarray, u: np.ndarray, rescore=None) -> dict:
    """``apply_rules`` from calibrated probabilities and skin-tone groups. ``rescore(score,
    doubtful_rule_out)``, when given, maps the scorer's deferral score before the policies
    read it (a local recalibration's Platt layer)."""
    signals = deferral_signals(probs, urgent, single.get("text_only"), single.get("image_only"),
                               **{c: per_case[c].to_numpy() for c in per_case})
    rule_out = doubtful_rule_out(probs, urgent, rules.urgent_doubt)
    defer_score = rules.scorer.predict(signals, rule_out)
    if rescore is not None:
        defer_score = rescore(defer_score, rule_out)
    sets = rules.conformal.predict_sets(probs, groups, u)
    decisions = {name: decide(threshold, defer_score, groups) for name, threshold in rules.thresholds.items()}
    decisions["conformal_set"] = sets.sum(1) != 1
    return {"probs": probs, "signals": signals, "doubtful_rule_out": rule_out, "defer_score": defer_score,
            "sets": sets, "decisions": decisions, "groups": groups}


PER_CASE = ("train_distance", "photo_sharpness", "photo_overexposed")  # the per-case signals in ``signals``


def scored_cases(scores: pd.DataFrame, run_id: str, dataset: str, error=ValueError) -> pd.DataFrame:
    """One model's stored scores of a dataset (``read_scores``) as columns: case_id, probs,
    defer_score and the per-case signals; ``error`` is raised when ``predict`` has not run."""
    if scores.empty:
        raise error(f"Run {run_id} has not scored dataset {dataset!r}; run `python -m trainer predict --run "
                    f"{run_id} --dataset {dataset}` first.")
    signals = pd.DataFrame([json.loads(s) for s in scores["signals"]])
    return pd.concat([scores[["case_id", "probs", "defer_score"]].reset_index(drop=True), signals[list(PER_CASE)]],
                     axis=1)
