"""Single-modality baselines: ``text_only`` (frozen note encoder tokens) and ``image_only``
(a CNN trained from scratch, or a frozen open_clip tower's embedding)."""
from __future__ import annotations

import torch
from torch import nn

from trainer.encoders import SmallCNN
from trainer.models.common import MaskedAttentionPool, head, replace_missing


class TextOnly(nn.Module):
    uses = ("text",)

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        self.pool = MaskedAttentionPool(spec["text_dim"], spec["hidden"])
        self.head = head(spec["hidden"], spec["hidden"], spec["n_classes"])

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.pool(batch["tokens"], batch["mask"], batch["text_present"]))


class ImageBackbone(nn.Module):
    """Image features from pixels (CNN) or from a frozen open_clip embedding."""

    def __init__(self, spec: dict):
        super().__init__()
        self.from_embedding = spec["image"] != "cnn"
        if self.from_embedding:
            self.net = nn.Sequential(nn.LayerNorm(spec["image_dim"]), nn.Linear(spec["image_dim"], spec["hidden"]))
            self.out_dim = spec["hidden"]
        else:
            self.net = SmallCNN(out_dim=spec["hidden"])
            self.out_dim = self.net.out_dim
        self.missing = nn.Parameter(torch.zeros(self.out_dim))

    def tokens(self, batch: dict) -> torch.Tensor:
        """(batch, patches, out_dim); one token for a frozen embedding."""
        if self.from_embedding:
            tok = self.net(batch["image_emb"]).unsqueeze(1)
        else:
            tok = self.net.tokens(batch["images"])
        return replace_missing(tok, batch["image_present"], self.missing)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.tokens(batch).mean(1)


class ImageOnly(nn.Module):
    uses = ("image",)

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        self.backbone = ImageBackbone(spec)
        self.head = head(self.backbone.out_dim, spec["hidden"], spec["n_classes"])

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.backbone(batch))
