"""``python -m trainer fit``: splits, features, the five models, post-hoc tables, all into
the store.

The store is opened only for short moments (read inputs, register the run, write the
results in one transaction), so a dashboard can read it while training runs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.numpy import save_file

from data_store.runlock import RunLock
from data_store.splits import choose_val_clinic, make_splits, subsample
from data_store.store import TriageStore
from trainer import distributed
from trainer.config import FitConfig, run_config
from trainer.encoders.cache import CacheStats
from trainer.encoders.choice import AUTO, choose_image_encoder
from trainer.encoders.prepare import prepare_features, targets
from trainer.encoders.run_encoders import encoder_record
from trainer.evaluation.selection import select_model
from trainer.models.suite import prediction_rows, train_models
from trainer.posthoc import posthoc_tables
from trainer.timings import lap, reset_peak
from trainer.uncertainty.deferral import case_embedding, distance_to, photo_quality


class FitError(ValueError):
    """A problem with the request (dataset, clinic, config) the user can fix."""


def resolve_heldout(info: dict, cases: pd.DataFrame, requested: str | None) -> str:
    clinics = sorted(cases["clinic"].unique())
    heldout = requested or info.get("heldout_clinic")
    if not heldout or (isinstance(heldout, float) and np.isnan(heldout)):
        raise FitError(f"Dataset {info['dataset']!r} declares no held-out clinic; pass --heldout-clinic "
                       f"with one of: {', '.join(clinics)}.")
    if heldout not in clinics:
        raise FitError(f"Held-out clinic {heldout!r} is not in dataset {info['dataset']!r}; "
                       f"clinics: {', '.join(clinics)}.")
    return heldout


def code_version() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                               timeout=5).stdout.strip()
        return (rev or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass(frozen=True)
class RunRequest:
    """A run as ``fit`` resolved it before training: where it goes, its settings, its cases
    (in split order) and their splits."""

    db: Path
    run_id: str
    artifacts: Path
    cfg: FitConfig
    info: dict
    cases: pd.DataFrame
    split: pd.Series  # case_id -> train | val | calib | test

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])


def fit(db: str | Path, dataset: str, cfg: FitConfig, log=print) -> str:
    """Train ``cfg.models`` on ``dataset``; returns the run_id of the completed run.

    Launched by torchrun, every rank trains (DistributedDataParallel) and rank 0 alone
    writes the store, the run's folder and the caches; the others log nothing."""
    with distributed.process_group():
        main = distributed.is_main()
        run_id, heldout = _fit(db, dataset, cfg, log if main else lambda msg: None)
    if main:  # one process, after the others are gone
        heldout_reports(Path(db), run_id, heldout, log)
    return run_id


