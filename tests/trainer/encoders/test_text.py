"""The note encoder's cache identity: the same model from another folder keeps it; a change
to any weight (not only the first), the token limit or the vocabulary changes it."""
import shutil

import torch

from trainer.encoders.text import TextEncoder, resolve_text_encoder


def test_identity_follows_the_model_not_its_folder(tmp_path):
    default = TextEncoder("all-MiniLM-L6-v2", 32)
    copy = tmp_path / "minilm"
    shutil.copytree(resolve_text_encoder("all-MiniLM-L6-v2"), copy)
    assert TextEncoder(str(copy), 32).identity() == default.identity()
    assert TextEncoder(str(copy), 48).identity() != default.identity()
    moved = TextEncoder(str(copy), 32)
    with torch.no_grad():
        list(moved.model.parameters())[-3].add_(1e-3)  # a late layer, far from the first tensor
    assert moved.identity() != default.identity()
    more_words = TextEncoder(str(copy), 32)
    more_words.tokenizer.add_tokens(["dermsynthword"])
    assert more_words.identity() != default.identity()
