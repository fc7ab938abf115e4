"""The clinical handoff document: five pages on the default-size fixture and 4-6 on a tiny
store and on a dataset with three classes; every number traced to the store row and column it
states; the model the selection rule picks; statements that follow the results both ways."""
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from data_store.ingest import ingest
from data_store.store import TriageStore
from tests.trainer.report import default_run
from tests.trainer.report.trace_check import check_trace, store_reader, text_of
from trainer.__main__ import main
from trainer.commands.fit import fit
from trainer.commands.report import read_inputs
from trainer.config import load_config
from trainer.report.content import build
from trainer.report.document import Paragraph, Table
from trainer.report.render import figures, to_pdf

PAGES = ("The bottom line", "When the model is reliable", "Where deferral fires", "Known biases by skin tone",
         "Safety case")


def _pages(pdf) -> int:
    return len(re.findall(rb"/Type\s*/Page\b", pdf.read_bytes()))


@pytest.fixture(scope="module")
def report(quick_run, synth_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["report", "--db", str(synth_store), "--run", quick_run["run_id"], "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def three_classes(synth_dir, tmp_path_factory):
    """The tiny DermSynth relabelled to three classes, one of them urgent, ingested and fitted."""
    root = tmp_path_factory.mktemp("three")
    m = pd.read_csv(synth_dir / "manifest.csv")
    m["label"] = m["label"].map({"emergency": "urgent", "urgent_cancer": "urgent", "routine_referral": "routine",
                                 "primary_care": "primary_care"})
    m.to_csv(root / "manifest.csv", index=False)
    shutil.copytree(synth_dir / "images", root / "images")  # a link out of the dataset's folder is refused
    (root / "dataset.json").write_text(json.dumps({"simulated": True, "classes": ["urgent", "routine", "primary_care"],
                                                   "urgent_classes": ["urgent"], "heldout_clinic": "clinic_7"}))
    db = root / "triage.duckdb"
    with TriageStore(db) as store:
        ingest(store, "three", root / "manifest.csv")
    cfg = load_config(preset="quick", cache_dir=str(root / "cache"), models=("text_only", "image_only"))
    return db, fit(db, "three", cfg, log=lambda m: None)


def test_the_default_size_fixture_lays_out_on_exactly_five_pages(tmp_path):
    d = default_run.load()
    doc = build(d)
    assert to_pdf(doc, figures(doc, tmp_path, None), tmp_path / "handoff.pdf") == 5
    assert [s.title for s in doc.sections if s.new_page or s is doc.sections[0]] == list(PAGES)
    names = {"case_counts": "counts", "deferral_cases": "cases", "adaptation_curve": "curve"}
    check_trace(doc, d, store_tables=lambda name: d[names.get(name, name)])


def test_a_tiny_store_gives_four_to_six_pages_with_every_page_s_material(report):
    assert 4 <= _pages(report / "handoff.pdf") <= 6
    md = (report / "handoff.md").read_text()
    for title in PAGES + ("Intended use", "Local validation before go-live", "Monitoring, suspension and incidents",
                          "Glossary and reporting checklists"):
        assert f"## {title}" in md
    assert "simulated" in md.lower() and "not clinical evidence" in md
    slices = list((report / "slices").glob("*.csv"))
    assert slices and len(list((report / "slices").glob("*.md"))) == len(slices)


def test_three_classes_one_urgent_give_four_to_six_pages_and_traced_numbers(three_classes, tmp_path):
    db, run_id = three_classes
    assert main(["report", "--db", str(db), "--run", run_id, "--out", str(tmp_path / "out")]) == 0
    assert 4 <= _pages(tmp_path / "out" / "handoff.pdf") <= 6
    d = read_inputs(db, run_id)
    doc = build(d)
    assert "3 categories: urgent, routine, primary_care (urgent urgent)" in text_of(doc)
    check_trace(doc, d, store_tables=store_reader(db, run_id))


def test_every_number_is_traced_to_its_store_row_and_column(quick_run, synth_store):
    d = read_inputs(synth_store, quick_run["run_id"])
    check_trace(build(d), d, store_tables=store_reader(synth_store, quick_run["run_id"]))


def test_the_document_is_about_the_model_chosen_on_val_whatever_test_says(quick_run, synth_store):
    d = read_inputs(synth_store, quick_run["run_id"])
    m = d["metrics"]
    f1 = m[(m.split == "val") & (m.slice == "overall") & (m.metric == "macro_f1")].set_index("model")["value"]
    assert build(d).model == f1.idxmax()
    other = next(name for name in f1.index if name != f1.idxmax())  # the best on test by far: no change
    d["metrics"] = m.assign(value=m["value"].where(~((m.split == "test") & (m.model == other)), 1.0))
    assert build(d).model == f1.idxmax()
    assert "the best macro F1" in text_of(build(d)) and "played no part in the choice" in text_of(build(d))


def test_the_markdown_holds_every_paragraph_and_table_of_the_document(report, quick_run, synth_store):
    md = (report / "handoff.md").read_text()
    doc = build(read_inputs(synth_store, quick_run["run_id"]))
    for section in doc.sections:
        for block in section.blocks:
            if isinstance(block, Paragraph):
                assert block.text in md
            elif isinstance(block, Table):
                assert block.frame.to_markdown(index=False) in md


def _with(d: dict, table: str, where, **values) -> dict:
    frame = d[table].copy()
    rows = where(frame)
    for column, value in values.items():
        frame.loc[rows, column] = value
    return {**d, table: frame}


@pytest.fixture(scope="module")
def inputs(quick_run, synth_store):
    return read_inputs(synth_store, quick_run["run_id"])


def test_prediction_sets_held_or_fell_short_as_the_coverage_says(inputs):
    test = lambda c: (c.split == "test") & (c["mode"] == "mondrian")  # noqa: E731
    held = _paragraph(build(_with(inputs, "conformal", test, coverage=0.99)), "Sets of categories")
    short = _paragraph(build(_with(inputs, "conformal", test, coverage=0.5)), "Sets of categories")
    assert "held at the new clinic for" in held and "fell short" not in held
    assert "fell short at the new clinic for" in short and "held at" not in short


def _paragraph(doc, start: str) -> str:
    (text,) = [b.text for s in doc.sections for b in s.blocks if isinstance(b, Paragraph) and b.text.startswith(start)]
    return text


def test_the_verdict_follows_the_accuracy_of_the_kept_cases(inputs):
    rows = lambda p: p.split == "test"  # noqa: E731
    assert "not ready for use at a new clinic" in text_of(build(_with(inputs, "policies", rows, accepted_accuracy=0.5)))
    ready = text_of(build(_with(inputs, "policies", rows, accepted_accuracy=0.99)))
    assert "meeting the" in ready and "not ready" not in ready


def test_the_urgent_gap_is_called_chance_or_not_as_its_interval_says(inputs):
    rows = lambda m: (m.split == "test") & (m.slice == "fitzpatrick_group") & (m.metric == "missed_urgent_rate")  # noqa
    d = _with(inputs, "metrics", rows, flagged=False)
    d = _with(d, "metrics", lambda m: rows(m) & (m.slice_value == "V-VI"), value=0.4, ci_low=0.3, ci_high=0.5)
    d = _with(d, "metrics", lambda m: rows(m) & (m.slice_value == "I-II"), value=0.1, ci_low=0.05, ci_high=0.15)
    d = _with(d, "metrics", lambda m: rows(m) & (m.slice_value == "III-IV"), value=0.2, ci_low=0.1, ci_high=0.3)
    assert "the data do not show a difference" in text_of(build(d))
    flagged = text_of(build(_with(d, "metrics", lambda m: rows(m) & (m.slice_value == "V-VI"), flagged=True)))
    assert "skin types V-VI 40.0% (30.0% to 50.0%) against skin types I-II" in flagged
    assert "unlikely to be chance" in flagged


def test_calibration_carried_over_or_not_as_the_ece_says(inputs):
    ece = lambda m: (m.split == "test") & (m.slice == "overall") & (m.metric == "ece")  # noqa: E731
    raw = lambda m: (m.split == "test") & (m.slice == "overall") & (m.metric == "ece_uncalibrated")  # noqa: E731
    worse = _with(_with(inputs, "metrics", ece, value=0.2), "metrics", raw, value=0.1)
    better = _with(_with(inputs, "metrics", ece, value=0.05), "metrics", raw, value=0.1)
    assert "did not carry over" in text_of(build(worse)) and "still helped" in text_of(build(better))


def test_deferral_is_said_to_catch_most_errors_or_fewer_than_half(inputs):
    acc = lambda m: (m.split == "test") & (m.slice == "overall") & (m.metric == "accuracy")  # noqa: E731
    pol = lambda p: p.split == "test"  # noqa: E731
    few = _with(_with(inputs, "metrics", acc, value=0.7), "policies", pol, defer_rate=0.1, accepted_accuracy=0.72)
    most = _with(_with(inputs, "metrics", acc, value=0.7), "policies", pol, defer_rate=0.4, accepted_accuracy=0.95)
    assert "fewer than half of the errors" in text_of(build(few)) and "catches most" in text_of(build(most))


def test_small_groups_are_called_too_small_and_no_gap_is_claimed_without_evidence(report):
    md = (report / "handoff.md").read_text()
    assert "too small to judge" in md
    assert "lower than" not in md  # no group of the tiny test split can support an accuracy gap


def test_a_flagged_gap_is_stated_with_its_interval(inputs):
    row = lambda m: ((m.model == "image_only") & (m.split == "test") & (m.slice == "fitzpatrick_group") &  # noqa
                     (m.metric == "accuracy") & (m.slice_value == "V-VI"))
    d = _with(inputs, "metrics", row, gap=-0.2, gap_low=-0.3, gap_high=-0.1, gap_reference="I-II", flagged=True,
              too_small=False, n=300)
    text = text_of(build(d))
    assert "image_only: accuracy of skin types V-VI is lower than skin types I-II by 0.200 (0.100 to 0.300)" in text


def test_an_unknown_policy_is_refused(quick_run, synth_store, tmp_path, capsys):
    assert main(["report", "--db", str(synth_store), "--run", quick_run["run_id"], "--out", str(tmp_path),
                 "--policy", "nope"]) == 2
    assert "no policy 'nope'" in capsys.readouterr().err


def test_the_fixture_holds_no_note_or_patient_identifier():
    d = default_run.load()
    for name in default_run.FRAMES:
        assert not {"note", "patient_id", "image_path", "tokens"} & set(d[name].columns), name
    assert "manifest_path" not in d["info"]


def test_a_document_without_a_stored_curve_says_how_to_make_one(inputs):
    text = text_of(build({**inputs, "curve": inputs["curve"].iloc[:0]}))
    assert "No learning curve is stored" in text and "adapt" in text


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="needs Debian's poppler-utils (.ci/run installs it)")
def test_every_page_renders_with_text_and_a_footer(tmp_path):
    """The default-size fixture's five pages through pdftoppm: none blank, each with its footer."""
    import subprocess

    from PIL import Image

    doc = build(default_run.load())
    to_pdf(doc, figures(doc, tmp_path, None), tmp_path / "handoff.pdf")
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(tmp_path / "handoff.pdf"), str(tmp_path / "page")],
                   check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) == 5
    for page in pages:
        ink = np.asarray(Image.open(page).convert("L")) < 200
        assert ink.mean() > 0.02, page.name  # laid out, not a blank page from a forced break
        assert ink[-int(ink.shape[0] * 0.05):].any(), page.name  # the footer line
        body = np.flatnonzero(ink[: int(ink.shape[0] * 0.95)].any(1))  # rows with ink, the footer aside
        assert body.max() > 0.6 * ink.shape[0], page.name  # filled by its content, not broken early


