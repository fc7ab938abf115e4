"""A stored model of a run rebuilt as a ``CasePipeline`` (pixels and note tokens in, logits
out) from its artifacts folder: the model, its encoders (the CNN, a timm or open_clip
tower, the note encoder), the notes' word vocabulary, and for the unified model its CLIP
(LiT or tiny) through open_clip's ``local-dir:`` loading."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from trainer.encoders.ngrams import NgramVocabulary
from trainer.explain.attribution import CasePipeline


def load_pipeline(run_dir: str | Path, model_name: str) -> CasePipeline:
    """Rebuild a stored model of a run from its artifacts folder."""
    from safetensors.torch import load_model

    from trainer.config import BASELINES, run_config
    from trainer.encoders.image import OpenClipImageEncoder, SmallCNN, TimmImageEncoder
    from trainer.encoders.text import TextEncoder
    from trainer.models.checkpoints import load_checkpoint

    run_dir = Path(run_dir)
    cfg = run_config((run_dir / "config.json").read_text())
    if not (run_dir / model_name / "spec.json").exists():
        raise ValueError(f"Run folder {run_dir} has no model {model_name!r}.")
    model = load_checkpoint(run_dir / model_name)
    n_classes = model.spec["n_classes"]
    if model_name == "unified":
        return _unified_pipeline(model, run_dir / "unified_clip", cfg)
    vocab = run_dir / "ngrams.json"  # absent in runs made before the word channel
    ngrams = NgramVocabulary.from_json(vocab.read_text()) if vocab.exists() else None
    needs_text = "text" in getattr(model, "uses", ()) or model_name == "late_fusion"
    text_encoder = TextEncoder(cfg.text_encoder, cfg.max_tokens) if needs_text else None
    if cfg.image_encoder == "cnn":
        image_encoder = SmallCNN(n_classes)
        load_model(image_encoder, str(run_dir / "image_encoder" / "model.safetensors"))
        image_encoder.eval()
        size = cfg.image_size
    elif not cfg.image_encoder.startswith("open_clip:"):  # a timm tower, as the run saved it
        image_encoder = TimmImageEncoder.from_folder(run_dir / "image_encoder")
        size = image_encoder.image_size
    else:
        tower = OpenClipImageEncoder(cfg.image_encoder.removeprefix("open_clip:"))
        image_encoder = _NormalisedTower(tower)
        size = tower.image_size
    parts = None
    if model_name == "late_fusion":
        parts = {m: load_checkpoint(run_dir / m) for m in BASELINES}
    return CasePipeline(model, text_encoder, image_encoder, parts, image_size=size, ngrams=ngrams)


class _NormalisedTower(nn.Module):
    def __init__(self, tower):
        super().__init__()
        self.visual = tower.visual
        self.register_buffer("mean", tower.mean, persistent=False)
        self.register_buffer("std", tower.std, persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual((pixels - self.mean) / self.std)


def _unified_pipeline(model: nn.Module, folder: Path, cfg) -> CasePipeline:
    """The unified model with its CLIP: LiT (a Hugging Face text tower) or the tiny CLIP."""
    import open_clip

    model_cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
    if "hf_model_name" not in model_cfg["text_cfg"]:  # the tiny CLIP trained from scratch
        clip = open_clip.create_model(f"local-dir:{folder}", weights_only=True).eval()
        return CasePipeline(model, clip=clip, image_size=cfg.image_size)
    from transformers import AutoTokenizer

    from trainer.encoders.lit import load_lit
    from trainer.encoders.text import resolve_text_encoder

    clip = load_lit(folder, cfg.text_encoder)
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder(cfg.text_encoder))
    return CasePipeline(model, clip=clip, image_size=model_cfg["vision_cfg"]["image_size"], clip_tokenizer=tokenizer,
                        clip_max_tokens=model_cfg["text_cfg"]["context_length"])
