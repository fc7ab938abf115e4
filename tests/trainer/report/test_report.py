"""The clinical handoff document from the fixture store: sections, page count, every
number traced to the store, and statements that follow the results."""
import re

import numpy as np
import pandas as pd
import pytest

from trainer.__main__ import main
from trainer.commands.report import read_inputs
from trainer.report.content import build
from trainer.report.document import Paragraph, Table

SECTIONS = ("Intended use", "Data and provenance", "Performance on the held-out clinic", "When the model is reliable",
            "Where deferral fires", "Known biases by skin tone", "Calibration under the new clinic, and monitoring",
            "Model Card and TRIPOD+AI")


@pytest.fixture(scope="module")
def report(quick_run, synth_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["report", "--db", str(synth_store), "--run", quick_run["run_id"], "--out", str(out)]) == 0
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


NUMBER = re.compile(r"(?<![\w.\-=])-?\d[\d,]*(?:\.\d+)?%?(?![\w])|(?<==)\d+")


def _numbers(section, run_id: str) -> list[str]:
    """Every number written in a section (its paragraphs, captions and every cell of its
    tables), the run's id aside."""
    texts = [b.text if isinstance(b, Paragraph) else b.caption for b in section.blocks]
    texts += [" ".join(map(str, row)) for b in section.blocks if isinstance(b, Table)
              for row in [b.frame.columns, *b.frame.astype(str).itertuples(index=False)]]
    return NUMBER.findall(" ".join(texts).replace(run_id, "RUN"))


def _p3(x) -> list[str]:
    return [f"{x:.3f}"]


def _pct(x) -> list[str]:
    return [f"{100 * x:.1f}%"]


def _ci(row) -> list[str]:
    return [f"{row[c]:.3f}" for c in ("value", "ci_low", "ci_high")]


def _rows(frame: pd.DataFrame, **where) -> pd.DataFrame:
    return frame[np.logical_and.reduce([frame[k] == v for k, v in where.items()])]


def _expected(d: dict, model: str) -> dict[str, list[str]]:
    """Section title -> the numbers it must state, each read from one store row and column."""
    m, cfg, by = d["metrics"], d["config"], d["by"]
    mine = m[(m.split == "test") & (m.model == model)]
    data = [f"{d['info']['n_cases']:,}", f"{d['info']['n_rejected']:,}", str(len(by["clinic"]))]
    for r in by["fitzpatrick"].itertuples():  # the table: type (or "unknown") and count
        data += ([] if pd.isna(r.fitzpatrick) else [str(int(r.fitzpatrick))]) + [str(r.n)]
    data += [str(n) for n in by["clinic"]["n"]]
    acc = mine[(mine.metric == "accepted_accuracy") & mine.slice.isin(["overall", "fitzpatrick_group", "clinic",
                                                                        "category"])]
    val = m[(m.split == "val") & (m.slice == "overall") & (m.metric == "macro_f1")]
    assert model == val.sort_values("value").iloc[-1]["model"]  # chosen on val, never on test
    chosen = [str(len(val)), f"{val['value'].max():.3f}"]
    return {"Intended use": chosen, "Model Card and TRIPOD+AI": [], "Data and provenance": data,
            "Performance on the held-out clinic": _performance(d, model),
            "When the model is reliable": _pct(cfg.target_accuracy) + [x for _, r in acc.iterrows() for x in _ci(r)],
            "Where deferral fires": _deferral(d, model),
            "Known biases by skin tone": _bias(d, model),
            "Calibration under the new clinic, and monitoring": _calibration(d, model)}


def _performance(d: dict, model: str) -> list[str]:
    test, comp = d["metrics"][d["metrics"].split == "test"], d["comparisons"]
    out = ["95%"]  # the caption names the interval's level, a property of the method
    for name in dict.fromkeys((model, "text_only", "image_only")):
        out += _ci(_rows(test, model=name, slice="overall", metric="macro_f1").iloc[0])
        out += [x for _, r in _rows(test, model=name, metric="category_accuracy").iterrows() for x in _ci(r)]
    return out + [x for _, r in _rows(comp, model=model, split="test").iterrows() for x in _ci(r)]


