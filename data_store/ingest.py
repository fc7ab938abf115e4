"""Manifest -> validated cases and rejected rows with reasons, written in one transaction.

Nothing is dropped silently: every manifest row ends up in ``cases`` or in
``rejected_rows``. A file or a required column that cannot be used stops the ingest
with ``ManifestError`` before anything is written.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from data_store.fitzpatrick import parse_fitzpatrick
from data_store.images import ImageRejected, check_image, load_rgb
from data_store.lookalike import canonical_spellings, difference, skeleton
from data_store.manifest import MAX_ROW_BYTES, ManifestError, Mapping, read_manifest

REQUIRED = ("patient_id", "clinic", "image_path", "note", "label")
CORE = ("case_id",) + REQUIRED + ("fitzpatrick",)
# Unambiguous alternative names understood without a mapping file.
ALIASES = {"skin_type": "fitzpatrick", "fitzpatrick_type": "fitzpatrick", "image": "image_path",
           "text": "note", "clinical_note": "note"}
MAX_NOTE_CHARS = 10_000


def _is_valid_text(value: str) -> bool:
    """False for text that held invalid UTF-8 (decoded to U+FFFD) or lone surrogates."""
    if "\ufffd" in value:
        return False
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _json_value(value: str):
    """Keep numbers and booleans typed in ``extra`` so slices sort and filter sensibly."""
    if value in ("True", "true", "False", "false"):
        return value.lower() == "true"
    try:
        number = float(value)
    except ValueError:
        return value if _is_valid_text(value) else value.encode("utf-8", "replace").decode()
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() and re.fullmatch(r"-?\d+", value.strip()) else number


@dataclass
class IngestResult:
    dataset: str
    n_cases: int
    n_rejected: int
    rejected_by_reason: dict[str, int]
    changed: bool
    classes: list[str]


def _canonical_columns(df: pd.DataFrame, mapping: Mapping, labelled: bool = True) -> pd.DataFrame:
    renames = {c: mapping.columns.get(c, ALIASES.get(c, c)) for c in df.columns}
    df = df.rename(columns=renames)
    dupes = df.columns[df.columns.duplicated()].tolist()
    if dupes:
        raise ManifestError(f"Columns {dupes} appear twice after renaming; fix the mapping file.")
    if not labelled:  # cases to score: a label would be thrown away, so refuse rather than drop it
        given = int(df["label"].str.strip().ne("").sum()) if "label" in df.columns else 0
        if given:
            raise ManifestError(f"--unlabelled was given but {given:,} rows have a label; ingest without "
                                "--unlabelled to keep them (a labelled dataset can be scored too), or drop the column.")
        df = df.assign(label="")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(f"The manifest lacks required column(s) {missing}. It has {list(df.columns)}; "
                            f"rename them with --mapping (columns: {{your_name: {missing[0]}}}).")
    if "case_id" not in df.columns:
        df.insert(0, "case_id", [f"row{i}" for i in df.index])
    if "fitzpatrick" not in df.columns:
        df["fitzpatrick"] = ""
    return df


def _check_row(row: dict, classes: list[str] | None, mapping: Mapping, labelled: bool = True
               ) -> tuple[str, str] | None:
    """First problem with a row's text fields as (reason, detail), or None."""
    for col in CORE:
        if not _is_valid_text(row[col]):
            return f"{col}_invalid_utf8", f"{col} is not valid UTF-8 text."
    for col in ("case_id", "patient_id", "clinic"):
        if not row[col].strip():
            return f"{col}_missing", f"{col} is empty."
    if len(row["note"]) > MAX_NOTE_CHARS:
        return "note_too_long", f"note has {len(row['note']):,} characters; the limit is {MAX_NOTE_CHARS:,}."
    if not labelled:
        return None
    if not row["label"].strip():
        return "label_missing", "label is empty."
    if classes is not None and _resolve_label(row["label"], classes, mapping) is None:
        label = row["label"].strip()
        twin = [c for c in classes if skeleton(c) == skeleton(label)]
        if twin:
            return "label_lookalike", (f"label {label!r} looks like the class {twin[0]!r} but is spelled differently "
                                       f"({difference(label, twin[0])}); correct it or map it with --mapping.")
        return "label_unknown", f"label {row['label']!r} is not one of the classes {classes}."
    return None


def _resolve_label(raw: str, classes: list[str], mapping: Mapping) -> str | None:
    label = mapping.labels.get(raw.strip(), raw.strip())
    if label in classes:
        return label
    folded = [c for c in classes if c.casefold() == label.casefold()]
    return folded[0] if len(folded) == 1 else None


