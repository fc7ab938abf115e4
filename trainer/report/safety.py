"""Page 5 of the handoff document: the safety case. Hazards with their residual risk from the
run's numbers, the local validation protocol from the learning curve, monitoring with numeric
triggers for suspending use, incident reporting, a glossary and the reporting cross-reference."""
from __future__ import annotations

import pandas as pd

from trainer.evaluation.adaptation import CURVE_DRAWS, ECE_TARGET, TOLERANCE, smallest_k
from trainer.report.context import GROUPS, POLICY_NAMES, Context, group_name
from trainer.report.document import Section

AUDIT_SAMPLE = 100  # kept cases a month audited against a clinician's decision (monitoring)
DEFER_DRIFT = 0.10  # a monthly deferral rate this far from the validated one suspends use
GLOSSARY = (
    ("deferral score", "the model's estimate of the chance that a clinician should review its suggestion"),
    ("deferred / kept", "sent to a clinician / decided by the model alone"),
    ("policy", "the rule that turns the deferral score into deferrals (a threshold, or one per skin-tone group)"),
    ("sensitivity", "share of a category's cases the model suggests correctly"),
    ("macro F1", "balance of sensitivity and precision, averaged over categories (higher is better)"),
    ("ECE", "expected calibration error: average gap between stated confidence and observed accuracy"),
    ("AUROC", "chance that a case needing review scores above one that does not (a half is chance)"),
    ("interval", "the range (95% level) that holds the true figure in most repeated samples of patients"),
    ("envelope", "the groups where the model's own decisions meet the promised accuracy"),
    ("Fitzpatrick type", "skin type I (palest) to VI (darkest); groups I-II, III-IV, V-VI"),
)
CROSSREF = (
    ("Intended use, population (p1)", "Intended use; out-of-scope", "Intended use, users, setting", "covered"),
    ("Data (p1, p4)", "Training and evaluation data", "Data sources, participants, sample size", "partly: no "
     "missing-data analysis"),
    ("Reliability, skill (p2)", "Quantitative analyses", "Performance with uncertainty, calibration", "covered"),
    ("Deferral (p3)", "Caveats and recommendations", "Use alongside clinicians", "covered"),
    ("Skin tone (p4)", "Disaggregated results; ethics", "Fairness, subgroups", "covered"),
    ("Safety (p5)", "Caveats", "Model updating, monitoring", "covered"),
    ("-", "Model details (architecture)", "Model specification, hyperparameters", "not covered: see README"),
    ("-", "-", "Patient and public involvement; sample-size rationale; registration", "not covered"),
)


def page(ctx: Context) -> list[Section]:
    return [_hazards(ctx), _protocol(ctx), _monitoring(ctx), _glossary(ctx)]


def _hazards(ctx: Context) -> Section:
    t = ctx.t
    s = Section("Safety case", new_page=True)
    new, net = ctx.policy_row(split="test"), ctx.policy_row("urgent_sensitivity", "test")
    val = ctx.policy_row(split="val")
    missed = (f"{t.per100(t.factor('policies', new, 'missed_urgent_rate'))} of "
              f"{t.fixed('100', 'the unit of the bottom line')} urgent patients at the new clinic")
    if net is not None:
        missed += f" ({t.per100(t.factor('policies', net, 'missed_urgent_rate'))} at the urgent safety net)"
    tone = ctx.metrics("test", "fitzpatrick_group", "missed_urgent_rate")
    tone = tone[tone["slice_value"].isin(GROUPS) & tone["value"].notna()].sort_values("value")
    rows = [
        ("Missed urgent case (e.g. cancer)", "urgent-not-ruled-out rule; the urgent safety net policy",
         f"{missed} are called non-urgent and not reviewed"),
        ("Automation bias: a wrong suggestion accepted", "deferral; clinicians see the score; monthly audit",
         f"{t.per100(t.factor('policies', new, 'accepted_accuracy', True))} of "
         f"{t.fixed('100', 'the unit of the bottom line')} cases the model keeps are wrong"),
        ("Skin-tone disparity", "audit per group; equal-accuracy policy; local validation per group",
         (f"urgent missed {group_name(tone.iloc[-1]['slice_value'])} "
          f"{t.num('metrics', tone.iloc[-1], 'value', 'pct')}, {group_name(tone.iloc[0]['slice_value'])} "
          f"{t.num('metrics', tone.iloc[0], 'value', 'pct')} (p4)") if len(tone) > 1 else "not measurable"),
        ("Camera change, poor photo", "photo sharpness and exposure feed the deferral score",
         _shifted(ctx, "blurred_photo", "photos blurred") + _share(ctx, "poor photo")),
        ("Empty or unusable note", "an empty note feeds the deferral score; ingest flags it",
         _shifted(ctx, "empty_note", "notes empty") + _share(ctx, "empty note")),
        ("A new clinic", "local validation before go-live (below); monitoring",
         f"right when kept {t.num('policies', val, 'accepted_accuracy', 'pct')} at the training clinics, "
         f"{t.num('policies', new, 'accepted_accuracy', 'pct')} at the new clinic" if val is not None else "n/a"),
    ]
    s.table(pd.DataFrame(rows, columns=["hazard", "mitigation", "residual risk in this run"]), "Hazards")
    return s


