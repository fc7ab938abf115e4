"""The clinical handoff document's content, generated from the store: every number is read
from it and every statement that depends on a result is chosen by that result.

``build(inputs, policy)`` returns a ``Document`` (``document.py``) from the run's tables as
``trainer.commands.report.read_inputs`` reads them; ``render.py`` writes it.
"""
from __future__ import annotations

import pandas as pd

from trainer.config import BASELINES
from trainer.evaluation.selection import select_model
from trainer.report.document import ChartSpec, Document, Section
from trainer.report.numbers import ci, p3, pct


def build(d: dict, policy: str | None = None) -> Document:
    """The document of one run. ``d``: the run's tables (metrics, policies, conformal,
    calibrators, comparisons, reliability_bins, risk_coverage, attributions), ``run``,
    ``info`` (its dataset), ``config`` (its FitConfig) and ``by`` (case counts)."""
    m, run, info, cfg = d["metrics"], d["run"], d["info"], d["config"]
    run_id = run["run_id"]
    chosen = select_model(m)  # on the training clinics, never on test
    model = chosen.model
    policy = policy or cfg.default_policy
    pol = d["policies"][(d["policies"].model == model) & (d["policies"].policy == policy)]
    if pol.empty:
        raise ValueError(f"Run {run_id} has no policy {policy!r} for {model}; policies: "
                         f"{sorted(set(d['policies']['policy']))}.")
    mm = m[m.model == model]

    def get(split: str, slice_: str, value: str, metric: str) -> pd.Series:
        return mm[(mm.split == split) & (mm.slice == slice_) & (mm.slice_value == value) & (mm.metric == metric)].iloc[0]

    sections = [_intended_use(run, info, chosen, cfg, policy), _data(d, info), _performance(d, model),
                _envelope(mm, cfg.target_accuracy, policy), _deferral(mm, pol, d, model, policy),
                _bias(mm, d, model, cfg.min_slice_n), _calibration(d, model, get, cfg.conformal_method, cfg.alpha),
                _crossref()]
    figures = {
        "reliability": ChartSpec("reliability", f"{model}: reliability by skin-tone group, held-out clinic",
                                 d["reliability_bins"][(d["reliability_bins"].model == model) &
                                                      (d["reliability_bins"].split == "test") &
                                                      (d["reliability_bins"].slice == "fitzpatrick_group") &
                                                      (d["reliability_bins"].kind == "calibrated")]),
        "risk_coverage": ChartSpec("risk_coverage", f"{model}: risk-coverage by skin-tone group",
                                   d["risk_coverage"][(d["risk_coverage"].model == model) &
                                                     (d["risk_coverage"].split == "test") &
                                                     d["risk_coverage"].slice.isin(["overall", "fitzpatrick_group"])]),
    }
    slices = {f"{model}_{split}_{family.replace(' ', '')}": _slice_table(mm, split, family)
              for split in ("test", "val") for family in sorted(set(mm["slice"]))}
    simulated = " (simulated data: not clinical evidence)" if info["simulated"] else ""
    return Document(f"Clinical handoff: {model}, run {run_id}{simulated}", model, sections, figures, slices)


def _slice_table(mm: pd.DataFrame, split: str, family: str) -> pd.DataFrame:
    t = mm[(mm.split == split) & (mm.slice == family) & mm.ci_low.notna()]
    return t[["slice_value", "metric", "n", "value", "ci_low", "ci_high", "gap", "gap_low", "gap_high",
              "gap_reference", "too_small", "flagged"]].sort_values(["metric", "slice_value"]).reset_index(drop=True)


