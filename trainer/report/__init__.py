"""The clinical handoff document: ``write_report(db, run_id, out)`` writes handoff.pdf,
handoff.md, its figures and slices/ (every slice table as CSV and Markdown), all from the
store. NumPy, pandas, Pillow and fpdf2 only."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from data_store.store import TriageStore
from trainer.report.content import build
from trainer.report.render import figures, to_markdown, to_pdf


def example_figure(db, run_id: str, model: str):
    """The stored attribution of the model's most deferred explained case with a note, drawn, and its
    case id; (None, None) when there is none."""
    from data_store.images import load_rgb
    from trainer.attributions import decode_heatmap
    from trainer.figures import case_figure

    with TriageStore(db, read_only=True) as store:
        run = store.read_run(run_id)
        attr = store.read_attributions(run_id, model)
        preds = store.read_predictions(run_id, model).set_index("case_id")
        if attr.empty:
            return None, None
        ig = attr[attr.method == "integrated_gradients"].copy()
        ig["defer_score"] = preds.loc[ig["case_id"], "defer_score"].to_numpy()
        ig["n_words"] = ig["tokens"].map(len)
        row = ig.sort_values(["n_words", "defer_score", "case_id"], ascending=[False, False, True]).iloc[0] \
            if (ig.n_words < 8).all() else ig[ig.n_words >= 8].sort_values(
                ["defer_score", "case_id"], ascending=[False, True]).iloc[0]
        occ = attr[(attr.case_id == row["case_id"]) & (attr.method == "occlusion")]
        case = store.read_case(run["dataset"], row["case_id"])
        simulated = " (simulated)" if store.read_dataset(run["dataset"])["simulated"] else ""
    side = int(row["heatmap_side"]) * 2 if row["heatmap_side"] == row["heatmap_side"] else 64
    try:
        photo = load_rgb(case["image_path"], side)
    except OSError:
        return None, row["case_id"]
    heat = {"Integrated Gradients": decode_heatmap(row["image_heatmap"], row["heatmap_side"]), "Occlusion": None}
    if len(occ):
        heat["Occlusion"] = decode_heatmap(occ["image_heatmap"].iloc[0], occ["heatmap_side"].iloc[0])
    pred = preds.loc[row["case_id"]]
    share = json.loads(row["modality_share"])
    title = (f"{model}, case {row['case_id']}{simulated}: suggested {row['target_class']}, true {pred['y_true']}, deferral "
             f"score {pred['defer_score']:.2f}; photo {share['image']:.0%}, note {share['text']:.0%} "
             "of the attribution")
    return case_figure(photo, heat, list(row["tokens"]), np.asarray(row["token_scores"]), title), row["case_id"]


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
    doc = build(db, run_id, policy)
    model = doc.title.split(":")[1].split(",")[0].strip()
    paths = figures(doc, out, example_figure(db, run_id, model)[0])
    (out / "handoff.md").write_text(to_markdown(doc, paths))
    pages = to_pdf(doc, paths, out / "handoff.pdf")
    for name, table in doc.slices.items():
        table.to_csv(out / "slices" / f"{name}.csv", index=False)
        (out / "slices" / f"{name}.md").write_text(table.to_markdown(index=False, floatfmt=".3f"))
    return pages, len(doc.slices)
