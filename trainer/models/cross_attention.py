"""Early fusion by cross-attention: note tokens (with one more for the note's word n-grams)
and photo patch tokens attend to each other in transformer blocks (both directions), then
a head reads both pooled streams. One block each way by default, to keep a CPU fit within
its time budget."""
from __future__ import annotations

import torch
from torch import nn

from trainer.models.baselines import ImageTokens
from trainer.models.common import NgramBag, head


class CrossBlock(nn.Module):
    """x attends to context (cross-attention), then a feed-forward layer; pre-norm residuals."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True, dropout=0.1)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x, context, context_pad):
        # x (batch, Lx, dim), context (batch, Lc, dim), context_pad (batch, Lc) True = ignore
        kv = self.norm_kv(context)
        x = x + self.attn(self.norm_q(x), kv, kv, key_padding_mask=context_pad, need_weights=False)[0]
        return x + self.ff(self.norm_ff(x))


class CrossAttentionFusion(nn.Module):
    uses = ("text", "image")

    def __init__(self, spec: dict, n_blocks: int = 1):
        super().__init__()
        self.spec = spec
        dim = spec["hidden"]
        self.image = ImageTokens(spec)
        self.text_proj = nn.Sequential(nn.LayerNorm(spec["text_dim"]), nn.Linear(spec["text_dim"], dim))
        self.text_missing = nn.Parameter(torch.zeros(dim))
        # The note's word n-grams as one more note token (absent in older runs).
        self.ngrams = NgramBag(spec["ngram_vocab"], dim) if spec.get("ngram_vocab", 0) > 1 else None
        self.type_emb = nn.Parameter(torch.zeros(2, dim))
        self.text_blocks = nn.ModuleList(CrossBlock(dim) for _ in range(n_blocks))
        self.image_blocks = nn.ModuleList(CrossBlock(dim) for _ in range(n_blocks))
        self.head = head(2 * dim, dim, spec["n_classes"])

    def forward(self, batch: dict) -> torch.Tensor:
        text = self.text_proj(batch["tokens"]) + self.type_emb[0]  # (batch, L, dim)
        mask = batch["mask"].clone()
        absent = ~batch["text_present"]
        # A missing note becomes one learned token, so attention always has a key to read.
        text = text.clone()
        text[absent, 0] = self.text_missing
        mask[absent] = False
        mask[absent, 0] = True
        if self.ngrams is not None:  # read only when the note is there
            text = torch.cat([text, self.ngrams(batch).unsqueeze(1) + self.type_emb[0]], 1)
            mask = torch.cat([mask, batch["text_present"].unsqueeze(1)], 1)
        image = self.image(batch) + self.type_emb[1]  # (batch, P, dim)
        image_pad = torch.zeros(image.shape[:2], dtype=torch.bool, device=image.device)
        for t_block, i_block in zip(self.text_blocks, self.image_blocks):
            text, image = t_block(text, image, image_pad), i_block(image, text, ~mask)
        w = mask.unsqueeze(-1).float()
        text_vec = (text * w).sum(1) / w.sum(1).clamp_min(1)
        return self.head(torch.cat([text_vec, image.mean(1)], -1))
