"""Unified joint encoder: an open_clip CLIP dual encoder trained contrastively on the
image-note pairs, with a classifier on the joint embedding (``UnifiedClassifier``).

By default the CLIP is LiT-style (``LitEncoder``, ``trainer.encoders.lit``): a locked
ImageNet-pretrained EfficientNet-Lite0 and a fine-tuned all-MiniLM-L6-v2. ``ClipEncoder``
trains a tiny CLIP from scratch instead (a small ViT and text transformer); its
``spec["clip"]`` may also name an open_clip model with a pretrained tag, a local
checkpoint, or a ``local-dir:`` folder.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.models.common import head, replace_missing

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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


class ClipEncoder(nn.Module):
    """The CLIP being trained: symmetric InfoNCE on present pairs, plus an auxiliary
    classification loss on the joint embedding so the embedding keeps what triage needs."""

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        self.clip = build_clip(spec)
        self.aux_head = nn.Linear(2 * spec["embed_dim"], spec["n_classes"])
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def embed(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised photo and note embeddings, (batch, embed_dim) each."""
        img = self.clip.encode_image((batch["clip_images"] - self.mean) / self.std, normalize=True)
        txt = self.clip.encode_text(batch["clip_tokens"], normalize=True)
        return img, txt

    def forward(self, batch: dict) -> torch.Tensor:
        return self.logits_and_contrastive(batch)[0]

    def logits_and_contrastive(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        img, txt = self.embed(batch)
        both = batch["text_present"] & batch["image_present"]
        if both.sum() >= 2:
            logits = self.clip.logit_scale.exp().clamp(max=100) * img[both] @ txt[both].T
            target = torch.arange(int(both.sum()), device=logits.device)
            contrastive = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        else:
            contrastive = torch.zeros((), device=img.device)
        joint = torch.cat([img * batch["image_present"].unsqueeze(1), txt * batch["text_present"].unsqueeze(1)], -1)
        return self.aux_head(joint), contrastive


class LitEncoder(ClipEncoder):
    """The LiT CLIP being trained (``trainer.encoders.lit``): the locked image tower's pooled
    features are read from the cache through the tower's projection head; the text tower
    (a pretrained transformer) is fine-tuned at a tenth of the heads' learning rate."""

    def __init__(self, spec: dict):
        nn.Module.__init__(self)
        from trainer.encoders.lit import build_lit

        self.spec = spec
        self.clip = build_lit(spec["clip_cfg"])
        self.aux_head = nn.Linear(2 * spec["embed_dim"], spec["n_classes"])

    def param_groups(self, lr: float) -> list[dict]:
        text = [p for p in self.clip.text.transformer.parameters() if p.requires_grad]
        ids = {id(p) for p in text}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": text, "lr": lr / 10}, {"params": rest, "lr": lr}]

    def embed(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        img = F.normalize(self.clip.visual.head(batch["lit_pooled"]), dim=-1)
        ids = batch["clip_tokens"]
        length = max(1, int((ids != 0).any(0).nonzero().max()) + 1) if (ids != 0).any() else 1
        txt = self.clip.encode_text(ids[:, :length], normalize=True)  # shared padding cut: attention scales with length
        return img, txt


class UnifiedClassifier(nn.Module):
    """Classifier on the frozen joint embedding [photo, note] of a trained CLIP."""

    uses = ("text", "image")

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        dim = spec["embed_dim"]
        self.text_missing = nn.Parameter(torch.zeros(dim))
        self.image_missing = nn.Parameter(torch.zeros(dim))
        self.head = head(2 * dim + 1, spec["hidden"], spec["n_classes"])

    def forward(self, batch: dict) -> torch.Tensor:
        # clip_img, clip_txt: (batch, embed_dim), unit length
        img = replace_missing(batch["clip_img"], batch["image_present"], self.image_missing)
        txt = replace_missing(batch["clip_txt"], batch["text_present"], self.text_missing)
        agreement = (batch["clip_img"] * batch["clip_txt"]).sum(-1, keepdim=True)  # photo-note similarity
        return self.head(torch.cat([img, txt, agreement], -1))
