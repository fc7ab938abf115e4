"""Captum attributions: completeness, the model-randomisation sanity check, words that line
up with the note, and planted signals found in the right modality and place."""
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from data_store.images import load_rgb
from data_store.store import TriageStore
from trainer.__main__ import main
from trainer.commands.explain import explain_case
from trainer.explain.records import decode_heatmap
from trainer.config import MODEL_NAMES
from trainer.encoders.image import SmallCNN
from trainer.encoders.text import TextEncoder
from trainer.explain.attribution import CasePipeline, explain, note_words
from trainer.explain.loading import load_pipeline
from trainer.models.baselines import ImageOnly, TextOnly


def _test_case(quick_run):
    """The test case with the longest note."""
    preds, cases = quick_run["preds"], quick_run["cases"].set_index("case_id")
    ids = preds[(preds.split == "test") & (preds.model == "late_fusion")]["case_id"]
    case_id = max(ids, key=lambda c: (len(note_words(cases.loc[c, "note"])), c))
    return case_id, cases.loc[case_id]


# Known defect, open in issue 14: through the LiT unified model's EfficientNet-Lite0 (ReLU6
# kinks) the Gauss-Legendre integral converges unevenly; measured deltas 0.02-0.09 at 32-128
# steps. The stored convergence_delta shows it per case. Strict: a fix makes this test fail.
LIT_DELTA = pytest.mark.xfail(reason="IG completeness of the LiT unified model above 0.02", strict=True)


@pytest.mark.parametrize("model", [pytest.param(m, marks=LIT_DELTA) if m == "unified" else m for m in MODEL_NAMES])
def test_completeness_delta_is_small_and_words_line_up(quick_run, model):
    case_id, case = _test_case(quick_run)
    pipe = load_pipeline(quick_run["run"]["artifacts_dir"], model)
    e = explain(pipe, load_rgb(case["image_path"], pipe.image_size), case["note"], n_steps=32)
    assert e.delta < 0.02, e.delta
    assert e.words == [w for w, _, _ in note_words(case["note"])]
    assert len(e.word_scores) == len(e.words)
    assert " ".join(e.words).replace(" ", "") == "".join(case["note"].split())
    assert sum(e.modality_share.values()) == pytest.approx(1.0)
    # The models with the word channel have it in the attributions (the baseline zeroes its
    # weights, so leaving it out would break completeness above).
    assert (pipe.ngrams is not None) == (model in ("text_only", "late_fusion", "cross_attention"))
    if model == "text_only":
        assert e.heatmap_ig is None and e.modality_share["image"] == 0
    if model == "image_only":
        assert not e.word_scores.any() and e.modality_share["text"] == 0
        assert e.heatmap_ig.shape == e.heatmap_occlusion.shape == (32, 32)


def _randomised(pipe: CasePipeline) -> CasePipeline:
    torch.manual_seed(1)
    for m in list(pipe.model.modules()) + list(pipe.image_encoder.modules() if pipe.image_encoder else []):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.reset_parameters()
    return pipe


@pytest.mark.parametrize("model", ["image_only", "text_only"])
def test_attributions_of_a_randomised_model_differ_from_the_trained_ones(quick_run, model):
    _, case = _test_case(quick_run)
    run_dir = quick_run["run"]["artifacts_dir"]
    trained = load_pipeline(run_dir, model)
    photo = load_rgb(case["image_path"], trained.image_size)
    a = explain(trained, photo, case["note"], occlusion=False)
    b = explain(_randomised(load_pipeline(run_dir, model)), photo, case["note"], occlusion=False)
    x, y = (a.heatmap_ig.ravel(), b.heatmap_ig.ravel()) if model == "image_only" else (a.word_scores, b.word_scores)
    assert len(x) >= 10
    assert abs(spearmanr(x, y).statistic) < 0.5


