"""The clinical handoff document from the fixture store: sections, page count, every
number traced to the store, and statements that follow the results."""
import json
import re

import pandas as pd
import pytest

from data_store.store import TriageStore
from trainer.__main__ import main
from trainer.commands.report import read_inputs
from trainer.report.content import build
from trainer.report.document import Paragraph

SECTIONS = ("Intended use", "Data and provenance", "Performance on the held-out clinic", "When the model is reliable",
            "Where deferral fires", "Known biases by skin tone", "Calibration under the new clinic, and monitoring",
            "Model Card and TRIPOD+AI")
# The interval level is the method's (2.5th to 97.5th percentile), not a result.
METHOD_CONSTANTS = {"95%"}


@pytest.fixture(scope="module")
def report(quick_run, synth_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["report", "--db", str(synth_store), "--run", quick_run["run_id"], "--out", str(out)]) == 0
    return out


def _store_numbers(db, run_id: str) -> set[str]:
    """Every number the store holds for the run, in each format the document uses."""
    values = []
    with TriageStore(db, read_only=True) as store:
        run = store.read_run(run_id)
        for t in ("metrics", "policies", "conformal", "comparisons", "reliability_bins", "risk_coverage"):
            df = store.read_table(t, run_id)
            values += df.select_dtypes("number").to_numpy().ravel().tolist()
        info = store.read_dataset(run["dataset"])
        values += [info["n_cases"], info["n_rejected"]]
        for by in ("clinic", "fitzpatrick", "label"):
            counts = store.count_cases(run["dataset"], by)
            values += counts.select_dtypes("number").to_numpy().ravel().tolist() + [len(counts)]
        attr = store.read_attributions(run_id)
        values += attr.groupby(["model", "method"]).size().tolist()
    config = json.loads(run["config"])
    values += [v for v in config.values() if isinstance(v, (int, float))] + [1 - config["alpha"]]
    out = set()
    for v in values:
        if pd.isna(v):
            continue
        for x in (v, -v):
            out |= {f"{x:.3f}", f"{100 * x:.1f}%"}
            if float(x).is_integer():
                out |= {f"{int(x):,}", str(int(x))}
    return out


def test_every_section_is_there_and_the_pdf_has_4_to_6_pages(report):
    md = (report / "handoff.md").read_text()
    for title in SECTIONS:
        assert f"## {title}" in md
    pdf = (report / "handoff.pdf").read_bytes()
    pages = len(re.findall(rb"/Type\s*/Page\b", pdf))
    assert 4 <= pages <= 6, pages
    assert "simulated" in md.lower() and "not clinical evidence" in md
    slices = list((report / "slices").glob("*.csv"))
    assert slices and len(list((report / "slices").glob("*.md"))) == len(slices)


def test_every_number_in_the_document_comes_from_the_store(report, quick_run, synth_store):
    md = (report / "handoff.md").read_text().replace(quick_run["run_id"], "RUN")
    md = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", md)  # figure links
    numbers = re.findall(r"(?<![\w.\-])-?\d[\d,]*(?:\.\d+)?%?(?![\w])", md)
    assert len(numbers) > 50
    known = _store_numbers(synth_store, quick_run["run_id"]) | METHOD_CONSTANTS
    missing = sorted({n for n in numbers if n not in known})
    assert not missing, missing


def test_small_groups_are_called_too_small_and_no_gap_is_claimed_without_evidence(report, quick_run):
    md = (report / "handoff.md").read_text()
    assert "too small to judge" in md
    assert "unlikely to be chance" not in md  # no group of the tiny test split can support a gap
    assert "the data do not show a gap" in md


def test_a_flagged_gap_is_stated_with_its_interval(quick_run, synth_store):
    d = read_inputs(synth_store, quick_run["run_id"])
    m = d["metrics"].copy()
    row = (m.model == "image_only") & (m.split == "test") & (m.slice == "fitzpatrick_group") & \
          (m.metric == "accuracy") & (m.slice_value == "V-VI")
    m.loc[row, ["gap", "gap_low", "gap_high", "gap_reference", "flagged", "too_small", "n"]] = \
        [-0.2, -0.3, -0.1, "I-II", True, False, 300]
    doc = build({**d, "metrics": m})
    bias = next(s for s in doc.sections if s.title == "Known biases by skin tone")
    text = " ".join(b.text for b in bias.blocks if isinstance(b, Paragraph))
    assert "image_only: accuracy of V-VI is lower than I-II by 0.200 (0.100 to 0.300)" in text
    assert "unlikely to be chance" in text


def test_an_unknown_policy_is_refused(quick_run, synth_store, tmp_path, capsys):
    assert main(["report", "--db", str(synth_store), "--run", quick_run["run_id"], "--out", str(tmp_path),
                 "--policy", "nope"]) == 2
    assert "no policy 'nope'" in capsys.readouterr().err
