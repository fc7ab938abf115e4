"""Skin backgrounds: a per-Fitzpatrick-type colour, texture, lighting, body-site cues
and hair. Images are float32 arrays (H, W, 3) in [0, 1]."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# Mean sRGB of unaffected skin per Fitzpatrick type (I..VI), on a 0-1 scale.
SKIN_RGB = {
    1: (0.90, 0.79, 0.71),
    2: (0.85, 0.71, 0.59),
    3: (0.79, 0.62, 0.48),
    4: (0.63, 0.45, 0.32),
    5: (0.44, 0.30, 0.21),
    6: (0.28, 0.19, 0.14),
}
# Hair density (strands per image) by body site; creases on hands, curvature on the face.
HAIR_DENSITY = {"face": 1, "scalp": 14, "trunk": 3, "arm": 8, "hand": 2, "leg": 10, "foot": 2}


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean noise with features about size/cells pixels wide, shape (size, size)."""
    coarse = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    idx = np.linspace(0, cells, size, dtype=np.float32)
    i0 = np.floor(idx).astype(int).clip(0, cells - 1)
    t = idx - i0
    rows = coarse[i0] * (1 - t)[:, None] + coarse[i0 + 1] * t[:, None]  # (size, cells+1)
    return rows[:, i0] * (1 - t)[None, :] + rows[:, i0 + 1] * t[None, :]


def render_skin(rng: np.random.Generator, size: int, fitzpatrick: int, site: str) -> np.ndarray:
    """Unaffected skin of one Fitzpatrick type at one body site, (size, size, 3)."""
    base = np.asarray(SKIN_RGB[fitzpatrick], dtype=np.float32) * rng.uniform(0.94, 1.06, 3)
    mottle = 0.035 * smooth_noise(rng, size, 6) + 0.015 * smooth_noise(rng, size, size // 4)
    pores = 0.012 * rng.standard_normal((size, size)).astype(np.float32)
    img = base[None, None, :] * np.exp(mottle + pores)[:, :, None]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    light = 1.0 + rng.uniform(0.03, 0.12) * (np.cos(angle) * xx + np.sin(angle) * yy)
    light -= 0.18 * (xx**2 + yy**2)  # lens vignetting
    if site == "face":  # curvature: one side of the face falls into shadow
        light -= 0.12 * np.clip(xx * np.sign(np.cos(angle)), 0, None)
    if site == "hand":  # knuckle and palm creases
        for _ in range(rng.integers(2, 4)):
            y0 = rng.uniform(0.1, 0.9) * size
            crease = np.exp(-((yy * size + size / 2 - y0 - 6 * xx * rng.uniform(-1, 1)) ** 2) / 2.0)
            light -= 0.10 * crease
    return np.clip(img * light[:, :, None], 0, 1)


def draw_hair(rng: np.random.Generator, img: np.ndarray, site: str, fitzpatrick: int) -> np.ndarray:
    """Dark, slightly curved strands over skin and lesion alike."""
    size = img.shape[0]
    n = rng.poisson(HAIR_DENSITY.get(site, 3))
    if n == 0:
        return img
    hair_rgb = np.asarray((0.12, 0.08, 0.06), np.float32) * (1.3 if fitzpatrick <= 2 else 0.8)
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    t = np.linspace(-0.5, 0.5, 8)
    for _ in range(n):
        x0, y0 = rng.uniform(0, size, 2)
        theta = rng.uniform(0, np.pi)
        length = rng.uniform(0.2, 0.5) * size
        bend = rng.uniform(-0.15, 0.15) * length
        along, across = t * length, bend * (4 * t**2 - 1)
        xs = x0 + along * np.cos(theta) - across * np.sin(theta)
        ys = y0 + along * np.sin(theta) + across * np.cos(theta)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=190, width=max(1, round(size / 128)))
    alpha = (np.asarray(layer, np.float32) / 255)[:, :, None]
    return img * (1 - alpha) + hair_rgb * alpha
