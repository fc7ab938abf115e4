"""Pure table shaping for pages: stored rows in, display frames out. No reads."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from data_store.fitzpatrick import fitzpatrick_group, fitzpatrick_label
from trainer.config import MODEL_NAMES
from trainer.evaluation.audit import SLICE_FAMILIES
from trainer.evaluation.metrics import confusion_matrix
from trainer.evaluation.selection import select_model
from trainer.report.numbers import ci

HEADLINE = ("macro_f1", "accuracy", "ece", "defer_rate", "accepted_accuracy", "missed_urgent_rate")
PERCENT = {"defer_rate": "{:.1%}", "coverage": "{:.1%}", "accepted_accuracy": "{:.1%}",
           "missed_urgent_rate": "{:.1%}"}


def with_interval(df: pd.DataFrame) -> pd.Series:
    """Each row's value with its 95% interval, as text."""
    return df.apply(ci, axis=1) if len(df) else pd.Series(dtype=str)


def _pivot(rows: pd.DataFrame, index, columns: str) -> pd.DataFrame:
    return rows.assign(shown=with_interval(rows)).pivot_table(index=index, columns=columns, values="shown",
                                                              aggfunc="first")


def _model_order(index) -> list[str]:
    return [m for m in MODEL_NAMES if m in index] + [m for m in index if m not in MODEL_NAMES]