@pytest.fixture(scope="module")
def with_control(quick_run, synth_store, tmp_path_factory):
    """A copy of the quick run's store that also holds a control run: the tiny DermSynth
    simulated without the skin-tone effect (one model, to keep it quick)."""
    from data_store.synth.generate import SynthConfig, generate

    root = tmp_path_factory.mktemp("control")
    db = root / "triage.duckdb"
    shutil.copy(synth_store, db)
    generate(SynthConfig(n=240, seed=1, image_size=32, tone_effect=0.0), root / "tone0", workers=1)
    with TriageStore(db) as store:
        ingest(store, "tone0", root / "tone0" / "manifest.csv")
    cfg = load_config(preset="quick", cache_dir=str(root / "cache"), models=("text_only",))
    return db, fit(db, "tone0", cfg, log=lambda m: None)


def test_the_control_run_is_reported_only_when_the_store_holds_one(quick_run, with_control, inputs):
    db, control_id = with_control
    assert "Control:" not in text_of(build(inputs))  # the fixture store holds none
    d = read_inputs(db, quick_run["run_id"])
    assert d["control"]["run_id"] == control_id
    text = _paragraph(build(d), f"Run {control_id} (dataset tone0) was simulated the same way without")
    assert "urgent patients missed" in text
    with TriageStore(db, read_only=True) as store:
        control = store.read_table("metrics", control_id)
    reader = store_reader(db, quick_run["run_id"])
    check_trace(build(d), d, store_tables=lambda name: control if name == "control_metrics" else reader(name))


