"""Shared fixtures: a tiny DermSynth folder, a store holding it and a quick run on it (fixed seeds)."""
from __future__ import annotations

from pathlib import Path

import pytest

from data_store.ingest import ingest
from data_store.store import TriageStore
from data_store.synth.generate import SynthConfig, generate
from trainer.config import load_config
from trainer.commands.fit import fit


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dermsynth")
    generate(SynthConfig(n=240, seed=0, image_size=32), out, workers=1)
    return out


@pytest.fixture(scope="session")
def synth_store(synth_dir, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("store") / "triage.duckdb"
    with TriageStore(db) as store:
        ingest(store, "dermsynth", synth_dir / "manifest.csv")
    return db


@pytest.fixture(scope="session")
def quick_run(synth_store, tmp_path_factory):
    """A quick-preset run of all five models on the tiny store, trained once per session."""
    cache = tmp_path_factory.mktemp("cache") / "cache"
    cfg = load_config(preset="quick", cache_dir=str(cache))
    run_id = fit(synth_store, "dermsynth", cfg, log=lambda m: None)
    with TriageStore(synth_store, read_only=True) as store:
        run = store.read_run(run_id)
        preds = store.read_predictions(run_id)
        splits = store.read_splits(run_id)
        cases = store.read_cases("dermsynth")
    return {"run_id": run_id, "run": run, "preds": preds, "splits": splits, "cases": cases, "cfg": cfg}
