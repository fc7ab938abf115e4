"""Page 4 of the handoff document: the known biases by skin tone, urgent cases missed first."""
from __future__ import annotations

import pandas as pd

from trainer.evaluation.selection import select_model
from trainer.report.context import GROUPS, Context, group_name
from trainer.report.document import MIN_BIN, Section


def page(ctx: Context) -> list[Section]:
    return [_urgent(ctx), _table(ctx), _mix(ctx), _accuracy_gaps(ctx), *_control(ctx)]


def _control(ctx: Context) -> list[Section]:
    """The control run without the simulated skin-tone effect, only when the store holds one."""
    control = ctx.d.get("control")
    if not control:
        return []
    t, m = ctx.t, control["metrics"]
    model = select_model(m).model
    s = Section("Control: the same simulation without the skin-tone effect")
    parts = []
    for metric, words, form in (("missed_urgent_rate", "urgent patients missed", "pct"), ("accuracy", "accuracy",
                                                                                          "p3")):
        rows = m[(m.model == model) & (m.split == "test") & (m.slice == "fitzpatrick_group") & (m.metric == metric) &
                 m.slice_value.isin(GROUPS) & m.value.notna()].sort_values("slice_value")
        if len(rows):
            parts.append(f"{words} " + ", ".join(f"{group_name(r['slice_value'])} "
                                                 f"{t.num('control_metrics', r, 'value', form)}"
                                                 for _, r in rows.iterrows()))
    s.p(f"Run {control['run_id']} (dataset {control['dataset']}) was simulated the same way without the planted "
        f"loss of lesion contrast on darker skin; its model {model}, chosen the same way, at its held-out clinic: "
        + "; ".join(parts) + ". A gap that appears there too does not come from the planted effect.")
    return [s]


def _urgent(ctx: Context) -> Section:
    t = ctx.t
    s = Section("Known biases by skin tone", new_page=True)
    rows = ctx.metrics("test", "fitzpatrick_group", "missed_urgent_rate")
    rows = rows[rows["slice_value"].isin(GROUPS) & rows["value"].notna()]
    if len(rows) < 2:
        s.p("Fewer than two skin-tone groups have urgent cases at the new clinic, so missed urgent cases cannot be "
            "compared between groups.")
        return s
    worst, best = rows.sort_values("value").iloc[-1], rows.sort_values("value").iloc[0]
    s.p(f"The gap that matters most: urgent patients called non-urgent and not reviewed, at the new clinic, "
        f"{group_name(worst['slice_value'])} {t.pct_ci('metrics', worst)} against {group_name(best['slice_value'])} "
        f"{t.pct_ci('metrics', best)}. "
        + ("The gap's interval excludes zero: it is unlikely to be chance." if worst["flagged"] else
           "The gap's interval includes zero, so the data do not show a difference (which is not proof that "
           "none exists)."))
    defer = {r["slice_value"]: r for _, r in ctx.policy_rows(split="test", slice_="fitzpatrick_group").iterrows()}
    if worst["slice_value"] in defer and best["slice_value"] in defer and worst["slice_value"] != best["slice_value"]:
        w, b = defer[worst["slice_value"]], defer[best["slice_value"]]
        more = w["defer_rate"] > b["defer_rate"] + 0.02
        s.p(f"Deferral {'does' if more else 'does not'} lean towards the group that misses more: it sends "
            f"{t.num('policies', w, 'defer_rate', 'pct')} of {group_name(worst['slice_value'])} and "
            f"{t.num('policies', b, 'defer_rate', 'pct')} of {group_name(best['slice_value'])} to a clinician"
            + ("." if more else ", so it does not make up for the gap."))
    return s


