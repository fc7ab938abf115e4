"""Page 3 of the handoff document: where deferral fires, why, how good the deferral score is,
and what each stored policy promised against what it achieved."""
from __future__ import annotations

import json

import pandas as pd

from trainer.report.context import POLICY_NAMES, Context
from trainer.report.document import Section
from trainer.uncertainty.policies import promise


def page(ctx: Context) -> list[Section]:
    return [_where(ctx), _policies(ctx), _examples(ctx)]


def _where(ctx: Context) -> Section:
    t = ctx.t
    s = Section("Where deferral fires", new_page=True)
    new, val = ctx.policy_row(split="test"), ctx.policy_row(split="val")
    acc_all = ctx.metric("test", "overall", "all", "accuracy")
    s.p(f"At the policy {POLICY_NAMES.get(ctx.policy, ctx.policy)} (defer when the deferral score is at least "
        f"{t.num('policies', new, 'threshold')}) the model sends {t.num('policies', new, 'defer_rate', 'pct')} of "
        f"the new clinic's referrals to a clinician"
        + (f" ({t.num('policies', val, 'defer_rate', 'pct')} at the training clinics)" if val is not None else "")
        + ".")
    wrong = t.factor("metrics", acc_all, "value", complement=True)
    kept, kept_wrong = t.factor("policies", new, "defer_rate", True), t.factor("policies", new, "accepted_accuracy",
                                                                             True)
    left = (1 - new["defer_rate"]) * (1 - new["accepted_accuracy"])
    s.p(f"Of {t.fixed('100', 'the unit of the bottom line')} referrals at the new clinic the model suggests "
        f"{t.per100(wrong)} wrongly; after deferral {t.per100(kept, kept_wrong)} wrong suggestions are left for no "
        "clinician to see: "
        + ("deferral catches fewer than half of the errors." if left > (1 - acc_all["value"]) / 2 else
           "deferral catches most of the errors."))
    auroc, ece = ctx.metric("test", "overall", "all", "defer_auroc"), ctx.metric("test", "overall", "all", "defer_ece")
    auroc_val, ece_val = ctx.metric("val", "overall", "all", "defer_auroc"), ctx.metric("val", "overall", "all",
                                                                                          "defer_ece")
    if auroc is not None and ece is not None:
        s.p(f"How good the deferral score is at the new clinic: it ranks a case that needs review above one that "
            f"does not with probability {t.num('metrics', auroc, 'value')} (AUROC; a half is chance) and its stated "
            f"chance of needing review is off by {t.num('metrics', ece, 'value')} on average (ECE)"
            + (f"; at the training clinics {t.num('metrics', auroc_val, 'value')} and "
               f"{t.num('metrics', ece_val, 'value')}" if auroc_val is not None and ece_val is not None else "")
            + ".")
    reasons = _reasons(ctx)
    if len(reasons):
        s.table(reasons, "Why the new clinic's deferred cases scored high: the rule, or the signals that add most "
                         "to the score")
    s.figure("risk_coverage", "Error rate of the cases the model keeps against the share it keeps, by skin-tone "
                              "group at the new clinic; the vertical line marks the policy's operating point.")
    return s


def _reasons(ctx: Context) -> pd.DataFrame:
    t, rows = ctx.t, ctx.d["reasons"]
    rows = rows[rows["reason"] != "missed urgent"]
    return pd.DataFrame([{"reason": r["reason"], "deferred cases": t.num("deferral_reasons", r, "n", "int"),
                          "share of deferrals": t.num("deferral_reasons", r, "share", "pct")}
                         for _, r in rows.iterrows()])


def _promise(ctx: Context, policy: str) -> str:
    """The policy's promise in words (judged by ``_kept``)."""
    t, cfg = ctx.t, ctx.cfg
    return {
        "review_budget": f"review at most {t.config(cfg, 'review_budget', 'pct')}",
        "target_accuracy": f"{t.config(cfg, 'target_accuracy', 'pct')} right when kept",
        "urgent_sensitivity": f"{t.config(cfg, 'urgent_sensitivity', 'pct')} of urgent caught",
        "equal_group_accuracy": "the same accuracy kept for every skin tone",
        "conformal_set": "defer when unsure between categories",
    }.get(policy, "a threshold chosen by hand")


