"""Single-modality baselines on frozen encoder outputs: ``text_only`` reads the note
encoder's tokens and the note's word n-grams, ``image_only`` the image encoder's patch tokens (the CNN trained from
scratch on the training split, or a frozen open_clip tower's embedding as one token)."""
from __future__ import annotations

import torch
from torch import nn

from trainer.models.common import MaskedAttentionPool, NgramBag, head, replace_missing


class TextOnly(nn.Module):
    uses = ("text",)

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        self.pool = MaskedAttentionPool(spec["text_dim"], spec["hidden"])
        # The sparse word channel beside the pretrained encoder's tokens (absent in older runs).
        self.ngrams = NgramBag(spec["ngram_vocab"], spec["hidden"]) if spec.get("ngram_vocab", 0) > 1 else None
        self.head = head(spec["hidden"] * (2 if self.ngrams else 1), spec["hidden"], spec["n_classes"])

    def forward(self, batch: dict) -> torch.Tensor:
        pooled = self.pool(batch["tokens"], batch["mask"], batch["text_present"])
        if self.ngrams is not None:
            pooled = torch.cat([pooled, self.ngrams(batch)], -1)
        return self.head(pooled)


class ImageTokens(nn.Module):
    """Projects frozen image tokens (batch, P, image_dim) to (batch, P, hidden); an absent
    or unusable photo becomes learned tokens."""

    def __init__(self, spec: dict):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(spec["image_dim"]), nn.Linear(spec["image_dim"], spec["hidden"]),
                                  nn.GELU())
        self.missing = nn.Parameter(torch.zeros(spec["hidden"]))
        self.out_dim = spec["hidden"]

    def forward(self, batch: dict) -> torch.Tensor:
        return replace_missing(self.proj(batch["image_tokens"]), batch["image_present"], self.missing)


class ImageOnly(nn.Module):
    uses = ("image",)

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        self.image = ImageTokens(spec)
        self.head = head(spec["hidden"], spec["hidden"], spec["n_classes"])

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.image(batch).mean(1))
