"""Split conformal prediction sets, marginal or Mondrian (one threshold per group).

LAC (Sadinle et al., 2019) keeps every class with p_k >= 1 - q; APS (Romano et al.,
2020) adds classes in order of probability until the randomised cumulative mass
reaches q. With exchangeable data, sets cover the true class with probability at least
1 - alpha, marginally or, for Mondrian, within each group. NumPy only.
"""
from __future__ import annotations

import numpy as np

METHODS = ("lac", "aps")


def _aps_cumulative(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """For each case and class k: the mass of the classes ranked above k plus u * p_k."""
    above = (probs[:, None, :] > probs[:, :, None]) * probs[:, None, :]  # (n, k, j): p_j where p_j > p_k
    return above.sum(2) + u[:, None] * probs


def class_scores(probs: np.ndarray, method: str, u: np.ndarray | None = None) -> np.ndarray:
    """Nonconformity of every class of every case, (n_samples, n_classes); lower conforms more."""
    probs = np.asarray(probs, float)
    if method == "lac":
        return 1.0 - probs
    if method == "aps":
        return _aps_cumulative(probs, np.ones(len(probs)) if u is None else np.asarray(u, float))
    raise ValueError(f"method must be one of {METHODS}, got {method!r}.")


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest score; +inf when n is too small for 1 - alpha."""
    n = len(scores)
    rank = int(np.ceil((n + 1) * (1 - alpha)))
    if n == 0 or rank > n:
        return float("inf")
    return float(np.sort(scores)[rank - 1])


class SplitConformal:
    """``fit(probs, y_true, groups) -> self``; ``predict_sets(probs, groups) -> (n, n_classes) bool``.

    With ``groups`` (Mondrian), each group gets its own threshold; a group unseen at fit
    time, or too small for 1 - alpha, gets every class (no guarantee without data).
    ``u`` are the uniform draws of randomised APS, one per case (ignored by LAC).
    """

    def __init__(self, method: str = "lac", alpha: float = 0.1):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}.")
        self.method, self.alpha = method, alpha

    def fit(self, probs, y_true, groups=None, u=None) -> "SplitConformal":
        probs, y_true = np.asarray(probs, float), np.asarray(y_true).astype(int)
        true_scores = class_scores(probs, self.method, u)[np.arange(len(y_true)), y_true]
        groups = np.zeros(len(y_true), int) if groups is None else np.asarray(groups)
        self.qhat_ = {g: conformal_quantile(true_scores[groups == g], self.alpha) for g in np.unique(groups)}
        self.n_ = {g: int((groups == g).sum()) for g in np.unique(groups)}
        return self

    @classmethod
    def from_thresholds(cls, method: str, alpha: float, qhat: dict) -> "SplitConformal":
        """The sets a run stored (``conformal``: one threshold per group), ready to predict."""
        out = cls(method, alpha)
        out.qhat_ = dict(qhat)
        return out

    def predict_sets(self, probs, groups=None, u=None) -> np.ndarray:
        probs = np.asarray(probs, float)
        groups = np.zeros(len(probs), int) if groups is None else np.asarray(groups)
        qhat = np.array([self.qhat_.get(g, np.inf) for g in groups])
        return class_scores(probs, self.method, u) <= qhat[:, None]