def _shifted(ctx: Context, metric: str, words: str) -> str:
    """'61.0% of the new clinic's photos blurred (5.0% at the training clinics); ' from the shift report."""
    shift = ctx.d["shift"]
    rows = shift[(shift["metric"] == metric) & (shift["model"] == ctx.model)] if len(shift) else shift
    if rows.empty:
        return ""
    r = rows.iloc[0]
    return (f"{ctx.t.num('shift', r, 'value', 'pct')} of the new clinic's {words} "
            f"({ctx.t.num('shift', r, 'reference', 'pct')} at the training clinics); ")


def _share(ctx: Context, reason: str) -> str:
    row = ctx.reason(reason)
    if row is None:
        return "no deferral at the new clinic had this as its main reason"
    return f"main reason for {ctx.t.num('deferral_reasons', row, 'share', 'pct')} of the new clinic's deferrals"


def _protocol(ctx: Context) -> Section:
    t, cfg = ctx.t, ctx.cfg
    s = Section("Local validation before go-live")
    curve = ctx.d["curve"]
    curve = curve[(curve["model"] == ctx.model) & (curve["select_method"] == "random")] if len(curve) else curve
    if curve.empty:
        s.p(f"No learning curve is stored for this run and {ctx.heldout}; make it with `python -m trainer adapt "
            f"--run RUN --clinic CLINIC --curve` before writing the protocol.")
        return s
    first = smallest_k(curve)
    names = {"defer_ece": "deferral score ECE", "urgent_caught": "urgent caught", "accepted_accuracy":
             "right when kept", "coverage": "category sets"}
    parts = [f"{names[m]} from k = {t.constant(f'smallest k: {m}', k, 'k')}" if pd.notna(k) else
             f"{names[m]} at no k tried" for m, k in first.items() if m in names]
    need = max((k for k in first.values() if pd.notna(k)), default=None)
    s.p(f"Label whole patients' referrals at the clinic, at random, and refit the rules on them with `python -m "
        f"trainer adapt --labels K` (no retraining). At {ctx.heldout}, over "
        f"{t.constant('CURVE_DRAWS', CURVE_DRAWS, 'k')}"
        " draws per k, the promises held " + "; ".join(parts) + ". "
        + (f"Plan for at least {t.constant('largest smallest k', need, 'k')} labelled referrals"
           f"{_workload(ctx, curve, need)}. "
           if need else "")
        + f"Pass criteria on the clinic's other cases: deferral score ECE at most "
        f"{t.constant('ECE_TARGET', ECE_TARGET, 'p3')}; urgent caught within "
        f"{t.constant('TOLERANCE urgent', TOLERANCE['urgent_caught'][0], 'pct')} of "
        f"{t.config(cfg, 'urgent_sensitivity', 'pct')}; right when kept within "
        f"{t.constant('TOLERANCE accuracy', TOLERANCE['accepted_accuracy'], 'pct')} of "
        f"{t.config(cfg, 'target_accuracy', 'pct')}. Failing any: do not go live.")
    without = _without_labels(ctx)
    if without:
        s.p(without)
    return s


