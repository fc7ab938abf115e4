"""The seven DermSynth clinics: case mix, skin-type mix, camera and note style.

Every number here is a documented simulation setting; DATASHEET.md is written from
these tables, so the datasheet and the generator cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass

FITZPATRICK_TYPES = (1, 2, 3, 4, 5, 6)


@dataclass(frozen=True)
class Camera:
    """How a clinic's camera distorts a photo.

    cast: multiplicative RGB gain (1.0 = neutral); blur: Gaussian sigma in pixels at
    128 px; exposure: multiplicative brightness; noise: sensor noise std (0-255 scale).
    """

    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    blur: float = 0.3
    exposure: float = 1.0
    noise: float = 2.0


@dataclass(frozen=True)
class Clinic:
    clinic_id: str
    description: str
    share: float  # share of all cases
    fitzpatrick_mix: tuple[float, ...]  # probabilities for types I..VI
    note_style: str  # key into notes.STYLES
    camera: Camera


# The held-out clinic serves far more patients of types IV-VI, has its own phone camera
# (warm cast, soft focus, under-exposed, noisier) and its own shorthand note style. Its
# exposure is kept low enough that light skin does not saturate: a clipped red channel
# would hide lesions on types I-II and plant a tone effect in the wrong direction.
CLINICS: tuple[Clinic, ...] = (
    Clinic("clinic_1", "university dermatology referral centre", 0.135,
           (0.13, 0.38, 0.30, 0.12, 0.05, 0.02), "prose", Camera()),
    Clinic("clinic_2", "suburban general practice group", 0.135,
           (0.12, 0.37, 0.33, 0.12, 0.04, 0.02), "prose", Camera((1.02, 1.0, 0.98), 0.4)),
    Clinic("clinic_3", "urban walk-in centre", 0.13,
           (0.08, 0.30, 0.31, 0.18, 0.09, 0.04), "terse", Camera((0.98, 1.0, 1.03), 0.5, 0.97, 3.0)),
    Clinic("clinic_4", "rural practice network", 0.13,
           (0.14, 0.40, 0.30, 0.11, 0.04, 0.01), "terse", Camera((1.0, 1.0, 1.0), 0.4, 1.03)),
    Clinic("clinic_5", "teledermatology service", 0.13,
           (0.10, 0.35, 0.32, 0.14, 0.06, 0.03), "prose", Camera((1.0, 1.01, 1.0), 0.6, 1.0, 3.0)),
    Clinic("clinic_6", "hospital emergency department", 0.135,
           (0.08, 0.34, 0.32, 0.15, 0.08, 0.03), "terse", Camera((1.01, 1.0, 0.99), 0.5, 0.98, 2.5)),
    Clinic("clinic_7", "community health centre with a phone camera (held out)", 0.205,
           (0.02, 0.08, 0.15, 0.30, 0.25, 0.20), "shorthand", Camera((1.06, 1.0, 0.86), 1.1, 0.88, 4.0)),
)

HELDOUT_CLINIC = "clinic_7"