def _fit(db: str | Path, dataset: str, cfg: FitConfig, log) -> tuple[str, str]:
    with TriageStore(db, read_only=True) as store:
        info = store.read_dataset(dataset)
        cases = store.read_cases(dataset)
    distributed.barrier()  # every rank has read before rank 0 opens the store to write
    if not bool(info.get("labelled", True)):
        raise FitError(f"Dataset {dataset!r} was ingested with --unlabelled: its cases can be scored with "
                       "`python -m trainer predict`, not trained on.")
    heldout = resolve_heldout(info, cases, cfg.heldout_clinic)
    try:
        val_clinic = (choose_val_clinic(cases, heldout, cfg.seed, cfg.val_clinic)
                      if cfg.validation == "clinic" else None)
    except ValueError as exc:
        raise FitError(str(exc)) from None
    cfg = replace(cfg, heldout_clinic=heldout, val_clinic=val_clinic)
    log("validation: " + (f"clinic {val_clinic} kept whole (skill at an unseen clinic)" if val_clinic
                          else "patients of every training clinic (in-distribution)"))
    split = subsample(make_splits(cases, heldout, seed=cfg.seed, val_clinic=val_clinic), cfg.max_cases, cfg.seed)
    missing = [s for s in ("train", "val", "test") if (split == s).sum() == 0]
    if missing:
        raise FitError(f"Splits {missing} are empty; the dataset is too small for held-out clinic {heldout!r}.")
    run_id = distributed.from_main(
        f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{dataset}-s{cfg.seed}-{uuid.uuid4().hex[:6]}")
    req = RunRequest(Path(db), run_id, Path(db).resolve().parent / "runs" / run_id,  # beside the store
                     cfg, info, cases.set_index("case_id").loc[split.index].reset_index(), split)
    if not distributed.is_main():
        _train_and_store(req, log)  # the training alongside rank 0; nothing written
        return run_id, heldout
    config = {**json.loads(cfg.to_json()), "code_version": code_version(), "dataset_fingerprint": info["fingerprint"]}
    # The lock is taken before the run is registered and dropped by the kernel however this
    # process ends, so a killed fit shows as interrupted, never as running or complete.
    with RunLock(req.artifacts):
        with TriageStore(db) as store:
            store.start_run(run_id, dataset, json.dumps(config), req.classes, heldout, str(req.artifacts))
        (req.artifacts / "config.json").write_text(
            json.dumps({**config, "run_id": run_id, "classes": req.classes}, indent=2))
        try:
            _train_and_store(req, log)
        except BaseException as exc:
            try:
                with TriageStore(db) as store:
                    store.fail_run(run_id, f"{type(exc).__name__}: {exc}")
            except Exception as store_exc:  # e.g. the disk is full: the original error matters more
                log(f"could not mark run {run_id} failed ({store_exc}); it will show as interrupted")
            raise
    return run_id, heldout


def heldout_reports(db: Path, run_id: str, heldout: str, log) -> None:
    """The held-out clinic's label-free shift report (``python -m trainer shift``) and its
    learning curve (``python -m trainer adapt --curve``; the clinic has labels). The run is
    complete either way, so a failure here is reported, not raised."""
    from trainer.commands.adapt import adapt_curve
    from trainer.commands.shift import shift_report

    for what, make, command in (("shift report", shift_report, "shift"),
                                ("learning curve", adapt_curve, "adapt --curve")):
        try:
            make(db, run_id, heldout, log=log)
        except (ValueError, OSError, RuntimeError) as exc:
            log(f"the {what} of {heldout} could not be made ({exc}); run `python -m trainer {command}` for it")


def _train_and_store(req: RunRequest, log) -> None:
    """Features, the models, post-hoc tables, then one transaction that completes the run."""
    cfg, cases, split_arr = req.cfg, req.cases, req.split.to_numpy()
    torch.set_num_threads(max(1, cfg.threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))  # ranks share a node
    torch.manual_seed(cfg.seed)
    reset_peak()
    stats, timings, config = CacheStats(), {}, None
    if cfg.image_encoder == AUTO:
        t = time.perf_counter()
        choice = choose_image_encoder(cases, split_arr, req.info["fingerprint"], cfg, req.classes, stats, log)
        lap(timings, "encoder:choice", t)
        log(f"image encoder chosen on val ({choice.val}): {choice.encoder}; "
            + ", ".join(f"{c} {f1:.3f}" for c, f1 in choice.scores.items()))
        cfg = replace(cfg, image_encoder=choice.encoder)
        if distributed.is_main():
            config = _record_choice(req, cfg, choice.to_dict())
    feats, text_dim, folders = prepare_features(cases, split_arr, req.info["fingerprint"], cfg, req.classes, stats,
                                                log, timings)
    y, where = targets(cases, req.classes, split_arr)
    if not distributed.is_main():
        train_models(cfg, req.classes, y, where, feats, text_dim, req.artifacts, timings, log)
        return
    for name, folder in folders.items():  # the run keeps its own copy of the encoders it used
        shutil.copytree(folder, req.artifacts / name, dirs_exist_ok=True)
    (req.artifacts / "ngrams.json").write_text(feats.ngrams.to_json())  # the notes' word vocabulary
    (req.artifacts / "encoders.json").write_text(encoder_record(feats))  # what predict must read notes with
    logits = train_models(cfg, req.classes, y, where, feats, text_dim, req.artifacts, timings, log)
    predictions = prediction_rows(logits, cases["case_id"].to_numpy(), split_arr, y, where, req.classes)
    embedding = case_embedding(feats)
    reference = embedding[split_arr == "train"]  # kept with the run: predict measures new cases against it
    save_file({"embedding": reference.astype(np.float32)}, str(req.artifacts / "train_reference.safetensors"))
    per_case = pd.DataFrame({"train_distance": distance_to(embedding, reference), **photo_quality(feats.images)},
                            index=cases["case_id"])
    predictions = predictions.join(per_case, on="case_id")
    t = time.perf_counter()
    posthoc = posthoc_tables(predictions, cases, req.classes, req.info["urgent_classes"], cfg, log)
    lap(timings, "posthoc", t)
    t = time.perf_counter()
    splits_df = pd.DataFrame({"case_id": req.split.index, "split": split_arr})
    with TriageStore(req.db) as store:
        store.finish_run(req.run_id, splits_df, predictions,
                         json.dumps({**timings, "cache_hits": stats.hits, "cache_misses": stats.misses}), posthoc,
                         config)
    peaks = ", ".join(f"{k.removeprefix('peak_mb:')} {v:,.0f}" for k, v in timings.items() if k.startswith("peak_mb:"))
    log(f"stored {len(predictions):,} predictions and the audit in {time.perf_counter() - t:.1f} s "
        f"(peak memory by stage, MiB: {peaks})")
    chosen = select_model(posthoc["metrics"])
    log(f"model chosen on val ({'clinic ' + cfg.val_clinic if cfg.val_clinic else 'training-clinic patients'}): "
        f"{chosen.model}, macro F1 {chosen.estimate:.3f}; all: "
        + ", ".join(f"{r.model} {r.macro_f1:.3f}" for r in chosen.evidence.itertuples()))


def _record_choice(req: RunRequest, cfg: FitConfig, choice: dict) -> str:
    """The run's settings with the resolved image encoder and the evidence for it, written to
    its config.json now and to the store when the run completes; returns them as JSON."""
    path = req.artifacts / "config.json"
    saved = {**json.loads(path.read_text()), "image_encoder": cfg.image_encoder, "image_encoder_choice": choice}
    path.write_text(json.dumps(saved, indent=2))
    return json.dumps({k: v for k, v in saved.items() if k not in ("run_id", "classes")})


def features_for_run(db: str | Path, run_id: str):
    """Rebuild a stored run's inputs from the caches: (features, cases, split, run, cache stats)."""
    with TriageStore(db, read_only=True) as store:
        run = store.read_run(run_id)
        info = store.read_dataset(run["dataset"])
        cases = store.read_cases(run["dataset"])
        split = store.read_splits(run_id).set_index("case_id")["split"]
    cfg = run_config(run["config"])
    cases = cases.set_index("case_id").loc[split.index].reset_index()
    stats = CacheStats()
    feats, _, _ = prepare_features(cases, split.to_numpy(), info["fingerprint"], cfg, list(run["classes"]), stats,
                                   log=lambda m: None)
    return feats, cases, split, run, stats
