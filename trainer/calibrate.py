"""``calibrate``: from a run's stored predictions to calibrated probabilities, deferral
scores, conformal sets, policies and the audit tables; run by ``fit`` at its end and by
``python -m trainer calibrate`` alone."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

from data_store.store import TriageStore
from trainer import metrics as M
from trainer.audit import (CaseOutcomes, audit_rows, bootstrap_slices, fitzpatrick_group, fitzpatrick_type,
                           patient_weights)
from trainer.config import FitConfig
from trainer.deferral import deferral_signals
from trainer.posthoc import (BASELINES, SPLITS, ModelOutputs, calibrate_model, conformal_sets, fit_policies,
                             point_only_metrics, score_deferral, slice_families)

GRID = np.linspace(0.01, 1.0, 100)  # coverages of the stored risk-coverage curves
CURVE_SLICES = ("overall", "fitzpatrick_group", "clinic")
POINT_SLICES = ("overall", "fitzpatrick_group", "clinic")


def case_frame(preds: pd.DataFrame, cases: pd.DataFrame, classes: list[str], extra_columns=()) -> pd.DataFrame:
    """One model's predictions joined to the case columns the audit slices by, sorted by case_id."""
    c = cases.set_index("case_id")
    missing = [col for col in extra_columns if not c["extra"].map(lambda e: col in _json(e)).any()]
    if missing:
        raise ValueError(f"Audit columns {missing} are not in the dataset's extra columns.")
    f = preds.sort_values("case_id").reset_index(drop=True)
    f["y"] = f["y_true"].map({name: i for i, name in enumerate(classes)}).to_numpy()
    for col in ("patient_id", "clinic", "fitzpatrick", "note"):
        f[col] = c.loc[f["case_id"], col].to_numpy()
    f["fitzpatrick_group"] = fitzpatrick_group(f["fitzpatrick"])
    f["fitzpatrick_type"] = fitzpatrick_type(f["fitzpatrick"])
    for col in extra_columns:
        f[f"extra:{col}"] = c.loc[f["case_id"], "extra"].map(lambda e: _json(e).get(col)).to_numpy()
    return f


def _json(value) -> dict:
    return json.loads(value) if isinstance(value, str) else (value or {})


def audit_model(out: ModelOutputs, deferred, sets, urgent, weights: dict, cfg) -> dict[str, pd.DataFrame]:
    f = out.frame
    y, split = f["y"].to_numpy(), f["split"].to_numpy()
    families = slice_families(f, tuple(cfg.audit_extra))
    metric_rows, bins_rows, curve_rows, f1 = [], [], [], {}
    for s in SPLITS:
        m = split == s
        if not m.any():
            continue
        o = CaseOutcomes(y[m], out.probs[m], out.probs_uncal[m], deferred[m], urgent,
                         sets[m][np.arange(m.sum()), y[m]], sets[m].sum(1))
        reps = bootstrap_slices(o, weights[s], {k: v[m] for k, v in families.items()})
        f1[s] = reps[("overall", "all")]["macro_f1"]
        rows = audit_rows(reps, cfg.min_slice_n)
        rows.loc[(rows["slice"] == "category") & (rows["metric"] == "accuracy"), "metric"] = "category_accuracy"
        metric_rows.append(rows.assign(split=s))
        for fam in POINT_SLICES:
            for value in sorted(set(families[fam][m])):
                g = m & (families[fam] == value)
                point = point_only_metrics(out, g)
                metric_rows.append(pd.DataFrame(
                    [{"split": s, "slice": fam, "slice_value": value, "metric": k, "value": v, "n": int(g.sum()),
                      "too_small": g.sum() < cfg.min_slice_n, "flagged": False} for k, v in point.items()]))
        for fam in CURVE_SLICES:
            for value in sorted(set(families[fam][m])):
                g = m & (families[fam] == value)
                bins_rows += _bins(out, g, s, fam, value)
                curve_rows += _curve(out, g, s, fam, value)
    return {"metrics": pd.concat(metric_rows, ignore_index=True), "reliability_bins": pd.DataFrame(bins_rows),
            "risk_coverage": pd.DataFrame(curve_rows), "f1_replicates": f1}


def _bins(out: ModelOutputs, g: np.ndarray, split: str, fam: str, value: str) -> list[dict]:
    y = out.frame["y"].to_numpy()[g]
    kinds = {"calibrated": (out.probs[g].max(1), out.probs[g].argmax(1) == y),
             "uncalibrated": (out.probs_uncal[g].max(1), out.probs_uncal[g].argmax(1) == y),
             "defer": (out.defer_score[g], out.needs_review[g])}
    rows = []
    for kind, (conf, event) in kinds.items():
        b = M.reliability_bins(conf, event)
        for i in range(len(b["count"])):
            rows.append({"split": split, "kind": kind, "slice": fam, "slice_value": value, "bin": i,
                         "lower": b["lower"][i], "upper": b["upper"][i], "n": int(b["count"][i]),
                         "confidence": b["confidence"][i], "accuracy": b["accuracy"][i]})
    return rows


def _curve(out: ModelOutputs, g: np.ndarray, split: str, fam: str, value: str) -> list[dict]:
    """Risk when keeping the cases with the lowest defer score, at 1%..100% coverage."""
    correct = out.probs[g].argmax(1) == out.frame["y"].to_numpy()[g]
    rc = M.risk_coverage(correct, -out.defer_score[g])
    k = np.maximum(np.ceil(GRID * len(correct)).astype(int), 1) - 1
    return [{"split": split, "slice": fam, "slice_value": value, "coverage": float(GRID[i]), "risk": rc["risk"][j],
             "generalized_risk": rc["generalized_risk"][j], "threshold": -rc["threshold"][j]}
            for i, j in enumerate(k)]


