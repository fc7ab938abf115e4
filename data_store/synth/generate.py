"""DermSynth: sample cases (latent truth + vignette), render photos and notes, write a
manifest folder. Deterministic for a seed, whatever the number of worker processes."""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from data_store.synth.clinics import CLINICS, FITZPATRICK_TYPES, HELDOUT_CLINIC
from data_store.synth.conditions import (BY_NAME, CATEGORIES, CATEGORY_PRIOR, CONDITIONS,
                                         URGENT_CATEGORIES)
from data_store.synth.lesions import contrast_factor, render_lesion
from data_store.synth.notes import Vignette, write_note
from data_store.synth.skin import draw_hair, render_skin


@dataclass(frozen=True)
class SynthConfig:
    """Every simulated effect and its strength (written to DATASHEET.md and dataset.json)."""

    n: int = 14000
    seed: int = 0
    image_size: int = 128
    tone_effect: float = 0.85  # lesion contrast on type VI is (1 - tone_effect) of type I
    ambiguous_rate: float = 0.06  # image and note both present as a neighbouring condition
    label_noise: float = 0.02  # label replaced by another category
    empty_note_rate: float = 0.04
    unusable_photo_rate: float = 0.03  # heavily blurred or overexposed
    vague_note_rate: float = 0.30  # note names only who, where and how long
    guess_rate: float = 0.35  # referrer states a suspected diagnosis
    guess_wrong_rate: float = 0.30  # ...which names a look-alike instead
    repeat_patient_rate: float = 0.10  # cases that are a second lesion of an earlier patient


def _pick(rng: np.random.Generator, table: dict[str, float]) -> str:
    keys = list(table)
    p = np.asarray([table[k] for k in keys], dtype=float)
    return keys[rng.choice(len(keys), p=p / p.sum())]


def _lookalike(name: str) -> str:
    c = BY_NAME[name]
    return c.image_lookalike[0] if c.image_lookalike else c.neighbour


def sample_cases(cfg: SynthConfig) -> pd.DataFrame:
    """Latent truth, vignette and note for every case; no images. One row per case."""
    rng = np.random.default_rng([cfg.seed, 1])
    clinic_p = np.asarray([c.share for c in CLINICS])
    cond_by_cat = {cat: [c for c in CONDITIONS if c.category == cat] for cat in CATEGORIES}
    rows: list[dict] = []
    n_patients = 0
    for i in range(cfg.n):
        repeat = rows and rng.random() < cfg.repeat_patient_rate
        if repeat:  # a second lesion of an earlier patient: same person, same clinic
            prev = rows[int(rng.integers(len(rows)))]
            patient, clinic_i, fitz = prev["patient_id"], prev["_clinic_i"], prev["fitzpatrick"]
            age, sex = prev["age"], prev["sex"]
        else:
            n_patients += 1
            patient = f"P{n_patients:06d}"
            clinic_i = int(rng.choice(len(CLINICS), p=clinic_p / clinic_p.sum()))
            mix = np.asarray(CLINICS[clinic_i].fitzpatrick_mix)
            fitz = int(rng.choice(FITZPATRICK_TYPES, p=mix / mix.sum()))
            age, sex = None, "F" if rng.random() < 0.52 else "M"
        category = CATEGORIES[rng.choice(len(CATEGORIES), p=CATEGORY_PRIOR)]
        options = cond_by_cat[category]
        share = np.asarray([c.share_in_category for c in options])
        cond = options[rng.choice(len(options), p=share / share.sum())]
        if age is None:
            age = int(np.clip(rng.normal(*cond.age), 1, 95))
        rows.append({"case_id": f"DS{i:06d}", "patient_id": patient, "clinic": CLINICS[clinic_i].clinic_id,
                     "_clinic_i": clinic_i, "image_path": f"images/DS{i:06d}.jpg",
                     **_evidence(rng, cfg, cond, CLINICS[clinic_i], fitz, age, sex)})
    return pd.DataFrame(rows)


