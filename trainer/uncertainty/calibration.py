"""Post-hoc calibrators, fitted on the ``calib`` split only, and their selection by
out-of-fold NLL and ECE.

Each calibrator takes ``logits`` (n_samples, n_classes): any scores whose softmax is the
model's probabilities (the store keeps probabilities, so callers pass their logarithm).
``fit(logits, y_true) -> self``; ``predict_proba(logits) -> (n_samples, n_classes)``.
NumPy and SciPy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import KFold, StratifiedKFold

from trainer.evaluation.metrics import ece, nll

PROB_FLOOR = 1e-4  # isotonic steps reach 0 and 1; a class never gets exactly zero probability


def _check(logits, y_true=None) -> tuple[np.ndarray, np.ndarray | None]:
    logits = np.asarray(logits, dtype=float)
    if logits.ndim != 2 or not np.isfinite(logits).all():
        raise ValueError(f"logits must be a finite (n_samples, n_classes) array, got shape {logits.shape}.")
    if y_true is None:
        return logits, None
    y_true = np.asarray(y_true).astype(int)
    if y_true.shape != (len(logits),):
        raise ValueError(f"y_true must have one label per row of logits, got {y_true.shape} for {logits.shape}.")
    return logits, y_true


def log_probs(probs: np.ndarray) -> np.ndarray:
    """Logits for the calibrators from stored probabilities (log, floored away from 0)."""
    return np.log(np.clip(np.asarray(probs, float), 1e-12, 1.0))


class TemperatureScaler:
    """softmax(logits / T), one T > 0 for all classes: never changes the argmax."""

    def fit(self, logits, y_true) -> "TemperatureScaler":
        logits, y_true = _check(logits, y_true)
        rows = np.arange(len(y_true))

        def loss(log_t: float) -> float:
            return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, y_true].mean())

        self.temperature_ = float(np.exp(minimize_scalar(loss, bounds=(-4, 4), method="bounded").x))
        return self

    def predict_proba(self, logits) -> np.ndarray:
        return softmax(_check(logits)[0] / self.temperature_, axis=1)

    def params(self) -> dict:
        return {"temperature": self.temperature_}


class VectorScaler:
    """softmax(w * logits + b), a scale and a bias per class (Guo et al., 2017).

    A small L2 pull towards w = 1, b = 0 keeps it sane on a small calib split.
    """

    def __init__(self, l2: float = 1e-3):
        self.l2 = l2

    def fit(self, logits, y_true) -> "VectorScaler":
        logits, y_true = _check(logits, y_true)
        n, k = logits.shape
        onehot = np.eye(k)[y_true]
        t0 = TemperatureScaler().fit(logits, y_true).temperature_

        def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:k], theta[k:]
            logp = log_softmax(logits * w + b, axis=1)
            resid = (np.exp(logp) - onehot) / n  # d(mean NLL)/d(scaled logits)
            loss = -(logp * onehot).sum() / n + self.l2 * (((w - 1) ** 2).sum() + (b**2).sum())
            grad = np.concatenate([(resid * logits).sum(0) + 2 * self.l2 * (w - 1), resid.sum(0) + 2 * self.l2 * b])
            return float(loss), grad

        theta0 = np.concatenate([np.full(k, 1 / t0), np.zeros(k)])
        res = minimize(loss_grad, theta0, jac=True, method="L-BFGS-B")
        self.scale_, self.bias_ = res.x[:k], res.x[k:]
        return self

    def predict_proba(self, logits) -> np.ndarray:
        return softmax(_check(logits)[0] * self.scale_ + self.bias_, axis=1)

    def params(self) -> dict:
        return {"scale": self.scale_.tolist(), "bias": self.bias_.tolist()}


class IsotonicCalibrator:
    """One-vs-rest isotonic regression of each class's probability, renormalised to sum to 1."""

    def fit(self, logits, y_true) -> "IsotonicCalibrator":
        logits, y_true = _check(logits, y_true)
        probs = softmax(logits, axis=1)
        self.regressors_ = [IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
                            .fit(probs[:, k], (y_true == k).astype(float)) for k in range(probs.shape[1])]
        return self

    def predict_proba(self, logits) -> np.ndarray:
        probs = softmax(_check(logits)[0], axis=1)
        out = np.column_stack([r.predict(probs[:, k]) for k, r in enumerate(self.regressors_)])
        out = np.maximum(out, PROB_FLOOR)
        return out / out.sum(1, keepdims=True)

    def params(self) -> dict:
        return {"thresholds": [{"x": r.X_thresholds_.tolist(), "y": r.y_thresholds_.tolist()}
                               for r in self.regressors_]}