def _comparisons(f1: dict[str, dict[str, np.ndarray]], n: dict[str, int]) -> pd.DataFrame:
    """Paired bootstrap differences of macro F1: each fusion model minus each baseline."""
    rows = []
    for model, reps in f1.items():
        if model in BASELINES:
            continue
        for base in BASELINES:
            if base not in f1:
                continue
            for split, r in reps.items():
                diff = r - f1[base][split]
                lo, hi = np.nanpercentile(diff[1:], [2.5, 97.5])
                rows.append({"split": split, "model": model, "baseline": base, "metric": "macro_f1",
                             "value": float(diff[0]), "ci_low": float(lo), "ci_high": float(hi), "n": n[split]})
    return pd.DataFrame(rows)


def posthoc_tables(preds: pd.DataFrame, cases: pd.DataFrame, classes: list[str], urgent_classes,
                   cfg: FitConfig, log=print) -> dict[str, pd.DataFrame]:
    """Every post-hoc table of a run. ``preds`` has model, case_id, split, y_true,
    probs_uncal, and the per-case signals train_distance, photo_sharpness and
    photo_overexposed (any may be absent); nothing here reads a ``sim_*`` column unless the
    user names it as an audit slice."""
    urgent = np.isin(classes, list(urgent_classes if urgent_classes is not None else []))
    outs = {m: ModelOutputs(case_frame(g, cases, classes, tuple(cfg.audit_extra)),
                            np.stack(g.sort_values("case_id")["probs_uncal"]))
            for m, g in preds.groupby("model", sort=False)}
    tables: dict[str, list] = {k: [] for k in ("calibrators", "deferral_scorers", "conformal", "policies", "metrics",
                                               "reliability_bins", "risk_coverage")}
    for model, out in outs.items():
        log(f"{model}: calibrating")
        tables["calibrators"].append({"model": model, **calibrate_model(out, cfg, log)})
    any_frame = next(iter(outs.values())).frame
    weights = {s: patient_weights(any_frame.loc[any_frame["split"] == s, "patient_id"].to_numpy(), cfg.n_boot,
                                  cfg.seed + i) for i, s in enumerate(SPLITS)}
    u = np.random.default_rng(cfg.seed).random(len(any_frame))  # randomised APS, one draw per case
    text, image = outs.get("text_only"), outs.get("image_only")
    f1, pred_rows = {}, []
    for model, out in outs.items():
        t = time.perf_counter()
        per_case = {c: out.frame[c].to_numpy() for c in ("train_distance", "photo_sharpness", "photo_overexposed")
                    if c in out.frame}
        signals = deferral_signals(out.probs, urgent, text.probs if text else None, image.probs if image else None,
                                   note_missing=out.frame["note"].str.strip().eq("").to_numpy(), **per_case)
        tables["deferral_scorers"].append({"model": model, "params": score_deferral(out, signals, urgent, cfg)})
        conf_rows, sets = conformal_sets(out, cfg, u)
        policy_rows, deferred = fit_policies(out, urgent, sets, cfg)
        audit = audit_model(out, deferred, sets, urgent, weights, cfg)
        f1[model] = audit.pop("f1_replicates")
        for name, df in [("conformal", conf_rows), ("policies", policy_rows), *audit.items()]:
            tables[name].append(df.assign(model=model))
        pred_rows.append(pd.DataFrame({"model": model, "case_id": out.frame["case_id"], "probs": list(out.probs),
                                       "y_pred": np.asarray(classes)[out.probs.argmax(1)],
                                       "defer_score": out.defer_score}))
        log(f"{model}: deferral, conformal sets, policies and audit in {time.perf_counter() - t:.1f} s")
    n = {s: int((any_frame["split"] == s).sum()) for s in SPLITS}
    result = {k: pd.DataFrame(v) if v and isinstance(v[0], dict) else pd.concat(v, ignore_index=True)
              for k, v in tables.items()}
    result["comparisons"] = _comparisons(f1, n)
    result["predictions"] = pd.concat(pred_rows, ignore_index=True)
    return result


def calibrate(db, run_id: str, cfg_overrides: dict | None = None, log=print) -> dict[str, pd.DataFrame]:
    """Re-run the post-hoc stage of a stored run and replace its tables."""
    with TriageStore(db) as store:  # a writer: brings a store of an older schema up to date
        run = store.read_run(run_id)
        if run["status"] != "complete":
            raise ValueError(f"Run {run_id} is {run['status']}; only a complete run can be calibrated.")
        info = store.read_dataset(run["dataset"])
        cases = store.read_cases(run["dataset"])
        preds = store.read_predictions(run_id)
    config = {k: v for k, v in json.loads(run["config"]).items() if k not in ("code_version", "dataset_fingerprint")}
    cfg = FitConfig.from_dict({**config, **(cfg_overrides or {})})
    # Runs stored before schema 2 kept the raw probabilities in probs and no distances.
    preds["probs_uncal"] = [u if isinstance(u, (list, np.ndarray)) else p
                            for u, p in zip(preds["probs_uncal"], preds["probs"])]
    tables = posthoc_tables(preds, cases, list(run["classes"]), info["urgent_classes"], cfg, log)
    stored = json.loads(run["config"])
    with TriageStore(db) as store:
        store.write_posthoc(run_id, tables, json.dumps({**stored, **json.loads(cfg.to_json())}))
    return tables
