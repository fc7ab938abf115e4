"""Pictures of attributions (NumPy and Pillow only): a heatmap over the photo and the
note's words tinted by their score. Used by the dashboard, the docs and the report.

Words are drawn as pixels, never as HTML: a note is data, not markup.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from trainer.explain.records import decode_heatmap

# Yellow and blue (Okabe-Ito): told apart by colour-blind readers, and yellow stands out on
# dark skin where a red tint merges with it.
POSITIVE = np.array([240, 228, 66], float)  # evidence for the explained class
NEGATIVE = np.array([0, 114, 178], float)  # evidence against it


def overlay_heatmap(photo: np.ndarray, heatmap: np.ndarray, alpha: float = 0.6, signed: bool = True) -> np.ndarray:
    """uint8 (S, S, 3): the photo tinted yellow where the heatmap supports the class (blue
    against it, when ``signed``), in proportion to |value| / max |value|."""
    photo = np.asarray(photo, float)
    side = photo.shape[0]
    h = np.asarray(heatmap, float)
    if h.shape[0] != side:  # nearest-neighbour upsampling of the stored (pooled) heatmap
        h = np.kron(h, np.ones((side // h.shape[0], side // h.shape[0])))
    scale = np.abs(h).max() or 1.0
    weight = alpha * (np.abs(h) / scale)[..., None]
    colour = np.where((h >= 0)[..., None] | (not signed), POSITIVE, NEGATIVE)
    return np.clip(photo * (1 - weight) + colour * weight, 0, 255).astype(np.uint8)


def load_font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without sized default fonts
        return ImageFont.load_default()


def note_image(words: list[str], scores, width: int = 640, size: int = 18) -> Image.Image:
    """The note's words on tinted boxes (yellow: for the explained class, blue: against)."""
    font = load_font(size)
    scores = np.asarray(scores, float)
    scale = np.abs(scores).max() if len(scores) and np.abs(scores).max() > 0 else 1.0
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    x, y, line, boxes = 8, 8, size + 10, []
    for word, score in zip(words, scores):
        w = int(draw.textlength(word, font=font)) + 8
        if x + w > width - 8 and x > 8:
            x, y = 8, y + line
        boxes.append((x, y, w, word, score))
        x += w + 4
    img = Image.new("RGB", (width, y + line + 8), "white")
    draw = ImageDraw.Draw(img)
    for x, y, w, word, score in boxes:
        strength = abs(score) / scale
        tint = POSITIVE if score >= 0 else NEGATIVE
        fill = tuple(int(v) for v in 255 - strength * (255 - tint) * 0.7)
        draw.rectangle([x, y, x + w, y + size + 6], fill=fill)
        draw.text((x + 4, y + 2), word, fill="black", font=font)
    if not words:
        draw.text((8, 8), "(no note)", fill="gray", font=font)
    return img


def case_figure(photo: np.ndarray, heatmaps: dict[str, np.ndarray], words: list[str], scores, title: str,
                scale: int = 4) -> Image.Image:
    """The photo, one overlay per heatmap (e.g. IG and Occlusion), captions, and the note below."""
    font = load_font(16)
    panels = [("photo", np.asarray(photo, np.uint8))] + [
        (name, overlay_heatmap(photo, h)) for name, h in heatmaps.items() if h is not None]
    side = photo.shape[0] * scale
    width = max(len(panels) * (side + 12) + 12, 640)
    note = note_image(words, scores, width=width)
    lines, line = [], ""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for word in title.split():
        if line and measure.textlength(f"{line} {word}", font=font) > width - 24:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    top = 16 + 22 * len(lines)
    img = Image.new("RGB", (width, top + side + 30 + note.height), "white")
    draw = ImageDraw.Draw(img)
    for i, text in enumerate(lines):
        draw.text((12, 10 + 22 * i), text, fill="black", font=font)
    for i, (name, arr) in enumerate(panels):
        x = 12 + i * (side + 12)
        img.paste(Image.fromarray(arr).resize((side, side), Image.Resampling.NEAREST), (x, top))
        draw.text((x, top + 4 + side), name, fill="black", font=font)
    img.paste(note, (0, top + side + 30))
    return img


def attribution_figure(photo_at, ig: pd.Series, occlusion: pd.Series | None, title: str) -> Image.Image:
    """The case figure of one stored attribution: ``ig`` and ``occlusion`` are rows of the
    attributions table (Integrated Gradients, Occlusion or None); ``photo_at(side)`` returns
    the case's photo, uint8 (side, side, 3), at twice the heatmap's side."""
    side = int(ig["heatmap_side"]) * 2 if pd.notna(ig["heatmap_side"]) else 64
    heat = {"Integrated Gradients": decode_heatmap(ig["image_heatmap"], ig["heatmap_side"]), "Occlusion": None}
    if occlusion is not None:
        heat["Occlusion"] = decode_heatmap(occlusion["image_heatmap"], occlusion["heatmap_side"])
    return case_figure(photo_at(side), heat, list(ig["tokens"]), np.asarray(ig["token_scores"]), title)
