"""The deferral score and the policies that turn it into "a clinician reviews this case".

A case needs review when the model's output is wrong, or when it rules out every urgent
category while still giving them at least ``urgent_doubt`` of calibrated probability.
The second condition is known from the output itself, so its cases score exactly 1; for
the others the score is a logistic model of P(wrong | signals), fitted on ``calib``.

The signals: the calibrated output itself (confidence, margin, entropy, urgent mass), the
disagreement of the note-only and photo-only models, the distance to the training cases
(``train_distance``), an empty note and the photo's quality (``photo_quality``). The
policies that turn the score into decisions are in ``policies.py``. NumPy and scikit-learn only.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

SIGNALS = ("confidence", "margin", "entropy", "p_urgent", "text_image_tv", "text_image_disagree",
           "train_distance", "note_missing", "photo_sharpness", "photo_overexposed")
MIN_EACH = 5  # right and wrong outputs each, below which the logistic model is not fitted
# Why a case scores high, in words: the rule, or the group of signals that adds most to the
# score's log-odds (``DeferralScorer.reasons``).
RULE_OUT_REASON = "urgent not ruled out"
REASONS = {"low confidence": ("confidence", "margin", "entropy", "p_urgent"),
           "photo and note disagree": ("text_image_tv", "text_image_disagree"),
           "unlike the training cases": ("train_distance",), "empty note": ("note_missing",),
           "poor photo": ("photo_sharpness", "photo_overexposed")}
NO_REASON = "no signal above average"


def doubtful_rule_out(probs: np.ndarray, urgent: np.ndarray, urgent_doubt: float) -> np.ndarray:
    """(n,) bool: the prediction is a non-urgent class yet urgent classes hold >= urgent_doubt."""
    pred_urgent = urgent[probs.argmax(1)]
    return ~pred_urgent & (probs[:, urgent].sum(1) >= urgent_doubt)


def deferral_signals(probs: np.ndarray, urgent: np.ndarray, probs_text: np.ndarray | None = None,
                     probs_image: np.ndarray | None = None, **per_case: np.ndarray | None) -> pd.DataFrame:
    """One row of signals per case. ``per_case``: train_distance, note_missing,
    photo_sharpness, photo_overexposed. Absent inputs (a run without the single-modality
    models, a run stored before these signals) give a constant column the model ignores."""
    n = len(probs)
    top2 = np.sort(probs, 1)[:, -2:]
    out = {"confidence": top2[:, 1], "margin": top2[:, 1] - top2[:, 0],
           "entropy": -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(1), "p_urgent": probs[:, urgent].sum(1)}
    if probs_text is not None and probs_image is not None:
        out["text_image_tv"] = 0.5 * np.abs(probs_text - probs_image).sum(1)
        out["text_image_disagree"] = (probs_text.argmax(1) != probs_image.argmax(1)).astype(float)
    else:
        out["text_image_tv"] = out["text_image_disagree"] = np.zeros(n)
    for name in SIGNALS[6:]:
        value = per_case.get(name)
        out[name] = np.zeros(n) if value is None else np.nan_to_num(np.asarray(value, float))
    return pd.DataFrame(out)[list(SIGNALS)]


class DeferralScorer:
    """defer_score = 1 for a doubtful rule-out of urgent classes, else P(wrong | signals)."""

    def __init__(self, C: float = 1.0):
        self.C = C

    def fit(self, signals: pd.DataFrame, wrong: np.ndarray, rule_out: np.ndarray) -> "DeferralScorer":
        keep = ~np.asarray(rule_out, bool)
        wrong = np.asarray(wrong, bool)[keep]
        # With too few right or wrong outputs to learn from, the score is the observed error
        # rate (Laplace-smoothed) for every case; params() says so.
        self.base_rate_ = float((wrong.sum() + 1) / (len(wrong) + 2))
        self.model_ = None
        if min(wrong.sum(), (~wrong).sum()) >= MIN_EACH:
            self.model_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=1000))
            self.model_.fit(signals.to_numpy()[keep], wrong)
        return self

    def predict(self, signals: pd.DataFrame, rule_out: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            p_wrong = np.full(len(signals), self.base_rate_)
        else:
            p_wrong = self.model_.predict_proba(signals.to_numpy())[:, 1]
        return np.where(np.asarray(rule_out, bool), 1.0, p_wrong)

    def reasons(self, signals: pd.DataFrame, rule_out: np.ndarray) -> np.ndarray:
        """(n,) the main reason of each case's score: ``RULE_OUT_REASON`` for a doubtful rule-out,
        else the group of ``REASONS`` whose signals add most to the log-odds against an average
        calib case (coefficient x standardised value, summed over the group); ``NO_REASON`` when
        none adds anything (or when the score is the base rate, which reads no signal)."""
        n = len(signals)
        out = np.full(n, NO_REASON, dtype=object)
        if self.model_ is not None:
            scaler, lr = self.model_.named_steps["standardscaler"], self.model_.named_steps["logisticregression"]
            part = scaler.transform(signals[list(SIGNALS)].to_numpy()) * lr.coef_[0]  # (n, signals) log-odds
            cols = {name: i for i, name in enumerate(SIGNALS)}
            by_group = np.stack([part[:, [cols[c] for c in group]].sum(1) for group in REASONS.values()], 1)
            best = by_group.argmax(1)
            named = by_group[np.arange(n), best] > 0
            out[named] = np.asarray(list(REASONS), dtype=object)[best[named]]
        out[np.asarray(rule_out, bool)] = RULE_OUT_REASON
        return out

    @classmethod
    def from_params(cls, params: dict) -> "DeferralScorer":
        """The scorer a run stored (``deferral_scorers.params``), ready to predict."""
        out = cls()
        out.base_rate_, out.model_ = float(params.get("base_rate", np.nan)), None
        if params["model"] == "logistic":
            if list(params["signals"]) != list(SIGNALS):
                raise ValueError(f"The stored scorer reads the signals {params['signals']}; this version computes "
                                 f"{list(SIGNALS)}.")
            scaler, lr = StandardScaler(), LogisticRegression()
            scaler.mean_, scaler.scale_ = np.asarray(params["mean"]), np.asarray(params["scale"])
            scaler.var_, scaler.n_features_in_ = scaler.scale_ ** 2, len(SIGNALS)
            lr.coef_, lr.intercept_ = np.asarray([params["coef"]]), np.asarray([params["intercept"]])
            lr.classes_, lr.n_features_in_ = np.array([False, True]), len(SIGNALS)
            out.model_ = make_pipeline(scaler, lr)
        return out

    def params(self) -> dict:
        if self.model_ is None:
            return {"model": "base_rate", "base_rate": self.base_rate_,
                    "why": f"fewer than {MIN_EACH} right or wrong outputs in calib outside doubtful rule-outs"}
        scaler, lr = self.model_.named_steps["standardscaler"], self.model_.named_steps["logisticregression"]
        return {"model": "logistic", "signals": list(SIGNALS), "mean": scaler.mean_.tolist(),
                "scale": scaler.scale_.tolist(), "coef": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0])}


def case_embedding(feats, chunk: int = 1024) -> np.ndarray:
    """(n, d_text + d_image): each case as its mean note token and its mean image
    token, each unit length: the space the deferral score's ``train_distance`` signal is
    measured in (``distance_to`` the training cases)."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)

    n = len(feats.text_mask)
    text = np.concatenate([  # mean of each note's real tokens, (n, d), in chunks: the tokens are large
        (feats.text_tokens[s:s + chunk].astype(np.float32) * feats.text_mask[s:s + chunk, :, None]).sum(1)
        / np.maximum(feats.text_mask[s:s + chunk].sum(1, keepdims=True), 1) for s in range(0, n, chunk)])
    return np.hstack([unit(text), unit(feats.image_tokens.astype(np.float32).mean(1))]) / np.sqrt(2)


