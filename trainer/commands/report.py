"""``python -m trainer report``: the clinical handoff document of a run, from the store.

``write_report(db, run_id, out)`` writes handoff.pdf, handoff.md, their figures and slices/
(every slice table as CSV and Markdown). The content is built by ``trainer.report.content``
from the tables read here, and written by ``trainer.report.render``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from data_store.fitzpatrick import fitzpatrick_group, fitzpatrick_type
from data_store.store import TriageStore
from trainer.config import run_config
from trainer.evaluation.selection import select_model
from trainer.report.content import build
from trainer.report.render import figures, to_markdown, to_pdf

TABLES = ("metrics", "policies", "conformal", "calibrators", "comparisons", "reliability_bins", "risk_coverage")


def read_inputs(db, run_id: str, policy: str | None = None, model: str | None = None) -> dict:
    """Everything the document is built from: the run's tables, attributions, the held-out
    clinic's learning curve, label-free shift report and corrections, the run, its dataset,
    its settings, case counts (``counts``: by a column, and the skin-tone mix and urgent share
    of the training and held-out clinics), the held-out clinic's cases at ``policy`` with the
    reason each scores as it does, and a control run without the skin-tone effect (or None).
    ``model``: the model the document reports (default: the one the run chose on val)."""
    with TriageStore(db, read_only=True) as store:
        run = store.read_run(run_id)
        info = store.read_dataset(run["dataset"])
        out = {t: store.read_table(t, run_id) for t in TABLES}
        out["attributions"] = store.read_attributions(run_id)
        out["curve"] = store.read_curve(run_id, run["heldout_clinic"])
        out["shift"] = store.read_shift(run_id, run["heldout_clinic"])
        out["corrections"] = store.read_corrections(run_id, run["heldout_clinic"])
        out["by"] = {k: store.count_cases(run["dataset"], k) for k in ("clinic", "fitzpatrick", "label")}
        mix = store.count_cases(run["dataset"], ("clinic", "fitzpatrick", "label"))
        out["control"] = control_run(store, info)
    cfg = run_config(run["config"])
    model = model or select_model(out["metrics"]).model
    out["counts"] = case_counts(mix, run["heldout_clinic"], _urgent(info))
    out["cases"] = deferral_cases(db, run_id, run["heldout_clinic"], model, policy or cfg.default_policy)
    out["reasons"] = deferral_reasons(out["cases"])
    return {**out, "run": run, "info": info, "config": cfg}


def control_run(store: TriageStore, info: dict) -> dict | None:
    """The newest complete run on a simulated dataset made like ``info``'s (same classes) but
    with no planted skin-tone effect (its generator's ``tone_effect`` is 0): its run id,
    dataset and metrics. None when there is none, or when ``info`` plants no effect."""
    own = _generator(info)
    if not info["simulated"] or not own.get("tone_effect"):
        return None
    runs = store.list_runs()
    for _, r in runs[runs["status"] == "complete"].iterrows():  # newest first
        other = store.read_dataset(r["dataset"])
        if other["simulated"] and _generator(other).get("tone_effect") == 0 and \
                list(other["classes"]) == list(info["classes"]):
            return {"run_id": r["run_id"], "dataset": r["dataset"], "metrics": store.read_table("metrics", r["run_id"])}
    return None


def _generator(info: dict) -> dict:
    """The simulator's settings from the dataset's sidecar (dataset.json beside its manifest); {} without one."""
    try:
        return json.loads((Path(info["manifest_path"]).parent / "dataset.json").read_text()).get("generator") or {}
    except (OSError, ValueError, AttributeError):
        return {}


def _urgent(info: dict) -> list[str]:
    return [] if info["urgent_classes"] is None else list(info["urgent_classes"])


def case_counts(mix: pd.DataFrame, heldout: str, urgent: list[str]) -> pd.DataFrame:
    """Rows (by, value, n, share): the skin-tone group mix of the training clinics and of the
    held-out clinic (share of the clinics' cases), and the urgent share of each."""
    mix = mix.assign(where=np.where(mix["clinic"] == heldout, "held-out clinic", "training clinics"),
                     group=fitzpatrick_group(mix["fitzpatrick"]), urgent=mix["label"].isin(urgent))
    rows = [{"by": "dataset", "value": "referrals", "n": int(mix["n"].sum()), "share": 1.0},
            {"by": "dataset", "value": "clinics", "n": mix["clinic"].nunique(), "share": 1.0}]
    for value, n in mix.assign(type=fitzpatrick_type(mix["fitzpatrick"])).groupby("type")["n"].sum().items():
        rows.append({"by": "fitzpatrick", "value": value, "n": int(n), "share": n / mix["n"].sum()})
    for value, n in mix.groupby("clinic")["n"].sum().items():
        rows.append({"by": "clinic", "value": value, "n": int(n), "share": n / mix["n"].sum()})
    for value, n in mix.groupby("label")["n"].sum().items():
        rows.append({"by": "label", "value": value, "n": int(n), "share": n / mix["n"].sum()})
    for where, g in mix.groupby("where"):
        total = g["n"].sum()
        for value, n in g.assign(type=fitzpatrick_type(g["fitzpatrick"])).groupby("type")["n"].sum().items():
            rows.append({"by": f"skin type at the {where}", "value": value, "n": int(n), "share": n / total})
        for group, n in g.groupby("group")["n"].sum().items():
            rows.append({"by": f"skin-tone group at the {where}", "value": group, "n": int(n), "share": n / total})
        rows.append({"by": "urgent share", "value": where, "n": int(g.loc[g["urgent"], "n"].sum()),
                     "share": g.loc[g["urgent"], "n"].sum() / total})
    return pd.DataFrame(rows)


def deferral_reasons(cases: pd.DataFrame) -> pd.DataFrame:
    """(reason, n, share): the deferred cases by the reason of their score, share of the deferred
    (most frequent first), then the row "missed urgent": urgent cases missed and not deferred."""
    if cases.empty:
        return pd.DataFrame(columns=["reason", "n", "share"])
    deferred = cases[cases["deferred"]]
    counts = deferred["reason"].value_counts()
    rows = pd.DataFrame({"reason": counts.index, "n": counts.to_numpy(),
                         "share": counts.to_numpy() / max(len(deferred), 1)})
    missed = pd.DataFrame([{"reason": "missed urgent", "n": int(cases["missed"].sum()), "share": float("nan")}])
    return pd.concat([rows, missed], ignore_index=True)


def deferral_cases(db, run_id: str, clinic: str, model: str, policy: str) -> pd.DataFrame:
    """The held-out ``clinic``'s cases as ``model``'s rules see them, at ``policy``: model,
    case_id, y_true, y_pred, group, defer_score, deferred, reason (why the score is what it
    is), urgent (true class urgent), missed (urgent, called non-urgent and not deferred).
    Empty when the policy is not stored or the clinic's cases cannot be replayed."""
    from trainer.commands.adapt import AdaptError, clinic_cases
    from trainer.posthoc.replay import rule_outputs

    try:
        rules, cases, urgent, info = clinic_cases(db, run_id, clinic, model=model)
    except AdaptError:
        return pd.DataFrame()
    out = rule_outputs(rules, cases.probs, urgent, cases.single, cases.per_case, cases.groups, cases.u)
    if policy not in out["decisions"]:
        return pd.DataFrame()
    pred = out["probs"].argmax(1)
    deferred = out["decisions"][policy]
    classes = np.asarray(info["classes"])
    return pd.DataFrame({"model": model, "case_id": info["case_ids"], "y_true": classes[cases.y],
                         "y_pred": classes[pred],
                         "group": cases.groups, "defer_score": out["defer_score"], "deferred": deferred,
                         "reason": rules.scorer.reasons(out["signals"], out["doubtful_rule_out"]),
                         "urgent": urgent[cases.y], "missed": urgent[cases.y] & ~urgent[pred] & ~deferred})


def example_figure(db, run_id: str, model: str, reasons: pd.Series | None = None):
    """The stored attribution of the model's most deferred explained case with a note, drawn,
    and its case id; (None, None) when there is none, (None, case id) when its photo is unreadable."""
    from data_store.images import load_rgb
    from trainer.explain.figures import attribution_figure
    from trainer.explain.records import example_attribution

    with TriageStore(db, read_only=True) as store:
        run = store.read_run(run_id)
        attr = store.read_attributions(run_id, model)
        preds = store.read_predictions(run_id, model).set_index("case_id")
        if attr.empty:
            return None, None
        row, occ = example_attribution(attr, preds["defer_score"])
        case = store.read_case(run["dataset"], row["case_id"])
        simulated = " (simulated)" if store.read_dataset(run["dataset"])["simulated"] else ""
    pred = preds.loc[row["case_id"]]
    share = json.loads(row["modality_share"])
    why = f" (main reason: {reasons[row['case_id']]})" if reasons is not None and row["case_id"] in reasons else ""
    title = (f"{model}, case {row['case_id']}{simulated}: suggested {row['target_class']}, true {pred['y_true']}, "
             f"deferral score {pred['defer_score']:.2f}{why}; photo {share['image']:.0%}, note {share['text']:.0%} "
             "of the attribution")
    try:
        figure = attribution_figure(lambda side: load_rgb(case["image_path"], side), row, occ, title)
    except OSError:
        return None, row["case_id"]
    return figure, row["case_id"]


def write_report(db, run_id: str, out: str | Path, policy: str | None = None, model: str | None = None) -> dict:
    """Write the document into ``out``; returns the paths and the PDF's page count.
    ``model``: one of the run's trained models (default: the one the run chose on val).

    Everything is written into a staging folder beside ``out`` that replaces ``out`` only
    when complete, so a killed report leaves the previous document (or none), never half of one.
    """
    out = Path(out).resolve()
    with TriageStore(db, read_only=True) as store:
        run = store.read_run(run_id)
    if run["status"] != "complete":
        raise ValueError(f"Run {run_id} is {run['status']}; only a complete run has a handoff document.")
    trained = run_config(run["config"]).models
    if model is not None and model not in trained:
        raise ValueError(f"Run {run_id} has no trained model {model!r} (an adapted variant has no document of its own; "
                         f"its clinic's page does): models: {', '.join(trained)}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    for leftover in out.parent.glob(f".{out.name}.partial-*"):  # from a report that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    stage.chmod(0o755)  # mkdtemp's 0700 would hide the document from colleagues
    try:
        pages, n_slices = _write(db, run_id, stage, policy, model)
        old = out.with_name(f".{out.name}.partial-old{os.getpid()}")
        if out.exists():
            os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"pdf": out / "handoff.pdf", "md": out / "handoff.md", "pages": pages, "slices": n_slices}


def _write(db, run_id: str, out: Path, policy: str | None, model: str | None) -> tuple[int, int]:
    (out / "slices").mkdir(parents=True, exist_ok=True)
    inputs = read_inputs(db, run_id, policy, model)
    doc = build(inputs, policy, model)
    cases = inputs["cases"]
    reasons = cases.set_index("case_id")["reason"] if len(cases) else None
    paths = figures(doc, out, example_figure(db, run_id, doc.model, reasons)[0])
    (out / "handoff.md").write_text(to_markdown(doc, paths))
    pages = to_pdf(doc, paths, out / "handoff.pdf")
    for name, table in doc.slices.items():
        table.to_csv(out / "slices" / f"{name}.csv", index=False)
        (out / "slices" / f"{name}.md").write_text(table.to_markdown(index=False, floatfmt=".3f"))
    return pages, len(doc.slices)
