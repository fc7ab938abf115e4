"""Train / val / calib / test splits: one clinic held out as ``test``, the rest split by
patient (no patient in two splits) and stratified by class."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

SPLITS = ("train", "val", "calib", "test")
EVAL_SPLITS = SPLITS[1:]  # the splits every model predicts, and the audit reports
N_FOLDS = 20
DEFAULT_FOLDS = {"train": 14, "val": 3, "calib": 3}  # 70% / 15% / 15% of the training clinics


def make_splits(cases: pd.DataFrame, heldout_clinic: str, seed: int = 0,
                folds: dict[str, int] | None = None) -> pd.Series:
    """Split name per case, indexed by case_id.

    cases: a frame with case_id, patient_id, clinic and label. The held-out clinic goes
    to ``test`` whole; its patients seen elsewhere are kept out of the other splits too.
    """
    folds = folds or DEFAULT_FOLDS
    if sum(folds.values()) != N_FOLDS or set(folds) != {"train", "val", "calib"}:
        raise ValueError(f"folds must give train, val and calib fold counts summing to {N_FOLDS}, got {folds}.")
    clinics = sorted(cases["clinic"].unique())
    if heldout_clinic not in clinics:
        raise ValueError(f"held-out clinic {heldout_clinic!r} is not in the dataset; clinics: {clinics}.")
    split = pd.Series("", index=pd.Index(cases["case_id"], name="case_id"), name="split")
    test_mask = (cases["clinic"] == heldout_clinic).to_numpy()
    # A patient seen at the held-out clinic belongs to test wholly, wherever else they went.
    test_patients = set(cases.loc[test_mask, "patient_id"])
    test_mask = test_mask | cases["patient_id"].isin(test_patients).to_numpy()
    split[test_mask] = "test"

    rest = cases[~test_mask]
    n_splits = min(N_FOLDS, rest["patient_id"].nunique())
    if n_splits < N_FOLDS:
        raise ValueError(f"only {n_splits} patients outside the held-out clinic; need at least {N_FOLDS}.")
    sgkf = StratifiedGroupKFold(n_splits=N_FOLDS, shuffle=True, random_state=seed)
    fold_of = np.empty(len(rest), dtype=int)
    for k, (_, idx) in enumerate(sgkf.split(rest, rest["label"], groups=rest["patient_id"])):
        fold_of[idx] = k
    edges = np.cumsum([folds["train"], folds["val"], folds["calib"]])
    names = np.asarray(["train", "val", "calib"])[np.searchsorted(edges, fold_of, side="right")]
    split[~test_mask] = names
    return split


def subsample(split: pd.Series, max_cases: int | None, seed: int) -> pd.Series:
    """Keep about max_cases cases, the same share of each split (for quick runs)."""
    if not max_cases or max_cases >= len(split):
        return split
    rng = np.random.default_rng(seed)
    keep = []
    for _, ids in split.groupby(split).groups.items():
        k = max(8, int(round(len(ids) * max_cases / len(split))))
        keep.extend(rng.choice(np.asarray(ids), size=min(k, len(ids)), replace=False))
    return split.loc[sorted(keep)]
