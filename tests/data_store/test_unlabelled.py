"""``ingest --unlabelled``: cases to score, stored without labels, never trained on."""
import pandas as pd
import pytest

from data_store.__main__ import main
from data_store.ingest import ingest
from data_store.store import TriageStore
from tests.bad_inputs.corpus import build_rows, write_manifest


def test_unlabelled_ingest_keeps_every_other_check(tmp_path):
    """--unlabelled: no label is read or stored, and every row still ends in cases or in
    rejected_rows with the reason it gets in a labelled ingest (label reasons aside)."""
    root = tmp_path / "export"
    rows = build_rows(root)
    blank = [r.__class__(r.kind, r.fields[:5] + [""] + r.fields[6:], r.expect) for r in rows]
    write_manifest(root / "manifest.csv", blank)
    with TriageStore(tmp_path / "t.duckdb") as store:
        result = ingest(store, "new", root / "manifest.csv", unlabelled=True)
        cases, rejected, info = store.read_cases("new"), store.read_rejected("new"), store.read_dataset("new")
    assert result.n_cases + result.n_rejected == len(rows)
    assert cases["label"].isna().all() and not info["labelled"] and list(info["classes"]) == []
    for i, r in enumerate(rows, start=1):
        got = rejected[rejected["source_row"] == i]["reason"].tolist()
        outcome, what = r.expect
        if outcome == "reject" and not what.startswith("label_"):
            assert got == [what], r.kind
        else:
            assert got == [], r.kind


def test_unlabelled_ingest_refuses_labels_and_fit_refuses_the_dataset(synth_dir, tmp_path, capsys):
    from trainer.commands.fit import FitError, fit
    from trainer.config import load_config

    db = tmp_path / "t.duckdb"
    code = main(["ingest", "--db", str(db), "--dataset", "x", "--manifest", str(synth_dir / "manifest.csv"),
                 "--unlabelled"])
    assert code != 0 and "rows have a label" in capsys.readouterr().err
    frame = pd.read_csv(synth_dir / "manifest.csv").drop(columns="label")
    frame.to_csv(tmp_path / "unlabelled.csv", index=False)
    assert main(["ingest", "--db", str(db), "--dataset", "x", "--manifest", str(tmp_path / "unlabelled.csv"),
                 "--image-root", str(synth_dir), "--unlabelled"]) == 0
    assert "unlabelled" in capsys.readouterr().out
    with TriageStore(db, read_only=True) as store:
        assert len(store.read_cases("x")) == len(frame) and store.read_cases("x")["label"].isna().all()
    with pytest.raises(FitError, match="--unlabelled"):
        fit(db, "x", load_config(preset="quick", cache_dir=str(tmp_path / "cache")), log=lambda m: None)