LABEL_FREE = {  # correction -> (its metric, words), each judged against the clinic's labels by `shift`
    "weighted_conformal:outputs": ("coverage", "category sets covered"),
    "weighted_thresholds:outputs:target_accuracy": ("accepted_accuracy", "right when kept"),
    "weighted_thresholds:outputs:urgent_sensitivity": ("urgent_caught", "urgent caught"),
}


def _without_labels(ctx: Context) -> str:
    """What the corrections that need no labels did at the clinic, judged on its labels."""
    t, c = ctx.t, ctx.d["corrections"]
    parts, reached = [], []
    for correction, (metric, words) in LABEL_FREE.items():
        rows = c[(c["model"] == ctx.model) & (c["correction"] == correction) & (c["metric"] == metric) &
                 (c["slice_value"] == "all")] if len(c) else c
        if rows.empty or rows.iloc[0][["before", "after", "target"]].isna().any():
            continue
        r = rows.iloc[0]
        parts.append(f"{words} {t.num('corrections', r, 'before', 'pct')} to {t.num('corrections', r, 'after', 'pct')}"
                     f" (promise {t.num('corrections', r, 'target', 'pct')})")
        reached.append(r["after"] >= r["target"] - 1e-9)
    if not parts:
        return ""
    verdict = ("None reached its promise: label-free corrections do not replace the labelled validation above."
               if not any(reached) else
               "Not every promise was reached: label-free corrections do not replace the labelled validation above."
               if not all(reached) else
               "Each reached its promise here, but only the clinic's labels showed it: keep the labelled validation.")
    return ("Without labels: re-weighting the calibration cases towards the clinic (judged afterwards on its "
            "labels) moved " + "; ".join(parts) + ". " + verdict)


def _workload(ctx: Context, curve: pd.DataFrame, k) -> str:
    """', after which the policies defer ...' at ``k`` labelled cases (mean over draws)."""
    rows = curve[(curve["k"] == k) & (curve["metric"] == "defer_rate") & (curve["slice"] == "policy")]
    if rows.empty:
        return ""
    return ("; after refitting on them the policies send " +
            ", ".join(f"{ctx.t.num('adaptation_curve', r, 'value', 'pct')} "
                      f"({POLICY_NAMES.get(r['slice_value'], r['slice_value'])})"
                      for _, r in rows.sort_values("slice_value").iterrows()) + " of referrals to a clinician")


def _monitoring(ctx: Context) -> Section:
    t, cfg = ctx.t, ctx.cfg
    s = Section("Monitoring, suspension and incidents")
    val = ctx.policy_row(split="val")
    s.p(f"Monthly, per skin-tone group: audit {t.constant('AUDIT_SAMPLE', AUDIT_SAMPLE, 'k')} kept cases against "
        "a clinician's decision, count urgent patients found later to have been missed, and track the deferral "
        "rate. Suspend use when the audited accuracy falls more than "
        f"{t.constant('TOLERANCE accuracy', TOLERANCE['accepted_accuracy'], 'pct')} below the promised "
        f"{t.config(cfg, 'target_accuracy', 'pct')} in any group, when a missed urgent patient is found, or when the "
        f"deferral rate moves by more than {t.constant('DEFER_DRIFT', DEFER_DRIFT, 'pct')} of referrals from its "
        "validated value"
        + (f" ({t.num('policies', val, 'defer_rate', 'pct')} at the training clinics)" if val is not None else "")
        + "; then re-run the local validation. Report every missed urgent case, harm or near miss to the "
          "service's clinical safety officer and the national device regulator, with the case id, run id and "
          "model (never the note or patient identifiers).")
    s.p(f"Document control: generated from the store by `python -m trainer report`; run {ctx.d['run']['run_id']}; "
        "owner: the deploying service's clinical safety officer, who signs it before use (unsigned here).")
    return s


def _glossary(ctx: Context) -> Section:
    s = Section("Glossary and reporting checklists")
    s.table(pd.DataFrame(GLOSSARY, columns=["term", "meaning"]), "Words used in this document")
    s.table(pd.DataFrame(CROSSREF, columns=["here", "Model Card (Mitchell et al.)", "TRIPOD+AI", "status"]),
            "Where each reporting item is covered, and what is not")
    return s
