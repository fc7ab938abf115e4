"""The page tests' store: the session's quick run on the tiny fixture store."""
import pytest

from data_store.store import TriageStore


@pytest.fixture()
def env(quick_run, synth_store, monkeypatch):
    monkeypatch.setenv("TRIAGE_DB", str(synth_store))
    with TriageStore(synth_store, read_only=True) as store:
        metrics = store.read_table("metrics", quick_run["run_id"])
        preds = store.read_predictions(quick_run["run_id"])
    return {"run_id": quick_run["run_id"], "metrics": metrics, "preds": preds, "store": synth_store}
