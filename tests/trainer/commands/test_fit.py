"""The five models on a tiny DermSynth store with the quick preset."""
import json

import numpy as np
import pandas as pd
import open_clip
import pytest
import torch
import torch.nn.functional as F

from data_store.store import TriageStore
from trainer.__main__ import main
from trainer.models.checkpoints import export_open_clip, load_checkpoint
from trainer.config import MODEL_NAMES, load_config
from trainer.encoders.image import OpenClipImageEncoder, SmallCNN
from trainer.commands.fit import features_for_run, fit
from trainer.models import build_model
from trainer.models.unified import ClipEncoder, tiny_clip_config
from trainer.models.train import Inputs


def test_run_is_complete_with_all_five_models(quick_run):
    run, preds = quick_run["run"], quick_run["preds"]
    assert run["status"] == "complete" and run["heldout_clinic"] == "clinic_7"
    assert list(run["classes"]) == ["emergency", "urgent_cancer", "routine_referral", "primary_care"]
    assert set(preds["model"]) == set(MODEL_NAMES)
    assert set(preds["split"]) == {"val", "calib", "test"}
    config = json.loads(run["config"])
    assert config["seed"] == 0 and config["preset"] == "quick" and "code_version" in config
    timings = json.loads(run["timings"])
    assert {"features", "train:unified", "train:cross_attention"} <= set(timings)
    assert preds["defer_score"].between(0, 1).all()  # filled by calibration at the end of fit


def test_heldout_clinic_only_in_test_and_no_patient_in_two_splits(quick_run):
    df = quick_run["splits"].merge(quick_run["cases"], on="case_id")
    assert (df.loc[df["clinic"] == "clinic_7", "split"] == "test").all()
    assert not (df.loc[df["split"] != "test", "clinic"] == "clinic_7").any()
    assert (df.groupby("patient_id")["split"].nunique() == 1).all()


def test_probs_sum_to_one_and_argmax_is_y_pred(quick_run):
    preds, classes = quick_run["preds"], list(quick_run["run"]["classes"])
    probs = np.stack(preds["probs"].to_numpy())
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    assert (probs >= 0).all()
    assert (np.asarray(classes)[probs.argmax(1)] == preds["y_pred"].to_numpy()).all()


def test_empty_notes_are_predicted(quick_run):
    empty = quick_run["cases"].loc[quick_run["cases"]["note"] == "", "case_id"]
    got = quick_run["preds"][quick_run["preds"]["case_id"].isin(empty)]
    assert len(empty) > 0 and len(got) == len(set(empty) & set(quick_run["preds"]["case_id"])) * len(MODEL_NAMES)


@pytest.mark.slow  # a whole fit of its own: `./run.sh test-slow`
def test_same_seed_same_predictions_and_identical_metrics_table(quick_run, synth_store):
    again = fit(synth_store, "dermsynth", quick_run["cfg"], log=lambda m: None)
    with TriageStore(synth_store, read_only=True) as store:
        second = store.read_predictions(again)
        tables = [store.read_table("metrics", r).drop(columns="run_id") for r in (quick_run["run_id"], again)]
    first = quick_run["preds"]
    assert (first["case_id"].to_numpy() == second["case_id"].to_numpy()).all()
    np.testing.assert_allclose(np.stack(first["probs"]), np.stack(second["probs"]), atol=1e-6)
    # The metrics table, bootstrap intervals included, is identical to the last bit.
    keys = ["model", "split", "slice", "slice_value", "metric"]
    a, b = (t.sort_values(keys).reset_index(drop=True) for t in tables)
    assert len(a) > 1000
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_reloaded_checkpoints_reproduce_predictions(quick_run, synth_store):
    feats, cases, split, run, stats = features_for_run(synth_store, quick_run["run_id"])
    assert stats.misses == 0  # every encoder output came from the cache
    preds = quick_run["preds"]
    inputs = Inputs(feats)
    position = {c: i for i, c in enumerate(feats.case_ids)}
    models = {m: load_checkpoint(f"{run['artifacts_dir']}/{m}") for m in MODEL_NAMES}
    for name in ("text_only", "image_only", "cross_attention", "unified"):
        rows = preds[preds["model"] == name]
        idx = np.asarray([position[c] for c in rows["case_id"]])
        with torch.no_grad():
            probs = models[name](inputs.batch(idx)).softmax(1).numpy()
        np.testing.assert_allclose(probs, np.stack(rows["probs_uncal"]), atol=1e-5, err_msg=name)
    rows = preds[preds["model"] == "late_fusion"]
    logp = {m: torch.log(torch.tensor(np.stack(preds[preds["model"] == m]["probs_uncal"]))).float()
            for m in ("text_only", "image_only")}
    with torch.no_grad():
        probs = models["late_fusion"]({"logp_text": logp["text_only"], "logp_image": logp["image_only"]})
    np.testing.assert_allclose(probs.softmax(1).numpy(), np.stack(rows["probs_uncal"]), atol=1e-5)
    # The unified model's CLIP was exported as an open_clip folder and loads through open_clip.
    clip = open_clip.create_model(f"local-dir:{run['artifacts_dir']}/unified_clip", weights_only=True)
    assert clip.visual is not None