def test_label_free_corrections_are_judged_as_their_results_say():
    d = default_run.load()
    assert len(d["corrections"])  # the default run's shift report judged them
    low = text_of(build(_with(d, "corrections", lambda c: c["target"].notna(), after=0.0)))
    high = text_of(build(_with(d, "corrections", lambda c: c["target"].notna(), after=1.0)))
    assert "None reached its promise" in low and "Each reached its promise here" in high


def test_a_model_the_team_picks_is_reported_and_said_to_differ_from_the_rule(quick_run, synth_store, capsys):
    chosen = build(read_inputs(synth_store, quick_run["run_id"])).model
    other = next(m for m in ("text_only", "image_only", "late_fusion") if m != chosen)
    d = read_inputs(synth_store, quick_run["run_id"], model=other)
    doc = build(d, model=other)
    assert doc.model == other and set(d["cases"]["model"]) == {other}
    assert f"the team picked {other} for this document" in text_of(doc) and f"chooses {chosen}." in text_of(doc)
    check_trace(doc, d, store_tables=store_reader(synth_store, quick_run["run_id"]))
    assert main(["report", "--db", str(synth_store), "--run", quick_run["run_id"], "--out", "unused",
                 "--model", "nope"]) == 2
    assert "no trained model 'nope'" in capsys.readouterr().err
