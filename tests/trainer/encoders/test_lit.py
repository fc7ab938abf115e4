"""The unified model's LiT CLIP: an open_clip CustomTextCLIP with the pretrained
EfficientNet-Lite0 locked as its timm image tower and MiniLM as its Hugging Face text tower."""
import numpy as np
import pytest
import torch

from trainer.encoders import lit
from trainer.models.checkpoints import export_open_clip
from trainer.models.unified import LitEncoder

TEXT = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def clip_and_tower(tmp_path_factory):
    torch.manual_seed(0)
    cfg = lit.lit_config(16, 64, TEXT, 24)
    clip = lit.build_lit(cfg)
    tower = lit.image_tower(64, tmp_path_factory.mktemp("cache"))
    lit.load_image_tower(clip, tower)
    return clip.eval(), tower, cfg


def test_the_cached_pooled_features_are_what_the_clip_reads_from_pixels(clip_and_tower):
    clip, tower, _ = clip_and_tower
    pixels = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        direct = clip.encode_image((pixels - tower.mean) / tower.std)
        via_cache = clip.visual.head(tower.tokens(pixels).mean(1))
    torch.testing.assert_close(via_cache, direct, atol=1e-5, rtol=1e-5)


def test_the_image_tower_is_locked_and_the_text_tower_learns(clip_and_tower):
    clip, _, cfg = clip_and_tower
    spec = {"name": "clip_encoder", "n_classes": 3, "clip": "lit", "embed_dim": 16, "clip_cfg": cfg}
    encoder = LitEncoder(spec)
    encoder.clip.load_state_dict(clip.state_dict())
    encoder.clip.lock_image_tower(unlocked_groups=0)
    assert not any(p.requires_grad for p in encoder.clip.visual.trunk.parameters())
    groups = encoder.param_groups(1e-3)
    assert groups[0]["lr"] == pytest.approx(1e-4) and len(groups[0]["params"]) > 0
    trunk = {k: v.clone() for k, v in encoder.clip.visual.trunk.state_dict().items()}
    text = {k: v.clone() for k, v in encoder.clip.text.state_dict().items()}
    ids = torch.from_numpy(lit.tokenize(["itchy rash on the arm", "bleeding lesion, face", "pt M60 back lsn"],
                                        TEXT, 24))
    batch = {"lit_pooled": torch.randn(3, 1280), "clip_tokens": ids, "text_present": torch.ones(3, dtype=torch.bool),
             "image_present": torch.ones(3, dtype=torch.bool)}
    opt = torch.optim.AdamW(groups, lr=1e-3)
    encoder.train()
    encoder.clip.visual.trunk.eval()
    logits, contrastive = encoder.logits_and_contrastive(batch)
    (torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])) + contrastive).backward()
    opt.step()
    assert all(torch.equal(trunk[k], v) for k, v in encoder.clip.visual.trunk.state_dict().items())
    assert any(not torch.equal(text[k], v) for k, v in encoder.clip.text.state_dict().items())


def test_saved_as_an_open_clip_local_dir_and_reloaded(clip_and_tower, tmp_path):
    import open_clip

    clip, tower, cfg = clip_and_tower
    export_open_clip(tmp_path / "lit", clip, cfg)
    again = open_clip.create_model(f"local-dir:{tmp_path / 'lit'}", weights_only=True).eval()  # open_clip alone
    portable = lit.load_lit(tmp_path / "lit", TEXT)  # the text tower's folder looked up here
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ids = torch.from_numpy(lit.tokenize(["itchy rash", "q melanoma, bleeds"], TEXT, 24))
    with torch.no_grad():
        for model in (again, portable):
            torch.testing.assert_close(model.encode_image((pixels - tower.mean) / tower.std),
                                       clip.encode_image((pixels - tower.mean) / tower.std))
            torch.testing.assert_close(model.encode_text(ids), clip.encode_text(ids))


def test_tokens_pad_with_zero_and_keep_the_limit():
    ids = lit.tokenize(["a short note", ""], TEXT, 12)
    assert ids.shape == (2, 12) and ids.dtype == np.int64
    assert (ids[1, 2:] == 0).all() and (ids[0] != 0).sum() == 5  # [CLS] a short note [SEP]
