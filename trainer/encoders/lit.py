"""The unified model's joint encoder: an open_clip CLIP with a timm image tower (the
ImageNet-pretrained EfficientNet-Lite0) and a Hugging Face text tower (all-MiniLM-L6-v2),
trained LiT-style (Zhai et al. 2022, "LiT: zero-shot transfer with locked-image text
tuning"): the image tower stays locked, the text tower and both projections learn to
match each note to its photo.

A locked tower gives the same output every epoch, so its pooled features are computed once
and cached (``pooled_photo_features``); training reads them through the tower's own
projection head (``clip.visual.head``), which is exactly what ``clip.encode_image`` does
after the trunk. The trained CLIP is saved as an open_clip ``local-dir:`` folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from trainer.encoders.cache import CacheStats, Encoding, cached_rows, content_key, load_images
from trainer.encoders.image import EFFICIENTNET_LITE0, IMAGENET_MEAN, IMAGENET_STD, TimmImageEncoder
from trainer.encoders.text import resolve_text_encoder

IMAGE_TOWER = "tf_efficientnet_lite0"


def lit_config(embed_dim: int, image_size: int, text_encoder: str, context_length: int) -> dict:
    """The open_clip model config: timm image tower, Hugging Face text tower, mean pooling."""
    text = resolve_text_encoder(text_encoder)
    return {"embed_dim": embed_dim, "custom_text": True,
            "vision_cfg": {"timm_model_name": IMAGE_TOWER, "timm_model_pretrained": False, "timm_pool": "avg",
                           "timm_proj": "linear", "image_size": image_size},
            "text_cfg": {"hf_model_name": text, "hf_tokenizer_name": text, "hf_pooler_type": "mean_pooler",
                         "hf_proj_type": "linear", "hf_model_pretrained": True, "context_length": context_length}}


def build_lit(model_cfg: dict) -> torch.nn.Module:
    """The CLIP of ``model_cfg`` with the text tower's pretrained weights (image tower empty:
    ``load_image_tower`` fills it)."""
    from open_clip.model import CustomTextCLIP

    cfg = {k: v for k, v in model_cfg.items() if k != "custom_text"}
    return CustomTextCLIP(**cfg)


def load_image_tower(clip: torch.nn.Module, tower: TimmImageEncoder) -> None:
    """Copy the pretrained tower's weights into the CLIP's trunk (both built without a
    classifier, so every key must match) and lock it. (open_clip's ``freeze_bn_stats``
    would swap timm's BatchNormAct2d for a plain frozen batch norm and drop its activation;
    the trunk is never run in training, as its pooled features come from the cache.)"""
    clip.visual.trunk.load_state_dict(tower.model.state_dict(), strict=True)
    clip.lock_image_tower(unlocked_groups=0, freeze_bn_stats=False)
    clip.visual.trunk.eval()


def load_lit(folder: Path, text_encoder: str) -> torch.nn.Module:
    """A saved LiT CLIP through ``open_clip.create_model("local-dir:...")``, its text tower's
    configuration read from this environment's copy of ``text_encoder`` (a folder path saved
    in another environment may not exist here)."""
    import open_clip

    model_cfg = json.loads((Path(folder) / "open_clip_config.json").read_text())["model_cfg"]
    text_cfg = {**model_cfg["text_cfg"], "hf_model_pretrained": False}
    text_cfg["hf_model_name"] = text_cfg["hf_tokenizer_name"] = resolve_text_encoder(text_encoder)
    return open_clip.create_model(f"local-dir:{folder}", text_cfg=text_cfg, weights_only=True).eval()


def tokenize(notes: list[str], text_encoder: str, context_length: int) -> np.ndarray:
    """(n, context_length) int64 ids of the text tower's own tokenizer (0 pads)."""
    from open_clip.tokenizer import HFTokenizer

    tokenizer = HFTokenizer(resolve_text_encoder(text_encoder), context_length=context_length)
    return tokenizer(notes).numpy().astype(np.int64)


def image_tower(image_size: int, cache_dir: str | Path) -> TimmImageEncoder:
    """The locked tower: EfficientNet-Lite0 with its ImageNet weights and normalisation."""
    return TimmImageEncoder(EFFICIENTNET_LITE0, image_size, cache_dir, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def pooled_encoding(tower: TimmImageEncoder) -> Encoding:
    """The locked trunk's average-pooled last feature map per photo, (n, 1280) float32."""
    def compute(paths, notes):
        pixels = load_images(paths, tower.image_size)
        out = np.zeros((len(paths), tower.dim), np.float32)
        with torch.no_grad():
            for start in range(0, len(paths), 64):
                x = torch.from_numpy(pixels[start:start + 64]).permute(0, 3, 1, 2).float() / 255
                out[start:start + len(x)] = tower.tokens(x).mean(1).numpy()
        return {"pooled": out}
    return Encoding("lit-image", tower.identity(), compute, "LiT image tower")


def pooled_photo_features(cases, fingerprint: str, tower: TimmImageEncoder, cache_dir: str | Path,
                          stats: CacheStats) -> np.ndarray:
    """(n, 1280) float32 for ``cases`` (case_id, note, image_path), cached by the cases'
    content and the tower's identity."""
    content = content_key(fingerprint, cases["case_id"].astype(str).tolist())
    return cached_rows(cases, fingerprint, content, cache_dir, pooled_encoding(tower), stats)["pooled"]