def _image_check(raw: str, root: Path) -> tuple[str, object]:
    try:
        checked = check_image(raw, root)
        load_rgb(checked.path, size=8)  # the conversion every consumer will use must work
        return "ok", checked
    except ImageRejected as exc:
        return "rejected", exc
    except Exception as exc:  # a decoder failure Pillow does not classify
        return "rejected", ImageRejected("image_unreadable", f"image cannot be converted to RGB ({exc}): {raw!r}.")


def _lookalike_clinics(accepted: list[dict], rejected: list[dict]) -> list[dict]:
    """Reject rows whose clinic is another spelling of a clinic more rows use; returns the rest."""
    clinics = [r["clinic"].strip() for r in accepted]
    canonical, counts = canonical_spellings(clinics), Counter(clinics)
    kept = []
    for row, clinic in zip(accepted, clinics):
        if canonical[clinic] == clinic:
            kept.append(row)
            continue
        rejected.append({"source_row": row["source_row"], "case_id": row["case_id"].strip(),
                         "reason": "clinic_lookalike",
                         "detail": f"clinic {clinic!r} looks like {canonical[clinic]!r} ({counts[canonical[clinic]]:,} "
                                   f"rows) but is spelled differently ({difference(clinic, canonical[clinic])}); one "
                                   "clinic written two ways would be split in the audit. Correct the manifest."})
    return kept


CASE_COLUMNS = ["source_row", "case_id", "patient_id", "clinic", "image_path", "image_sha256", "note", "label",
                "fitzpatrick", "flags", "extra"]


