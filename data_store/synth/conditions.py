"""The DermSynth taxonomy: 11 conditions in 4 triage categories, with the clinical
vignette each condition draws from and the look-alikes that make a modality unsure.

Probabilities are simulation settings, loosely shaped on textbook presentations; they
are not clinical estimates.
"""
from __future__ import annotations

from dataclasses import dataclass, field

CATEGORIES = ("emergency", "urgent_cancer", "routine_referral", "primary_care")
URGENT_CATEGORIES = ("emergency", "urgent_cancer")
CATEGORY_PRIOR = (0.10, 0.24, 0.30, 0.36)


@dataclass(frozen=True)
class Condition:
    name: str
    display: str
    category: str
    share_in_category: float
    age: tuple[float, float]  # mean, sd in years
    sites: dict[str, float]
    duration: dict[str, float]  # days / weeks / months / years
    evolution: dict[str, float]  # new / growing / changing / spreading / stable
    p_fever: float
    p_pain: float
    p_itch: float
    p_bleeding: float
    history: dict[str, float] = field(default_factory=dict)  # item -> probability
    # Photo looks like another condition (the image alone cannot tell); the note still can.
    image_lookalike: tuple[str, float] | None = None
    # Neighbour used for genuinely ambiguous cases (image and note both point there).
    neighbour: str = ""


CONDITIONS: tuple[Condition, ...] = (
    Condition("cellulitis", "cellulitis", "emergency", 0.6, (58, 16),
              {"leg": 0.65, "arm": 0.2, "foot": 0.15},
              {"days": 0.85, "weeks": 0.15}, {"spreading": 0.7, "new": 0.3},
              0.6, 0.85, 0.1, 0.0, {"diabetes": 0.3, "leg ulcer": 0.15},
              ("atopic_eczema", 0.30), "atopic_eczema"),
    Condition("herpes_zoster", "shingles", "emergency", 0.4, (64, 14),
              {"trunk": 0.65, "face": 0.25, "arm": 0.1},
              {"days": 0.9, "weeks": 0.1}, {"new": 0.6, "spreading": 0.4},
              0.25, 0.9, 0.3, 0.0, {"immunosuppression": 0.2, "chickenpox as a child": 0.3},
              ("atopic_eczema", 0.25), "atopic_eczema"),
    Condition("melanoma", "melanoma", "urgent_cancer", 0.3, (55, 16),
              {"trunk": 0.45, "leg": 0.3, "arm": 0.2, "face": 0.05},
              {"weeks": 0.2, "months": 0.7, "years": 0.1},
              {"changing": 0.55, "growing": 0.35, "new": 0.1},
              0.0, 0.05, 0.25, 0.3, {"sunburn in childhood": 0.35, "family history of melanoma": 0.2},
              ("melanocytic_naevus", 0.30), "melanocytic_naevus"),
    Condition("squamous_cell_carcinoma", "squamous cell carcinoma", "urgent_cancer", 0.3, (74, 10),
              {"face": 0.35, "scalp": 0.2, "hand": 0.3, "arm": 0.15},
              {"weeks": 0.55, "months": 0.45}, {"growing": 0.8, "new": 0.2},
              0.0, 0.4, 0.05, 0.4, {"organ transplant": 0.1, "outdoor work": 0.4},
              ("actinic_keratosis", 0.30), "actinic_keratosis"),
    Condition("basal_cell_carcinoma", "basal cell carcinoma", "urgent_cancer", 0.4, (70, 11),
              {"face": 0.7, "scalp": 0.1, "trunk": 0.2},
              {"months": 0.75, "years": 0.25}, {"growing": 0.6, "stable": 0.4},
              0.0, 0.05, 0.1, 0.45, {"previous skin cancer": 0.3, "outdoor work": 0.3},
              ("actinic_keratosis", 0.20), "seborrhoeic_keratosis"),
    Condition("psoriasis", "psoriasis", "routine_referral", 0.35, (40, 15),
              {"arm": 0.4, "leg": 0.3, "scalp": 0.2, "trunk": 0.1},
              {"months": 0.4, "years": 0.6}, {"stable": 0.5, "spreading": 0.5},
              0.0, 0.1, 0.6, 0.05, {"family history of psoriasis": 0.35, "joint pains": 0.15},
              ("tinea_corporis", 0.15), "tinea_corporis"),
    Condition("atopic_eczema", "atopic eczema", "routine_referral", 0.4, (24, 16),
              {"arm": 0.5, "leg": 0.2, "face": 0.15, "hand": 0.15},
              {"weeks": 0.2, "months": 0.3, "years": 0.5}, {"stable": 0.4, "spreading": 0.6},
              0.0, 0.1, 0.95, 0.05, {"asthma or hay fever": 0.5},
              ("cellulitis", 0.10), "cellulitis"),
    Condition("actinic_keratosis", "actinic keratosis", "routine_referral", 0.25, (71, 10),
              {"face": 0.45, "scalp": 0.3, "hand": 0.25},
              {"months": 0.6, "years": 0.4}, {"stable": 0.7, "growing": 0.3},
              0.0, 0.05, 0.2, 0.05, {"outdoor work": 0.45},
              ("squamous_cell_carcinoma", 0.15), "squamous_cell_carcinoma"),
    Condition("melanocytic_naevus", "mole (melanocytic naevus)", "primary_care", 0.45, (34, 14),
              {"trunk": 0.5, "arm": 0.25, "leg": 0.2, "face": 0.05},
              {"years": 0.9, "months": 0.1}, {"stable": 0.9, "new": 0.1},
              0.0, 0.0, 0.1, 0.02, {"many moles": 0.3},
              ("melanoma", 0.12), "melanoma"),
    Condition("seborrhoeic_keratosis", "seborrhoeic keratosis", "primary_care", 0.35, (66, 12),
              {"trunk": 0.6, "face": 0.2, "arm": 0.2},
              {"months": 0.3, "years": 0.7}, {"stable": 0.6, "growing": 0.4},
              0.0, 0.0, 0.3, 0.05, {"many similar spots": 0.35},
              ("melanoma", 0.12), "melanoma"),
    Condition("tinea_corporis", "tinea corporis (ringworm)", "primary_care", 0.2, (32, 18),
              {"trunk": 0.5, "leg": 0.25, "arm": 0.25},
              {"weeks": 0.7, "months": 0.3}, {"spreading": 0.8, "new": 0.2},
              0.0, 0.0, 0.8, 0.0, {"a pet at home": 0.4, "contact sports": 0.15},
              ("psoriasis", 0.20), "psoriasis"),
)

BY_NAME = {c.name: c for c in CONDITIONS}
