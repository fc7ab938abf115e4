"""What a deferral threshold does, for every group at once, fast enough for a slider.

``OperatingPoints`` sorts the cases by defer score once and keeps cumulative counts per
group; ``at(threshold)`` then answers with one binary search per group, so a million
predictions cost microseconds per move. NumPy only (the dashboard imports it).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from data_store.fitzpatrick import fitzpatrick_group


class OperatingPoints:
    """Deferral at a threshold (defer when ``defer_score >= threshold``), per group.

    correct: (n,) bool; urgent_true: (n,) bool (the true class is urgent); flagged_urgent:
    (n,) bool (the prediction is urgent); groups: {family: (n,) labels} (e.g. skin-tone
    group, clinic); every family also gets "all".
    """

    def __init__(self, defer_score, correct, urgent_true, flagged_urgent, groups: dict[str, np.ndarray]):
        score = np.asarray(defer_score, float)
        order = np.argsort(score, kind="stable")
        self.score = score[order]
        stats = np.column_stack([np.ones(len(score)), np.asarray(correct, float)[order],
                                 np.asarray(urgent_true, float)[order],
                                 (np.asarray(urgent_true, bool) & ~np.asarray(flagged_urgent, bool))[order]])
        self.stats = stats  # (n, 4) per case in score order: 1, correct, urgent, missable
        self.labels = {family: np.asarray(labels, dtype=object)[order] for family, labels in groups.items()}
        self.parts = [("overall", "all", self._cumulate(self.score, stats))]
        for family, labels in self.labels.items():
            for value in sorted(set(labels), key=str):
                m = labels == value
                self.parts.append((family, str(value), self._cumulate(self.score[m], stats[m])))

    @staticmethod
    def _cumulate(score: np.ndarray, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # cum[k] = sums over the k lowest scores (the cases kept when k are kept)
        return score, np.vstack([np.zeros(stats.shape[1]), np.cumsum(stats, 0)])

    def at(self, threshold: float, per_group: dict[str, float] | None = None,
           family: str = "fitzpatrick_group") -> pd.DataFrame:
        """One row per group: n, deferred, urgent (cases whose true class is urgent), defer_rate,
        coverage, accepted_accuracy, missed_urgent_rate (urgent cases called non-urgent and not
        deferred / urgent cases).
        ``per_group``: thresholds of a group policy ({group of ``family``: threshold}; a group
        without one uses ``threshold``), as ``replay.decide`` applies them; one pass over the
        cases instead of a binary search."""
        if per_group:
            limit = np.array([per_group.get(g, threshold) for g in self.labels[family]], dtype=float)
            kept = self.score < limit
            masks = [("overall", "all", np.ones(len(kept), bool))] + [
                (f, str(v), labels == v) for f, labels in self.labels.items() for v in sorted(set(labels), key=str)]
            return pd.DataFrame([_row(f, v, self.stats[m].sum(0), self.stats[m & kept].sum(0))
                                 for f, v, m in masks])
        rows = []
        for fam, value, (score, cum) in self.parts:
            k = int(np.searchsorted(score, threshold, side="left"))  # scores below the threshold are kept
            rows.append(_row(fam, value, cum[-1], cum[k]))
        return pd.DataFrame(rows)


def _row(family: str, value: str, total: np.ndarray, kept: np.ndarray) -> dict:
    """The operating point of one group from its sums over all cases and over the kept ones."""
    n, _, urgent, _ = total
    k_n, k_correct, _, k_missed = kept
    return {"slice": family, "slice_value": value, "n": int(n), "deferred": int(n - k_n), "urgent": int(urgent),
            "defer_rate": (n - k_n) / n if n else np.nan, "coverage": k_n / n if n else np.nan,
            "accepted_accuracy": k_correct / k_n if k_n else np.nan,
            "missed_urgent_rate": k_missed / urgent if urgent else np.nan}


def from_predictions(preds: pd.DataFrame, urgent_classes) -> OperatingPoints:
    """OperatingPoints of one model and split from stored predictions (with the case
    columns ``clinic`` and ``fitzpatrick``), by skin-tone group and by clinic."""
    urgent = set(urgent_classes if urgent_classes is not None else [])
    return OperatingPoints(preds["defer_score"].to_numpy(), (preds["y_pred"] == preds["y_true"]).to_numpy(),
                           preds["y_true"].isin(urgent).to_numpy(), preds["y_pred"].isin(urgent).to_numpy(),
                           {"fitzpatrick_group": fitzpatrick_group(preds["fitzpatrick"]),
                            "clinic": preds["clinic"].astype(str).to_numpy()})


def policy_rows(points: dict[str, OperatingPoints], threshold: float, base_threshold: float,
                params: dict) -> pd.DataFrame:
    """A threshold as rows of the policies table, for every split in ``points``: overall
    and per skin-tone group, with the extra deferral against ``base_threshold`` (the run's
    default policy)."""
    rows = []
    for split, p in points.items():
        view, base = p.at(threshold), p.at(base_threshold)
        keep = view.slice.isin(["overall", "fitzpatrick_group"])
        rows.append(view[keep].assign(split=split, threshold=threshold,
                                      extra_defer_rate=(view.defer_rate - base.defer_rate)[keep],
                                      params=[params] * int(keep.sum())))
    return pd.concat(rows, ignore_index=True)
