"""Plain names for every stored metric and column, one number format, and the glossary each
page shows for the terms it uses. Pure: no reads, no Streamlit."""
from __future__ import annotations

import pandas as pd

from trainer.report.numbers import p3, pct

# Stored name -> what a clinician reads. Rates are shown as percentages (``PERCENT``).
NAMES = {
    "macro_f1": "macro F1", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
    "category_accuracy": "accuracy in the category", "ece": "calibration error (ECE)",
    "ece_uncalibrated": "calibration error before calibration", "adaptive_ece": "calibration error, equal-count bins",
    "classwise_ece": "calibration error per category", "defer_ece": "deferral score calibration error",
    "brier": "Brier score", "nll": "log loss", "auroc": "AUROC", "defer_auroc": "deferral score AUROC",
    "aurc": "area under risk-coverage", "augrc": "area under generalised risk-coverage",
    "defer_rate": "reviewed", "coverage": "kept", "accepted_accuracy": "right when kept",
    "missed_urgent_rate": "urgent missed", "conformal_coverage": "sets holding the true category",
    "conformal_set_size": "categories per set",
    "slice_value": "group", "n": "cases", "value": "value", "ci_low": "95% low", "ci_high": "95% high",
    "gap": "gap to best group", "gap_low": "gap 95% low", "gap_high": "gap 95% high",
    "gap_reference": "best-served group", "too_small": "too small to judge", "flagged": "flagged",
    "y_true": "true category", "y_pred": "predicted", "defer_score": "deferral score", "deferred": "reviewed",
    "skin_tone_group": "skin-tone group", "fitzpatrick_group": "skin-tone group", "fitzpatrick": "Fitzpatrick type",
    "fitzpatrick_group x clinic": "skin-tone group x clinic", "category": "true category", "clinic": "clinic",
    "urgent": "urgent cases", "deferred_n": "reviews", "case_id": "case", "reason": "why reviewed",
    "model": "model", "split": "split", "metric": "metric", "threshold": "threshold", "policy": "policy",
}
PERCENT = frozenset({"defer_rate", "coverage", "accepted_accuracy", "missed_urgent_rate", "accuracy",
                     "balanced_accuracy", "category_accuracy", "conformal_coverage"})
SPLIT_NAMES = {"test": "held-out clinic (test)", "val": "validation clinic (val)",
               "calib": "training clinics (calib)", "new": "a clinic scored later (new)"}


def name(stored: str) -> str:
    """A stored metric or column in plain words (the stored name when none is known)."""
    return NAMES.get(stored, stored.replace("_", " "))


def number(value, stored: str = "") -> str:
    """One format everywhere: rates as percentages with one decimal, the rest with three decimals."""
    return pct(value) if stored in PERCENT else p3(value)


def with_interval(value, low, high, stored: str = "") -> str:
    """'56.2% (53.9% to 58.3%)' or '0.041 (0.030 to 0.052)': ``number`` with its 95% interval."""
    if value is None or pd.isna(value) or low is None or high is None or pd.isna(low) or pd.isna(high):
        return number(value, stored)
    return f"{number(value, stored)} ({number(low, stored)} to {number(high, stored)})"


def columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every known column under its plain name."""
    return frame.rename(columns={c: name(c) for c in frame.columns if c in NAMES})


GLOSSARY = {
    "deferral score": "The estimated probability that a clinician should review the model's output: the chance "
                      "it is wrong, or 1 when it calls a case non-urgent while urgent categories keep real "
                      "probability.",
    "threshold": "Cases whose deferral score is at or above it go to a clinician; the rest are decided by the model.",
    "reviewed": "Share of cases sent to a clinician (deferred).",
    "kept": "Share of cases decided by the model alone (1 - reviewed).",
    "right when kept": "Accuracy among the cases the model decides alone.",
    "urgent missed": "Urgent patients the model calls non-urgent and does not send for review, of all urgent patients.",
    "policy": "A rule for the threshold fitted on the training clinics (calib) to keep a promise: a review budget, "
              "a target accuracy, a floor on urgent cases caught, or equal accuracy across skin-tone groups "
              "(one threshold per group).",
    "promise held": "Whether the policy's promise, fitted on calib, still holds on the split shown.",
    "calibration error (ECE)": "How far stated confidence is from observed accuracy, averaged over 15 bins; "
                               "0 is perfect. Shown bias-corrected by the patient bootstrap.",
    "macro F1": "The F1 score (balance of precision and recall) averaged over categories, each counting equally.",
    "AUROC": "Chance that a randomly chosen case needing review scores higher than one that does not (0.5: chance).",
    "95% interval": "Patient-bootstrap interval: 1,000 resamples of patients, so a patient's cases move together.",
    "gap to best group": "A group's value minus the best-served group's; flagged when its 95% interval excludes 0 "
                         "and the group has at least 30 cases.",
    "prediction set": "The categories a conformal method keeps for a case so that the true one is inside for about "
                      "1 - alpha of cases (LAC and APS are two ways of building them; Mondrian: per skin-tone group).",
    "skin-tone group": "Fitzpatrick types I-II (light), III-IV (medium) and V-VI (dark).",
    "splits": "calib: cases of the training clinics set aside to fit calibration, the deferral score and the "
              "policies; val: the validation clinic, on which the model is chosen; test: the held-out clinic, "
              "looked at and never fitted on.",
    "Brier score": "Mean squared distance between the predicted probabilities and the true category (0 is perfect).",
    "log loss": "Mean negative log probability of the true category (lower is better).",
    "risk-coverage": "Error rate among kept cases as more cases are kept; a lower curve is better.",
}


def glossary(terms) -> str:
    """Markdown: the glossary entries of ``terms``, in the order given."""
    return "\n".join(f"- **{t}**: {GLOSSARY[t]}" for t in terms)