def headline(metrics: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Models x headline metrics (value with its 95% interval) on the overall slice of a split."""
    m = metrics[(metrics["split"] == split) & (metrics["slice"] == "overall") & metrics["metric"].isin(HEADLINE)]
    table = _pivot(m, "model", "metric")
    return table.reindex(index=_model_order(table.index), columns=[c for c in HEADLINE if c in table.columns])


def overall(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One metric's overall rows, one per model (as ``group``, for interval charts)."""
    rows = metrics[(metrics.slice == "overall") & (metrics.metric == metric)]
    return rows.rename(columns={"model": "group"})


def chosen_model(val_metrics: pd.DataFrame) -> str:
    """The run's model as the selection rule picks it on val (``trainer.evaluation.selection``)."""
    return select_model(val_metrics).model


def value_of(rows: pd.DataFrame, group: str) -> str:
    """One group's value in ``overall`` rows, as text (n/a where the split has none)."""
    picked = rows[rows["group"] == group]["value"]
    return f"{picked.iloc[0]:.3f}" if len(picked) else "n/a"


def by_category(metrics: pd.DataFrame) -> pd.DataFrame:
    """Models x true category: accuracy (recall) with intervals."""
    return _pivot(metrics[metrics.metric == "category_accuracy"], "model", "slice_value")


def comparisons(comp: pd.DataFrame) -> pd.DataFrame:
    return comp.assign(difference=with_interval(comp))[["model", "baseline", "metric", "difference", "n"]]


def confusion(preds: pd.DataFrame, model: str, split: str, classes: list[str]) -> pd.DataFrame:
    """Long table (true, predicted, n) of one model's confusion matrix on a split."""
    p = preds[(preds.model == model) & (preds.split == split)]
    cm = confusion_matrix(p["y_true"].map(classes.index), p["y_pred"].map(classes.index), len(classes))
    return pd.DataFrame([{"true": classes[i], "predicted": classes[j], "n": int(cm[i, j])}
                         for i in range(len(classes)) for j in range(len(classes))])


def ece_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Groups x (ece, ece_uncalibrated, defer_ece), with intervals where bootstrapped."""
    return _pivot(metrics[metrics.metric.isin(["ece", "ece_uncalibrated", "defer_ece"])], "slice_value", "metric")


def reliability_groups(bins: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Calibrated and uncalibrated bins of each group, and the deferral score's bins under "defer"."""
    top = bins[bins.kind.isin(["calibrated", "uncalibrated"])]
    return {g: top[top.slice_value == g] for g in sorted(top["slice_value"].unique())}


def defer_bins(bins: pd.DataFrame) -> pd.DataFrame:
    return bins[bins.kind == "defer"]


def policy_thresholds(policies: pd.DataFrame) -> dict[str, float]:
    """Each stored policy's (single) threshold, fitted on calib."""
    return {r.policy: float(r.threshold) for r in policies.itertuples() if pd.notna(r.threshold)}


def group_thresholds(policies: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The per-skin-tone-group thresholds of the stored group policies ({} for the others)."""
    return {r.policy: {g: float(t) for g, t in _params(r.params).get("thresholds", {}).items()}
            for r in policies.itertuples()}


def saved_policies(policies: pd.DataFrame) -> list[str]:
    """The policies a team saved from this page (not fitted by posthoc)."""
    return sorted(r.policy for r in policies.itertuples() if _params(r.params).get("saved_from") == "dashboard")


def _params(value) -> dict:
    return value if isinstance(value, dict) else json.loads(value) if isinstance(value, str) and value else {}


# A stored policy's promise: the parameter it keeps, the column it is judged on, and the direction.
PROMISES = {"budget": ("review at most {:.1%}", "defer_rate", "at most"),
            "target_accuracy": ("{:.1%} right when kept", "accepted_accuracy", "at least"),
            "urgent_sensitivity_floor": ("{:.1%} of urgent caught", "missed_urgent_rate", "miss at most")}


def policy_promises(rows: pd.DataFrame) -> pd.DataFrame:
    """Each stored policy's promise beside what it achieved on the rows' split (overall rows of
    ``policies``): reviewed, right when kept, urgent missed, and whether the promise held."""
    out = []
    for r in rows.sort_values("policy").itertuples():
        params = _params(r.params)
        key = next((k for k in PROMISES if k in params), None)
        if key is None:
            promise = ("a threshold chosen by hand" if params.get("saved_from") else
                       "defer when unsure between categories" if "alpha" in params else "see its description")
            held = ""
        else:
            words, column, direction = PROMISES[key]
            goal = params[key] if key != "urgent_sensitivity_floor" else 1 - params[key]
            value = getattr(r, column)
            ok = value >= goal - 1e-9 if direction == "at least" else value <= goal + 1e-9
            promise, held = words.format(params[key]), ("kept" if ok else "broken") if pd.notna(value) else "n/a"
        out.append({"policy": r.policy, "promise": promise, "reviewed": r.defer_rate,
                    "right when kept": r.accepted_accuracy, "urgent missed": r.missed_urgent_rate,
                    "promise held": held})
    return pd.DataFrame(out)


READABLE = {"n": "cases", "deferred": "reviews", "urgent": "urgent cases", "defer_rate": "reviewed",
            "coverage": "kept", "accepted_accuracy": "right when kept", "missed_urgent_rate": "urgent missed"}
READABLE_PERCENT = {name: "{:.1%}" for name in ("reviewed", "kept", "right when kept", "urgent missed")}


def readable(view: pd.DataFrame) -> pd.DataFrame:
    """An operating point's columns under short, plain names (formatted by ``READABLE_PERCENT``)."""
    return view.rename(columns=READABLE)


def per_hundred(view: pd.DataFrame) -> pd.DataFrame:
    """Per group of an operating point (``OperatingPoints.at``): of 100 referrals, how many go to
    a clinician, are decided automatically, are wrong among those, are urgent, and are urgent
    patients called non-urgent and not reviewed."""
    v = view
    kept = 100 * (1 - v["defer_rate"])
    urgent = 100 * v["urgent"] / v["n"]
    return pd.DataFrame({"group": v["slice_value"], "cases": v["n"], "to a clinician": 100 * v["defer_rate"],
                         "decided automatically": kept,
                         "wrong among those": (kept * (1 - v["accepted_accuracy"])).where(kept > 0, 0.0),
                         "urgent": urgent,
                         "urgent not reviewed": (urgent * v["missed_urgent_rate"]).where(urgent > 0, 0.0)})


def plain_words(row: pd.Series) -> str:
    """One row of ``per_hundred`` in words."""
    return (f"Of 100 referrals, {row['to a clinician']:.0f} go to a clinician; of the "
            f"{row['decided automatically']:.0f} decided automatically, {row['wrong among those']:.0f} are wrong; "
            f"of {row['urgent']:.0f} urgent patients, {row['urgent not reviewed']:.0f} are called non-urgent and "
            "not reviewed.")


def clinician_hours(defer_rate: float, cases_per_day: int, minutes_per_review: float) -> float:
    """Clinician hours a day the deferred cases take."""
    return cases_per_day * defer_rate * minutes_per_review / 60


def operating_point(view: pd.DataFrame) -> tuple[pd.Series, dict[str, pd.DataFrame]]:
    """The overall row of ``OperatingPoints.at`` and, per family, its groups for display."""
    families = {f: view[view.slice == f].drop(columns="slice").rename(columns={"slice_value": "group"})
                for f in ("fitzpatrick_group", "clinic")}
    return view[view.slice == "overall"].iloc[0], families


def conformal_coverage(conf: pd.DataFrame) -> pd.DataFrame:
    return conf.pivot_table(index=["method", "mode"], columns="slice_value", values="coverage").round(3)


def slice_families(metrics: pd.DataFrame) -> list[str]:
    """Slice families of a metrics table: the standard ones first, then any extra column."""
    present = set(metrics["slice"])
    return [f for f in SLICE_FAMILIES if f in present] + sorted(present - set(SLICE_FAMILIES) - {"overall"})


def metric_names(metrics: pd.DataFrame, family: str) -> list[str]:
    return sorted(metrics[metrics.slice == family]["metric"].unique())


def slice_table(metrics: pd.DataFrame, family: str, metric: str) -> pd.DataFrame:
    """Rows of one metric for one slice family, ready to show and download."""
    rows = metrics[(metrics.slice == family) & (metrics.metric == metric)]
    cols = ["slice_value", "n", "value", "ci_low", "ci_high", "gap", "gap_low", "gap_high", "gap_reference",
            "too_small", "flagged"]
    out = rows[[c for c in cols if c in rows]].sort_values("slice_value").reset_index(drop=True)
    return out.rename(columns={"slice_value": "group"})


def slice_findings(table: pd.DataFrame) -> dict:
    """From a slice table: flagged groups, the reference group, and groups too small to judge."""
    reference = table["gap_reference"].dropna()
    return {"flagged": table[table["flagged"]]["group"].tolist(), "small": table[table["too_small"]]["group"].tolist(),
            "reference": reference.iloc[0] if len(reference) else None}


def case_list(preds: pd.DataFrame, model: str, split: str, threshold: float) -> pd.DataFrame:
    """One model's cases on a split with their skin-tone group, whether they are deferred at
    ``threshold``, and whether the note-only and photo-only models disagree."""
    p = preds[(preds.model == model) & (preds.split == split)].copy()
    p["skin_tone_group"] = fitzpatrick_group(p["fitzpatrick"])
    p["deferred"] = p["defer_score"] >= threshold
    pair = preds[preds.split == split].pivot(index="case_id", columns="model", values="y_pred")
    p["disagree"] = (p["case_id"].map(pair.get("text_only", pd.Series(dtype=str)))
                     != p["case_id"].map(pair.get("image_only", pd.Series(dtype=str))))
    return p


CASE_FILTERS = ("all", "deferred", "wrong", "text and image models disagree")
CASE_COLUMNS = ("case_id", "y_true", "y_pred", "defer_score", "deferred", "skin_tone_group", "clinic")


def case_filter_options(cases: pd.DataFrame) -> dict[str, list[str]]:
    """The choices of the skin-tone group and clinic filters ("all" first)."""
    return {col: ["all"] + sorted(cases[col].unique()) for col in ("skin_tone_group", "clinic")}


def filter_cases(cases: pd.DataFrame, show: str, group: str, clinic: str) -> pd.DataFrame:
    """Cases matching every filter ("all" leaves a filter open), highest deferral score first."""
    mask = pd.Series(True, index=cases.index)
    mask &= {"all": True, "deferred": cases["deferred"], "wrong": cases["y_pred"] != cases["y_true"],
             "text and image models disagree": cases["disagree"]}[show]
    if group != "all":
        mask &= cases["skin_tone_group"] == group
    if clinic != "all":
        mask &= cases["clinic"] == clinic
    return cases[mask].sort_values("defer_score", ascending=False)


def probabilities(classes: list[str], probs) -> pd.DataFrame:
    return pd.DataFrame({"class": list(classes), "probability": np.asarray(probs)})


def attribution_rows(attr: pd.DataFrame) -> tuple[pd.Series, pd.Series | None]:
    """The Integrated Gradients row of one case's attributions and its Occlusion row (or None)."""
    occ = attr[attr.method == "occlusion"]
    return attr[attr.method == "integrated_gradients"].iloc[0], occ.iloc[0] if len(occ) else None


def attribution_title(ig: pd.Series) -> str:
    """The title of a case's attribution figure: the class explained and each modality's share."""
    share = json.loads(ig["modality_share"])
    return (f"explaining {ig['target_class']}: image {share['image']:.0%}, note {share['text']:.0%} "
            f"(IG completeness gap {ig['convergence_delta']:.3f})")


def handoff_sections(metrics: pd.DataFrame, calibrators: pd.DataFrame, policies: pd.DataFrame) -> dict:
    """The tables of the Handoff page, by title (held-out clinic only)."""
    tone = metrics[(metrics.split == "test") & (metrics.slice == "fitzpatrick_group") &
                   metrics.metric.isin(["accuracy", "macro_f1", "ece", "defer_rate", "missed_urgent_rate"])]
    return {
        "Held-out clinic, every model": headline(metrics).reset_index(),
        "Skin-tone groups on the held-out clinic": _pivot(tone, ["model", "slice_value"], "metric").reset_index(),
        "Calibrators": calibrators[["model", "method"]],
        "Deferral policies on the held-out clinic": policies[["model", "policy", "threshold", "defer_rate",
                                                              "accepted_accuracy", "missed_urgent_rate"]].round(3),
    }


def fitzpatrick_counts(counts: pd.DataFrame) -> pd.DataFrame:
    """Case counts with Fitzpatrick types named I..VI (unknown for blanks)."""
    return counts.assign(fitzpatrick=counts["fitzpatrick"].map(fitzpatrick_label))


def status_counts(runs: pd.DataFrame) -> str:
    """'2 interrupted, 1 failed': how many runs have each status."""
    return ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items())


def row(frame: pd.DataFrame, column: str, value) -> pd.Series:
    """The row of ``frame`` whose ``column`` is ``value``."""
    return frame.set_index(column).loc[value]