def _intended_use(run, info, chosen, cfg, policy) -> Section:
    s = Section("Intended use")
    s.p("This model helps clinicians triage skin referrals. It reads the skin photo and the referring clinician's "
        "note and suggests one of: " + ", ".join(info["classes"]) + ". Every suggestion comes with a deferral score: "
        "the estimated probability that a clinician should review it. Intended users are triage clinicians, who make "
        "the decision; the model never acts alone.")
    s.p("Out of scope: diagnosis, use without clinician review of deferred cases, patients or photo types unlike "
        "the training clinics, and any use of results from simulated data as evidence about real patients.")
    s.p(f"Identifiers: run {run['run_id']}, "
        f"dataset {run['dataset']}, model {chosen.model}, held-out clinic {run['heldout_clinic']}, deferral policy {policy}.")
    where = (f"clinic {cfg.val_clinic}, a training clinic kept out of training, so the figure estimates skill at "
             f"a new clinic" if cfg.val_clinic else "patients of the training clinics (an in-distribution figure)")
    s.p(f"How this model was chosen: among the run's {len(chosen.evidence)} models, the best macro F1 on the "
        f"validation cases ({p3(chosen.estimate)}; {where}). The held-out clinic played no part in the choice.")
    return s


def _data(d, info) -> Section:
    s = Section("Data and provenance")
    if info["simulated"]:
        s.p("The data are simulated (DermSynth): photos, notes, patients and clinics were generated by a program "
            "with known, documented effects, including a planted loss of lesion contrast on darker skin. Results "
            "show how the pipeline behaves; they say nothing about real patients and must not be used as clinical "
            "evidence.")
    else:
        s.p("The data come from the manifest the team ingested; the store keeps its provenance.")
    by = d["by"]
    s.p(f"Cases: {info['n_cases']:,} accepted, {info['n_rejected']:,} rejected at ingest; "
        f"{len(by['clinic'])} clinics, one of them held out entirely for testing.")
    fitz = by["fitzpatrick"].assign(fitzpatrick=lambda t: t["fitzpatrick"].map(
        lambda v: "unknown" if pd.isna(v) else str(int(v))))
    s.table(fitz.rename(columns={"fitzpatrick": "Fitzpatrick type", "n": "cases"}), "Cases by Fitzpatrick skin type")
    s.table(by["clinic"].rename(columns={"n": "cases"}), "Cases by clinic")
    return s


def _performance(d, model) -> Section:
    s = Section("Performance on the held-out clinic")
    m = d["metrics"]
    rows = []
    for name in dict.fromkeys((model,) + BASELINES):  # the chosen model first, once
        t = m[(m.model == name) & (m.split == "test")]
        row = {"model": name, "macro F1": ci(t[(t.slice == "overall") & (t.metric == "macro_f1")].iloc[0])}
        for _, r in t[t.metric == "category_accuracy"].iterrows():
            row[r["slice_value"]] = ci(r)
        rows.append(row)
    s.table(pd.DataFrame(rows), "Macro F1 and accuracy per category, with 95% patient-bootstrap intervals")
    comp = d["comparisons"]
    for _, r in comp[(comp.model == model) & (comp.split == "test")].iterrows():
        verdict = ("better than" if r["ci_low"] > 0 else "worse than" if r["ci_high"] < 0 else
                   "not distinguishable from")
        s.p(f"{model} is {verdict} {r['baseline']} on macro F1: difference {p3(r['value'])} "
            f"({p3(r['ci_low'])} to {p3(r['ci_high'])}).")
    return s


def _envelope(mm, target: float, policy: str) -> Section:
    s = Section("When the model is reliable")
    s.p(f"Target: accuracy of at least {pct(target)} on the cases the model does not defer, at policy {policy}, "
        "on the held-out clinic. A group is inside the envelope when the lower end of its interval reaches the "
        "target, outside when the upper end stays below it, and undecided otherwise.")
    acc = mm[(mm.split == "test") & (mm.metric == "accepted_accuracy") &
             mm.slice.isin(["overall", "fitzpatrick_group", "clinic", "category"])]
    inside = acc[acc.ci_low >= target]
    outside = acc[acc.ci_high < target]
    undecided = acc[~acc.index.isin(inside.index) & ~acc.index.isin(outside.index)]
    for rows, words in ((inside, "Inside the envelope"), (outside, "Outside the envelope (every output needs review)"),
                        (undecided, "Undecided (the interval straddles the target)")):
        if len(rows):
            s.p(f"{words}: " + "; ".join(f"{_name(r)} {ci(r)}" for _, r in rows.iterrows()) + ".")
    if inside.empty:
        s.p("No group is inside the envelope at this policy: the model should not be used without review there.")
    return s


