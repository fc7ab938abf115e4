"""Every model input of a run: note tokens and photos from the frozen encoders, the notes'
word n-grams (vocabulary from ``train``), then the encoders trained on this split (the CNN,
the unified model's CLIP), all cached."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from trainer import distributed
from trainer.timings import lap
from trainer.config import FitConfig
from trainer.encoders import lit
from trainer.encoders.cache import CacheStats, Features, build_features
from trainer.encoders.from_scratch import clip_embeddings, cnn_image_tokens, encoder_key
from trainer.encoders.image import OpenClipImageEncoder, TimmImageEncoder
from trainer.encoders.ngrams import NgramVocabulary
from trainer.encoders.text import TextEncoder
from trainer.models.unified import tiny_clip_config


def targets(cases: pd.DataFrame, classes: list[str], split_arr: np.ndarray) -> tuple[np.ndarray, dict]:
    """Class indices (n,) and the row positions of each split."""
    y = cases["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return y, {s: np.flatnonzero(split_arr == s) for s in ("train", "val", "calib", "test")}


def clip_spec(cfg: FitConfig, n_classes: int) -> dict:
    """The unified model's CLIP: LiT (pretrained towers) or tiny (trained from scratch)."""
    if cfg.unified_clip == "lit":
        clip_cfg = lit.lit_config(cfg.unified_embed_dim, cfg.encoder_image_size, cfg.text_encoder, cfg.max_tokens)
    else:
        clip_cfg = tiny_clip_config(cfg.image_size, cfg.unified_embed_dim, cfg.max_tokens)
    return {"name": "clip_encoder", "n_classes": n_classes, "clip": cfg.unified_clip,
            "embed_dim": cfg.unified_embed_dim, "clip_cfg": clip_cfg}


def image_tower(cfg: FitConfig) -> OpenClipImageEncoder | TimmImageEncoder | None:
    """The frozen pretrained image encoder ``cfg.image_encoder`` names (None for the CNN trained here)."""
    if cfg.image_encoder == "cnn":
        return None
    if cfg.image_encoder.startswith("open_clip:"):
        return OpenClipImageEncoder(cfg.image_encoder.removeprefix("open_clip:"))
    return TimmImageEncoder(cfg.image_encoder, cfg.encoder_image_size, cfg.cache_dir,
                            colour_constancy=cfg.colour_constancy)


def prepare_features(cases: pd.DataFrame, split_arr: np.ndarray, fingerprint: str, cfg: FitConfig,
                     classes: list[str], stats: CacheStats, log=print,
                     timings: dict | None = None) -> tuple[Features, int, dict[str, Path]]:
    """Every model input for ``cases``: note tokens, photos, and the outputs of the image
    encoder and of the unified model's CLIP (trained on this split once, then cached).

    Returns (features, text_dim, {encoder: folder}); records stage timings in ``timings``.
    """
    import open_clip

    timings = timings if timings is not None else {}
    t = time.perf_counter()
    text_encoder = TextEncoder(cfg.text_encoder, cfg.max_tokens)
    image_encoder = image_tower(cfg)
    feats = build_features(cases, fingerprint, cfg.cache_dir, cfg.image_size, text_encoder, image_encoder, stats)
    lap(timings, "features", t)
    log(f"features ready in {timings['features']:.1f} s (cache hits {stats.hits}, misses {stats.misses})")
    y, where = targets(cases, classes, split_arr)
    feats.ngrams = NgramVocabulary.fit([feats.notes[i] for i in where["train"]])  # train notes only
    feats.ngram_ids, feats.ngram_weights = feats.ngrams.encode(feats.notes)
    encoders = Path(cfg.cache_dir) / "encoders"
    folders = {}
    if isinstance(image_encoder, TimmImageEncoder):  # the run keeps the tower it used
        folders["image_encoder"] = encoders / f"timm-{image_encoder.identity()}"
        if distributed.is_main() and not (folders["image_encoder"] / "spec.json").exists():
            image_encoder.save(folders["image_encoder"])
    if image_encoder is None:  # the CNN
        t = time.perf_counter()
        folders["image_encoder"] = encoders / encoder_key("cnn", fingerprint, feats, split_arr, cfg)
        feats.image_tokens = cnn_image_tokens(feats, y, where, folders["image_encoder"], cfg.train_settings(),
                                              cfg.encoder_epochs, len(classes), stats, log)
        lap(timings, "encoder:cnn", t)
    if "unified" in cfg.models:
        t = time.perf_counter()
        clip_dir = encoders / encoder_key("clip", fingerprint, feats, split_arr, cfg)
        tower = None
        if cfg.unified_clip == "lit":
            tower = lit.image_tower(cfg.encoder_image_size, cfg.cache_dir)
            feats.lit_pooled = lit.pooled_photo_features(cases, fingerprint, tower, cfg.cache_dir, stats)
            feats.clip_tokens = lit.tokenize(feats.notes, cfg.text_encoder, cfg.max_tokens)
        else:
            feats.clip_tokens = open_clip.tokenize(feats.notes, context_length=cfg.max_tokens).numpy()
        feats.clip_img, feats.clip_txt = clip_embeddings(feats, y, where, clip_dir, cfg.train_settings(),
                                                         cfg.unified_epochs, clip_spec(cfg, len(classes)), stats, log,
                                                         tower)
        folders["unified_clip"] = clip_dir / "open_clip"
        lap(timings, "encoder:clip", t)
    return feats, text_encoder.dim, folders
