"""The clinical handoff document's content, generated from the store: every number is read
from it through a ``Trace`` (``trace.py``) and every statement that depends on a result is
chosen by that result.

``build(inputs, policy)`` returns a ``Document`` (``document.py``) of five pages from the run's
tables as ``trainer.commands.report.read_inputs`` reads them; ``render.py`` writes it. Page 1
is here; the others are in ``reliability.py``, ``deferral.py``, ``skin_tone.py`` and ``safety.py``.
"""
from __future__ import annotations

import json

import pandas as pd

from trainer.evaluation.selection import select_model
from trainer.report import deferral, reliability, safety, skin_tone
from trainer.report.context import POLICY_NAMES, Context
from trainer.report.document import ChartSpec, Document, Section
from trainer.report.trace import Trace


def build(d: dict, policy: str | None = None, model: str | None = None) -> Document:
    """The document of one run. ``d``: the run's tables (metrics, policies, conformal,
    calibrators, comparisons, reliability_bins, risk_coverage, attributions, curve), ``run``,
    ``info`` (its dataset), ``config`` (its FitConfig), ``by`` and ``counts`` (case counts) and
    ``cases`` (the held-out clinic's cases at the policy, with their reasons). ``model``: a
    model the team picked instead of the run's choice (the document says so)."""
    run, info, cfg = d["run"], d["info"], d["config"]
    chosen = select_model(d["metrics"])  # on the training clinics, never on test
    policy = policy or cfg.default_policy
    ctx = Context(d, model or chosen.model, policy, Trace())
    if ctx.policy_row() is None:
        raise ValueError(f"Run {run['run_id']} has no policy {policy!r} for {ctx.model}; policies: "
                         f"{sorted(set(d['policies']['policy']))}.")
    sections = [_bottom_line(ctx), _intended_use(ctx, chosen), *reliability.page(ctx), *deferral.page(ctx),
                *skin_tone.page(ctx), *safety.page(ctx)]
    simulated = " (simulated data: not clinical evidence)" if info["simulated"] else ""
    footer = " | ".join([*(["SIMULATED DATA - not clinical evidence"] if info["simulated"] else []),
                         f"run {run['run_id']}", f"finished {str(run.get('finished_at') or '')[:10]}",
                         f"code {_code_version(run)}"])
    return Document(f"Clinical handoff: skin-referral triage, {ctx.model}{simulated}", ctx.model, sections,
                    _figures(ctx), _slices(ctx), footer, ctx.t)


def _code_version(run: dict) -> str:
    config = run["config"] if isinstance(run["config"], dict) else json.loads(run["config"])
    return str(config.get("code_version", "unknown"))


def _bottom_line(ctx: Context) -> Section:
    """Page 1's box: what happens to 100 referrals at the new clinic and at the training clinics."""
    t, s = ctx.t, Section("The bottom line")
    hundred = t.fixed("100", "the unit of the bottom line")
    rows = []
    for label, split, where in ((f"New clinic ({ctx.heldout}, never seen in training)", "test", "held-out clinic"),
                                ("Training clinics (validation cases)", "val", "training clinics")):
        pol, urgent = ctx.policy_row(split=split), ctx.count("urgent share", where)
        if pol is None or urgent is None:
            continue
        defer, acc = t.factor("policies", pol, "defer_rate"), t.factor("policies", pol, "accepted_accuracy", True)
        kept = t.factor("policies", pol, "defer_rate", True)
        share, missed = t.factor("case_counts", urgent, "share"), t.factor("policies", pol, "missed_urgent_rate")
        rows.append({"": label, "sent to a clinician": t.per100(defer), "decided by the model alone": t.per100(kept),
                     "of those, wrong": t.per100(kept, acc), "urgent patients": t.per100(share),
                     "urgent patients called non-urgent and not reviewed": t.per100(share, missed)})
    s.table(pd.DataFrame(rows), f"Of {hundred} referrals, at the policy {POLICY_NAMES.get(ctx.policy, ctx.policy)}",
            emphasis=True)
    s.p(_verdict(ctx))
    return s


