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

from data_store.store import TriageStore
from trainer.config import run_config
from trainer.report.content import build
from trainer.report.render import figures, to_markdown, to_pdf

TABLES = ("metrics", "policies", "conformal", "calibrators", "comparisons", "reliability_bins", "risk_coverage")


def read_inputs(db, run_id: str) -> dict:
    """Everything the document is built from: the run's tables, attributions, the run, its
    dataset, its settings and the dataset's case counts."""
    with TriageStore(db, read_only=True) as store:
        run = store.read_run(run_id)
        info = store.read_dataset(run["dataset"])
        out = {t: store.read_table(t, run_id) for t in TABLES}
        out["attributions"] = store.read_attributions(run_id)
        out["by"] = {k: store.count_cases(run["dataset"], k) for k in ("clinic", "fitzpatrick", "label")}
    return {**out, "run": run, "info": info, "config": run_config(run["config"])}


def example_figure(db, run_id: str, model: str):
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
    title = (f"{model}, case {row['case_id']}{simulated}: suggested {row['target_class']}, true {pred['y_true']}, "
             f"deferral score {pred['defer_score']:.2f}; photo {share['image']:.0%}, note {share['text']:.0%} "
             "of the attribution")
    try:
        figure = attribution_figure(lambda side: load_rgb(case["image_path"], side), row, occ, title)
    except OSError:
        return None, row["case_id"]
    return figure, row["case_id"]


def write_report(db, run_id: str, out: str | Path, policy: str | None = None) -> dict:
    """Write the document into ``out``; returns the paths and the PDF's page count.

    Everything is written into a staging folder beside ``out`` that replaces ``out`` only
    when complete, so a killed report leaves the previous document (or none), never half of one.
    """
    out = Path(out).resolve()
    with TriageStore(db, read_only=True) as store:
        status = store.read_run(run_id)["status"]
    if status != "complete":
        raise ValueError(f"Run {run_id} is {status}; only a complete run has a handoff document.")
    out.parent.mkdir(parents=True, exist_ok=True)
    for leftover in out.parent.glob(f".{out.name}.partial-*"):  # from a report that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    stage.chmod(0o755)  # mkdtemp's 0700 would hide the document from colleagues
    try:
        pages, n_slices = _write(db, run_id, stage, policy)
        old = out.with_name(f".{out.name}.partial-old{os.getpid()}")
        if out.exists():
            os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"pdf": out / "handoff.pdf", "md": out / "handoff.md", "pages": pages, "slices": n_slices}


def _write(db, run_id: str, out: Path, policy: str | None) -> tuple[int, int]:
    (out / "slices").mkdir(parents=True, exist_ok=True)
    doc = build(read_inputs(db, run_id), policy)
    paths = figures(doc, out, example_figure(db, run_id, doc.model)[0])
    (out / "handoff.md").write_text(to_markdown(doc, paths))
    pages = to_pdf(doc, paths, out / "handoff.pdf")
    for name, table in doc.slices.items():
        table.to_csv(out / "slices" / f"{name}.csv", index=False)
        (out / "slices" / f"{name}.md").write_text(table.to_markdown(index=False, floatfmt=".3f"))
    return pages, len(doc.slices)