def _table(ctx: Context) -> Section:
    t = ctx.t
    s = Section("Per skin-tone group and type, new clinic")
    rows = []
    for slice_, name in (("fitzpatrick_group", group_name), ("fitzpatrick", lambda v: f"type {v}")):
        acc = ctx.metrics("test", slice_, "accuracy")
        for _, a in acc[acc["slice_value"] != "unknown"].iterrows():
            v = a["slice_value"]
            missed, ece = ctx.metric("test", slice_, v, "missed_urgent_rate"), ctx.metric("test", slice_, v, "ece")
            defer = ctx.metric("test", slice_, v, "defer_rate")
            rows.append({"who": name(v), "cases": t.num("metrics", a, "n", "int"), "accuracy": t.ci("metrics", a),
                         "urgent missed, not reviewed": t.pct_ci("metrics", missed) if missed is not None else "n/a",
                         "deferred": t.num("metrics", defer, "value", "pct") if defer is not None else "n/a",
                         "ECE": t.ci("metrics", ece) if ece is not None else "n/a"})
    s.table(pd.DataFrame(rows), "Accuracy, urgent patients missed, deferral and calibration error (ECE), with "
                                f"{ctx.level} patient-bootstrap intervals")
    s.figure("reliability", "Calibration by skin-tone group at the new clinic: stated confidence against observed "
                            "accuracy (the diagonal is perfect; bins of fewer than "
                            f"{t.constant('MIN_BIN', MIN_BIN, 'k')} cases are hidden; each point's case count is "
                            "beside it).")
    return s


def _mix(ctx: Context) -> Section:
    t = ctx.t
    s = Section("Who the model learned from")
    rows = []
    for group in GROUPS:
        row = {"group": group_name(group)}
        for where, label in (("training clinics", "training"), ("held-out clinic", "new")):
            share = ctx.count(f"skin-tone group at the {where}", group)
            row[f"share, {label}"] = t.num("case_counts", share, "share", "pct") if share is not None else "none"
        for metric, name, pct in (("missed_urgent_rate", "urgent missed", True), ("accuracy", "accuracy", False)):
            for split, label in (("val", "training"), ("test", "new")):
                r = ctx.metric(split, "fitzpatrick_group", group, metric)
                row[f"{name}, {label}"] = "n/a" if r is None or pd.isna(r["value"]) else \
                    t.num("metrics", r, "value", "pct" if pct else "p3")
        rows.append(row)
    s.table(pd.DataFrame(rows), "Each group's share of the referrals, urgent patients missed and accuracy: training "
                                "clinics (validation cases) against the new clinic")
    counts = ctx.d["counts"]
    types = counts[(counts["by"] == "skin type at the training clinics") & (counts["value"] != "unknown")]
    if len(types):
        rare = types.sort_values(["n", "value"]).iloc[0]
        s.p(f"The skin type the model saw least in training is type {rare['value']} "
            f"({t.num('case_counts', rare, 'n', 'int')} referrals, {t.num('case_counts', rare, 'share', 'pct')} of the "
            "training clinics'): the model learned least about it, and estimates for it rest on the fewest patients.")
    return s


def _accuracy_gaps(ctx: Context) -> Section:
    t = ctx.t
    s = Section("Accuracy gaps")
    for name in dict.fromkeys((ctx.model, "image_only")):
        g = ctx.metrics("test", "fitzpatrick_group", "accuracy", name)
        if g.empty:
            continue
        flagged, small = g[g.flagged], g[g.too_small]
        if len(flagged):
            worst = flagged.sort_values("gap").iloc[0]
            s.p(f"{name}: accuracy of {group_name(worst['slice_value'])} is lower than "
                f"{group_name(worst['gap_reference'])} by {t.num('metrics', worst, 'gap', 'neg')} "
                f"({t.num('metrics', worst, 'gap_high', 'neg')} to {t.num('metrics', worst, 'gap_low', 'neg')}); "
                "the interval excludes zero, so this gap is unlikely to be chance.")
        else:
            s.p(f"{name}: no skin-tone group's accuracy gap to the best-served group has an interval that excludes "
                "zero; the data do not show a gap (which is not proof that none exists).")
        if len(small):
            s.p(f"{name}: too small to judge (fewer than {t.config(ctx.cfg, 'min_slice_n', 'k')} cases): " +
                ", ".join(f"{group_name(r['slice_value'])} (n={t.num('metrics', r, 'n', 'int')})"
                          for _, r in small.iterrows()) + ".")
    return s