class Uncalibrated:
    """The model's own probabilities: kept when no calibrator improves them out of fold."""

    def fit(self, logits, y_true) -> "Uncalibrated":
        return self

    def predict_proba(self, logits) -> np.ndarray:
        return softmax(_check(logits)[0], axis=1)

    def params(self) -> dict:
        return {}


CALIBRATORS = {"temperature": TemperatureScaler, "vector": VectorScaler, "isotonic": IsotonicCalibrator}


class _Steps:
    """An isotonic step function as stored (``IsotonicCalibrator.params``): linear between
    the thresholds, constant beyond them, as ``IsotonicRegression(out_of_bounds="clip")``."""

    def __init__(self, x: list[float], y: list[float]):
        self.x, self.y = np.asarray(x, float), np.asarray(y, float)

    def predict(self, values: np.ndarray) -> np.ndarray:
        return np.interp(values, self.x, self.y)


def calibrator_from_params(method: str, params: dict):
    """The calibrator a run stored (``calibrators``: method and params), ready to predict."""
    if method == "none":
        return Uncalibrated()
    if method not in CALIBRATORS:
        raise ValueError(f"Unknown calibrator {method!r}; known: none, {', '.join(CALIBRATORS)}.")
    out = CALIBRATORS[method]()
    if method == "temperature":
        out.temperature_ = float(params["temperature"])
    elif method == "vector":
        out.scale_, out.bias_ = np.asarray(params["scale"], float), np.asarray(params["bias"], float)
    else:
        out.regressors_ = [_Steps(t["x"], t["y"]) for t in params["thresholds"]]
    return out


def _folds(y_true: np.ndarray, n_folds: int, seed: int):
    present = np.bincount(y_true)
    smallest = present[present > 0].min() if present.any() else 0
    if smallest >= n_folds:
        return StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(len(y_true)), y_true)
    return KFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(len(y_true)))


def out_of_fold(make, logits: np.ndarray, y_true: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Probabilities for every row from a calibrator fitted on the other folds."""
    out = np.zeros_like(logits, dtype=float)
    for fit_idx, pred_idx in _folds(y_true, n_folds, seed):
        out[pred_idx] = make().fit(logits[fit_idx], y_true[fit_idx]).predict_proba(logits[pred_idx])
    return out


@dataclass
class CalibrationChoice:
    method: str  # a key of CALIBRATORS, or "none"
    calibrator: object  # fitted on all of calib
    oof_probs: np.ndarray  # (n_calib, n_classes), each row from a calibrator that never saw it
    candidates: dict[str, dict[str, float]]  # out-of-fold {"nll", "ece"} per method, and "none" (the raw model)


def select_calibrator(logits, y_true, methods=tuple(CALIBRATORS), n_folds: int = 5,
                      seed: int = 0) -> CalibrationChoice:
    """Pick the method with the lowest out-of-fold NLL on ``calib`` among those whose
    out-of-fold top-label ECE is no worse than the raw model's, and refit it on all of
    calib. If every method worsens the ECE, the raw probabilities are kept ("none")."""
    logits, y_true = _check(logits, y_true)
    unknown = [m for m in methods if m not in CALIBRATORS]
    if unknown or not methods:
        raise ValueError(f"calibrators must be a non-empty subset of {list(CALIBRATORS)}, got {list(methods)}.")
    if len(y_true) < 2 * n_folds:
        raise ValueError(f"The calib split has {len(y_true)} cases; calibration needs at least {2 * n_folds}.")
    oof = {m: out_of_fold(CALIBRATORS[m], logits, y_true, n_folds, seed) for m in methods}
    oof["none"] = softmax(logits, axis=1)
    scores = {m: {"nll": nll(y_true, p), "ece": ece(y_true, p)} for m, p in oof.items()}
    eligible = [m for m in methods if scores[m]["ece"] <= scores["none"]["ece"]]
    best = min(eligible, key=lambda m: scores[m]["nll"]) if eligible else "none"
    make = CALIBRATORS.get(best, Uncalibrated)
    return CalibrationChoice(best, make().fit(logits, y_true), oof[best], scores)