def test_a_word_planted_in_the_notes_gets_the_highest_score():
    rng = np.random.default_rng(0)
    filler = ["red", "patch", "on", "left", "arm", "for", "two", "weeks", "itchy", "dry", "skin", "no", "fever"]
    notes, labels = [], []
    for i in range(120):
        words = list(rng.choice(filler, size=6))
        if i % 2:
            words.insert(int(rng.integers(0, 6)), "zebra")
        notes.append(" ".join(words))
        labels.append(i % 2)
    encoder = TextEncoder("all-MiniLM-L6-v2", max_tokens=16)
    tokens, mask = encoder.encode(notes)
    spec = {"text_dim": encoder.dim, "hidden": 32, "n_classes": 2}
    torch.manual_seed(0)
    model = TextOnly(spec)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = {"tokens": torch.from_numpy(tokens.astype(np.float32)), "mask": torch.from_numpy(mask),
             "text_present": torch.ones(len(notes), dtype=torch.bool)}
    y = torch.tensor(labels)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model.train()(batch), y).backward()
        opt.step()
    pipe = CasePipeline(model.eval(), text_encoder=encoder, image_size=8)
    note = "itchy zebra patch on left arm"
    e = explain(pipe, np.zeros((8, 8, 3), np.uint8), note, target=1, occlusion=False)
    assert e.words[int(np.argmax(e.word_scores))] == "zebra"


