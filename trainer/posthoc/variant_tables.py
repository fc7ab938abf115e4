"""An adapted variant's tables, shaped like a model's (``posthoc_tables``), so the audit,
the dashboard and the report read it like any model: its outputs on the clinic's cases not
used to adapt, with the same patient-bootstrap audit. Pure: no store here."""
from __future__ import annotations

import numpy as np
import pandas as pd

from trainer.config import FitConfig
from trainer.evaluation.audit import patient_weights
from trainer.posthoc.adapt import Adaptation
from trainer.posthoc.audit_tables import Scored, audit_model, slice_families
from trainer.posthoc.replay import Rules
from trainer.posthoc import steps
from trainer.posthoc.steps import SPLITS


def baseline(frame: pd.DataFrame, out: dict, rules: Rules, urgent: np.ndarray, default_policy: str) -> dict:
    """The run's own rules on the same cases as a variant (``out``: ``adapt.outputs`` with
    ``Adaptation(0)``): its policy and conformal rows, as JSON records."""
    y, split, groups = frame["y"].to_numpy(), frame["split"].iloc[0], frame["fitzpatrick_group"].to_numpy()
    pred = out["probs"].argmax(1)
    policies = policy_rows(out["decisions"], rules.thresholds, rules, y, pred, urgent, groups, split,
                           out["decisions"][default_policy])
    conformal = conformal_rows(out["sets"], y, groups, split, rules, Adaptation(0))
    return {name: df.astype(object).where(df.notna(), None).to_dict("records")  # NaN is not JSON
            for name, df in (("policies", policies), ("conformal", conformal))}


def variant_tables(frame: pd.DataFrame, probs_uncal: np.ndarray, out: dict, rules: Rules, a: Adaptation,
                   urgent: np.ndarray, cfg: FitConfig, classes: list[str]) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """(tables, predictions) of the variant. ``frame``: ``case_frame`` of the evaluation
    cases (one split); ``out``: ``adapt.outputs`` on them."""
    y, split = frame["y"].to_numpy(), frame["split"].iloc[0]
    groups = frame["fitzpatrick_group"].to_numpy()
    probs, score, sets = out["probs"], out["defer_score"], out["sets"]
    pred = probs.argmax(1)
    needs_review = (pred != y) | out["doubtful_rule_out"]
    deferred = out["decisions"][cfg.default_policy]
    # The audit knows the run's splits; another dataset's clinic ("new") is audited as one and relabelled.
    as_split = split if split in SPLITS else "test"
    weights = {as_split: patient_weights(frame["patient_id"].to_numpy(), cfg.n_boot, cfg.seed)}
    audit, _ = audit_model(Scored(frame.assign(split=as_split), probs_uncal, probs, score, needs_review), deferred,
                           sets, urgent, weights, slice_families(frame, tuple(cfg.audit_extra)), cfg.min_slice_n)
    audit = {name: t.assign(split=split) for name, t in audit.items()}
    params = a.params()
    tables = {**audit,
              "calibrators": pd.DataFrame([{"method": "adapted", "params": {"scale": params["scale"],
                                                                             "bias": params["bias"]},
                                            "candidates": {}}]),
              "deferral_scorers": pd.DataFrame([{"params": {"platt": params["platt"],
                                                            "urgent_doubt": rules.urgent_doubt}}]),
              "conformal": conformal_rows(sets, y, groups, split, rules, a),
              "policies": policy_rows(out["decisions"], {**rules.thresholds, **a.thresholds}, rules, y, pred,
                                       urgent, groups, split, deferred)}
    preds = pd.DataFrame({"case_id": frame["case_id"], "split": split, "y_true": frame["y_true"],
                          "y_pred": np.asarray(classes)[pred], "probs": list(probs),
                          "defer_score": score, "probs_uncal": list(probs_uncal)})
    return tables, preds


def _groups(groups: np.ndarray):
    yield "overall", "all", np.ones(len(groups), bool)
    for g in sorted(set(groups)):
        yield "fitzpatrick_group", g, groups == g


def conformal_rows(sets, y, groups, split, rules: Rules, a: Adaptation) -> pd.DataFrame:
    covered, size = sets[np.arange(len(y)), y], sets.sum(1)
    qhat = a.qhat or rules.conformal.qhat_
    return pd.DataFrame([{"split": split, "method": rules.conformal.method, "mode": "mondrian", "slice_value": g,
                          "alpha": rules.conformal.alpha, "qhat": qhat.get(g, np.inf), "n_calib": a.k, "n": int(m.sum()),
                          "coverage": float(covered[m].mean()), "set_size": float(size[m].mean())}
                         for _, g, m in _groups(groups) if g != "all"])


def policy_rows(decisions: dict, thresholds: dict, rules: Rules, y, pred, urgent, groups, split,
                base: np.ndarray) -> pd.DataFrame:
    """Each policy's rows as ``fit`` writes them (``steps.policy_rows``), at the variant's thresholds."""
    urgent_true = urgent[y]
    outcome = {"correct": pred == y, "missed": urgent_true & ~urgent[pred], "urgent": urgent_true, "base": base}
    as_split = split if split in SPLITS else "test"  # steps knows the run's splits; "new" is relabelled
    conformal = {"method": rules.conformal.method, "alpha": rules.conformal.alpha, "mode": "mondrian"}
    rows = []
    for name, deferred in decisions.items():
        overall, per_group = thresholds.get(name, (np.nan, {}))
        rows += steps.policy_rows(name, rules.policy_params.get(name) or conformal,
                                  lambda v, o=overall, g=per_group: g.get(v, o), deferred,
                                  np.full(len(y), as_split, dtype=object), groups, outcome)
    return pd.DataFrame(rows).assign(split=split)