@pytest.mark.slow  # reads the run of the test above
def test_feature_cache_is_hit_on_the_second_run(quick_run, synth_store):
    # Both runs of the module shared one cache folder: the second found every file.
    with TriageStore(synth_store, read_only=True) as store:
        runs = store.list_runs()
    timings = [json.loads(t) for t in runs.sort_values("created_at")["timings"] if t]
    # photos, notes, the CNN, the LiT tower's pooled features, the CLIP
    assert timings[0]["cache_misses"] == 5 and timings[0]["cache_hits"] == 0
    assert timings[-1]["cache_misses"] == 0 and timings[-1]["cache_hits"] == 5


def _tiny_batch(n_classes=4, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    batch = {"images": torch.rand(n, 3, 32, 32, generator=g), "tokens": torch.randn(n, 12, 24, generator=g),
             "mask": torch.ones(n, 12, dtype=torch.bool), "text_present": torch.ones(n, dtype=torch.bool),
             "image_present": torch.ones(n, dtype=torch.bool), "image_tokens": torch.randn(n, 4, 16, generator=g),
             "clip_img": F.normalize(torch.randn(n, 16, generator=g), dim=-1),
             "clip_txt": F.normalize(torch.randn(n, 16, generator=g), dim=-1),
             "clip_tokens": torch.randint(1, 400, (n, 16), generator=g),
             "ngram_ids": torch.randint(0, 30, (n, 6), generator=g), "ngram_weights": torch.rand(n, 6, generator=g)}
    batch["clip_images"] = batch["images"]
    return batch, y


def _model(name):
    spec = {"name": name, "n_classes": 4, "text_dim": 24, "hidden": 32, "image_dim": 16, "embed_dim": 16,
            "ngram_vocab": 30, "clip": "tiny", "clip_cfg": tiny_clip_config(32, 16, 16)}
    if name == "cnn":
        return SmallCNN(4)
    if name == "clip_encoder":
        return ClipEncoder(spec)
    return build_model(spec)


HEADS = ["text_only", "image_only", "cross_attention", "unified"]


@pytest.mark.parametrize("name", HEADS + ["cnn", "clip_encoder"])
def test_each_model_can_overfit_a_tiny_batch(name):
    torch.manual_seed(0)
    model = _model(name)
    batch, y = _tiny_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch), y)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert (model(batch).argmax(1) == y).float().mean() == 1.0


@pytest.mark.parametrize("name", HEADS + ["cnn", "clip_encoder"])
def test_missing_note_and_unusable_photo_do_not_break_a_model(name):
    model = _model(name).eval()
    batch, _ = _tiny_batch()
    batch["text_present"][:8] = False
    batch["mask"][:8] = False  # an empty note has no real tokens
    batch["image_present"][4:12] = False
    batch["images"][4:12] = 0
    with torch.no_grad():
        logits = model(batch)
        # A missing note's word n-grams are never read.
        other = model({**batch, "ngram_weights": batch["ngram_weights"] * 5, "ngram_ids": batch["ngram_ids"].flip(1)})
    assert logits.shape == (16, 4) and torch.isfinite(logits).all()
    torch.testing.assert_close(other[:8], logits[:8])
    if name in ("text_only", "cross_attention"):  # the models with the word channel read it when the note is there
        assert not torch.allclose(other[8:], logits[8:])


def test_open_clip_local_checkpoint_loads_through_open_clip(tmp_path):
    from open_clip.model import CLIP

    cfg = tiny_clip_config(32, 16, 16)
    torch.manual_seed(0)
    clip = CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"]).eval()
    export_open_clip(tmp_path / "tiny", clip, cfg)
    encoder = OpenClipImageEncoder(f"local-dir:{tmp_path / 'tiny'}")
    images = (np.random.default_rng(0).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = clip.visual((x - encoder.mean) / encoder.std).numpy()
    np.testing.assert_allclose(encoder.encode(images), expected, atol=1e-5)
    with pytest.raises(ValueError, match="Cannot load the open_clip image encoder"):
        OpenClipImageEncoder("no-such-model:openai")


@pytest.mark.slow  # a whole fit of its own: `./run.sh test-slow`
def test_fit_with_an_open_clip_image_tower(synth_store, tmp_path):
    from open_clip.model import CLIP

    cfg = tiny_clip_config(32, 16, 16)
    torch.manual_seed(0)
    export_open_clip(tmp_path / "tower", CLIP(embed_dim=16, vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"]),
                     cfg)
    fit_cfg = load_config(preset="quick", models=("image_only",), cache_dir=str(tmp_path / "cache"),
                          image_encoder=f"open_clip:local-dir:{tmp_path / 'tower'}")
    run_id = fit(synth_store, "dermsynth", fit_cfg, log=lambda m: None)
    with TriageStore(synth_store, read_only=True) as store:
        preds = store.read_predictions(run_id)
    assert set(preds["model"]) == {"image_only"} and len(preds) > 0


def test_no_declared_heldout_clinic_is_refused_with_the_clinics_listed(quick_run):
    from trainer.commands.fit import FitError, resolve_heldout

    with pytest.raises(FitError, match="declares no held-out clinic; pass --heldout-clinic with one of: clinic_1"):
        resolve_heldout({"dataset": "mine", "heldout_clinic": None}, quick_run["cases"], None)


def test_cli_refuses_unknown_clinic_and_model(synth_store, capsys):
    assert main(["fit", "--db", str(synth_store), "--dataset", "dermsynth", "--heldout-clinic", "mars",
                 "--preset", "quick"]) == 2
    assert "clinics: clinic_1, clinic_2" in capsys.readouterr().err
    assert main(["fit", "--db", str(synth_store), "--dataset", "dermsynth", "--models", "magic"]) == 2
    assert "--models takes a comma-separated subset" in capsys.readouterr().err