def validate(df: pd.DataFrame, mapping: Mapping, image_root: Path, workers: int = 4, progress=None,
             oversized: list[int] = (), labelled: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Split manifest rows into accepted cases and rejected rows; returns (cases, rejected, classes).

    ``df`` is indexed by source row (see read_manifest); ``oversized`` are rows too large to read.
    ``labelled=False``: cases to score, without labels (classes: the declared ones, if any)."""
    df = _canonical_columns(df, mapping, labelled)
    classes = mapping.classes
    if classes is None and not labelled:
        classes = []
    elif classes is None:  # no declared taxonomy: the labels present define it, one spelling per look-alike group
        labels = [mapping.labels.get(v.strip(), v.strip()) for v in df["label"] if v.strip() and _is_valid_text(v)]
        classes = sorted(set(canonical_spellings(labels).values()))
    rejected: list[dict] = [{"source_row": i, "case_id": None, "reason": "row_too_long",
                             "detail": f"row {i} is over {MAX_ROW_BYTES:,} bytes (or opens a quote it never closes); "
                                       "it was skipped unread."} for i in oversized]
    accepted = _lookalike_clinics(_check_rows(df, classes, mapping, rejected, labelled), rejected)
    with ThreadPoolExecutor(workers) as pool:
        checks = []
        for status in pool.map(lambda r: _image_check(r["image_path"], image_root), accepted):
            checks.append(status)
            progress and progress(1, len(accepted))
    cases: list[dict] = []
    for row, (status, value) in zip(accepted, checks):
        if status == "rejected":
            rejected.append({"source_row": row["source_row"], "case_id": row["case_id"].strip(),
                             "reason": value.reason, "detail": value.detail})
        else:
            cases.append(_case(row, value, classes, mapping, labelled))
    cases_df = _drop_label_conflicts(pd.DataFrame(cases, columns=CASE_COLUMNS), rejected)
    rejected_df = pd.DataFrame(rejected, columns=["source_row", "case_id", "reason", "detail"])
    return cases_df, rejected_df.sort_values("source_row").reset_index(drop=True), classes


def _check_rows(df: pd.DataFrame, classes: list[str], mapping: Mapping, rejected: list[dict],
                labelled: bool = True) -> list[dict]:
    """Rows that pass the per-row checks (and are not a repeated case_id); the others go to ``rejected``."""
    accepted: list[dict] = []
    seen_ids: dict[str, int] = {}
    for i, row in zip(df.index, df.to_dict("records")):
        problem = _check_row(row, classes, mapping, labelled)
        case_id = row["case_id"].strip()
        if problem is None and case_id in seen_ids:
            problem = ("duplicate_case_id", f"case_id {case_id!r} already used by row {seen_ids[case_id]}.")
        if problem:
            rejected.append({"source_row": i, "case_id": case_id if _is_valid_text(case_id) else None,
                             "reason": problem[0], "detail": problem[1]})
            continue
        seen_ids[case_id] = i
        accepted.append({"source_row": i, **row})
    return accepted


def _case(row: dict, image, classes: list[str], mapping: Mapping, labelled: bool = True) -> dict:
    """One accepted row as a case, with its flags and every other column in ``extra``."""
    fitz, fitz_flag = parse_fitzpatrick(row["fitzpatrick"])
    flags = [f for f in (fitz_flag, None if row["note"].strip() else "empty_note",
                         None if image.mode == "RGB" else f"image_converted:{image.mode}") if f]
    extra = {k: _json_value(v) for k, v in row.items() if k not in CORE and k != "source_row"}
    return {"source_row": row["source_row"], "case_id": row["case_id"].strip(),
            "patient_id": row["patient_id"].strip(), "clinic": row["clinic"].strip(),
            "image_path": str(image.path), "image_sha256": image.sha256,
            "note": row["note"].strip(), "label": _resolve_label(row["label"], classes, mapping) if labelled else None,
            "fitzpatrick": fitz, "flags": flags, "extra": json.dumps(extra, sort_keys=True)}


def _drop_label_conflicts(cases: pd.DataFrame, rejected: list[dict]) -> pd.DataFrame:
    """One patient, one image, two labels: nobody can tell which is right, so keep neither."""
    n_labels = cases.groupby(["patient_id", "image_sha256"])["label"].transform("nunique")
    conflict = cases[n_labels > 1]
    for r in conflict.itertuples():
        others = conflict[(conflict.patient_id == r.patient_id) & (conflict.image_sha256 == r.image_sha256)]
        rejected.append({"source_row": r.source_row, "case_id": r.case_id, "reason": "label_conflict",
                         "detail": f"patient {r.patient_id!r} has this image under labels "
                                   f"{sorted(set(others.label))} (rows {sorted(others.source_row)})."})
    cases = cases[n_labels <= 1].sort_values("source_row").drop(columns="source_row").reset_index(drop=True)
    cases["fitzpatrick"] = cases["fitzpatrick"].astype("Int8")
    return cases


def fingerprint(info: dict, cases: pd.DataFrame, rejected: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: info.get(k) for k in ("classes", "urgent_classes", "heldout_clinic", "simulated",
                                                   "image_root")}, sort_keys=True, default=str).encode())
    h.update(cases.astype(str).to_csv(index=False).encode())
    h.update(rejected.astype(str).to_csv(index=False).encode())
    return h.hexdigest()


def ingest(store, dataset: str, manifest: Path, mapping_path: Path | None = None,
           image_root: Path | None = None, progress=None, unlabelled: bool = False) -> IngestResult:
    """Validate a manifest and write it as ``dataset``; a no-op if nothing changed.
    ``unlabelled``: cases to score with ``python -m trainer predict``, never trained on."""
    manifest = Path(manifest).resolve()
    image_root = Path(image_root).resolve() if image_root else manifest.parent
    if not image_root.is_dir():
        raise ManifestError(f"Image root {image_root} is not a folder.")
    mapping = Mapping.load(mapping_path, sidecar=manifest.parent / "dataset.json")
    df, oversized = read_manifest(manifest)
    if df.empty and not oversized:
        raise ManifestError(f"The manifest {manifest} has no data rows.")
    cases, rejected, classes = validate(df, mapping, image_root, progress=progress, oversized=oversized,
                                        labelled=not unlabelled)
    for name in mapping.urgent_classes or []:
        if name not in classes:
            raise ManifestError(f"urgent class {name!r} is not one of the classes {classes}.")
    info = {"dataset": dataset, "manifest_path": str(manifest), "image_root": str(image_root),
            "classes": classes, "urgent_classes": mapping.urgent_classes,
            "heldout_clinic": mapping.heldout_clinic, "simulated": mapping.simulated, "labelled": not unlabelled}
    info["fingerprint"] = fingerprint(info, cases, rejected)
    changed = store.dataset_fingerprint(dataset) != info["fingerprint"]
    if changed and store.dataset_has_runs(dataset):
        raise ManifestError(f"Dataset {dataset!r} has changed but runs were trained on it; ingest the new "
                            "manifest under another --dataset name so those runs keep their cases.")
    if changed:
        store.replace_dataset(info, cases, rejected)
    return IngestResult(dataset, len(cases), len(rejected), rejected["reason"].value_counts().to_dict(),
                        changed, classes)
