"""Train / val / calib / test splits: one clinic held out as ``test``; ``val`` either another
whole clinic (the default: early stopping and model choice then measure skill at a clinic the
models never saw) or patients drawn from every training clinic; the rest split by patient
(no patient in two splits) and stratified by class."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

SPLITS = ("train", "val", "calib", "test")
EVAL_SPLITS = SPLITS[1:]  # the splits every model predicts, and the audit reports
N_FOLDS = 20
DEFAULT_FOLDS = {"train": 14, "val": 3, "calib": 3}  # 70% / 15% / 15% of the training clinics
CLINIC_VAL_FOLDS = {"train": 17, "val": 0, "calib": 3}  # 85% / 15% of the clinics left after val
VALIDATION = ("clinic", "patients")


def choose_val_clinic(cases: pd.DataFrame, heldout_clinic: str, seed: int, requested: str | None = None) -> str:
    """The training clinic kept whole for ``val``: ``requested``, else the training clinics in
    name order taken in turn by seed (seed 0 the first), so seeds spread over clinics."""
    clinics = sorted(set(cases["clinic"].unique()) - {heldout_clinic})
    if len(clinics) < 2:
        raise ValueError(f"validation by clinic needs at least two clinics besides the held-out one; found "
                         f"{clinics}. Use validation 'patients' (--validation patients).")
    if requested is None:
        return clinics[seed % len(clinics)]
    if requested not in clinics:
        raise ValueError(f"validation clinic {requested!r} is not a training clinic; choose one of {clinics}.")
    return requested


def make_splits(cases: pd.DataFrame, heldout_clinic: str, seed: int = 0,
                folds: dict[str, int] | None = None, val_clinic: str | None = None) -> pd.Series:
    """Split name per case, indexed by case_id.

    cases: a frame with case_id, patient_id, clinic and label. The held-out clinic goes
    to ``test`` whole, and ``val_clinic`` (when given) to ``val`` whole; a patient seen at
    either belongs there wholly, wherever else they went.
    """
    folds = folds or (CLINIC_VAL_FOLDS if val_clinic else DEFAULT_FOLDS)
    if sum(folds.values()) != N_FOLDS or set(folds) != {"train", "val", "calib"}:
        raise ValueError(f"folds must give train, val and calib fold counts summing to {N_FOLDS}, got {folds}.")
    clinics = sorted(cases["clinic"].unique())
    if heldout_clinic not in clinics:
        raise ValueError(f"held-out clinic {heldout_clinic!r} is not in the dataset; clinics: {clinics}.")
    split = pd.Series("", index=pd.Index(cases["case_id"], name="case_id"), name="split")
    taken = np.zeros(len(cases), bool)
    for name, clinic in (("test", heldout_clinic), ("val", val_clinic)):
        if clinic is None:
            continue
        mask = ((cases["clinic"] == clinic) | cases["patient_id"].isin(cases.loc[
            (cases["clinic"] == clinic).to_numpy(), "patient_id"])).to_numpy() & ~taken
        split[mask] = name
        taken |= mask

    rest = cases[~taken]
    n_splits = min(N_FOLDS, rest["patient_id"].nunique())
    if n_splits < N_FOLDS:
        raise ValueError(f"only {n_splits} patients left for train and calib; need at least {N_FOLDS}.")
    sgkf = StratifiedGroupKFold(n_splits=N_FOLDS, shuffle=True, random_state=seed)
    fold_of = np.empty(len(rest), dtype=int)
    for k, (_, idx) in enumerate(sgkf.split(rest, rest["label"], groups=rest["patient_id"])):
        fold_of[idx] = k
    edges = np.cumsum([folds["train"], folds["val"], folds["calib"]])
    names = np.asarray(["train", "val", "calib"])[np.searchsorted(edges, fold_of, side="right")]
    split[~taken] = names
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