def _verdict(ctx: Context) -> str:
    """The bottom line in words, chosen by whether the policy's promise held at the new clinic."""
    t, cfg = ctx.t, ctx.cfg
    new, val = ctx.policy_row(split="test"), ctx.policy_row(split="val")
    target = t.config(cfg, "target_accuracy", "pct")
    wrong_new = new["accepted_accuracy"] < cfg.target_accuracy
    wrong_val = val is not None and val["accepted_accuracy"] < cfg.target_accuracy
    acc_new = t.num("policies", new, "accepted_accuracy", "pct")
    if wrong_new:
        head = (f"Verdict: not ready for use at a new clinic without local validation. At {ctx.heldout} the model's "
                f"own decisions were right {acc_new} of the time against a promise of {target}")
        head += (f" ({t.num('policies', val, 'accepted_accuracy', 'pct')} at the training clinics)."
                 if val is not None else ".")
        head += (" The model's decisions fell short at the training clinics too." if wrong_val else "")
        return head + " Validate and recalibrate on the clinic's own labelled cases first (see Safety case)."
    return (f"Verdict: at {ctx.heldout} the model's own decisions were right {acc_new} of the time, meeting the "
            f"{target} target; validate on the clinic's own labelled cases before use all the same (see Safety case).")


def _intended_use(ctx: Context, chosen) -> Section:
    t, info, cfg = ctx.t, ctx.d["info"], ctx.cfg
    s = Section("Intended use")
    urgent = [c for c in info["classes"] if c in ctx.urgent]
    s.p("Purpose: to help triage clinicians sort skin referrals. From the skin photo and the referring clinician's "
        f"note the model suggests one of {t.constant('len(classes)', len(info['classes']), 'k')} categories: "
        + ", ".join(info["classes"]) + (f" ({', '.join(urgent)} urgent)" if urgent else "")
        + ". Each suggestion carries a deferral score, the estimated chance that a clinician should review it; "
          "cases above the policy's threshold go to a clinician. A clinician decides every case the model defers, "
          "and remains responsible for every case.")
    s.p(f"Population: {_population(ctx)}")
    s.table(_clinics(ctx), "Referrals by clinic and the part each played")
    s.table(_categories(ctx), "The categories covered, with the model's sensitivity (share of each category's "
                              "referrals suggested correctly)")
    s.p("Do not use: for categories other than those above; for diagnosis or treatment decisions; without a "
        "clinician reviewing deferred cases; at a clinic, camera or referral pathway that has not passed the local "
        "validation of the Safety case. Photo requirements: one in-focus, evenly lit photo of the lesion with no "
        "flash glare; "
        "the note should describe the lesion (an empty note removes half of the model's evidence).")
    where = (f"clinic {cfg.val_clinic}, a training clinic the models never trained on, so the figure estimates skill "
             f"at a new clinic" if cfg.val_clinic else "patients of the training clinics (an in-distribution figure)")
    test = ctx.metric("test", "overall", "all", "macro_f1")
    val = ctx.metric("val", "overall", "all", "macro_f1")
    k = t.constant('len(models)', len(chosen.evidence), 'k')
    if ctx.model == chosen.model:
        s.p(f"How the model was chosen: of the run's {k} models, the best macro F1 (balance of sensitivity and "
            f"precision across categories) on {where}: {t.ci('metrics', val)}. The held-out clinic played no part in "
            f"the choice; there the model reached {t.ci('metrics', test)}.")
    else:
        s.p(f"How the model was chosen: the team picked {ctx.model} for this document. The run's rule, the best macro "
            f"F1 of its {k} models on {where}, chooses {chosen.model}. {ctx.model} reached {t.ci('metrics', val)} "
            f"there and {t.ci('metrics', test)} at the held-out clinic, which played no part in either choice.")
    return s


