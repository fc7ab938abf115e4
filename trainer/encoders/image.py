"""Image encoders: ``SmallCNN``, trained from scratch on the training split, and
``OpenClipImageEncoder``, a frozen open_clip image tower by model name plus pretrained tag,
by ``local-dir:`` folder, or by a local checkpoint path."""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from trainer.encoders.text import first_line


class SmallCNN(nn.Module):
    """A compact CNN for photos, trained from scratch: four conv blocks (one 3x3 conv,
    batch norm, ReLU, 2x2 max-pool each). ``tokens`` gives the patch grid, ``forward``
    class logits from a linear head, used while the encoder is trained."""

    def __init__(self, n_classes: int, widths: tuple[int, ...] = (24, 48, 96, 128)):
        super().__init__()
        blocks, c_in = [], 3
        for c_out in widths:
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                       nn.MaxPool2d(2)]
            c_in = c_out
        self.body = nn.Sequential(*blocks)
        self.out_dim = widths[-1]
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.out_dim, n_classes))

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(batch, 3, H, W) in [0, 1] -> (batch, H/16 * W/16, out_dim)."""
        x = (images - 0.5).contiguous(memory_format=torch.channels_last)  # faster convolutions on CPU
        return self.body(x).flatten(2).transpose(1, 2)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.tokens(batch["images"]).mean(1))


class OpenClipImageEncoder:
    """A frozen open_clip image tower. ``spec`` is "<model>:<pretrained tag or checkpoint>"
    or "local-dir:<folder>" (open_clip_config.json plus weights)."""

    def __init__(self, spec: str):
        import open_clip

        self.spec = spec
        if spec.startswith("local-dir:"):
            model_name, pretrained = spec, None
        else:
            model_name, _, pretrained = spec.partition(":")
            pretrained = pretrained or None
        try:
            model = open_clip.create_model(model_name, pretrained=pretrained, weights_only=True)
        except Exception as exc:  # as above; a pickled object in the checkpoint is refused, never run
            raise ValueError(f"Cannot load the open_clip image encoder {spec!r}: {first_line(exc)}. Pretrained tags "
                             "need a hub download; offline, give a local checkpoint path or local-dir: folder "
                             "holding plain weights (loaded with weights_only=True).") from exc
        self.visual = model.visual.eval()
        self.image_size = int(np.atleast_1d(self.visual.image_size)[0])
        mean = getattr(self.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        std = getattr(self.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.dim = int(model.embed_dim if hasattr(model, "embed_dim") else self.visual.output_dim)

    def identity(self) -> str:
        probe = next(self.visual.parameters()).detach().flatten()[:64].numpy().tobytes()
        return hashlib.sha256(self.spec.encode() + probe).hexdigest()[:16]

    @torch.no_grad()
    def encode(self, images: np.ndarray, batch_size: int = 64, progress=None) -> np.ndarray:
        """uint8 (n, H, W, 3) at the tower's size -> pooled embeddings (n, dim) float32."""
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start:start + batch_size]).permute(0, 3, 1, 2).float() / 255
            out.append(self.visual((x - self.mean) / self.std).float().numpy())
            progress and progress(len(x))
        return np.concatenate(out)