def _kept(ctx: Context, policy: str, row: pd.Series) -> str:
    """Whether the policy's stored promise (``policies.promise``) holds at the new clinic."""
    params = row["params"] if isinstance(row["params"], dict) else json.loads(row["params"] or "{}")
    groups = ctx.policy_rows(policy, "test", "fitzpatrick_group").to_dict("records")
    held = promise(params).held(row, groups)
    return "no single figure" if held is None else "kept" if held else "broken"


def _policies(ctx: Context) -> Section:
    t = ctx.t
    s = Section("The stored policies: promise against result")
    rows = []
    for policy in dict.fromkeys([ctx.policy, *sorted(set(ctx.d["policies"]["policy"]))]):
        new, val = ctx.policy_row(policy, "test"), ctx.policy_row(policy, "val")
        if new is None:
            continue
        rows.append({"policy": POLICY_NAMES.get(policy, policy), "promise": _promise(ctx, policy),
                     "reviewed (train / new)": f"{_n(t, val, 'defer_rate')} / {_n(t, new, 'defer_rate')}",
                     "right when kept": f"{_n(t, val, 'accepted_accuracy')} / {_n(t, new, 'accepted_accuracy')}",
                     "urgent missed": f"{_n(t, val, 'missed_urgent_rate')} / {_n(t, new, 'missed_urgent_rate')}",
                     "promise at new clinic": _kept(ctx, policy, new)})
    s.table(pd.DataFrame(rows), "Each policy at the training clinics / at the new clinic: share reviewed, share "
                                "right of the cases kept, share of urgent patients called non-urgent and not reviewed")
    return s


def _n(t, row, column: str) -> str:
    return "n/a" if row is None or pd.isna(row[column]) else t.num("policies", row, column, "pct")


def _examples(ctx: Context) -> Section:
    t, cases = ctx.t, ctx.d["cases"]
    s = Section("Two cases from the new clinic")
    if cases.empty:
        s.p("The held-out clinic's cases could not be replayed for this run, so no example is shown.")
        return s
    missed = cases[cases["missed"]].sort_values(["defer_score", "case_id"])
    if len(missed):
        r = missed.iloc[0]
        s.p(f"Missed and not deferred: case {r['case_id']}, truly {r['y_true']}, suggested {r['y_pred']} with "
            f"deferral score {t.num('deferral_cases', r, 'defer_score')}, below the threshold, so no clinician "
            "would have seen it; the lowest-scored of "
            f"{t.num('deferral_reasons', ctx.reason('missed urgent'), 'n', 'int')}"
            " urgent cases missed this way.")
    else:
        s.p("No urgent case at the new clinic was called non-urgent without being deferred.")
    deferred = cases[cases["deferred"] & (cases["y_true"] != cases["y_pred"])].sort_values(["defer_score", "case_id"])
    if len(deferred):
        r = deferred.iloc[len(deferred) // 2]  # a typical deferred error, not the most extreme
        s.p(f"Deferred: case {r['case_id']}, truly {r['y_true']}, suggested {r['y_pred']}, deferral score "
            f"{t.num('deferral_cases', r, 'defer_score')}; main reason: {r['reason']}. A clinician reviews it.")
    a = ctx.d["attributions"]
    if len(a) and ((a.model == ctx.model) & (a.method == "integrated_gradients")).any():
        s.figure("example", "One explained case (the most deferred explained one): the photo, where Integrated "
                            "Gradients and Occlusion found evidence (yellow: for the suggested category, blue: "
                            "against), and the note's words tinted the same way. Explanations show what the model "
                            "used, not whether it is right.")
    return s
