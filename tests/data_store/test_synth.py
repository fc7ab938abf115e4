import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from data_store.__main__ import main
from data_store.synth.clinics import CLINICS, HELDOUT_CLINIC
from data_store.synth.conditions import CATEGORIES
from data_store.synth.generate import SynthConfig, generate, render_case, sample_cases


def _digest(folder):
    h = hashlib.sha256((folder / "manifest.csv").read_bytes())
    for p in sorted((folder / "images").iterdir()):
        h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_files_whatever_the_workers(tmp_path):
    cfg = SynthConfig(n=40, seed=3, image_size=32)
    generate(cfg, tmp_path / "a", workers=1)
    generate(cfg, tmp_path / "b", workers=2)
    generate(SynthConfig(n=40, seed=4, image_size=32), tmp_path / "c", workers=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


@pytest.fixture(scope="module")
def cases_14k():
    return sample_cases(SynthConfig(n=14000, seed=0))


def test_composition_matches_the_documented_mix(cases_14k):
    df = cases_14k
    assert len(df) == 14000 and df["clinic"].nunique() == 7
    fitz = df["fitzpatrick"].value_counts(normalize=True).sort_index().to_numpy()
    np.testing.assert_allclose(fitz, [0.09, 0.30, 0.28, 0.17, 0.10, 0.06], atol=0.02)
    cats = df["label"].value_counts(normalize=True)
    assert set(cats.index) == set(CATEGORIES)
    assert cats.idxmin() == "emergency" and 0.08 <= cats["emergency"] <= 0.12
    assert df["sim_condition"].nunique() == 11
    assert abs(df["sim_note_empty"].mean() - 0.04) < 0.01
    assert (df.loc[df["sim_note_empty"], "note"] == "").all()
    assert abs(df["sim_photo_unusable"].mean() - 0.03) < 0.01
    assert abs(df["sim_label_noise"].mean() - 0.02) < 0.006
    assert (df.loc[~df["sim_label_noise"], "label"] == df.loc[~df["sim_label_noise"], "sim_true_label"]).all()
    assert abs(df["sim_ambiguous"].mean() - 0.06) < 0.01
    # Some patients have two lesions, always at one clinic.
    assert df["patient_id"].nunique() < len(df)
    assert (df.groupby("patient_id")["clinic"].nunique() == 1).all()


def test_heldout_clinic_serves_far_more_darker_skin(cases_14k):
    dark = cases_14k["fitzpatrick"] >= 4
    held = cases_14k["clinic"] == HELDOUT_CLINIC
    assert dark[held].mean() > 2 * dark[~held].mean()


def test_notes_have_one_to_four_sentences_and_clinic_styles(cases_14k):
    notes = cases_14k.loc[cases_14k["note"] != ""]
    written = notes.loc[notes["clinic"] != HELDOUT_CLINIC, "note"]  # prose and terse end sentences with '.'
    n_sentences = written.str.count(r"[.!?](\s|$)")
    assert n_sentences.between(1, 4).all() and n_sentences.max() == 4
    assert notes.loc[notes["clinic"] == HELDOUT_CLINIC, "note"].str.contains("lsn|hx ").mean() > 0.5
    assert not notes.loc[notes["clinic"] != HELDOUT_CLINIC, "note"].str.contains(" lsn ").any()


def _contrast_by_type(tone_effect: float) -> dict[int, float]:
    """Mean |log difference| between each photo and the same photo without its lesion,
    for the same 40 cases re-rendered on each skin type."""
    cfg = SynthConfig(n=60, seed=1, image_size=64, tone_effect=tone_effect)
    cases = sample_cases(cfg)
    cases = cases[~cases["sim_photo_unusable"] & (cases["clinic"] != HELDOUT_CLINIC)].head(40)
    out = {}
    for fitz in (1, 2, 5, 6):
        values = []
        for idx, case in cases.iterrows():
            case = dict(case.to_dict(), fitzpatrick=fitz)
            with_lesion = render_case(case, cfg, idx).astype(float) + 1
            without = render_case(case, cfg, idx, with_lesion=False).astype(float) + 1
            values.append(np.abs(np.log(with_lesion) - np.log(without)).mean())
        out[fitz] = float(np.mean(values))
    return out


def test_tone_effect_lowers_contrast_on_darker_skin_and_zero_removes_it():
    on, off = _contrast_by_type(0.6), _contrast_by_type(0.0)
    ratio_on = (on[5] + on[6]) / (on[1] + on[2])
    ratio_off = (off[5] + off[6]) / (off[1] + off[2])
    assert ratio_on < 0.6  # expected about (0.52 + 0.40) / (1.0 + 0.88) = 0.49
    assert 0.95 < ratio_off < 1.05
    assert on[1] == pytest.approx(off[1])  # type I is never changed by the effect


@pytest.mark.parametrize("clinic", [c.clinic_id for c in CLINICS])
def test_no_clinic_camera_saturates_light_skin(clinic):
    """A camera that clips the red channel of type I skin would hide lesions on light skin:
    a tone effect nobody planted (the held-out clinic once clipped half its pixels)."""
    cfg = SynthConfig(n=300, seed=4, image_size=64)
    cases = sample_cases(cfg)
    cases = cases[(cases["clinic"] == clinic) & ~cases["sim_photo_unusable"]].head(12)
    red = np.stack([render_case(dict(c.to_dict(), fitzpatrick=1), cfg, i, with_lesion=False)[..., 0]
                    for i, c in cases.iterrows()])
    assert (red >= 250).mean() < 0.03


def test_cli_writes_folder_with_sidecar_and_datasheet(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["synth", "--out", str(out), "--n", "30", "--image-size", "24", "--workers", "1",
                 "--tone-effect", "0"]) == 0
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert len(manifest) == 30
    assert all((out / p).is_file() and not p.startswith("/") for p in manifest["image_path"])
    sidecar = json.loads((out / "dataset.json").read_text())
    assert sidecar["heldout_clinic"] == HELDOUT_CLINIC and sidecar["classes"] == list(CATEGORIES)
    assert sidecar["generator"]["tone_effect"] == 0.0
    sheet = (out / "DATASHEET.md").read_text()
    assert "simulated" in sheet and "`tone_effect`: 0.0" in sheet and "What the data cannot tell" in sheet


def test_cli_refuses_bad_settings(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "x"), "--tone-effect", "1.5"]) == 2
    assert "--tone-effect must be in [0, 1]" in capsys.readouterr().err
