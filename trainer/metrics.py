"""Classification metrics as pure NumPy functions ``f(y_true, y_pred or y_prob)``.

Labels are integer class indices 0..n_classes-1. No torch import: the dashboard calls
these cheaply.
"""
from __future__ import annotations

import numpy as np


def _check_labels(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of one length, got {y_true.shape} and {y_pred.shape}.")
    return y_true.astype(int), y_pred.astype(int)


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


def macro_f1(y_true, y_pred, n_classes: int) -> float:
    """Unweighted mean F1 over the classes present in y_true or y_pred (scikit-learn's rule)."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)
    present = denom > 0
    if not present.any():
        return float("nan")
    return float(np.mean(2 * tp[present] / denom[present]))
