"""``image_encoder: auto``: the image encoder chosen per dataset on val, recorded with the run."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from data_store.splits import choose_val_clinic, make_splits
from data_store.store import TriageStore
from trainer.config import FitConfig, load_config, run_config
from trainer.encoders.cache import CacheStats
from trainer.encoders.choice import choose_image_encoder, pick


def test_pick_takes_the_best_and_the_first_listed_on_a_tie():
    assert pick({"cnn": 0.61, "efficientnet_lite0": 0.64}) == "efficientnet_lite0"
    assert pick({"cnn": 0.64, "efficientnet_lite0": 0.64}) == "cnn"
    assert pick({"efficientnet_lite0": 0.64, "cnn": 0.64}) == "efficientnet_lite0"


def test_auto_is_the_default_and_bad_candidates_are_refused():
    assert FitConfig().image_encoder == "auto"
    with pytest.raises(ValueError, match="image_candidates"):
        FitConfig(image_candidates=("auto", "cnn"))
    with pytest.raises(ValueError, match="image_candidates"):
        FitConfig(image_candidates=())


@pytest.fixture(scope="module")
def auto_run(synth_dir, tmp_path_factory):
    """image_only fitted with ``image_encoder: auto`` on the tiny store (its own store: the
    session's runs stay as other tests expect). The quick preset itself uses the CNN."""
    from data_store.ingest import ingest
    from trainer.commands.fit import fit

    db = tmp_path_factory.mktemp("auto") / "triage.duckdb"
    with TriageStore(db) as store:
        ingest(store, "dermsynth", synth_dir / "manifest.csv")
    cfg = load_config(preset="quick", image_encoder="auto", models=("image_only",),
                      cache_dir=str(db.parent / "cache"))
    run_id = fit(db, "dermsynth", cfg, log=lambda m: None)
    with TriageStore(db, read_only=True) as store:
        return {"db": db, "run": store.read_run(run_id), "cases": store.read_cases("dermsynth"),
                "preds": store.read_predictions(run_id)}


def test_the_run_records_the_choice_and_uses_the_chosen_encoder(auto_run):
    quick_run = auto_run
    config = json.loads(quick_run["run"]["config"])
    choice = config["image_encoder_choice"]
    assert set(choice["scores"]) == {"cnn", "efficientnet_lite0"}
    assert all(0 <= f1 <= 1 for f1 in choice["scores"].values())
    assert choice["encoder"] == pick(choice["scores"]) == config["image_encoder"]
    assert choice["val"].startswith("clinic clinic_")  # a whole training clinic, never the held-out one
    assert choice["encoder"] == "efficientnet_lite0"  # 150 tiny photos: too few to train the CNN well
    artifacts = Path(quick_run["run"]["artifacts_dir"])
    saved = json.loads((artifacts / "config.json").read_text())
    assert saved["image_encoder"] == config["image_encoder"] and saved["image_encoder_choice"] == choice
    # The models were trained on the chosen encoder's features, and the run kept that encoder.
    spec = json.loads((artifacts / "image_only" / "spec.json").read_text())["spec"]
    assert spec["image_encoder"] == config["image_encoder"]
    assert (artifacts / "image_encoder" / "spec.json").exists() == (config["image_encoder"] != "cnn")
    # Re-reading the run's settings gives the resolved encoder, so no later step chooses again.
    assert run_config(quick_run["run"]["config"]).image_encoder == config["image_encoder"]


def test_the_choice_never_reads_the_heldout_clinics_labels(synth_store, tmp_path):
    with TriageStore(synth_store, read_only=True) as store:
        info, cases = store.read_dataset("dermsynth"), store.read_cases("dermsynth")
    cfg = load_config(preset="quick", cache_dir=str(tmp_path / "cache"))
    val_clinic = choose_val_clinic(cases, "clinic_7", cfg.seed, None)
    cfg = replace(cfg, heldout_clinic="clinic_7", val_clinic=val_clinic)
    split = make_splits(cases, "clinic_7", seed=cfg.seed, val_clinic=val_clinic)
    cases = cases.set_index("case_id").loc[split.index].reset_index()
    classes = list(info["classes"])

    def choose(frame):
        return choose_image_encoder(frame, split.to_numpy(), info["fingerprint"], cfg, classes, CacheStats(),
                                    log=lambda m: None)
    first = choose(cases)
    relabelled = cases.copy()
    test = split.to_numpy() == "test"
    relabelled.loc[test, "label"] = np.roll(relabelled.loc[test, "label"].to_numpy(), 7)  # scramble clinic_7
    assert (relabelled["label"] != cases["label"]).sum() > 10
    assert choose(relabelled).scores == first.scores


# Known defect, open in issue 14: Integrated Gradients through the EfficientNet-Lite0 tower
# (ReLU6 kinks, many layers) misses completeness badly at the default 32 steps (0.10-0.21 on this
# tiny run, where the choice picks Lite0); the stored convergence_delta shows it per case.
# Strict: a fix makes this test fail.
@pytest.mark.xfail(reason="IG completeness through EfficientNet-Lite0 above 0.02", strict=True)
def test_attributions_through_the_chosen_lite0_tower_are_complete(auto_run):
    from data_store.images import load_rgb
    from trainer.explain.attribution import explain
    from trainer.explain.loading import load_pipeline

    test = auto_run["preds"][auto_run["preds"]["split"] == "test"]["case_id"].iloc[0]
    case = auto_run["cases"].set_index("case_id").loc[test]
    pipe = load_pipeline(auto_run["run"]["artifacts_dir"], "image_only")
    assert explain(pipe, load_rgb(case["image_path"], pipe.image_size), case["note"], n_steps=32).delta < 0.02
