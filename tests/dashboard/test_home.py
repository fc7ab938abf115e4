from pathlib import Path

from streamlit.testing.v1 import AppTest

from data_store.store import TriageStore

HOME = str(Path(__file__).resolve().parents[2] / "dashboard" / "Home.py")


def test_home_shows_the_dataset_summary(synth_store, monkeypatch):
    monkeypatch.setenv("TRIAGE_DB", str(synth_store))
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception
    with TriageStore(synth_store, read_only=True) as store:
        info = store.read_dataset("dermsynth")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Cases"] == f"{info['n_cases']:,}"
    assert metrics["Rejected rows"] == f"{info['n_rejected']:,}"
    # Markdown-escaped (dashboard.ui.plain), so a browser shows clinic_7 as typed
    assert metrics["Clinics"] == "7" and metrics["Held-out clinic"] == r"clinic\_7"
    assert any("simulated" in w.value for w in at.warning)


def test_home_without_a_store_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIAGE_DB", str(tmp_path / "none.duckdb"))
    at = AppTest.from_file(HOME, default_timeout=30).run()
    assert not at.exception
    assert "./run.sh" in at.info[0].value


def test_home_shows_an_unlabelled_dataset_without_categories(synth_dir, tmp_path, monkeypatch):
    import pandas as pd

    from data_store.ingest import ingest

    pd.read_csv(synth_dir / "manifest.csv").drop(columns="label").head(30).to_csv(tmp_path / "new.csv", index=False)
    db = tmp_path / "t.duckdb"
    with TriageStore(db) as store:
        ingest(store, "later", tmp_path / "new.csv", image_root=synth_dir, unlabelled=True)
    monkeypatch.setenv("TRIAGE_DB", str(db))
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Cases"] == "30"
    assert any("Unlabelled" in c.value for c in at.caption)
    assert any("No labels" in i.value for i in at.info)
