"""Pure table shaping for the Cases page: a model's predictions, its operating point and
the reasons of its deferral scores in, the filtered case list and one case's figures out.
No reads."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from data_store.fitzpatrick import fitzpatrick_group
from trainer.posthoc.replay import decide


def case_list(preds: pd.DataFrame, model: str, split: str, threshold: float, per_group: dict[str, float],
              urgent: tuple[str, ...], reasons: pd.DataFrame) -> pd.DataFrame:
    """One model's cases on a split with their skin-tone group, whether a clinician reviews
    them at the operating point (``threshold``, or a group policy's ``per_group`` thresholds,
    as ``replay.decide``), whether they are urgent cases missed and not reviewed, whether the
    note-only and photo-only models disagree, and why their deferral score is what it is."""
    p = preds[(preds.model == model) & (preds.split == split)].copy()
    p["skin_tone_group"] = fitzpatrick_group(p["fitzpatrick"])
    p["deferred"] = decide((threshold, per_group), p["defer_score"].to_numpy(), p["skin_tone_group"].to_numpy())
    p["missed_urgent"] = p["y_true"].isin(urgent) & ~p["y_pred"].isin(urgent) & ~p["deferred"]
    pair = preds[preds.split == split].pivot(index="case_id", columns="model", values="y_pred")
    p["disagree"] = (p["case_id"].map(pair.get("text_only", pd.Series(dtype=str)))
                     != p["case_id"].map(pair.get("image_only", pd.Series(dtype=str))))
    why = reasons.set_index("case_id")
    p["reason"] = p["case_id"].map(why["reason"]) if len(why) else "not available"
    p["why"] = p["case_id"].map(why["why"]) if len(why) else ""
    return p


CASE_FILTERS = {"reviewed": lambda c: c["deferred"], "not reviewed": lambda c: ~c["deferred"],
                "wrong": lambda c: c["y_pred"] != c["y_true"], "right": lambda c: c["y_pred"] == c["y_true"],
                "missed urgent, not reviewed": lambda c: c["missed_urgent"],
                "note and photo models disagree": lambda c: c["disagree"]}
CASE_COLUMNS = {"case_id": "case", "y_true": "true category", "y_pred": "predicted", "defer_score": "deferral score",
                "deferred": "reviewed", "reason": "why the score", "skin_tone_group": "skin-tone group",
                "clinic": "clinic"}


def case_filter_options(cases: pd.DataFrame) -> dict[str, list[str]]:
    """The choices of the skin-tone group, clinic and reason filters ("all" first)."""
    return {col: ["all"] + sorted(cases[col].dropna().unique()) for col in ("skin_tone_group", "clinic", "reason")}


def filter_cases(cases: pd.DataFrame, conditions=(), **equal: str) -> pd.DataFrame:
    """Cases meeting every condition of ``CASE_FILTERS`` named and every column equal to its
    value ("all" leaves a column open), highest deferral score first."""
    mask = pd.Series(True, index=cases.index)
    for name in conditions:
        mask &= CASE_FILTERS[name](cases)
    for column, value in equal.items():
        if value != "all":
            mask &= cases[column] == value
    return cases[mask].sort_values(["defer_score", "case_id"], ascending=[False, True])


def shown_cases(cases: pd.DataFrame) -> pd.DataFrame:
    """The list's columns under plain names."""
    return cases[list(CASE_COLUMNS)].rename(columns=CASE_COLUMNS)


def probabilities(classes: list[str], probs) -> pd.DataFrame:
    return pd.DataFrame({"class": list(classes), "probability": np.asarray(probs)})


def attribution_rows(attr: pd.DataFrame) -> tuple[pd.Series, pd.Series | None]:
    """The Integrated Gradients row of one case's attributions and its Occlusion row (or None)."""
    occ = attr[attr.method == "occlusion"]
    return attr[attr.method == "integrated_gradients"].iloc[0], occ.iloc[0] if len(occ) else None


def attribution_title(ig: pd.Series) -> str:
    """The title of a case's attribution figure: the class explained and each modality's share."""
    share = json.loads(ig["modality_share"]) if isinstance(ig["modality_share"], str) else ig["modality_share"]
    return (f"explaining {ig['target_class']}: image {share['image']:.0%}, note {share['text']:.0%} "
            f"(IG completeness gap {ig['convergence_delta']:.3f})")
