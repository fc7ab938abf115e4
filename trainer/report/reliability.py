"""Page 2 of the handoff document: when the model is reliable, at the training clinics
against the new clinic (accuracy of its own decisions, skill per category, calibration)."""
from __future__ import annotations

import pandas as pd

from trainer.config import BASELINES
from trainer.report.context import Context, group_name
from trainer.report.document import MIN_BIN, Section


def page(ctx: Context) -> list[Section]:
    return [_envelope(ctx), _skill(ctx), _calibration(ctx)]


def _envelope(ctx: Context) -> Section:
    t, cfg = ctx.t, ctx.cfg
    s = Section("When the model is reliable", new_page=True)
    s.p(f"The promise: at least {t.config(cfg, 'target_accuracy', 'pct')} of the cases the model decides alone "
        "(those it does not defer) are right. A group is inside the reliable envelope when the lower end of its "
        f"{ctx.level} interval reaches the promise, outside when the upper end stays below it, undecided otherwise. "
        "Training clinics: the validation cases; new clinic: the held-out clinic.")
    rows = []
    for slice_, values in (("overall", ["all"]), ("fitzpatrick_group", None), ("category", None)):
        for value in values or sorted(set(ctx.metrics("test", slice_, "accepted_accuracy")["slice_value"])):
            new, old = ctx.metric("test", slice_, value, "accepted_accuracy"), \
                ctx.metric("val", slice_, value, "accepted_accuracy")
            if new is None:
                continue
            rows.append({"who": "all patients" if value == "all" else
                         group_name(value) if slice_ == "fitzpatrick_group" else f"true {value}",
                         "cases (new clinic)": t.num("metrics", new, "n", "int"),
                         "training clinics": t.ci("metrics", old) if old is not None else "n/a",
                         "new clinic": t.ci("metrics", new), "at the new clinic": _verdict(new, cfg.target_accuracy)})
    s.table(pd.DataFrame(rows), f"Accuracy of the model's own decisions, with {ctx.level} patient-bootstrap intervals")
    clinics = ctx.metrics("calib", "clinic", "accepted_accuracy")
    s.p("By training clinic (out-of-fold calibration cases): " +
        "; ".join(f"{r['slice_value']} {t.ci('metrics', r)}" for _, r in clinics.iterrows()) + ".")
    return s


def _verdict(row, target: float) -> str:
    if row["ci_low"] >= target:
        return "inside"
    return "outside: review every case" if row["ci_high"] < target else "undecided"


def _skill(ctx: Context) -> Section:
    t, d = ctx.t, ctx.d
    s = Section("Skill per category")
    rows = []
    for name in dict.fromkeys((ctx.model,) + BASELINES):  # the chosen model first, once
        val, test = ctx.metric("val", "overall", "all", "macro_f1", name), ctx.metric("test", "overall", "all",
                                                                                       "macro_f1", name)
        if test is None:
            continue
        row = {"model": name, "macro F1, training clinics": t.ci("metrics", val) if val is not None else "n/a",
               "macro F1, new clinic": t.ci("metrics", test)}
        for _, r in ctx.metrics("test", "category", "category_accuracy", name).iterrows():
            row[f"sensitivity {r['slice_value']}"] = t.num("metrics", r, "value", "pct")
        rows.append(row)
    s.table(pd.DataFrame(rows), f"Macro F1 ({ctx.level} interval) and, at the new clinic, sensitivity per true "
                                "category (share of its cases suggested correctly). text_only reads only the note, "
                                "image_only only the photo; the others read both")
    comp = d["comparisons"]
    for _, r in comp[(comp.model == ctx.model) & (comp.split == "test")].iterrows():
        verdict = ("better than" if r["ci_low"] > 0 else "worse than" if r["ci_high"] < 0 else
                   "not distinguishable from")
        s.p(f"At the new clinic {ctx.model} is {verdict} the {r['baseline']} model on macro F1: difference "
            f"{t.num('comparisons', r, 'value')} ({t.num('comparisons', r, 'ci_low')} to "
            f"{t.num('comparisons', r, 'ci_high')}).")
    return s


def _calibration(ctx: Context) -> Section:
    t, cfg = ctx.t, ctx.cfg
    s = Section("Are its probabilities honest?")
    cal = ctx.d["calibrators"].set_index("model")
    before, after = ctx.metric("test", "overall", "all", "ece_uncalibrated"), ctx.metric("test", "overall", "all",
                                                                                         "ece")
    c_before, c_after = ctx.metric("calib", "overall", "all", "ece_uncalibrated"), ctx.metric("calib", "overall",
                                                                                               "all", "ece")
    s.p(f"Calibration ({cal.loc[ctx.model, 'method']} scaling, fitted on the training clinics) changed the "
        "expected calibration error (ECE: the average gap between stated confidence and observed accuracy) there "
        f"from {t.ci('metrics', c_before)} to {t.ci('metrics', c_after)}; at the new clinic it is "
        f"{t.ci('metrics', after)} against {t.ci('metrics', before)} before calibration: "
        + ("calibration did not carry over to the new clinic." if after["value"] > before["value"] else
           "calibration still helped at the new clinic."))
    conf = ctx.d["conformal"]
    c = conf[(conf.model == ctx.model) & (conf.split == "test") & (conf.method == cfg.conformal_method) &
             (conf["mode"] == "mondrian")].sort_values("slice_value")
    target = 1 - cfg.alpha
    held, short = c[c["coverage"] >= target], c[c["coverage"] < target]
    level = t.config(cfg, "alpha", "pct", complement=True)
    words = f"Sets of categories meant to hold the right one {level} of the time"
    parts = []
    if len(held):
        parts.append("held at the new clinic for " + _coverages(t, held))
    if len(short):
        parts.append(("fell short at the new clinic for " if not len(held) else "fell short for ")
                     + _coverages(t, short))
    s.p(f"{words} " + "; they ".join(parts) + ".")
    s.figure("reliability_clinics", "Stated confidence against observed accuracy, all groups: the training clinics' "
                                    "calibration cases (out of fold) against the new clinic (the diagonal is "
                                    f"perfect; bins of fewer than {t.constant('MIN_BIN', MIN_BIN, 'k')} cases are "
                                    "hidden; each point's case count is beside it).")
    return s


def _coverages(t, rows: pd.DataFrame) -> str:
    return ", ".join(f"{group_name(r['slice_value'])} ({t.num('conformal', r, 'coverage', 'pct')})"
                     for _, r in rows.iterrows())
