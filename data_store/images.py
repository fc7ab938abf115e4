"""Image checks at ingest and the one loader every consumer uses.

``check_image`` decides whether a file is a usable photo; ``load_rgb`` turns any
accepted file (grayscale, RGBA, CMYK, 16-bit) into 8-bit RGB the same way every time.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # larger declared sizes are refused as possible decompression bombs
MAX_FILE_BYTES = 64 * 1024 * 1024


class ImageRejected(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class CheckedImage:
    path: Path  # resolved, inside the root
    sha256: str
    mode: str
    width: int
    height: int


def resolve_inside(raw: str, root: Path) -> Path:
    """Resolve a manifest path against ``root``; refuse anything that leaves it."""
    if not raw or not raw.strip():
        raise ImageRejected("image_path_missing", "image_path is empty.")
    candidate = Path(raw.strip())
    if not candidate.is_absolute():
        candidate = root / candidate
    # realpath follows symlinks, so a link inside the root that points out is caught too.
    resolved = Path(os.path.realpath(candidate))
    real_root = Path(os.path.realpath(root))
    if resolved != real_root and real_root not in resolved.parents:
        raise ImageRejected("image_outside_root",
                            f"image_path {raw!r} resolves to {resolved}, outside the image root {real_root}.")
    return resolved


def check_image(raw: str, root: Path, max_pixels: int = MAX_PIXELS) -> CheckedImage:
    """Open, size-check and fully decode one image; raise ImageRejected with a reason."""
    path = resolve_inside(raw, root)
    if not path.is_file():
        raise ImageRejected("image_missing", f"image file not found: {raw!r}.")
    size = path.stat().st_size
    if size == 0:
        raise ImageRejected("image_empty", f"image file is empty (0 bytes): {raw!r}.")
    if size > MAX_FILE_BYTES:
        raise ImageRejected("image_too_large", f"image file is {size:,} bytes, over {MAX_FILE_BYTES:,}: {raw!r}.")
    data = path.read_bytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise ImageRejected(
                        "image_too_many_pixels",
                        f"image declares {width}x{height} pixels, over the limit of {max_pixels:,} "
                        f"(possible decompression bomb): {raw!r}.")
                mode = im.mode
                im.load()  # full decode: catches truncated and corrupt files
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("image_too_many_pixels",
                            f"image declares too many pixels (possible decompression bomb): {raw!r}.") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected("image_unreadable", f"not a readable image ({type(exc).__name__}): {raw!r}.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected("image_corrupt", f"image is corrupt or truncated ({exc}): {raw!r}.") from exc
    return CheckedImage(path, hashlib.sha256(data).hexdigest(), mode, width, height)


def load_rgb(path: str | Path, size: int | None = None) -> np.ndarray:
    """Any accepted image as uint8 RGB (H, W, 3), optionally resized to (size, size)."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            peak = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
            im = Image.fromarray((arr / peak * 255).clip(0, 255).astype(np.uint8)).convert("RGB")
        elif im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, rgba).convert("RGB")
        else:
            im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im)
