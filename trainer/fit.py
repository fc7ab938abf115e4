"""``fit``: splits, features, the five models, predictions into the store.

The store is opened only for short moments (read inputs, register the run, write the
results in one transaction), so a dashboard can read it while training runs.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from data_store.runlock import RunLock
from data_store.splits import make_splits
from data_store.store import TriageStore
from trainer.calibrate import posthoc_tables
from trainer.checkpoints import save_checkpoint
from trainer.config import FitConfig
from trainer.encoders import OpenClipImageEncoder, TextEncoder
from trainer.features import CacheStats, build_features
from trainer.models import build_model
from trainer.models.unified import tiny_clip_config
from trainer.pretrain import clip_embeddings, cnn_image_tokens
from trainer.stages import lap, reset_peak
from trainer.train import Inputs, class_weights, predict_logits, train_classifier

EVAL_SPLITS = ("val", "calib", "test")


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


def subsample(split: pd.Series, max_cases: int | None, seed: int) -> pd.Series:
    """Keep about max_cases cases, the same share of each split (for quick runs)."""
    if not max_cases or max_cases >= len(split):
        return split
    rng = np.random.default_rng(seed)
    keep = []
    for _, ids in split.groupby(split).groups.items():
        k = max(8, int(round(len(ids) * max_cases / len(split))))
        keep.extend(rng.choice(np.asarray(ids), size=min(k, len(ids)), replace=False))
    return split.loc[sorted(keep)]


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


def model_spec(name: str, cfg: FitConfig, n_classes: int, text_dim: int, image_dim: int) -> dict:
    return {"name": name, "n_classes": n_classes, "text_dim": text_dim, "hidden": cfg.hidden,
            "image_encoder": cfg.image_encoder, "image_dim": image_dim, "embed_dim": cfg.unified_embed_dim,
            "text_encoder": cfg.text_encoder}


def clip_spec(cfg: FitConfig, n_classes: int) -> dict:
    """The tiny CLIP trained from scratch for the unified model."""
    return {"name": "clip_encoder", "n_classes": n_classes, "clip": "tiny", "embed_dim": cfg.unified_embed_dim,
            "clip_cfg": tiny_clip_config(cfg.image_size, cfg.unified_embed_dim, cfg.max_tokens)}


def _targets(cases: pd.DataFrame, classes: list[str], split_arr: np.ndarray) -> tuple[np.ndarray, dict]:
    """Class indices (n,) and the row positions of each split."""
    y = cases["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return y, {s: np.flatnonzero(split_arr == s) for s in ("train", "val", "calib", "test")}


def fit(db: str | Path, dataset: str, cfg: FitConfig, log=print) -> str:
    """Train ``cfg.models`` on ``dataset``; returns the run_id of the completed run."""
    timings: dict[str, float] = {}
    with TriageStore(db, read_only=True) as store:
        info = store.read_dataset(dataset)
        cases = store.read_cases(dataset)
    classes = list(info["classes"])
    heldout = resolve_heldout(info, cases, cfg.heldout_clinic)
    cfg = replace(cfg, heldout_clinic=heldout)
    split = subsample(make_splits(cases, heldout, seed=cfg.seed), cfg.max_cases, cfg.seed)
    missing = [s for s in ("train", "val", "test") if (split == s).sum() == 0]
    if missing:
        raise FitError(f"Splits {missing} are empty; the dataset is too small for held-out clinic {heldout!r}.")
    cases = cases.set_index("case_id").loc[split.index].reset_index()

    run_id = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{dataset}-s{cfg.seed}-{uuid.uuid4().hex[:6]}"
    artifacts = Path(db).resolve().parent / "runs" / run_id  # beside the store, whatever the cache
    config = {**json.loads(cfg.to_json()), "code_version": code_version(), "dataset_fingerprint": info["fingerprint"]}
    # The lock is taken before the run is registered and dropped by the kernel however this
    # process ends, so a killed fit shows as interrupted, never as running or complete.
    with RunLock(artifacts):
        with TriageStore(db) as store:
            store.start_run(run_id, dataset, json.dumps(config), classes, heldout, str(artifacts))
        (artifacts / "config.json").write_text(json.dumps({**config, "run_id": run_id, "classes": classes},
                                                          indent=2))
        try:
            _train_and_store(db, run_id, cfg, info, cases, classes, split, artifacts, timings, log)
        except BaseException as exc:
            try:
                with TriageStore(db) as store:
                    store.fail_run(run_id, f"{type(exc).__name__}: {exc}")
            except Exception as store_exc:  # e.g. the disk is full: the original error matters more
                log(f"could not mark run {run_id} failed ({store_exc}); it will show as interrupted")
            raise
    return run_id


def _train_and_store(db, run_id: str, cfg: FitConfig, info: dict, cases: pd.DataFrame, classes: list[str],
                     split: pd.Series, artifacts: Path, timings: dict, log) -> None:
    """Features, the models, post-hoc tables, then one transaction that completes the run."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    reset_peak()
    stats = CacheStats()
    feats, text_dim, folders = prepare_features(cases, split.to_numpy(), info["fingerprint"], cfg, classes,
                                                stats, log, timings)
    for name, folder in folders.items():  # the run keeps its own copy of the encoders it used
        shutil.copytree(folder, artifacts / name, dirs_exist_ok=True)
    predictions = train_all(cfg, classes, cases, split, feats, text_dim, artifacts, timings, log)
    per_case = pd.DataFrame({"train_distance": train_distance(feats, split.to_numpy()),
                             **photo_quality(feats.images)}, index=cases["case_id"])
    predictions = predictions.join(per_case, on="case_id")
    t = time.perf_counter()
    posthoc = posthoc_tables(predictions, cases, classes, info["urgent_classes"], cfg, log)
    lap(timings, "posthoc", t)
    t = time.perf_counter()
    splits_df = pd.DataFrame({"case_id": split.index, "split": split.to_numpy()})
    with TriageStore(db) as store:
        store.finish_run(run_id, splits_df, predictions,
                         json.dumps({**timings, "cache_hits": stats.hits, "cache_misses": stats.misses}), posthoc)
    peaks = ", ".join(f"{k.removeprefix('peak_mb:')} {v:,.0f}" for k, v in timings.items() if k.startswith("peak_mb:"))
    log(f"stored {len(predictions):,} predictions and the audit in {time.perf_counter() - t:.1f} s "
        f"(peak memory by stage, MiB: {peaks})")