def _deferral(d: dict, model: str) -> list[str]:
    m, a = d["metrics"], d["attributions"]
    pol = _rows(d["policies"], model=model, policy=d["config"].default_policy, split="test")
    overall = pol[pol.slice == "overall"].iloc[0]
    out = _p3(overall["threshold"]) + [x for c in ("defer_rate", "accepted_accuracy", "missed_urgent_rate")
                                        for x in _pct(overall[c])]
    out += [x for _, r in pol.iterrows() for x in [str(r["n"])] + _pct(r["defer_rate"]) +
            _pct(r["accepted_accuracy"]) + _pct(r["missed_urgent_rate"])]
    for split, slice_ in (("test", "category"), ("calib", "clinic"), ("val", "clinic")):
        out += [x for v in _rows(m, model=model, split=split, slice=slice_, metric="defer_rate")["value"]
                for x in _pct(v)]
    n_explained = int(((a.model == model) & (a.method == "integrated_gradients")).sum()) if len(a) else 0
    return out + ([str(n_explained)] if n_explained else [])


def _bias(d: dict, model: str) -> list[str]:
    m, cfg = d["metrics"], d["config"]
    out = []
    for name in dict.fromkeys((model, "image_only")):
        g = _rows(m, model=name, split="test", slice="fitzpatrick_group", metric="accuracy")
        if g["flagged"].any():
            worst = g[g.flagged].sort_values("gap").iloc[0]
            out += [f"{-worst[c]:.3f}" for c in ("gap", "gap_high", "gap_low")]
        if g["too_small"].any():
            out += [str(cfg.min_slice_n)] + [str(int(n)) for n in g[g.too_small]["n"]]
    fitz = d["by"]["fitzpatrick"].dropna(subset=["fitzpatrick"])
    out += sorted(str(int(f)) for f in fitz.sort_values("n")["fitzpatrick"].head(2))
    tone = _rows(m, model=model, split="test", slice="fitzpatrick_group")
    return out + [x for _, r in tone[tone.metric.isin(["accuracy", "ece", "defer_rate"])].iterrows() for x in _ci(r)]


def _calibration(d: dict, model: str) -> list[str]:
    m, cfg = d["metrics"], d["config"]
    out = [x for split, metric in (("calib", "ece_uncalibrated"), ("calib", "ece"), ("test", "ece"),
                                   ("test", "ece_uncalibrated"))
           for x in _p3(_rows(m, model=model, split=split, slice="overall", metric=metric)["value"].iloc[0])]
    cov = _rows(d["conformal"], model=model, split="test", method=cfg.conformal_method, mode="mondrian")
    return out + _pct(1 - cfg.alpha) + [x for c in cov["coverage"] for x in _pct(c)]


def test_every_number_is_traced_to_its_store_row_and_column(quick_run, synth_store):
    """Section by section, the numbers the document states are exactly those read from the
    rows it claims (same values, same count): nothing missing, nothing from elsewhere."""
    d = read_inputs(synth_store, quick_run["run_id"])
    doc = build(d)
    expected = _expected(d, doc.model)
    assert [s.title for s in doc.sections] == list(SECTIONS)
    for section in doc.sections:
        shown = sorted(_numbers(section, quick_run["run_id"]))
        assert shown == sorted(expected[section.title]), section.title


def test_the_document_is_about_the_model_chosen_on_val_whatever_test_says(quick_run, synth_store):
    d = read_inputs(synth_store, quick_run["run_id"])
    m = d["metrics"]
    f1 = m[(m.split == "val") & (m.slice == "overall") & (m.metric == "macro_f1")].set_index("model")["value"]
    assert build(d).model == f1.idxmax()
    # Make another model the best on test by far: the choice does not move.
    other = next(name for name in f1.index if name != f1.idxmax())
    d["metrics"] = m.assign(value=m["value"].where(~((m.split == "test") & (m.model == other)), 1.0))
    assert build(d).model == f1.idxmax()


def test_the_markdown_holds_every_paragraph_and_table_of_the_document(report, quick_run, synth_store):
    md = (report / "handoff.md").read_text()
    doc = build(read_inputs(synth_store, quick_run["run_id"]))
    for section in doc.sections:
        for block in section.blocks:
            if isinstance(block, Paragraph) and "were explained" not in block.text:  # explained count may grow
                assert block.text in md
            elif isinstance(block, Table):
                assert block.frame.to_markdown(index=False) in md


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