def test_a_patch_planted_in_the_photos_gets_the_highest_heatmap_mass():
    rng = np.random.default_rng(0)
    n, side = 240, 32
    photos = np.clip(rng.normal(170, 12, (n, side, side, 3)), 0, 255).astype(np.uint8)
    labels = np.arange(n) % 2
    corners = rng.integers(0, side - 8, (n, 2))
    for i in np.flatnonzero(labels):
        r, c = corners[i]
        photos[i, r:r + 8, c:c + 8] = (60, 30, 30)  # a dark lesion-like square: the only signal
    torch.manual_seed(0)
    cnn = SmallCNN(2, widths=(8, 16, 16, 16))
    head = ImageOnly({"image_dim": 16, "hidden": 16, "n_classes": 2})
    pipe = CasePipeline(head, image_encoder=cnn, image_size=side)
    params = list(cnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    x = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(labels)
    for p in params:
        p.requires_grad_(True)
    for _ in range(40):
        for s in range(0, n, 60):
            cnn.train(), head.train()
            batch = {"image_tokens": cnn.tokens(x[s:s + 60]), "image_present": torch.ones(len(x[s:s + 60]), dtype=bool)}
            opt.zero_grad()
            nn.functional.cross_entropy(head(batch), y[s:s + 60]).backward()
            opt.step()
    cnn.eval(), head.eval()
    for p in params:
        p.requires_grad_(False)
    with torch.no_grad():
        batch = {"image_tokens": cnn.tokens(x), "image_present": torch.ones(n, dtype=bool)}
        assert (head(batch).argmax(1) == y).float().mean() > 0.95
    for i in np.flatnonzero(labels)[:3]:
        e = explain(pipe, photos[i], "", target=1)
        r, c = corners[i]
        windows = np.lib.stride_tricks.sliding_window_view(np.abs(e.heatmap_ig), (8, 8)).sum((2, 3))
        br, bc = np.unravel_index(np.argmax(windows), windows.shape)
        assert max(0, 8 - abs(br - r)) * max(0, 8 - abs(bc - c)) / 64 >= 0.5, (br, bc, r, c)  # IG: the patch
        inside = np.zeros((side, side), bool)
        inside[r:r + 8, c:c + 8] = True
        occ = e.heatmap_occlusion  # the second opinion: more mass inside the patch than outside
        assert occ[inside].mean() > 3 * np.abs(occ[~inside]).mean()


def test_cli_stores_attributions_and_on_demand_reuses_them(quick_run, synth_store, capsys):
    run_id = quick_run["run_id"]
    case_id, _ = _test_case(quick_run)
    assert main(["explain", "--db", str(synth_store), "--run", run_id, "--model", "cross_attention",
                 "--cases", "3", "--sample", "1"]) == 0
    with TriageStore(synth_store, read_only=True) as store:
        rows = store.read_attributions(run_id, "cross_attention")
    assert set(rows["method"]) == {"integrated_gradients", "occlusion"}
    assert rows["case_id"].nunique() == 4
    ig = rows[rows.method == "integrated_gradients"].iloc[0]
    assert decode_heatmap(ig["image_heatmap"], ig["heatmap_side"]).shape == (32, 32)
    assert set(ig["target_class"]) and len(ig["tokens"]) == len(ig["token_scores"])
    fresh = explain_case(synth_store, run_id, "text_only", case_id)
    again = explain_case(synth_store, run_id, "text_only", case_id)
    assert len(fresh) == 1 and fresh["created_at"].iloc[0] == again["created_at"].iloc[0]  # stored, then reused
    assert main(["explain", "--db", str(synth_store), "--run", run_id, "--model", "nope"]) == 2
    assert "no model" in capsys.readouterr().err


def test_overlay_tints_where_the_heatmap_is_strong_and_notes_render_as_pixels():
    from trainer.explain.figures import case_figure, note_image, overlay_heatmap

    photo = np.full((32, 32, 3), 128, np.uint8)
    heat = np.zeros((16, 16))
    heat[0, 0], heat[15, 15] = 1.0, -1.0
    out = overlay_heatmap(photo, heat)
    assert out.shape == (32, 32, 3)
    assert out[0, 0, 1] > 128 > out[0, 0, 2]  # supporting evidence: yellow
    assert out[31, 31, 2] > 128 > out[31, 31, 0]  # evidence against: blue
    assert (out[10:20, 10:20] == 128).all()  # no evidence: the photo as it was
    note = note_image(["<b>bleeding</b>", "for", "2wk"], [1.0, 0.0, -0.5])
    assert note.mode == "RGB" and note.width == 640
    fig = case_figure(photo, {"IG": heat, "Occlusion": None}, ["a"], [0.1], "case x")
    assert fig.width >= 2 * 32 * 4


def test_a_row_without_a_photo_channel_decodes_to_no_heatmap():
    # DuckDB hands back missing BLOB and INTEGER values as pandas NA (text_only stores neither).
    assert decode_heatmap(pd.NA, pd.NA) is None and decode_heatmap(None, None) is None


def test_word_ngram_attributions_are_exact_for_a_linear_word_channel():
    """A model whose logits are a linear function of the n-gram weights: IG gives each n-gram
    weight x coefficient, shared by the words it covers (analytic answer)."""
    from trainer.encoders.ngrams import NgramVocabulary

    vocab = NgramVocabulary.fit(["red patch arm", "red patch leg", "arm", "leg"])

    class Linear(torch.nn.Module):
        uses = ()  # neither the note encoder's tokens nor the photo: the word channel alone
        spec = {"n_classes": 2}

        def __init__(self):
            super().__init__()
            self.ngrams = torch.nn.EmbeddingBag(vocab.size, 2, mode="sum", padding_idx=0)

        def forward(self, batch):
            return self.ngrams(batch["ngram_ids"], per_sample_weights=batch["ngram_weights"])

    torch.manual_seed(0)
    model = Linear()
    pipe = CasePipeline(model.eval(), image_size=8, ngrams=vocab)
    note = "Red patch, arm"
    tok = pipe.tokenize(note)
    e = explain(pipe, np.zeros((8, 8, 3), np.uint8), note, target=1, n_steps=8)
    ids, weights = tok["ngram_ids"][0], tok["ngram_weights"][0]
    contrib = {vocab.term(int(i)): float(w * model.ngrams.weight[i, 1]) for i, w in zip(ids, weights) if i}
    expected = {"Red": contrib["red"] + contrib["red patch"] / 2, "patch": contrib["patch"] + contrib["red patch"] / 2,
                ",": 0.0, "arm": contrib["arm"] + contrib.get("patch arm", 0) / 2}
    assert dict(zip(e.words, e.word_scores)) == pytest.approx(expected, abs=1e-5)
    assert e.delta < 1e-4 and e.modality_share["text"] == 1.0