def prepare_features(cases: pd.DataFrame, split_arr: np.ndarray, fingerprint: str, cfg: FitConfig,
                     classes: list[str], stats: CacheStats, log=print, timings: dict | None = None):
    """Every model input for ``cases``: note tokens, photos, and the outputs of the image
    encoder and of the unified model's CLIP (trained on this split once, then cached).

    Returns (features, text_dim, {encoder: folder}).
    """
    import open_clip

    timings = timings if timings is not None else {}
    t = time.perf_counter()
    text_encoder = TextEncoder(cfg.text_encoder, cfg.max_tokens)
    image_encoder = None if cfg.image_encoder == "cnn" else OpenClipImageEncoder(
        cfg.image_encoder.removeprefix("open_clip:"))
    feats = build_features(cases, fingerprint, cfg, text_encoder, image_encoder, stats)
    lap(timings, "features", t)
    log(f"features ready in {timings['features']:.1f} s (cache hits {stats.hits}, misses {stats.misses})")
    y, where = _targets(cases, classes, split_arr)
    folders = {}
    if image_encoder is None:  # the CNN
        t = time.perf_counter()
        feats.image_tokens, folders["image_encoder"] = cnn_image_tokens(feats, y, where, fingerprint, split_arr, cfg,
                                                                        len(classes), stats, log)
        lap(timings, "encoder:cnn", t)
    if "unified" in cfg.models:
        t = time.perf_counter()
        feats.clip_tokens = open_clip.tokenize(feats.notes, context_length=cfg.max_tokens).numpy()
        feats.clip_img, feats.clip_txt, clip_dir = clip_embeddings(feats, y, where, fingerprint, split_arr, cfg,
                                                                   clip_spec(cfg, len(classes)), stats, log)
        folders["unified_clip"] = clip_dir / "open_clip"
        lap(timings, "encoder:clip", t)
    return feats, text_encoder.dim, folders


def features_for_run(db: str | Path, run_id: str):
    """Rebuild a stored run's inputs from the caches: (features, cases, split, run, cache stats)."""
    with TriageStore(db, read_only=True) as store:
        run = store.read_run(run_id)
        info = store.read_dataset(run["dataset"])
        cases = store.read_cases(run["dataset"])
        split = store.read_splits(run_id).set_index("case_id")["split"]
    config = json.loads(run["config"])
    cfg = FitConfig.from_dict({k: v for k, v in config.items() if k not in ("code_version", "dataset_fingerprint")})
    cases = cases.set_index("case_id").loc[split.index].reset_index()
    stats = CacheStats()
    feats, _, _ = prepare_features(cases, split.to_numpy(), info["fingerprint"], cfg, list(run["classes"]), stats,
                                   log=lambda m: None)
    return feats, cases, split, run, stats


