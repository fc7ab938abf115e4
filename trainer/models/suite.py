"""The five models trained on prepared features, one after another, into a run's folder."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from data_store.splits import EVAL_SPLITS
from trainer.config import BASELINES, FitConfig
from trainer.encoders.cache import Features
from trainer.models import build_model
from trainer.models.checkpoints import save_checkpoint
from trainer.models.train import Inputs, class_weights, predict_logits, train_classifier
from trainer.timings import lap



def eval_rows(where: dict) -> np.ndarray:
    """Row positions of the val, calib and test cases, in that order: what every model predicts."""
    return np.concatenate([where[s] for s in EVAL_SPLITS])


def model_spec(name: str, cfg: FitConfig, n_classes: int, text_dim: int, image_dim: int, ngram_vocab: int = 0
               ) -> dict:
    return {"name": name, "n_classes": n_classes, "text_dim": text_dim, "hidden": cfg.hidden,
            "ngram_vocab": ngram_vocab,
            "image_encoder": cfg.image_encoder, "image_dim": image_dim, "embed_dim": cfg.unified_embed_dim,
            "text_encoder": cfg.text_encoder}


def _baseline_logp(logits: dict) -> dict[str, torch.Tensor]:
    return {m: torch.log_softmax(torch.from_numpy(logits[m]), 1) for m in BASELINES}


def late_fusion_logits(model, logits: dict) -> np.ndarray:
    """The late-fusion model's logits from the single-modality models' logits (same rows)."""
    logp = _baseline_logp(logits)
    with torch.no_grad():
        return model({"logp_text": logp["text_only"], "logp_image": logp["image_only"]}).numpy()


def _late_fusion(model, logits: dict, y: np.ndarray, val_idx: np.ndarray, n_classes: int):
    """Fit the weights of the single-modality models' log-probabilities on val; logits of every eval row."""
    logp = _baseline_logp(logits)
    val = np.arange(len(val_idx))  # eval rows start with the val rows
    model.fit(logp["text_only"][val], logp["image_only"][val], torch.from_numpy(y[val_idx]),
              class_weights(y[val_idx], n_classes))
    return late_fusion_logits(model, logits), [{"weights": model.weights.tolist()}]


def train_models(cfg: FitConfig, classes: list[str], y: np.ndarray, where: dict, feats: Features, text_dim: int,
                 artifacts: Path, timings: dict, log=print) -> dict[str, np.ndarray]:
    """Train each of ``cfg.models`` (checkpoint in ``artifacts/<model>``); returns each
    model's logits (n_eval, n_classes) on the val, calib and test rows, in that order."""
    eval_idx = eval_rows(where)
    image_dim = int(feats.image_tokens.shape[-1])
    inputs = Inputs(feats)
    logits: dict[str, np.ndarray] = {}
    for name in cfg.models:
        t = time.perf_counter()
        spec = model_spec(name, cfg, len(classes), text_dim, image_dim, feats.ngrams.size if feats.ngrams else 0)
        torch.manual_seed(cfg.seed)
        model = build_model(spec)
        if name == "late_fusion":
            logits[name], history = _late_fusion(model, logits, y, where["val"], len(classes))
        else:
            model, history = train_classifier(model, inputs, y, where["train"], where["val"], cfg.train_settings(),
                                              cfg.epochs, name)
            logits[name] = predict_logits(model, inputs, eval_idx)
        save_checkpoint(artifacts / name, model, spec, history)
        lap(timings, f"train:{name}", t)
        log(f"{name}: trained in {timings[f'train:{name}']:.1f} s; last epoch {history[-1] if history else {}}")
    return logits


def prediction_rows(logits: dict[str, np.ndarray], case_ids: np.ndarray, split_arr: np.ndarray, y: np.ndarray,
                    where: dict, classes: list[str]) -> pd.DataFrame:
    """One row per model and eval case: model, case_id, split, y_true, y_pred, probs_uncal."""
    eval_idx = eval_rows(where)
    ids, y_true = case_ids[eval_idx], np.asarray(classes)[y[eval_idx]]
    rows = []
    for name, lg in logits.items():
        p = torch.from_numpy(lg).double().softmax(1).numpy()
        rows.append(pd.DataFrame({"model": name, "case_id": ids, "split": split_arr[eval_idx], "y_true": y_true,
                                  "y_pred": np.asarray(classes)[p.argmax(1)], "probs_uncal": list(p)}))
    return pd.concat(rows, ignore_index=True)
