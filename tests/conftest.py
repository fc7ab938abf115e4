"""Shared fixtures: a tiny DermSynth folder and a store holding it (fixed seeds)."""
from __future__ import annotations

from pathlib import Path

import pytest

from data_store.ingest import ingest
from data_store.store import TriageStore
from data_store.synth.generate import SynthConfig, generate


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