def distance_to(emb: np.ndarray, train: np.ndarray, k: int = 10, chunk: int = 1024) -> np.ndarray:
    """(n,) mean cosine distance of each row of ``emb`` to its k nearest rows of ``train``
    (the training cases in ``case_embedding``'s space): a signal that a case lies away from
    what the models learnt from."""
    k = min(k, len(train))
    out = np.empty(len(emb))
    for s in range(0, len(emb), chunk):
        sim = emb[s:s + chunk] @ train.T  # (chunk, n_train)
        out[s:s + chunk] = 1 - np.partition(sim, -k, axis=1)[:, -k:].mean(1)
    return out


def photo_quality(images: np.ndarray, chunk: int = 1024) -> dict[str, np.ndarray]:
    """Signals of an unusable photo, (n,) each: sharpness (mean absolute Laplacian of the
    grey image, low when blurred) and the share of near-white pixels (overexposure)."""
    sharp, over = [], []
    for s in range(0, len(images), chunk):
        x = images[s:s + chunk]
        g = x.astype(np.float32).mean(-1) / 255  # (chunk, S, S)
        lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
        sharp.append(np.abs(lap).mean((1, 2)))
        over.append((x.min(-1) >= 250).mean((1, 2)))
    return {"photo_sharpness": np.concatenate(sharp), "photo_overexposed": np.concatenate(over)}
