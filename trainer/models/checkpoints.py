"""Checkpoints as safetensors state dicts beside a JSON spec: no pickled objects anywhere.

``save_checkpoint(dir, model, spec)`` writes dir/model.safetensors and dir/spec.json;
``load_checkpoint(dir)`` rebuilds the model from the spec and loads the weights.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_model, save_model
from torch import nn

from trainer import distributed


def save_checkpoint(folder: Path, model: nn.Module, spec: dict, history: list[dict] | None = None) -> None:
    """Written by rank 0 only under torchrun (every rank holds the same weights)."""
    if not distributed.is_main():
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / "model.safetensors"))
    (folder / "spec.json").write_text(json.dumps({"spec": spec, "history": history or []}, indent=2, default=float))


def load_checkpoint(folder: Path) -> nn.Module:
    from trainer.models import build_model

    folder = Path(folder)
    spec = json.loads((folder / "spec.json").read_text())["spec"]
    model = build_model(spec)
    load_model(model, str(folder / "model.safetensors"))
    return model.eval()


def export_open_clip(folder: Path, clip: nn.Module, model_cfg: dict) -> None:
    """Write a CLIP as an open_clip ``local-dir:`` folder, loadable by ``open_clip.create_model``
    (rank 0 only under torchrun)."""
    if not distributed.is_main():
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}, indent=2))
    save_model(clip, str(folder / "open_clip_model.safetensors"))