def _evidence(rng: np.random.Generator, cfg: SynthConfig, cond, clinic, fitz: int, age: int, sex: str) -> dict:
    """What the case shows and says (image condition, the note from its vignette) and its
    label, with the simulation's truths in ``sim_*`` columns."""
    ambiguous = rng.random() < cfg.ambiguous_rate
    shown = BY_NAME[cond.neighbour] if ambiguous else cond  # what the evidence points to
    image_cond = shown.name
    if not ambiguous and cond.image_lookalike and rng.random() < cond.image_lookalike[1]:
        image_cond = cond.image_lookalike[0]
    guess = None
    guess_wrong = False
    if rng.random() < cfg.guess_rate:
        guess_wrong = rng.random() < cfg.guess_wrong_rate
        guess = BY_NAME[_lookalike(shown.name) if guess_wrong else shown.name].display
    vignette = Vignette(
        age=age, sex=sex, site=_pick(rng, shown.sites), duration=_pick(rng, shown.duration),
        evolution=_pick(rng, shown.evolution), fever=bool(rng.random() < shown.p_fever),
        pain=bool(rng.random() < shown.p_pain), itch=bool(rng.random() < shown.p_itch),
        bleeding=bool(rng.random() < shown.p_bleeding),
        history=tuple(h for h, p in shown.history.items() if rng.random() < p), guess=guess)
    note_empty = rng.random() < cfg.empty_note_rate
    vague = rng.random() < cfg.vague_note_rate
    note = "" if note_empty else write_note(rng, vignette, clinic.note_style, vague)
    label = cond.category
    noisy = rng.random() < cfg.label_noise
    if noisy:
        label = CATEGORIES[(CATEGORIES.index(label) + int(rng.integers(1, len(CATEGORIES)))) % len(CATEGORIES)]
    return {"note": note, "label": label, "fitzpatrick": fitz, "age": age, "sex": sex, "body_site": vignette.site,
            "sim_condition": cond.name, "sim_true_label": cond.category, "sim_label_noise": noisy,
            "sim_ambiguous": ambiguous, "sim_image_condition": image_cond,
            "sim_image_lookalike": image_cond != shown.name, "sim_note_vague": vague and not note_empty,
            "sim_note_empty": note_empty, "sim_referrer_guess_wrong": guess_wrong,
            "sim_photo_unusable": bool(rng.random() < cfg.unusable_photo_rate),
            "sim_lesion_contrast": contrast_factor(fitz, cfg.tone_effect)}


def render_case(case: dict, cfg: SynthConfig, index: int, with_lesion: bool = True) -> np.ndarray:
    """The photo of one case as uint8 (size, size, 3); seeded by (seed, index) alone."""
    rng = np.random.default_rng([cfg.seed, 2, index])
    size = cfg.image_size
    img = render_skin(rng, size, int(case["fitzpatrick"]), case["body_site"])
    lesion_rng = np.random.default_rng([cfg.seed, 3, index])
    if with_lesion:
        img, _ = render_lesion(lesion_rng, img, case["sim_image_condition"],
                               contrast_factor(int(case["fitzpatrick"]), cfg.tone_effect))
    img = draw_hair(np.random.default_rng([cfg.seed, 4, index]), img, case["body_site"], int(case["fitzpatrick"]))
    cam = CLINICS[int(case["_clinic_i"])].camera
    cam_rng = np.random.default_rng([cfg.seed, 5, index])
    img = img * np.asarray(cam.cast, np.float32) * cam.exposure
    blur = cam.blur * size / 128
    if case["sim_photo_unusable"]:
        if cam_rng.random() < 0.5:
            blur = size / 128 * cam_rng.uniform(5, 8)
        else:
            img = img * cam_rng.uniform(2.2, 3.0)
    img = img + cam_rng.normal(0, cam.noise / 255, img.shape)
    out = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    if blur > 0.05:
        out = out.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(out)


def _render_chunk(args: tuple[list[dict], SynthConfig, str]) -> int:
    cases, cfg, out_dir = args
    for case in cases:
        img = render_case(case, cfg, int(case["case_id"][2:]))
        Image.fromarray(img).save(Path(out_dir) / case["image_path"], quality=92)
    return len(cases)


def generate(cfg: SynthConfig, out_dir: Path, workers: int | None = None, progress=None) -> pd.DataFrame:
    """Write out_dir/images/, manifest.csv, dataset.json and DATASHEET.md; return the manifest."""
    from data_store.synth.datasheet import write_datasheet

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    cases = sample_cases(cfg)
    records = cases.to_dict("records")
    workers = workers or min(os.cpu_count() or 1, 8)
    chunks = [records[i:i + 200] for i in range(0, len(records), 200)]
    jobs = [(chunk, cfg, str(out_dir)) for chunk in chunks]
    if workers == 1:
        done = map(_render_chunk, jobs)
        for n in done:
            progress and progress(n)
    else:
        with ProcessPoolExecutor(workers) as pool:
            for n in pool.map(_render_chunk, jobs):
                progress and progress(n)
    manifest = cases.drop(columns="_clinic_i")
    manifest.to_csv(out_dir / "manifest.csv", index=False)
    sidecar = {"name": f"DermSynth-{cfg.n // 1000}k" if cfg.n % 1000 == 0 else f"DermSynth-{cfg.n}",
               "simulated": True, "classes": list(CATEGORIES), "urgent_classes": list(URGENT_CATEGORIES),
               "heldout_clinic": HELDOUT_CLINIC, "generator": asdict(cfg)}
    (out_dir / "dataset.json").write_text(json.dumps(sidecar, indent=2))
    write_datasheet(out_dir / "DATASHEET.md", cfg, manifest)
    return manifest