def _name(r) -> str:
    return {"overall": "all patients", "fitzpatrick_group": f"skin types {r['slice_value']}",
            "clinic": r["slice_value"], "category": f"true {r['slice_value']}"}[r["slice"]]


def _deferral(mm, pol, d, model, policy) -> Section:
    s = Section("Where deferral fires")
    t = pol[pol.split == "test"]
    overall = t[t.slice == "overall"].iloc[0]
    s.p(f"At policy {policy} (threshold {p3(overall['threshold'])} on the deferral score), the model defers "
        f"{pct(overall['defer_rate'])} of the held-out clinic's cases; accuracy on the rest is "
        f"{pct(overall['accepted_accuracy'])}, and {pct(overall['missed_urgent_rate'])} of urgent cases are "
        f"called non-urgent and not deferred.")
    rows = t[["slice_value", "n", "defer_rate", "accepted_accuracy", "missed_urgent_rate"]].copy()
    for c in ("defer_rate", "accepted_accuracy", "missed_urgent_rate"):
        rows[c] = rows[c].map(pct)
    s.table(rows.rename(columns={"slice_value": "group"}), "Deferral by skin-tone group (held-out clinic)")
    cat = mm[(mm.split == "test") & (mm.slice == "category") & (mm.metric == "defer_rate")]
    s.p("Deferral rate by true category: " + ", ".join(f"{r['slice_value']} {pct(r['value'])}"
                                                      for _, r in cat.iterrows()) + ".")
    def by_clinic(split: str) -> str:
        rows = mm[(mm.split == split) & (mm.slice == "clinic") & (mm.metric == "defer_rate")]
        return ", ".join(f"{r['slice_value']} {pct(r['value'])}" for _, r in rows.iterrows())
    s.p(f"Deferral rate by training clinic (the held-out clinic is the table above): on the calibration cases "
        f"(out of fold) {by_clinic('calib')}; on the validation cases {by_clinic('val')}.")
    a = d["attributions"]
    a = a[(a.model == model) & (a.method == "integrated_gradients")]
    if len(a):
        s.p(f"{len(a)} cases of this model were explained (the deferred and misclassified ones first); the "
            "dashboard's Cases page shows each of them.")
        s.figure("example", "One explained case: the photo, where Integrated Gradients and Occlusion found "
                            "evidence, and the note's words (red for the suggested category, blue against).")
    return s