def _categories(ctx: Context) -> pd.DataFrame:
    t, rows = ctx.t, []
    for c in ctx.d["info"]["classes"]:
        n, val, new = ctx.count("label", c), ctx.metric("val", "category", c, "category_accuracy"), \
            ctx.metric("test", "category", c, "category_accuracy")
        rows.append({"category": c, "urgent": "yes" if c in ctx.urgent else "no",
                     "referrals in the data": t.num("case_counts", n, "n", "int") if n is not None else "none",
                     "sensitivity, training clinics": t.num("metrics", val, "value", "pct") if val is not None
                     else "n/a",
                     "sensitivity, new clinic": t.num("metrics", new, "value", "pct") if new is not None else "n/a"})
    return pd.DataFrame(rows)


def _clinics(ctx: Context) -> pd.DataFrame:
    t, counts, cfg = ctx.t, ctx.d["counts"], ctx.cfg
    row, role = {"": "referrals"}, {"": "part"}
    for _, r in counts[counts["by"] == "clinic"].iterrows():
        row[r["value"]] = t.num("case_counts", r, "n", "int")
        role[r["value"]] = ("held out: the new clinic" if r["value"] == ctx.heldout else
                            "validation: chooses the model" if r["value"] == cfg.val_clinic else "training")
    return pd.DataFrame([row, role])


def _population(ctx: Context) -> str:
    t, info = ctx.t, ctx.d["info"]
    return (f"{t.num('case_counts', ctx.count('dataset', 'referrals'), 'n', 'int')} referrals from "
            f"{t.num('case_counts', ctx.count('dataset', 'clinics'), 'n', 'int')} clinics, "
            f"{ctx.heldout} held out entirely to test (skin-type mix under Known biases by skin tone). "
            + ("The data are simulated (DermSynth): photos, notes and patients were generated by a program with "
               "documented effects, including a loss of lesion contrast on darker skin. The figures show how the "
               "pipeline behaves, not how it would perform on real patients." if info["simulated"] else
               "The data come from the manifest the team ingested; the store keeps its provenance."))


def _figures(ctx: Context) -> dict[str, ChartSpec]:
    d, model = ctx.d, ctx.model
    bins, rc = d["reliability_bins"], d["risk_coverage"]
    pol = ctx.policy_row()
    mine = bins[(bins.model == model) & (bins.slice == "overall") & (bins.kind == "calibrated")]
    where = {"calib": "training clinics", "test": "new clinic"}
    return {
        "reliability_clinics": ChartSpec("reliability", "Reliability, training clinics against the new clinic",
                                         mine[mine.split.isin(list(where))].assign(
                                             slice_value=lambda f: f["split"].map(where))),
        "reliability": ChartSpec("reliability", "Reliability by skin-tone group, new clinic",
                                 bins[(bins.model == model) & (bins.split == "test") &
                                      (bins.slice == "fitzpatrick_group") & (bins.kind == "calibrated")]),
        "risk_coverage": ChartSpec("risk_coverage", "Error rate of the cases the model keeps, new clinic",
                                   rc[(rc.model == model) & (rc.split == "test") &
                                      rc.slice.isin(["overall", "fitzpatrick_group"])],
                                   marker=1 - float(pol["defer_rate"])),
    }


def _slices(ctx: Context) -> dict[str, pd.DataFrame]:
    mm = ctx.d["metrics"][ctx.d["metrics"].model == ctx.model]
    out = {}
    for split in ("test", "val"):
        for family in sorted(set(mm["slice"])):
            t = mm[(mm.split == split) & (mm.slice == family) & mm.ci_low.notna()]
            out[f"{ctx.model}_{split}_{family.replace(' ', '')}"] = t[
                ["slice_value", "metric", "n", "value", "ci_low", "ci_high", "gap", "gap_low", "gap_high",
                 "gap_reference", "too_small", "flagged"]].sort_values(["metric", "slice_value"]).reset_index(drop=True)
    return out
