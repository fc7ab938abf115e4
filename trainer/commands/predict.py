"""``python -m trainer predict``: score every case of a dataset with every model of a run.

For each case and model: the calibrated probabilities, the deferral score with the signals
behind it, the default conformal set and each stored policy's decision, all from the
run's own encoders and stored rules (nothing is refitted), into the store's ``scores``
table; optionally exported as CSV or Parquet with case ids only (no patient id, no note).
The dataset may be unlabelled (``python -m data_store ingest --unlabelled``): no label is read.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from data_store.store import TriageStore
from trainer.config import BASELINES, run_config
from trainer.encoders.cache import CacheStats
from trainer.encoders.run_encoders import RunMismatch, run_features
from trainer.models.checkpoints import load_checkpoint
from trainer.models.suite import late_fusion_logits
from trainer.models.train import Inputs, predict_logits
from trainer.posthoc.replay import RULE_TABLES, apply_rules, calibrated, load_rules
from trainer.uncertainty.deferral import case_embedding, distance_to, photo_quality


class PredictError(ValueError):
    """A request ``predict`` refuses: the run or the dataset does not fit."""


def predict(db: str | Path, run_id: str, dataset: str, out: str | Path | None = None, log=print) -> pd.DataFrame:
    """Score ``dataset`` with every model of ``run_id`` into ``scores``; returns the rows."""
    with TriageStore(db, read_only=True) as store:
        run = store.read_run(run_id)
        info, cases = store.read_dataset(dataset), store.read_cases(dataset)
        urgent_names = store.read_dataset(run["dataset"])["urgent_classes"]
        cfg, classes = run_config(run["config"]), list(run["classes"])
        _check(run, info, cases, classes)
        tables = {name: store.read_table(name, run_id) for name in RULE_TABLES}
    rules = {m: load_rules(tables, m, cfg.conformal_method, cfg.alpha) for m in cfg.models}
    run_dir = Path(run["artifacts_dir"])
    torch.set_num_threads(cfg.threads)
    try:
        feats = run_features(cases, info["fingerprint"], run_dir, cfg, len(classes), CacheStats(), log)
    except RunMismatch as exc:
        raise PredictError(str(exc)) from None
    logits = _logits(run_dir, cfg.models, feats)
    per_case = pd.DataFrame({"note_missing": ~feats.text_present, **photo_quality(feats.images),
                             "train_distance": _train_distance(run_dir, feats)})
    urgent = np.isin(classes, list(urgent_names) if urgent_names is not None else [])
    u = np.random.default_rng(cfg.seed).random(len(cases))  # randomised APS, one draw per case
    probs_uncal = {m: torch.from_numpy(lg).double().softmax(1).numpy() for m, lg in logits.items()}
    single = {m: calibrated(rules[m], probs_uncal[m]) for m in BASELINES if m in logits}  # agreement signals
    rows = pd.concat([_rows(m, feats.case_ids, classes, apply_rules(rules[m], probs_uncal[m], urgent, single, per_case,
                                                                    cases["fitzpatrick"].to_numpy(), u))
                      for m in cfg.models], ignore_index=True)
    with TriageStore(db) as store:
        store.write_scores(run_id, dataset, rows)
    log(f"scored {len(cases):,} cases of {dataset!r} with {len(cfg.models)} models of run {run_id}")
    if out is not None:
        export(rows, classes, Path(out))
        log(f"wrote {out} (case ids only: no patient id, no note)")
    return rows


def _check(run: dict, info: dict, cases: pd.DataFrame, classes: list[str]) -> None:
    if run["status"] != "complete":
        raise PredictError(f"Run {run['run_id']} is {run['status']}; only a complete run can score cases.")
    declared = list(info["classes"])
    if declared and declared != classes:
        raise PredictError(f"Dataset {info['dataset']!r} declares the classes {declared}, but run {run['run_id']} "
                           f"predicts {classes}; its probabilities would be read against the wrong names.")
    if cases.empty:
        raise PredictError(f"Dataset {info['dataset']!r} has no cases to score.")


def _logits(run_dir: Path, models: tuple[str, ...], feats) -> dict[str, np.ndarray]:
    """Each model's logits for every case, as ``train_models`` computed them for its own splits."""
    inputs, every = Inputs(feats), np.arange(len(feats.case_ids))
    out = {}
    for name in tqdm(sorted(models, key=lambda m: m == "late_fusion"), desc="scoring", unit="model"):
        model = load_checkpoint(run_dir / name)
        out[name] = late_fusion_logits(model, out) if name == "late_fusion" else predict_logits(model, inputs, every)
    return out


def _train_distance(run_dir: Path, feats) -> np.ndarray:
    from safetensors.numpy import load_file

    reference = load_file(str(run_dir / "train_reference.safetensors"))["embedding"]
    return distance_to(case_embedding(feats), reference.astype(np.float64))


def _rows(model: str, case_ids: np.ndarray, classes: list[str], scored: dict) -> pd.DataFrame:
    names = np.asarray(classes)
    decisions = scored["decisions"]
    return pd.DataFrame({
        "model": model, "case_id": case_ids, "probs": list(scored["probs"]),
        "y_pred": names[scored["probs"].argmax(1)], "defer_score": scored["defer_score"],
        "doubtful_rule_out": scored["doubtful_rule_out"],
        "signals": [json.dumps(r) for r in scored["signals"].to_dict("records")],
        "conformal_set": [list(names[row]) for row in scored["sets"]],
        "decisions": [json.dumps({p: bool(d[i]) for p, d in decisions.items()}) for i in range(len(case_ids))]})


def export(rows: pd.DataFrame, classes: list[str], path: Path) -> None:
    """The decisions as a flat table, one row per case and model: case_id, model, y_pred,
    p_<class>, defer_score, conformal_set ("a|b"), review_<policy> (True: review)."""
    if path.suffix not in (".csv", ".parquet"):
        raise PredictError(f"--out must end in .csv or .parquet, got {path.name!r}.")
    probs = pd.DataFrame(np.stack(rows["probs"].to_numpy()), columns=[f"p_{c}" for c in classes])
    decisions = pd.DataFrame([json.loads(d) for d in rows["decisions"]]).add_prefix("review_")
    flat = pd.concat([rows[["case_id", "model", "y_pred"]].reset_index(drop=True), probs,
                      rows[["defer_score"]].reset_index(drop=True),
                      rows["conformal_set"].map("|".join).rename("conformal_set").reset_index(drop=True),
                      decisions], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat.to_csv(path, index=False) if path.suffix == ".csv" else flat.to_parquet(path, index=False)
