"""After training: calibration, the deferral score, conformal sets, deferral policies and
the audit, from a run's predictions to the tables the store keeps. Pure: no store here.

``posthoc_tables`` runs the steps of ``steps.py`` and ``audit_tables.py`` model by model;
``fit`` runs it at its end and ``python -m trainer posthoc`` re-runs it on a stored run.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from trainer.config import BASELINES, FitConfig
from trainer.evaluation.audit import patient_weights
from trainer.posthoc.audit_tables import Scored, audit_model, case_frame, comparisons, slice_families
from trainer.posthoc.steps import SPLITS, PolicySettings, calibrate, conformal_sets, fit_policies, score_deferral
from trainer.uncertainty.deferral import deferral_signals

TABLES = ("calibrators", "deferral_scorers", "conformal", "policies", "metrics", "reliability_bins", "risk_coverage")
PER_CASE_SIGNALS = ("train_distance", "photo_sharpness", "photo_overexposed")


def policy_settings(cfg: FitConfig) -> PolicySettings:
    return PolicySettings(cfg.review_budget, cfg.target_accuracy, cfg.urgent_sensitivity, cfg.default_policy,
                          {"method": cfg.conformal_method, "alpha": cfg.alpha, "mode": "mondrian"})


def posthoc_tables(preds: pd.DataFrame, cases: pd.DataFrame, classes: list[str], urgent_classes,
                   cfg: FitConfig, log=print) -> dict[str, pd.DataFrame]:
    """Every post-hoc table of a run. ``preds`` has model, case_id, split, y_true,
    probs_uncal, and the per-case signals train_distance, photo_sharpness and
    photo_overexposed (any may be absent); nothing here reads a ``sim_*`` column unless the
    user names it as an audit slice."""
    urgent = np.isin(classes, list(urgent_classes if urgent_classes is not None else []))
    frames = {m: case_frame(g, cases, classes, tuple(cfg.audit_extra)) for m, g in preds.groupby("model", sort=False)}
    calibrated = {}
    for model, frame in frames.items():
        log(f"{model}: calibrating")
        probs_uncal = np.stack(frame["probs_uncal"])
        probs, info = calibrate(probs_uncal, frame["y"].to_numpy(), frame["split"].to_numpy() == "calib",
                                cfg.calibrators, cfg.calib_folds, cfg.seed)
        log(f"  calibrator {info['method']} (out-of-fold NLL / ECE: " +
            ", ".join(f"{k} {v['nll']:.3f} / {v['ece']:.3f}" for k, v in info["candidates"].items()) + ")")
        calibrated[model] = (probs_uncal, probs, info)
    first = next(iter(frames.values()))  # every model has the same cases, in the same order
    weights = {s: patient_weights(first.loc[first["split"] == s, "patient_id"].to_numpy(), cfg.n_boot, cfg.seed + i)
               for i, s in enumerate(SPLITS)}
    u = np.random.default_rng(cfg.seed).random(len(first))  # randomised APS, one draw per case
    single = {m: calibrated[m][1] for m in BASELINES if m in calibrated}
    rows: dict[str, list] = {k: [] for k in TABLES}
    f1, pred_rows = {}, []
    for model, frame in frames.items():
        t = time.perf_counter()
        probs_uncal, probs, info = calibrated[model]
        tables, f1[model], pred = _model_tables(frame, probs_uncal, probs, urgent, single, weights, u, cfg)
        rows["calibrators"].append(pd.DataFrame([{"model": model, **info}]))
        for name, df in tables.items():
            rows[name].append(df.assign(model=model))
        pred_rows.append(pred.assign(model=model, y_pred=np.asarray(classes)[probs.argmax(1)]))
        log(f"{model}: deferral, conformal sets, policies and audit in {time.perf_counter() - t:.1f} s")
    result = {k: pd.concat(v, ignore_index=True) for k, v in rows.items()}
    result["comparisons"] = comparisons(f1, {s: int((first["split"] == s).sum()) for s in SPLITS})
    result["predictions"] = pd.concat(pred_rows, ignore_index=True)[["model", "case_id", "probs", "y_pred",
                                                                     "defer_score"]]
    return result


def _model_tables(frame: pd.DataFrame, probs_uncal, probs, urgent, single: dict, weights, u, cfg: FitConfig):
    """One calibrated model's deferral score, conformal sets, policies and audit."""
    y, split = frame["y"].to_numpy(), frame["split"].to_numpy()
    groups = frame["fitzpatrick_group"].to_numpy()
    signals = deferral_signals(probs, urgent, single.get("text_only"), single.get("image_only"),
                               note_missing=frame["note"].str.strip().eq("").to_numpy(),
                               **{c: frame[c].to_numpy() for c in PER_CASE_SIGNALS if c in frame})
    defer_score, needs_review, scorer = score_deferral(probs, y, split == "calib", signals, urgent, cfg.urgent_doubt,
                                                       cfg.calib_folds, cfg.seed)
    conf_rows, sets = conformal_sets(probs, y, split, groups, u, cfg.alpha, cfg.conformal_method, cfg.calib_folds,
                                     cfg.seed)
    policy_rows, deferred = fit_policies(probs, y, split, groups, defer_score, urgent, sets, policy_settings(cfg))
    scored = Scored(frame, probs_uncal, probs, defer_score, needs_review)
    audit, f1 = audit_model(scored, deferred, sets, urgent, weights,
                            slice_families(frame, tuple(cfg.audit_extra)), cfg.min_slice_n)
    tables = {"deferral_scorers": pd.DataFrame([{"params": scorer}]), "conformal": conf_rows,
              "policies": policy_rows, **audit}
    pred = pd.DataFrame({"case_id": frame["case_id"], "probs": list(probs), "defer_score": defer_score})
    return tables, f1, pred
