"""Lesion morphology per condition and its rendering onto skin.

Colours are deltas in log-RGB (multiplicative on the skin), so one setting gives the
same relative look on every skin type. The tone effect then scales every lesion
contrast by ``contrast_factor(fitzpatrick, tone_effect)``: the documented mechanism by
which lesions and redness are harder to see on darker skin.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_store.synth.skin import smooth_noise

BROWN = (-0.35, -0.60, -0.75)
DARK = (-1.00, -1.10, -1.05)
BLUE_GREY = (-0.70, -0.55, -0.35)
RED = (0.05, -0.38, -0.32)
PINK = (0.03, -0.17, -0.12)
PEARL = (0.08, -0.02, 0.04)
CRUST = (-0.15, -0.35, -0.80)
FLAKE = (0.30, 0.38, 0.45)  # pale, slightly blue-white scale and blister roofs


@dataclass(frozen=True)
class Morphology:
    colour: tuple[float, float, float]
    strength: float  # scales colour
    radius: tuple[float, float]  # mean, sd as a fraction of the image side
    asymmetry: tuple[float, float]
    irregularity: tuple[float, float]
    softness: float  # edge width as a fraction of the radius
    variegation: float = 0.0
    second_colour: tuple[float, float, float] = DARK
    scale: float = 0.0
    warty: float = 0.0
    crust: float = 0.0
    sheen: float = 0.0
    halo: float = 0.0
    vesicles: float = 0.0  # mean count
    annular: bool = False


MORPHOLOGY: dict[str, Morphology] = {
    "cellulitis": Morphology(RED, 0.7, (0.36, 0.07), (0.2, 0.1), (0.10, 0.05), 0.55, halo=0.8),
    "herpes_zoster": Morphology(RED, 0.6, (0.22, 0.05), (0.45, 0.1), (0.2, 0.08), 0.3, vesicles=14),
    "melanoma": Morphology(BROWN, 1.0, (0.19, 0.05), (0.32, 0.12), (0.28, 0.10), 0.08,
                           variegation=0.6, second_colour=DARK),
    "squamous_cell_carcinoma": Morphology(PINK, 1.2, (0.15, 0.04), (0.15, 0.08), (0.15, 0.06), 0.15,
                                          scale=0.5, crust=0.5, warty=0.3),
    "basal_cell_carcinoma": Morphology(PEARL, 1.0, (0.13, 0.04), (0.1, 0.06), (0.08, 0.04), 0.10,
                                       sheen=0.9, crust=0.3),
    "psoriasis": Morphology(RED, 0.9, (0.30, 0.06), (0.15, 0.08), (0.12, 0.05), 0.06, scale=0.9),
    "atopic_eczema": Morphology(RED, 0.55, (0.30, 0.08), (0.25, 0.1), (0.25, 0.08), 0.35,
                                scale=0.25, crust=0.15),
    "actinic_keratosis": Morphology(PINK, 1.0, (0.11, 0.03), (0.15, 0.08), (0.2, 0.08), 0.2,
                                    scale=0.6, crust=0.1),
    "melanocytic_naevus": Morphology(BROWN, 0.9, (0.10, 0.03), (0.06, 0.04), (0.05, 0.04), 0.08,
                                     variegation=0.08),
    "seborrhoeic_keratosis": Morphology(BROWN, 0.75, (0.16, 0.04), (0.12, 0.06), (0.12, 0.06), 0.05,
                                        variegation=0.15, second_colour=BLUE_GREY, warty=0.8),
    "tinea_corporis": Morphology(RED, 0.7, (0.27, 0.06), (0.1, 0.06), (0.1, 0.05), 0.1,
                                 scale=0.4, annular=True),
}


def contrast_factor(fitzpatrick: int, tone_effect: float) -> float:
    """Multiplier on every lesion contrast: 1 for type I, 1 - tone_effect for type VI."""
    return float(np.clip(1.0 - tone_effect * (fitzpatrick - 1) / 5.0, 0.05, 1.0))


def _disc(shape_xy: tuple[np.ndarray, np.ndarray], cx: float, cy: float, radius: float) -> np.ndarray:
    xx, yy = shape_xy
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))


def render_lesion(rng: np.random.Generator, skin: np.ndarray, condition: str,
                  contrast: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw one lesion of ``condition`` on ``skin`` (H, W, 3); returns (image, mask)."""
    m = MORPHOLOGY[condition]
    size = skin.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = size * (0.5 + rng.uniform(-0.12, 0.12, 2))
    radius = size * max(0.04, rng.normal(*m.radius))
    r = np.hypot(xx - cx, yy - cy)
    mask = _outline(rng, m, r, np.arctan2(yy - cy, xx - cx), radius)
    colour = np.asarray(m.colour, np.float32) * m.strength
    mix = np.clip(m.variegation * (0.5 + 1.4 * smooth_noise(rng, size, 8)), 0, 1)[:, :, None]
    delta = colour * (1 - mix) + np.asarray(m.second_colour, np.float32) * mix
    log_img = np.log(np.clip(skin, 1e-3, 1)) + contrast * delta * mask[:, :, None]
    if m.halo:  # erythema spreading beyond the border
        halo = np.exp(-((r / (radius * (1 + m.halo))) ** 2))
        log_img += contrast * 0.6 * np.asarray(RED, np.float32) * halo[:, :, None]
    _surface(rng, m, log_img, (xx, yy), (cx, cy, radius), mask, contrast)
    img = np.exp(log_img)
    return np.clip(img, 0, 1), mask.astype(np.float32)