def _bias(mm, d, model, min_n: int) -> Section:
    s = Section("Known biases by skin tone", new_page=True)
    for name in dict.fromkeys((model, "image_only")):
        m = d["metrics"]
        g = m[(m.model == name) & (m.split == "test") & (m.slice == "fitzpatrick_group") & (m.metric == "accuracy")]
        flagged = g[g.flagged]
        small = g[g.too_small]
        if len(flagged):
            worst = flagged.sort_values("gap").iloc[0]
            s.p(f"{name}: accuracy of {worst['slice_value']} is lower than {worst['gap_reference']} by "
                f"{p3(-worst['gap'])} ({p3(-worst['gap_high'])} to {p3(-worst['gap_low'])}); the interval excludes "
                f"zero, so this gap is unlikely to be chance.")
        else:
            s.p(f"{name}: no skin-tone group's accuracy gap to the best-served group has an interval that excludes "
                f"zero; the data do not show a gap (which is not proof that none exists).")
        if len(small):
            s.p(f"{name}: too small to judge (fewer than {min_n} cases): " +
                ", ".join(f"{r['slice_value']} (n={int(r['n'])})" for _, r in small.iterrows()) + ".")
    fitz = d["by"]["fitzpatrick"].dropna(subset=["fitzpatrick"])
    rare = fitz.sort_values("n")["fitzpatrick"].astype(int).head(2).tolist()
    s.p(f"The least represented skin types in the data are types {' and '.join(map(str, sorted(rare)))} (counts in "
        "Data and provenance): estimates for them rest on fewer patients, so their intervals are wider and a "
        "real gap can go undetected.")
    g = mm[(mm.split == "test") & (mm.slice == "fitzpatrick_group") & mm.metric.isin(["accuracy", "ece", "defer_rate"])]
    table = g.assign(shown=g.apply(ci, axis=1)).pivot_table(index="slice_value", columns="metric", values="shown",
                                                           aggfunc="first").reset_index()
    s.table(table.rename(columns={"slice_value": "group"}), f"{model} by skin-tone group, held-out clinic")
    s.figure("reliability", "Reliability by skin-tone group: predicted probability against observed accuracy.")
    s.figure("risk_coverage", "Error rate of the cases kept as more are deferred, by skin-tone group.")
    return s


def _calibration(d, model, get, conformal_method: str, alpha: float) -> Section:
    s = Section("Calibration under the new clinic, and monitoring", new_page=True)
    cal = d["calibrators"].set_index("model")
    before, after = get("test", "overall", "all", "ece_uncalibrated"), get("test", "overall", "all", "ece")
    calib_before = get("calib", "overall", "all", "ece_uncalibrated")
    calib_after = get("calib", "overall", "all", "ece")
    s.p(f"Calibration ({cal.loc[model, 'method']}) was fitted on the training clinics. There it changed the "
        f"expected calibration error from {p3(calib_before['value'])} to {p3(calib_after['value'])}. On the held-out "
        f"clinic it is {p3(after['value'])} against {p3(before['value'])} before calibration: "
        + ("calibration did not carry over to the new clinic." if after["value"] > before["value"] else
           "calibration still helped at the new clinic."))
    conf = d["conformal"]
    c = conf[(conf.model == model) & (conf.split == "test") & (conf.method == conformal_method) &
             (conf["mode"] == "mondrian")]
    s.p(f"Prediction sets meant to contain the right category {pct(1 - alpha)} of the time did so "
        f"at the new clinic for: " + ", ".join(f"{r['slice_value']} {pct(r['coverage'])}" for _, r in c.iterrows())
        + ".")
    s.p("After deployment, monitor monthly per skin-tone group and clinic: the deferral rate, the accuracy of "
        "non-deferred cases on audited samples, and missed urgent cases. Recalibrate on local data when the "
        "observed accuracy of non-deferred cases falls outside the intervals above, or when a new clinic, camera "
        "or referral pattern is added.")
    return s


def _crossref() -> Section:
    s = Section("Model Card and TRIPOD+AI")
    s.table(pd.DataFrame([
        ("Intended use", "Intended use; out-of-scope uses", "Intended use and users; context"),
        ("Data and provenance", "Training and evaluation data", "Data sources; participants; sample size"),
        ("Performance on the held-out clinic", "Quantitative analyses", "Model performance with uncertainty"),
        ("When the model is reliable; Where deferral fires", "Caveats and recommendations",
         "Interpretation; use alongside clinicians"),
        ("Known biases by skin tone", "Ethical considerations; disaggregated results", "Fairness; subgroups"),
        ("Calibration under the new clinic, and monitoring", "Caveats and recommendations",
         "Calibration; model updating and monitoring"),
    ], columns=["section", "Model Card (Mitchell et al.)", "TRIPOD+AI topic"]), "Where each reporting item is covered")
    return s

