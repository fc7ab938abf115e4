"""Unified joint encoder: an open_clip CLIP dual encoder trained contrastively on the
image-note pairs, with a classifier on the joint embedding.

With no pretrained weights it is a tiny CLIP (a small ViT and text transformer) that
trains on a CPU; ``spec["clip"]`` may instead name an open_clip model with a pretrained
tag, a local checkpoint, or a ``local-dir:`` folder.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.models.common import head, replace_missing


def tiny_clip_config(image_size: int, embed_dim: int, context_length: int) -> dict:
    """An open_clip model config small enough to train on 2 CPU cores."""
    return {"embed_dim": embed_dim,
            "vision_cfg": {"image_size": image_size, "layers": 2, "width": 96, "head_width": 32,
                           "patch_size": max(4, image_size // 8), "mlp_ratio": 2.0},
            "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": 96, "heads": 3,
                         "layers": 2, "mlp_ratio": 2.0}}


def build_clip(spec: dict) -> nn.Module:
    import open_clip
    from open_clip.model import CLIP

    source = spec.get("clip", "tiny")
    if source == "tiny":
        cfg = spec["clip_cfg"]
        return CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"])
    if source.startswith("local-dir:"):
        return open_clip.create_model(source, weights_only=True)
    name, _, pretrained = source.partition(":")
    return open_clip.create_model(name, pretrained=pretrained or None, weights_only=True)


class UnifiedClip(nn.Module):
    uses = ("text", "image")

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        self.clip = build_clip(spec)
        dim = int(self.clip.text_projection.shape[1]) if hasattr(self.clip, "text_projection") else spec["embed_dim"]
        self.text_missing = nn.Parameter(torch.zeros(dim))
        self.image_missing = nn.Parameter(torch.zeros(dim))
        self.head = head(2 * dim, spec["hidden"], spec["n_classes"])
        mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
        std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def embed(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised image and note embeddings, (batch, dim) each."""
        img = self.clip.encode_image((batch["clip_images"] - self.mean) / self.std, normalize=True)
        txt = self.clip.encode_text(batch["clip_tokens"], normalize=True)
        return img, txt

    def forward(self, batch: dict) -> torch.Tensor:
        return self.logits_and_contrastive(batch)[0]

    def logits_and_contrastive(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (batch, n_classes) and the symmetric InfoNCE loss over the pairs
        whose note and photo are both present (0 when fewer than two)."""
        img, txt = self.embed(batch)
        both = batch["text_present"] & batch["image_present"]
        if both.sum() >= 2:
            logits = self.clip.logit_scale.exp().clamp(max=100) * img[both] @ txt[both].T
            target = torch.arange(int(both.sum()))
            contrastive = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        else:
            contrastive = torch.zeros(())
        img = replace_missing(img, batch["image_present"], self.image_missing)
        txt = replace_missing(txt, batch["text_present"], self.text_missing)
        return self.head(torch.cat([img, txt], -1)), contrastive
