"""Classification and calibration metrics as pure NumPy functions.

Labels are integer class indices 0..n_classes-1; ``y_prob`` is (n_samples, n_classes)
with rows summing to 1. No torch import: the dashboard calls these cheaply. Every
function is checked against scikit-learn, torchmetrics or netcal in tests/trainer.
"""
from __future__ import annotations

import numpy as np

N_BINS = 15


def _check_labels(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of one length, got {y_true.shape} and {y_pred.shape}.")
    return y_true.astype(int), y_pred.astype(int)


def _check_probs(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_prob = np.asarray(y_true).astype(int), np.asarray(y_prob, dtype=float)
    if y_prob.ndim != 2 or len(y_prob) != len(y_true):
        raise ValueError(f"y_prob must be (n_samples, n_classes) with n_samples = len(y_true); got {y_prob.shape} "
                         f"for {len(y_true)} labels.")
    if len(y_prob) and (y_prob.min() < 0 or y_prob.max() > 1 or not np.allclose(y_prob.sum(1), 1, atol=1e-6)):
        raise ValueError("y_prob has values outside [0, 1] or rows that do not sum to 1.")
    return y_true, y_prob


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; rows are true classes."""
    y_true, y_pred = _check_labels(y_true, y_pred)
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(n_classes, n_classes)


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = _check_labels(y_true, y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def per_class_recall(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Recall of each class (NaN for a class absent from y_true), shape (n_classes,)."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def balanced_accuracy(y_true, y_pred, n_classes: int) -> float:
    """Mean recall over the classes present in y_true (scikit-learn's rule)."""
    recall = per_class_recall(y_true, y_pred, n_classes)
    return float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan")


def macro_f1(y_true, y_pred, n_classes: int) -> float:
    """Unweighted mean F1 over the classes present in y_true or y_pred (scikit-learn's rule)."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)
    present = denom > 0
    if not present.any():
        return float("nan")
    return float(np.mean(2 * tp[present] / denom[present]))


def nll(y_true, y_prob) -> float:
    """Mean negative log-likelihood of the true class (natural log)."""
    y_true, y_prob = _check_probs(y_true, y_prob)
    p = np.clip(y_prob[np.arange(len(y_true)), y_true], np.finfo(float).eps, 1.0)
    return float(-np.mean(np.log(p)))


def brier(y_true, y_prob) -> float:
    """Multiclass Brier score: mean over samples of sum_k (p_k - [y = k])^2, in [0, 2]."""
    y_true, y_prob = _check_probs(y_true, y_prob)
    onehot = np.eye(y_prob.shape[1])[y_true]
    return float(np.mean(((y_prob - onehot) ** 2).sum(1)))


def bin_index(confidence: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value for bins [e_i, e_i+1), the last one closed (as np.histogram)."""
    return np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, len(edges) - 2)


def reliability_bins(confidence, correct, n_bins: int = N_BINS, adaptive: bool = False) -> dict[str, np.ndarray]:
    """Per-bin counts, mean confidence and observed accuracy (frequency of ``correct``).

    Equal-width bins on [0, 1], or with ``adaptive`` equal-mass bins at the quantiles of
    ``confidence``. Empty bins have NaN means.
    """
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    if adaptive and len(confidence):
        edges = np.quantile(confidence, edges)
        edges[0], edges[-1] = 0.0, 1.0
    idx = bin_index(confidence, edges)
    count = np.bincount(idx, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, confidence, n_bins) / count
        acc = np.bincount(idx, correct, n_bins) / count
    return {"lower": edges[:-1], "upper": edges[1:], "count": count, "confidence": conf, "accuracy": acc}


def _ece_from_bins(bins: dict[str, np.ndarray]) -> float:
    n = bins["count"].sum()
    if n == 0:
        return float("nan")
    gap = np.nan_to_num(np.abs(bins["accuracy"] - bins["confidence"]))
    return float((bins["count"] * gap).sum() / n)


def binary_ece(y_score, y_event, n_bins: int = N_BINS, adaptive: bool = False) -> float:
    """ECE of a probability ``y_score`` of a binary event (e.g. the deferral score against
    the observed need for review)."""
    return _ece_from_bins(reliability_bins(y_score, y_event, n_bins, adaptive))


def ece(y_true, y_prob, n_bins: int = N_BINS) -> float:
    """Top-label expected calibration error with equal-width bins (L1)."""
    y_true, y_prob = _check_probs(y_true, y_prob)
    return binary_ece(y_prob.max(1), y_prob.argmax(1) == y_true, n_bins)


def adaptive_ece(y_true, y_prob, n_bins: int = N_BINS) -> float:
    """Top-label ECE with equal-mass bins (edges at the quantiles of the confidence)."""
    y_true, y_prob = _check_probs(y_true, y_prob)
    return binary_ece(y_prob.max(1), y_prob.argmax(1) == y_true, n_bins, adaptive=True)


def classwise_ece(y_true, y_prob, n_bins: int = N_BINS) -> float:
    """Mean over classes of the ECE of each class's one-vs-rest probability."""
    y_true, y_prob = _check_probs(y_true, y_prob)
    return float(np.mean([binary_ece(y_prob[:, k], y_true == k, n_bins) for k in range(y_prob.shape[1])]))


def binary_auroc(y_score, y_event) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN with one class."""
    from scipy.stats import rankdata

    y_score, y_event = np.asarray(y_score, float), np.asarray(y_event, bool)
    n_pos, n_neg = int(y_event.sum()), int((~y_event).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(y_score)
    return float((ranks[y_event].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_ovr(y_true, y_prob) -> float:
    """Macro one-vs-rest AUROC over the classes present (scikit-learn's multi_class='ovr')."""
    y_true, y_prob = _check_probs(y_true, y_prob)
    scores = [binary_auroc(y_prob[:, k], y_true == k) for k in range(y_prob.shape[1])]
    scores = [s for s in scores if np.isfinite(s)]
    return float(np.mean(scores)) if scores else float("nan")


def risk_coverage(correct, confidence) -> dict[str, np.ndarray]:
    """The risk-coverage curve: keep the k most confident cases, k = 1..n.

    Returns coverage k/n, selective risk (error rate among the kept), generalised risk
    (errors among the kept / n) and the confidence threshold at each k.
    """
    correct, confidence = np.asarray(correct, bool), np.asarray(confidence, float)
    order = np.argsort(-confidence, kind="stable")
    errors = np.cumsum(~correct[order])
    k = np.arange(1, len(correct) + 1)
    return {"coverage": k / max(len(k), 1), "risk": errors / k, "generalized_risk": errors / max(len(k), 1),
            "threshold": confidence[order]}


def aurc(correct, confidence) -> float:
    """Area under the risk-coverage curve (mean selective risk over k = 1..n)."""
    if len(correct) == 0:
        return float("nan")
    return float(np.mean(risk_coverage(correct, confidence)["risk"]))


def augrc(correct, confidence) -> float:
    """Area under the generalised risk-coverage curve (Traub et al., 2024)."""
    if len(correct) == 0:
        return float("nan")
    return float(np.mean(risk_coverage(correct, confidence)["generalized_risk"]))