def train_all(cfg: FitConfig, classes: list[str], cases: pd.DataFrame, split: pd.Series, feats,
              text_dim: int, artifacts: Path, timings: dict, log) -> pd.DataFrame:
    """Train each requested model on the prepared features; returns prediction rows for
    val, calib and test."""
    split_arr = split.to_numpy()
    y, where = _targets(cases, classes, split_arr)
    eval_idx = np.concatenate([where[s] for s in EVAL_SPLITS])
    image_dim = int(feats.image_tokens.shape[-1])
    inputs = Inputs(feats)
    logits: dict[str, np.ndarray] = {}
    for name in cfg.models:
        t = time.perf_counter()
        spec = model_spec(name, cfg, len(classes), text_dim, image_dim)
        torch.manual_seed(cfg.seed)
        model = build_model(spec)
        if name == "late_fusion":
            logp = {m: torch.log_softmax(torch.from_numpy(logits[m]), 1) for m in ("text_only", "image_only")}
            val = np.arange(len(where["val"]))  # eval rows start with the val rows
            model.fit(logp["text_only"][val], logp["image_only"][val], torch.from_numpy(y[where["val"]]),
                      class_weights(y[where["val"]], len(classes)))
            with torch.no_grad():
                logits[name] = model({"logp_text": logp["text_only"], "logp_image": logp["image_only"]}).numpy()
            history = [{"weights": model.weights.tolist()}]
        else:
            model, history = train_classifier(model, inputs, y, where["train"], where["val"], cfg, cfg.epochs, name)
            logits[name] = predict_logits(model, inputs, eval_idx)
        save_checkpoint(artifacts / name, model, spec, history)
        lap(timings, f"train:{name}", t)
        log(f"{name}: trained in {timings[f'train:{name}']:.1f} s; last epoch {history[-1] if history else {}}")

    rows = []
    ids = cases["case_id"].to_numpy()[eval_idx]
    y_true = np.asarray(classes)[y[eval_idx]]
    for name, lg in logits.items():
        p = torch.from_numpy(lg).double().softmax(1).numpy()
        rows.append(pd.DataFrame({"model": name, "case_id": ids, "split": split_arr[eval_idx], "y_true": y_true,
                                  "y_pred": np.asarray(classes)[p.argmax(1)], "probs_uncal": list(p)}))
    return pd.concat(rows, ignore_index=True)


def train_distance(feats, split_arr: np.ndarray, k: int = 10, chunk: int = 1024) -> np.ndarray:
    """(n,) mean cosine distance of each case to its k nearest training cases, in the
    space of the mean note token and the mean image token (each unit length): a signal
    that a case lies away from what the models learnt from."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)

    text = np.concatenate([  # mean of each note's real tokens, (n, d), in chunks: the tokens are large
        (feats.text_tokens[s:s + chunk].astype(np.float32) * feats.text_mask[s:s + chunk, :, None]).sum(1)
        / np.maximum(feats.text_mask[s:s + chunk].sum(1, keepdims=True), 1) for s in range(0, len(split_arr), chunk)])
    emb = np.hstack([unit(text), unit(feats.image_tokens.astype(np.float32).mean(1))]) / np.sqrt(2)
    train = emb[split_arr == "train"]
    k = min(k, len(train))
    out = np.empty(len(emb))
    for s in range(0, len(emb), chunk):
        sim = emb[s:s + chunk] @ train.T  # (chunk, n_train)
        out[s:s + chunk] = 1 - np.partition(sim, -k, axis=1)[:, -k:].mean(1)
    return out


def photo_quality(images: np.ndarray, chunk: int = 1024) -> dict[str, np.ndarray]:
    """Signals of an unusable photo, (n,) each: sharpness (mean absolute Laplacian of the
    grey image, low when blurred) and the share of near-white pixels (overexposure)."""
    sharp, over = [], []
    for s in range(0, len(images), chunk):
        x = images[s:s + chunk]
        g = x.astype(np.float32).mean(-1) / 255  # (chunk, S, S)
        lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
        sharp.append(np.abs(lap).mean((1, 2)))
        over.append((x.min(-1) >= 250).mean((1, 2)))
    return {"photo_sharpness": np.concatenate(sharp), "photo_overexposed": np.concatenate(over)}
