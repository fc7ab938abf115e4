"""Pieces the architectures share: masked text pooling, a missing-modality stand-in, heads."""
from __future__ import annotations

import torch
from torch import nn


class MaskedAttentionPool(nn.Module):
    """Pool token features with learned attention; notes that are missing become a learned vector."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU())
        self.score = nn.Linear(hidden, 1)
        self.missing = nn.Parameter(torch.zeros(hidden))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        # tokens (batch, L, in_dim), mask (batch, L) bool, present (batch,) bool -> (batch, hidden)
        h = self.proj(tokens)
        scores = self.score(h).squeeze(-1).masked_fill(~mask, -1e4)
        pooled = (scores.softmax(-1).unsqueeze(-1) * h).sum(1)
        return torch.where(present.unsqueeze(-1), pooled, self.missing.expand_as(pooled))


def head(in_dim: int, hidden: int, n_classes: int, dropout: float = 0.2) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(),
                         nn.Dropout(dropout), nn.Linear(hidden, n_classes))


def replace_missing(x: torch.Tensor, present: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """Rows of x (batch, ...) whose modality is absent become the learned ``missing`` tensor."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(present.view(shape), x, missing.expand_as(x))


class NgramBag(nn.Module):
    """The note's word n-grams (``trainer.encoders.ngrams``) as one vector: the sum of learned
    vectors weighted by TF-IDF; zero for a missing note."""

    def __init__(self, vocab_size: int, hidden: int):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab_size, hidden, mode="sum", padding_idx=0)

    def forward(self, batch: dict) -> torch.Tensor:
        # ngram_ids, ngram_weights (batch, K); text_present (batch,) -> (batch, hidden)
        weights = batch["ngram_weights"] * batch["text_present"].unsqueeze(1)
        return self.bag(batch["ngram_ids"], per_sample_weights=weights)
