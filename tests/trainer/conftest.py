"""The quick-preset run that the trainer tests share (trained once per session)."""
import pytest

from data_store.store import TriageStore
from trainer.config import load_config
from trainer.fit import fit


@pytest.fixture(scope="session")
def quick_run(synth_store, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache") / "cache"
    cfg = load_config(preset="quick", cache_dir=str(cache))
    run_id = fit(synth_store, "dermsynth", cfg, log=lambda m: None)
    with TriageStore(synth_store, read_only=True) as store:
        run = store.read_run(run_id)
        preds = store.read_predictions(run_id)
        splits = store.read_splits(run_id)
        cases = store.read_cases("dermsynth")
    return {"run_id": run_id, "run": run, "preds": preds, "splits": splits, "cases": cases, "cfg": cfg}
