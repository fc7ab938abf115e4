"""Pure table shaping for the Deferral page (and Home's plain words): stored policies and
operating points (``OperatingPoints.at``) in, display frames out. No reads."""
from __future__ import annotations

import json

import pandas as pd

from trainer.uncertainty.policies import promise


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


def policy_promises(rows: pd.DataFrame) -> pd.DataFrame:
    """Each stored policy's promise beside what it achieved on the rows' split (its overall
    row, and its skin-tone group rows for a per-group promise), judged by
    ``trainer.uncertainty.policies.promise`` as the handoff document judges it."""
    out = []
    overall = rows[rows["slice"] == "overall"].sort_values("policy")
    for r in overall.to_dict("records"):
        params = _params(r["params"])
        p = promise(params)
        groups = rows[(rows["slice"] == "fitzpatrick_group") & (rows["policy"] == r["policy"])]
        held = p.held(r, groups.to_dict("records"))
        out.append({"policy": r["policy"], "promise": _promise_words(params, p),
                    "reviewed": r["defer_rate"], "right when kept": r["accepted_accuracy"],
                    "urgent missed": r["missed_urgent_rate"],
                    "promise held": "" if p.column is None else "n/a" if held is None else
                    "kept" if held else "broken"})
    return pd.DataFrame(out)


def _promise_words(params: dict, p) -> str:
    if p.column is None:
        return ("a threshold chosen by hand" if params.get("saved_from") else
                "defer when unsure between categories" if "alpha" in params else "see its description")
    if p.per_group:
        return f"{p.goal:.1%} right when kept, in every skin-tone group"
    return {"defer_rate": f"review at most {p.goal:.1%}", "accepted_accuracy": f"{p.goal:.1%} right when kept",
            "missed_urgent_rate": f"{1 - p.goal:.1%} of urgent caught"}[p.column]


READABLE = {"n": "cases", "deferred": "reviews", "urgent": "urgent cases", "defer_rate": "reviewed",
            "coverage": "kept", "accepted_accuracy": "right when kept", "missed_urgent_rate": "urgent missed"}
READABLE_PERCENT = {name: "pct" for name in ("reviewed", "kept", "right when kept", "urgent missed")}


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


COMPARED = ("defer_rate", "accepted_accuracy", "missed_urgent_rate")


def side_by_side(a: pd.DataFrame, b: pd.DataFrame, labels: tuple[str, str]) -> pd.DataFrame:
    """Two operating points (``OperatingPoints.at`` rows) slice by slice, one row per slice and
    measure (reviewed, right when kept, urgent missed): its value at each, the change from
    ``a`` to ``b``, and the cases at each (a slice only one side has: n/a on the other side
    and for the change)."""
    keys = ["slice", "slice_value"]
    both = a[[*keys, "n", *COMPARED]].merge(b[[*keys, "n", *COMPARED]], on=keys, how="outer", suffixes=("\0a", "\0b"))
    both = both.assign(order=both["slice"].map({s: i for i, s in enumerate(SLICE_WORDS)}).fillna(len(SLICE_WORDS)))
    both = both.sort_values(["order", "slice", "slice_value"])
    rows = []
    for r in both.to_dict("records"):
        for c in COMPARED:
            rows.append({"by": SLICE_WORDS.get(r["slice"], r["slice"]), "group": r["slice_value"],
                         "measure": READABLE[c], labels[0]: r[f"{c}\0a"], labels[1]: r[f"{c}\0b"],
                         "change": r[f"{c}\0b"] - r[f"{c}\0a"], f"cases, {labels[0]}": r["n\0a"],
                         f"cases, {labels[1]}": r["n\0b"]})
    return pd.DataFrame(rows)


SLICE_WORDS = {"overall": "all cases", "fitzpatrick_group": "skin-tone group", "clinic": "clinic"}


def side_by_side_formats(table: pd.DataFrame) -> dict[str, str]:
    """How ``ui.table`` shows ``side_by_side``: rates as percentages, the change in points."""
    a, b = table.columns[3:5]
    return {a: "pct", b: "pct", "change": "pts", f"cases, {a}": "int", f"cases, {b}": "int"}


START = 0.5  # the slider's start when nothing says otherwise (a model without stored policies)


def resolve(point: dict | None, thresholds: dict[str, float], per_group: dict[str, dict[str, float]],
            default: str) -> tuple[str | None, float, dict[str, float]]:
    """The operating point a page shows: (policy or None, threshold, per-group thresholds).
    ``point``: what the Deferral page left ({"policy": name, "threshold": the threshold it
    showed} or {"threshold": t}). A policy this model does not have gives way to the
    threshold that was shown; no point at all to the run's ``default`` policy, else ``START``."""
    point = point or {}
    name = point.get("policy") if point.get("policy") in thresholds else None
    if name is None and point.get("threshold") is None:
        name = default if default in thresholds else None
    if name is not None:
        return name, thresholds[name], per_group.get(name, {})
    return None, float(point.get("threshold", START)), {}


COMPARE = ("another threshold or policy", "the same operating point on another split")
BY_HAND = "(a threshold)"


def compare_words(table: pd.DataFrame, labels: tuple[str, str]) -> str:
    """The whole split's rows of ``side_by_side`` in words."""
    parts = []
    for r in table[table["by"] == SLICE_WORDS["overall"]].to_dict("records"):
        a, b = r[labels[0]], r[labels[1]]
        parts.append(f"{r['measure']} {_pct(a)} vs {_pct(b)}" + ("" if pd.isna(b - a) else
                                                                   f" ({100 * (b - a):+.1f} pts)"))
    return f"All cases, {labels[0]} vs {labels[1]}: " + "; ".join(parts) + "."


def _pct(x) -> str:
    return "n/a" if pd.isna(x) else f"{x:.1%}"