def _outline(rng: np.random.Generator, m, r: np.ndarray, theta: np.ndarray, radius: float) -> np.ndarray:
    """The lesion's soft mask (H, W): an asymmetric, irregular border (a ring for annular lesions)."""
    asym = max(0.0, rng.normal(*m.asymmetry))
    irr = max(0.0, rng.normal(*m.irregularity))
    boundary = 1 + asym * np.cos(theta - rng.uniform(0, 2 * np.pi))
    for k in range(3, 9):
        boundary += irr / k**0.5 * rng.standard_normal() * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) / 2
    boundary = radius * np.clip(boundary, 0.35, None)
    mask = 1 / (1 + np.exp(-(boundary - r) / (m.softness * radius + 0.6)))
    if m.annular:  # ring with central clearing
        mask = mask * (1 - 0.85 / (1 + np.exp(-(0.62 * boundary - r) / (0.08 * radius + 0.6))))
    return mask


def _surface(rng: np.random.Generator, m, log_img: np.ndarray, grid, centre, mask: np.ndarray,
             contrast: float) -> None:
    """Add the surface features of the morphology to ``log_img`` in place: warts, crust,
    pearly sheen with vessels, scale, vesicles."""
    xx, yy = grid
    cx, cy, radius = centre
    size = log_img.shape[0]
    if m.warty:
        log_img += contrast * m.warty * 0.22 * smooth_noise(rng, size, size // 5)[:, :, None] * mask[:, :, None]
    if m.crust:
        blob = _disc((xx, yy), cx + rng.normal(0, radius * 0.2), cy + rng.normal(0, radius * 0.2), radius * 0.3)
        log_img += contrast * m.crust * np.asarray(CRUST, np.float32) * (blob * mask)[:, :, None]
    if m.sheen:
        hl = _disc((xx, yy), cx - radius * 0.3, cy - radius * 0.3, radius * 0.35)
        log_img += contrast * m.sheen * 0.25 * hl[:, :, None]
        for _ in range(rng.integers(1, 4)):  # telangiectasia: fine red vessels over the nodule
            a, off = rng.uniform(0, np.pi), rng.uniform(-0.5, 0.5) * radius
            line = np.exp(-((np.cos(a) * (yy - cy) - np.sin(a) * (xx - cx) - off) ** 2) / 0.8)
            log_img += contrast * 0.5 * np.asarray(RED, np.float32) * (line * mask)[:, :, None]
    if m.scale:  # pale flakes on the lesion surface
        flakes = np.clip((rng.random((size, size)) - (1 - 0.5 * m.scale)) * 4, 0, 1) * mask
        log_img += contrast * 0.45 * np.asarray(FLAKE, np.float32) * flakes[:, :, None]
    if m.vesicles:  # clustered blisters on a red rim, along a dermatomal band
        band = rng.uniform(0, np.pi)
        for _ in range(max(3, rng.poisson(m.vesicles))):
            t, w = rng.normal(0, radius * 1.1), rng.normal(0, radius * 0.25)
            vx, vy = cx + t * np.cos(band) - w * np.sin(band), cy + t * np.sin(band) + w * np.cos(band)
            v = _disc((xx, yy), vx, vy, max(0.8, size / 128 * rng.uniform(1.0, 1.8)))
            rim = _disc((xx, yy), vx, vy, max(1.6, size / 128 * 3.0))
            log_img += contrast * (0.5 * np.asarray(RED, np.float32) * rim[:, :, None]
                                   + 0.6 * np.asarray(FLAKE, np.float32) * v[:, :, None])
