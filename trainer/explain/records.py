"""Attributions as the store keeps them: which cases get explained, and rows to and from
the ``attributions`` table (heatmaps as float16 bytes). NumPy and pandas only."""
from __future__ import annotations

import numpy as np
import pandas as pd

METHODS = ("integrated_gradients", "occlusion")


def encode_heatmap(heatmap: np.ndarray | None) -> bytes | None:
    return None if heatmap is None else np.asarray(heatmap, "<f2").tobytes()


def decode_heatmap(blob, side) -> np.ndarray | None:
    """(side, side) float array from the stored float16 bytes (None when there is none)."""
    if blob is None or side is None or pd.isna(side) or (not isinstance(blob, (bytes, bytearray, memoryview))
                                                          and pd.isna(blob)):
        return None  # a model without a photo channel (text_only) stores neither
    return np.frombuffer(bytes(blob), dtype="<f2").astype(np.float32).reshape(int(side), int(side))


def select_cases(preds: pd.DataFrame, threshold: float, n_cases: int, sample: int, seed: int) -> list[str]:
    """Every deferred or misclassified test case (highest defer score first) up to
    ``n_cases``, plus a random ``sample`` of the rest."""
    test = preds[preds["split"] == "test"]
    flagged = (test["defer_score"] >= threshold) | (test["y_pred"] != test["y_true"])
    first = test[flagged].sort_values(["defer_score", "case_id"], ascending=[False, True])["case_id"].tolist()
    rest = sorted(set(test["case_id"]) - set(first))
    rng = np.random.default_rng(seed)
    extra = rng.choice(rest, size=min(sample, len(rest)), replace=False).tolist() if rest else []
    return first[:n_cases] + sorted(extra)


def rows_for(run_id: str, model: str, case_id: str, classes: list[str], e, n_steps: int) -> list[dict]:
    base = {"run_id": run_id, "model": model, "case_id": case_id, "target_class": classes[e.target]}
    side = None if e.heatmap_ig is None else e.heatmap_ig.shape[0]
    rows = [{**base, "method": "integrated_gradients", "image_heatmap": encode_heatmap(e.heatmap_ig),
             "heatmap_side": side, "tokens": e.words, "token_scores": e.word_scores.tolist(),
             "modality_share": e.modality_share, "convergence_delta": e.delta, "n_steps": n_steps}]
    if e.heatmap_occlusion is not None:
        rows.append({**base, "method": "occlusion", "image_heatmap": encode_heatmap(e.heatmap_occlusion),
                     "heatmap_side": side})
    return rows


def example_attribution(attr: pd.DataFrame, defer_score: pd.Series) -> tuple[pd.Series, pd.Series | None]:
    """The example a document shows from one model's stored attributions: the most deferred
    case whose note has at least 8 words (else the longest note), as its Integrated
    Gradients row and its Occlusion row (or None). ``defer_score``: indexed by case_id."""
    ig = attr[attr.method == "integrated_gradients"].copy()
    ig["defer_score"] = defer_score.loc[ig["case_id"]].to_numpy()
    ig["n_words"] = ig["tokens"].map(len)
    if (ig.n_words < 8).all():
        row = ig.sort_values(["n_words", "defer_score", "case_id"], ascending=[False, False, True]).iloc[0]
    else:
        row = ig[ig.n_words >= 8].sort_values(["defer_score", "case_id"], ascending=[False, True]).iloc[0]
    occ = attr[(attr.case_id == row["case_id"]) & (attr.method == "occlusion")]
    return row, occ.iloc[0] if len(occ) else None
