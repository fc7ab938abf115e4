"""DATASHEET.md for a generated DermSynth folder, after "Datasheets for Datasets"
(Gebru et al., 2021). Every count is computed from the manifest just written."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd

from data_store.fitzpatrick import ROMAN
from data_store.synth.clinics import CLINICS, HELDOUT_CLINIC
from data_store.synth.conditions import CONDITIONS



def _crosstab(manifest: pd.DataFrame, column: str) -> pd.DataFrame:
    tab = pd.crosstab(manifest["clinic"], manifest[column], margins=True, margins_name="all")
    return tab.reset_index().rename(columns={"clinic": "clinic"})


def write_datasheet(path: Path, cfg, manifest: pd.DataFrame) -> None:
    n = len(manifest)
    fitz = manifest["fitzpatrick"].map(ROMAN)
    fitz_share = (fitz.value_counts(normalize=True).reindex(list(ROMAN.values())) * 100).round(1)
    rates = {
        "label noise (label is another category)": manifest["sim_label_noise"].mean(),
        "genuinely ambiguous (image and note point to a neighbour)": manifest["sim_ambiguous"].mean(),
        "photo shows a look-alike condition": manifest["sim_image_lookalike"].mean(),
        "vague note (who, where, how long only)": manifest["sim_note_vague"].mean(),
        "empty note": manifest["sim_note_empty"].mean(),
        "unusable photo (blurred or overexposed)": manifest["sim_photo_unusable"].mean(),
        "referrer's suspected diagnosis is wrong": manifest["sim_referrer_guess_wrong"].mean(),
    }
    settings = "\n".join(f"- `{k}`: {v}" for k, v in asdict(cfg).items())
    clinics = "\n".join(
        f"- `{c.clinic_id}`: {c.description}; note style `{c.note_style}`; camera cast {c.camera.cast}, "
        f"blur sigma {c.camera.blur} px at 128 px, exposure x{c.camera.exposure}, noise {c.camera.noise}/255"
        for c in CLINICS)
    lookalikes = "\n".join(
        f"- {c.display} ({c.category}): photo looks like "
        f"{c.image_lookalike[0].replace('_', ' ')} in {c.image_lookalike[1]:.0%} of cases; "
        f"ambiguous neighbour {c.neighbour.replace('_', ' ')}"
        for c in CONDITIONS if c.image_lookalike)
    text = f"""# DATASHEET: DermSynth ({n:,} simulated cases)

**This dataset is simulated.** No patient, photo or note in it is real. It exists to
exercise and check a multimodal triage pipeline against known truth; no result obtained
on it is clinical evidence.

## Motivation
A default dataset that works offline and reproduces problems real teams face: skin-tone
imbalance, a clinic that differs from the rest (camera, note style, case mix), vague
notes, poor photos, ambiguous cases and wrong labels. Every effect below is a setting
that can be switched off, so an audit can be checked against the truth.

## Composition
- {n:,} image-note pairs, {manifest['patient_id'].nunique():,} patients (some have two lesions),
  {manifest['clinic'].nunique()} clinics. The default held-out clinic is `{HELDOUT_CLINIC}`.
- Labels: 4 triage categories from 11 conditions; the condition itself is in `sim_condition`.
- Fitzpatrick skin type share (%): {', '.join(f'{k} {v}' for k, v in fitz_share.items())}.

### Cases by clinic and category
{_crosstab(manifest, 'label').to_markdown(index=False)}

### Cases by clinic and Fitzpatrick type
{_crosstab(manifest.assign(fitzpatrick=fitz), 'fitzpatrick').to_markdown(index=False)}

### Columns
`case_id`, `patient_id`, `clinic`, `image_path` (relative to this folder), `note`,
`label`, `fitzpatrick` (1-6), `age`, `sex`, `body_site`. Columns starting with `sim_`
are simulation truths for evaluation only; no model may read them.

## Collection process (the simulation)
Settings of this run:
{settings}

Clinics:
{clinics}

- **Photos**: skin with a per-type colour, mottled texture, pores, lighting gradient and
  vignetting; body-site cues (shadow on the face, creases on the hand, hair density by
  site); a lesion whose morphology follows the condition (size, asymmetry, border
  irregularity, colour and variegation, scale, crust, warty surface, pearly sheen with
  vessels, vesicles in a band, spreading redness, ring with central clearing); then the
  clinic's camera (colour cast, blur, exposure, noise) and JPEG compression.
- **Tone effect** (`tone_effect` = {cfg.tone_effect}): every lesion and redness contrast
  (in log-RGB) is multiplied by `1 - tone_effect * (type - 1) / 5`, so on type VI skin a
  lesion shows {1 - cfg.tone_effect:.0%} of the contrast it shows on type I. With
  `--tone-effect 0` contrast does not depend on skin type.
- **Notes**: 1 to 4 sentences from a vignette (age, sex, site, duration, evolution, fever,
  pain, itch, bleeding, history, sometimes the referrer's suspected diagnosis), each fact
  mentioned with probability 0.75, in the clinic's style (`prose`, `terse` abbreviations,
  or the held-out clinic's `shorthand`).
- **Look-alikes**: the photo alone cannot tell these apart; the note usually can.
{lookalikes}

### Realised rates in this folder
{pd.DataFrame({'effect': list(rates), 'share': [f'{v:.1%}' for v in rates.values()]}).to_markdown(index=False)}

## Uses
Testing and demonstrating the pipeline: training, calibration, deferral, the skin-tone
and clinic audit, attributions, the dashboard and the handoff document. Checking that
an audit finds a gap that was planted (`tone_effect` > 0) and finds none when it was not.

## What the data cannot tell
- Anything about real patients, real dermatology, real cameras or real referral notes.
- Real prevalence: category and skin-type mixes are settings, not estimates.
- Real bias mechanisms: only the documented tone effect is simulated; real gaps in
  photographs of darker skin have more causes (training data, lighting, condition
  presentation) and their size is unknown here.
- Whether a model is safe to deploy. Only validation on real data from the target
  setting can say that.

## Distribution and maintenance
Generated by `python -m data_store synth`; regenerate with the settings above for an
identical folder.
"""
    Path(path).write_text(text)
