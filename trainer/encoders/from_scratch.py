"""Encoders trained from scratch on the training split, then frozen and cached like a
pretrained encoder: the compact CNN (supervised) and the tiny CLIP (contrastive).

Each is keyed by everything that decides its weights (dataset content, the split, the
seed, its settings and the source of the code that trains it), so a second ``fit`` on
the same data and seed reuses it, and any change retrains it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_model

from trainer.config import TrainSettings
from trainer import distributed
from trainer.encoders.cache import CacheStats, Features, cached_arrays
from trainer.models.checkpoints import export_open_clip, save_checkpoint
from trainer.models.train import Inputs, train_classifier

_SOURCES = ("encoders/image.py", "models/train.py", "encoders/from_scratch.py", "models/unified.py",
            "models/common.py", "encoders/lit.py")
_SETTINGS = ("seed", "image_size", "encoder_epochs", "patience", "batch_size", "lr", "weight_decay", "modality_dropout",
             "unified_epochs", "unified_embed_dim", "max_tokens", "unified_clip", "encoder_image_size", "text_encoder")


def encoder_key(kind: str, fingerprint: str, feats: Features, split: np.ndarray, cfg) -> str:
    h = hashlib.sha256(f"{kind}|{fingerprint}".encode())
    h.update(",".join(feats.case_ids).encode() + b"|" + ",".join(split).encode())
    settings = {k: asdict(cfg)[k] for k in _SETTINGS}
    if cfg.photo_augment:  # only when on, so that caches made before the option stay valid
        settings["photo_augment"] = True
    h.update(json.dumps(settings, sort_keys=True).encode())
    root = Path(__file__).resolve().parents[1]
    for name in _SOURCES:
        h.update((root / name).read_bytes())
    return f"{kind}-{h.hexdigest()[:20]}"


@torch.no_grad()
def in_batches(fn, inputs: Inputs, n: int, batch_size: int = 256) -> list[np.ndarray]:
    parts = [fn(inputs.batch(np.arange(s, min(s + batch_size, n)))) for s in range(0, n, batch_size)]
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


def cnn_image_tokens(feats: Features, y: np.ndarray, where: dict, folder: Path, settings: TrainSettings,
                     epochs: int, n_classes: int, stats: CacheStats, log=print) -> np.ndarray:
    """Patch tokens (n, P, d) float16 of the CNN trained on ``train`` (early stopping on
    ``val``), cached with its weights in ``folder``."""
    from trainer.encoders.image import SmallCNN

    inputs = Inputs(feats, with_pixels=True, augment=settings.photo_augment)

    def train_and_extract():
        torch.manual_seed(settings.seed)
        model = SmallCNN(n_classes).to(memory_format=torch.channels_last)
        model.spec = {"n_classes": n_classes}
        model, history = train_classifier(model, inputs, y, where["train"], where["val"], settings, epochs,
                                          "image encoder (CNN)", lr=2 * settings.lr)
        if distributed.is_main():
            folder.mkdir(parents=True, exist_ok=True)
            save_model(model.to(memory_format=torch.contiguous_format), str(folder / "model.safetensors"))
            (folder / "history.json").write_text(json.dumps(history, default=float))
        log(f"image encoder (CNN) trained: {history[-1] if history else {}}")
        model.eval()
        (tokens,) = in_batches(lambda b: (model.tokens(b["images"]).numpy().astype(np.float16),), inputs, len(y))
        return {"tokens": tokens}
    tokens = cached_arrays(folder / "tokens.safetensors", train_and_extract, stats)["tokens"]
    return tokens


def clip_embeddings(feats: Features, y: np.ndarray, where: dict, folder: Path, settings: TrainSettings,
                    epochs: int, spec: dict, stats: CacheStats, log=print, lit_tower=None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Photo and note embeddings (n, E) each of the CLIP trained contrastively on ``train``
    pairs (early stopping on ``val``), cached with its weights (and an open_clip export) in
    ``folder``. ``lit_tower``: the locked image tower of a LiT CLIP (``spec["clip"] == "lit"``),
    whose pooled features ``feats.lit_pooled`` holds."""
    from trainer.encoders.lit import load_image_tower
    from trainer.models.unified import ClipEncoder, LitEncoder

    lit = spec["clip"] == "lit"
    inputs = Inputs(feats, with_pixels=not lit, augment=settings.photo_augment)

    def train_and_extract():
        torch.manual_seed(settings.seed)
        encoder = LitEncoder(spec) if lit else ClipEncoder(spec)
        if lit:
            load_image_tower(encoder.clip, lit_tower)
        model, history = train_classifier(encoder, inputs, y, where["train"], where["val"], settings,
                                          epochs, f"unified encoder ({'LiT' if lit else 'tiny'} CLIP)",
                                          lr=settings.lr / 2)
        save_checkpoint(folder / "encoder", model, spec, history)
        export_open_clip(folder / "open_clip", model.clip, spec["clip_cfg"])
        log(f"unified encoder (CLIP) trained: {history[-1] if history else {}}")
        img, txt = in_batches(lambda b: tuple(e.numpy() for e in model.embed(b)), inputs, len(y))
        return {"img": img, "txt": txt}
    emb = cached_arrays(folder / "embeddings.safetensors", train_and_extract, stats)
    return emb["img"], emb["txt"]

