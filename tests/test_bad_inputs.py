"""The bad-input corpus (tests/bad_inputs) mixed into the fixture dataset, through ingest,
fit and every dashboard page: each bad row rejected with its reason or kept as documented,
no crash, and no good row lost anywhere on the way.

(Each row's outcome at ingest, the unusable files and the 1 GiB line are checked in
tests/data_store/test_ingest.py.)
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from data_store.ingest import ingest
from data_store.store import TriageStore
from tests.bad_inputs.corpus import HEADER, build_rows, write_manifest
from trainer.config import load_config
from trainer.commands.fit import fit

pytestmark = pytest.mark.slow  # a whole fit of the corpus and every page on it: `./run.sh test-slow`

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["Home.py"] + sorted(f"pages/{p.name}" for p in (ROOT / "dashboard" / "pages").glob("*.py"))


@pytest.fixture(scope="module")
def corpus_run(synth_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "export"
    info = json.loads((synth_dir / "dataset.json").read_text())
    good = pd.read_csv(synth_dir / "manifest.csv", dtype=str, keep_default_na=False)
    others = sorted(set(good["clinic"]) - {info["heldout_clinic"]})
    benign = next(c for c in info["classes"] if c not in info["urgent_classes"])
    rows = build_rows(root, (benign, info["urgent_classes"][0]), (others[0], others[1], info["heldout_clinic"]))
    shutil.copytree(synth_dir / "images", root / "images")
    columns = HEADER + [c for c in good.columns if c not in HEADER]
    write_manifest(root / "manifest.csv", rows, good[columns].values.tolist(), columns)
    (root / "dataset.json").write_text(json.dumps(info))
    db = root.parent / "triage.duckdb"
    with TriageStore(db) as store:
        result = ingest(store, "corpus", root / "manifest.csv")
    run_id = fit(db, "corpus", load_config(preset="quick", cache_dir=str(root.parent / "cache")), log=lambda m: None)
    with TriageStore(db, read_only=True) as store:
        return {"db": db, "run_id": run_id, "rows": rows, "good": good, "result": result,
                "cases": store.read_cases("corpus"), "rejected": store.read_rejected("corpus"),
                "splits": store.read_splits(run_id), "preds": store.read_predictions(run_id),
                "run": store.read_run(run_id)}


def test_no_good_row_is_lost_from_manifest_to_predictions(corpus_run):
    r = corpus_run
    accepted = set(r["good"]["case_id"]) | {x.case_id for x in r["rows"] if x.expect[0] == "accept"}
    assert set(r["cases"]["case_id"]) == accepted
    assert r["result"].n_rejected == sum(1 for x in r["rows"] if x.expect[0] == "reject")
    assert r["rejected"]["source_row"].min() > len(r["good"])  # no good row among the rejected
    assert r["run"]["status"] == "complete"
    assert set(r["splits"]["case_id"]) == accepted  # every accepted case trained on or evaluated
    evaluated = set(r["splits"].query("split != 'train'")["case_id"])
    for model, preds in r["preds"].groupby("model"):
        assert set(preds["case_id"]) == evaluated, model
        assert preds["defer_score"].notna().all() and preds["probs"].map(len).eq(len(r["run"]["classes"])).all()


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_on_the_corpus_store(corpus_run, page, monkeypatch):
    monkeypatch.setenv("TRIAGE_DB", str(corpus_run["db"]))
    at = AppTest.from_file(str(ROOT / "dashboard" / page), default_timeout=120)
    at.query_params["run"] = corpus_run["run_id"]
    at.run()
    assert not at.exception, at.exception


@pytest.mark.parametrize("case_id", ["bi-html", "bi-control", "bi-multiline", "bi-sql'; DROP TABLE cases; --",
                                     "bi-nonote", "bi-deep"])
def test_odd_accepted_cases_open_on_the_cases_page(corpus_run, case_id, monkeypatch):
    monkeypatch.setenv("TRIAGE_DB", str(corpus_run["db"]))
    split = corpus_run["splits"].set_index("case_id").loc[case_id, "split"]
    if split == "train":
        pytest.skip(f"{case_id} fell in the training split (the Cases page shows evaluated cases)")
    at = AppTest.from_file(str(ROOT / "dashboard" / "pages" / "5_Cases.py"), default_timeout=120)
    for k, v in {"run": corpus_run["run_id"], "split": split, "case": case_id}.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    note = corpus_run["cases"].set_index("case_id").loc[case_id, "note"]
    assert [t.value for t in at.text] == [note or "(no note)"]
