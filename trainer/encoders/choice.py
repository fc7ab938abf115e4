"""The image encoder of a run, chosen per dataset on the training clinics.

No image encoder is right for every dataset: ImageNet pretraining helps real smartphone
photos a great deal, while on DermSynth a small CNN trained on the task's own photos does
as well or better. With ``image_encoder: auto`` (the default) ``fit`` therefore trains
``image_only`` on each candidate of ``image_candidates`` and keeps the one with the highest
macro F1 on ``val``: the same rule, and the same split, that chooses the model
(``trainer.evaluation.selection``). With the default clinic validation ``val`` is a whole
training clinic; the held-out clinic is never read. The choice and its evidence are stored
with the run's settings (``image_encoder_choice``) and logged.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from trainer.config import FitConfig
from trainer.encoders.cache import CacheStats
from trainer.encoders.prepare import prepare_features, targets
from trainer.models.suite import train_models

AUTO = "auto"


@dataclass(frozen=True)
class EncoderChoice:
    encoder: str
    scores: dict[str, float]  # candidate -> image_only macro F1 on val
    val: str  # what val was: "clinic <name>" or "training-clinic patients"

    def to_dict(self) -> dict:
        return {"encoder": self.encoder, "rule": "image_only macro F1 on val (argmax), highest wins",
                "val": self.val, "scores": self.scores}


def pick(scores: dict[str, float]) -> str:
    """The candidate with the highest score; ties go to the one listed first."""
    return max(scores, key=lambda c: (scores[c], -list(scores).index(c)))


def choose_image_encoder(cases: pd.DataFrame, split_arr: np.ndarray, fingerprint: str, cfg: FitConfig,
                         classes: list[str], stats: CacheStats, log=print) -> EncoderChoice:
    """Train ``image_only`` on each candidate's features (cached, so the run reuses them) and
    keep the best on ``val``. Reads the labels of ``train`` and ``val`` only."""
    y, where = targets(cases, classes, split_arr)
    scores = {}
    for candidate in cfg.image_candidates:
        probe = replace(cfg, image_encoder=candidate, models=("image_only",))
        feats, text_dim, _ = prepare_features(cases, split_arr, fingerprint, probe, classes, stats, log)
        with tempfile.TemporaryDirectory() as tmp:
            logits = train_models(probe, classes, y, where, feats, text_dim, Path(tmp), {}, log=lambda m: None)
        val_pred = logits["image_only"][: len(where["val"])].argmax(1)  # eval rows start with val
        scores[candidate] = round(float(f1_score(y[where["val"]], val_pred, average="macro",
                                                 labels=np.arange(len(classes)), zero_division=0)), 4)
        log(f"image encoder candidate {candidate}: image_only macro F1 on val {scores[candidate]:.3f}")
        del feats
    val = f"clinic {cfg.val_clinic}" if cfg.val_clinic else "training-clinic patients"
    return EncoderChoice(pick(scores), scores, val)
