"""Manifest -> validated cases and rejected rows with reasons, written in one transaction.

Nothing is dropped silently: every manifest row ends up in ``cases`` or in
``rejected_rows``. A file or a required column that cannot be used stops the ingest
with ``ManifestError`` before anything is written.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from data_store.fitzpatrick import parse_fitzpatrick
from data_store.images import ImageRejected, check_image, load_rgb
from data_store.lookalike import canonical_spellings, difference, skeleton

REQUIRED = ("patient_id", "clinic", "image_path", "note", "label")
CORE = ("case_id",) + REQUIRED + ("fitzpatrick",)
# Unambiguous alternative names understood without a mapping file.
ALIASES = {"skin_type": "fitzpatrick", "fitzpatrick_type": "fitzpatrick", "image": "image_path",
           "text": "note", "clinical_note": "note"}
MAX_NOTE_CHARS = 10_000


class ManifestError(ValueError):
    """The manifest file, the mapping, or a required column cannot be used."""


@dataclass
class Mapping:
    columns: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    classes: list[str] | None = None
    urgent_classes: list[str] | None = None
    heldout_clinic: str | None = None
    simulated: bool = False

    @classmethod
    def load(cls, path: Path | None, sidecar: Path | None = None) -> "Mapping":
        """Read a YAML/JSON mapping file; a dataset.json sidecar fills what it leaves out."""
        data: dict = {}
        if sidecar is not None and sidecar.is_file():
            side = json.loads(sidecar.read_text())
            data.update({k: side[k] for k in ("classes", "urgent_classes", "heldout_clinic", "simulated")
                         if k in side})
        if path is not None:
            try:
                loaded = yaml.safe_load(Path(path).read_text())  # YAML is a superset of JSON
            except (OSError, yaml.YAMLError) as exc:
                raise ManifestError(f"Cannot read the mapping file {path}: {exc}") from exc
            if not isinstance(loaded, dict):
                raise ManifestError(f"The mapping file {path} must hold a mapping with keys "
                                    "columns, labels, classes, urgent_classes, heldout_clinic.")
            unknown = set(loaded) - {"columns", "labels", "classes", "urgent_classes", "heldout_clinic"}
            if unknown:
                raise ManifestError(f"Unknown keys in the mapping file {path}: {sorted(unknown)}.")
            data.update({k: v for k, v in loaded.items() if v is not None})
        return cls(columns={str(k): str(v) for k, v in data.get("columns", {}).items()},
                   labels={str(k).strip(): str(v) for k, v in data.get("labels", {}).items()},
                   classes=[str(c) for c in data["classes"]] if data.get("classes") else None,
                   urgent_classes=[str(c) for c in data["urgent_classes"]] if data.get("urgent_classes") else None,
                   heldout_clinic=data.get("heldout_clinic"), simulated=bool(data.get("simulated", False)))


MAX_ROW_BYTES = 1 << 20  # 1 MiB: a row over this cannot be valid (a note is at most 10,000 characters)


def _inside_quotes(line: bytes, inside: bool, sep: bytes) -> bool:
    """Whether a CSV row is still inside a quoted field after ``line`` (a physical line),
    as pandas reads it: a quote opens a field only at its start, and "" inside is a quote."""
    i, at_start = 0, not inside
    while i < len(line):
        if inside:
            j = line.find(b'"', i)
            if j < 0:
                return True
            if line[j + 1:j + 2] == b'"':
                i = j + 2
                continue
            inside, at_start, i = False, False, j + 1
        elif at_start and line[i:i + 1] == b'"':
            inside, i = True, i + 1
        else:
            j = line.find(sep, i)
            if j < 0:
                return False
            at_start, i = True, j + 1
    return inside


def _split_rows(path: Path, sep: bytes | None, header: bool) -> tuple[bytes, list[int], list[int]]:
    """Stream a CSV (``sep``: its delimiter; a newline inside a quoted field continues the row)
    or JSONL (``sep`` None) file into rows, never holding a row over MAX_ROW_BYTES in memory.

    Returns (the header and the kept rows as bytes, the 1-based number of each kept data row,
    the numbers of the rows left out for their size). Blank lines are not rows.
    """
    kept, numbers, oversized = [], [], []
    parts, size, inside, n = [], 0, False, 0 if header else 1  # n: the next row's number; 0 is the header

    def close() -> None:
        nonlocal n
        if size > MAX_ROW_BYTES:
            oversized.append(n)
        elif b"".join(parts).strip():
            kept.append(b"".join(parts))
            numbers.append(n)
        else:
            return
        n += 1

    with open(path, "rb") as f:
        # Lines up to the limit come whole; a longer one comes in pieces and is dropped.
        while piece := f.readline(MAX_ROW_BYTES + 1):
            size += len(piece)
            if size <= MAX_ROW_BYTES:
                parts.append(piece)
            if sep is not None:
                inside = _inside_quotes(piece, inside, sep)
            if not piece.endswith(b"\n") or inside:
                continue  # the row goes on
            close()
            parts, size = [], 0
    if size:
        close()  # the last row, without a final newline
    if header and oversized[:1] == [0]:
        raise ManifestError(f"The manifest's header line is over {MAX_ROW_BYTES:,} bytes: {path}")
    return b"".join(kept), numbers[1:] if header else numbers, oversized


def read_manifest(path: Path) -> tuple[pd.DataFrame, list[int]]:
    """CSV, Parquet or JSONL as a frame of strings ('' for missing), indexed by the 1-based
    data-row number, and the numbers of the rows too large to read (over MAX_ROW_BYTES)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ManifestError(f"Manifest not found: {path}")
    oversized: list[int] = []
    try:
        if suffix in (".csv", ".tsv", ".txt", ".jsonl", ".ndjson"):
            lines = suffix in (".jsonl", ".ndjson")
            sep = None if lines else b"\t" if suffix == ".tsv" else b","
            data, numbers, oversized = _split_rows(path, sep, header=not lines)
            # Invalid UTF-8 bytes become U+FFFD so that row is rejected, not the whole file.
            text = data.decode("utf-8-sig", errors="replace")
            if lines:
                df = pd.read_json(io.StringIO(text), lines=True, dtype=False) if text.strip() else pd.DataFrame()
            else:
                df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                                 sep="\t" if suffix == ".tsv" else ",")
            if len(df) != len(numbers):
                raise ManifestError(f"{len(df)} rows parsed but {len(numbers)} found; is a quote left open?")
            df.index = numbers
        elif suffix == ".parquet":
            df = pd.read_parquet(path)
            df.index = range(1, len(df) + 1)
        else:
            raise ManifestError(f"Unsupported manifest type {suffix!r}: use .csv, .parquet or .jsonl.")
    except ManifestError:
        raise
    except Exception as exc:  # pandas raises many types for unreadable files
        raise ManifestError(f"Cannot read the manifest {path}: {exc}") from exc
    return df.astype(object).where(df.notna(), "").map(lambda v: v if isinstance(v, str) else _to_text(v)), oversized


def _to_text(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "" if math.isnan(value) else str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


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


def _canonical_columns(df: pd.DataFrame, mapping: Mapping) -> pd.DataFrame:
    renames = {c: mapping.columns.get(c, ALIASES.get(c, c)) for c in df.columns}
    df = df.rename(columns=renames)
    dupes = df.columns[df.columns.duplicated()].tolist()
    if dupes:
        raise ManifestError(f"Columns {dupes} appear twice after renaming; fix the mapping file.")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(f"The manifest lacks required column(s) {missing}. It has {list(df.columns)}; "
                            f"rename them with --mapping (columns: {{your_name: {missing[0]}}}).")
    if "case_id" not in df.columns:
        df.insert(0, "case_id", [f"row{i}" for i in df.index])
    if "fitzpatrick" not in df.columns:
        df["fitzpatrick"] = ""
    return df


def _check_row(row: dict, classes: list[str] | None, mapping: Mapping) -> tuple[str, str] | None:
    """First problem with a row's text fields as (reason, detail), or None."""
    for col in CORE:
        if not _is_valid_text(row[col]):
            return f"{col}_invalid_utf8", f"{col} is not valid UTF-8 text."
    for col in ("case_id", "patient_id", "clinic"):
        if not row[col].strip():
            return f"{col}_missing", f"{col} is empty."
    if len(row["note"]) > MAX_NOTE_CHARS:
        return "note_too_long", f"note has {len(row['note']):,} characters; the limit is {MAX_NOTE_CHARS:,}."
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


def validate(df: pd.DataFrame, mapping: Mapping, image_root: Path, workers: int = 4, progress=None,
             oversized: list[int] = ()) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Split manifest rows into accepted cases and rejected rows; returns (cases, rejected, classes).

    ``df`` is indexed by source row (see read_manifest); ``oversized`` are rows too large to read."""
    df = _canonical_columns(df, mapping)
    classes = mapping.classes
    if classes is None:  # no declared taxonomy: the labels present define it, one spelling per look-alike group
        labels = [mapping.labels.get(v.strip(), v.strip()) for v in df["label"] if v.strip() and _is_valid_text(v)]
        classes = sorted(set(canonical_spellings(labels).values()))
    rows = df.to_dict("records")
    rejected: list[dict] = [{"source_row": i, "case_id": None, "reason": "row_too_long",
                             "detail": f"row {i} is over {MAX_ROW_BYTES:,} bytes (or opens a quote it never closes); "
                                       "it was skipped unread."} for i in oversized]
    accepted: list[dict] = []
    seen_ids: dict[str, int] = {}
    for i, row in zip(df.index, rows):
        problem = _check_row(row, classes, mapping)
        case_id = row["case_id"].strip()
        if problem is None and case_id in seen_ids:
            problem = ("duplicate_case_id", f"case_id {case_id!r} already used by row {seen_ids[case_id]}.")
        if problem:
            rejected.append({"source_row": i, "case_id": case_id if _is_valid_text(case_id) else None,
                             "reason": problem[0], "detail": problem[1]})
            continue
        seen_ids[case_id] = i
        accepted.append({"source_row": i, **row})

    accepted = _lookalike_clinics(accepted, rejected)
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
            continue
        fitz, fitz_flag = parse_fitzpatrick(row["fitzpatrick"])
        flags = [f for f in (fitz_flag, None if row["note"].strip() else "empty_note",
                             None if value.mode == "RGB" else f"image_converted:{value.mode}") if f]
        extra = {k: _json_value(v) for k, v in row.items() if k not in CORE and k != "source_row"}
        cases.append({"source_row": row["source_row"], "case_id": row["case_id"].strip(),
                      "patient_id": row["patient_id"].strip(), "clinic": row["clinic"].strip(),
                      "image_path": str(value.path), "image_sha256": value.sha256,
                      "note": row["note"].strip(), "label": _resolve_label(row["label"], classes, mapping),
                      "fitzpatrick": fitz, "flags": flags, "extra": json.dumps(extra, sort_keys=True)})
    cases_df = pd.DataFrame(cases, columns=["source_row", "case_id", "patient_id", "clinic", "image_path",
                                            "image_sha256", "note", "label", "fitzpatrick", "flags", "extra"])
    # One patient, one image, two labels: nobody can tell which is right, so keep neither.
    n_labels = cases_df.groupby(["patient_id", "image_sha256"])["label"].transform("nunique")
    conflict = cases_df[n_labels > 1]
    for r in conflict.itertuples():
        others = conflict[(conflict.patient_id == r.patient_id) & (conflict.image_sha256 == r.image_sha256)]
        rejected.append({"source_row": r.source_row, "case_id": r.case_id, "reason": "label_conflict",
                         "detail": f"patient {r.patient_id!r} has this image under labels "
                                   f"{sorted(set(others.label))} (rows {sorted(others.source_row)})."})
    cases_df = cases_df[n_labels <= 1].sort_values("source_row").drop(columns="source_row").reset_index(drop=True)
    cases_df["fitzpatrick"] = cases_df["fitzpatrick"].astype("Int8")
    rejected_df = pd.DataFrame(rejected, columns=["source_row", "case_id", "reason", "detail"])
    rejected_df = rejected_df.sort_values("source_row").reset_index(drop=True)
    return cases_df, rejected_df, classes


def fingerprint(info: dict, cases: pd.DataFrame, rejected: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: info.get(k) for k in ("classes", "urgent_classes", "heldout_clinic", "simulated",
                                                   "image_root")}, sort_keys=True, default=str).encode())
    h.update(cases.astype(str).to_csv(index=False).encode())
    h.update(rejected.astype(str).to_csv(index=False).encode())
    return h.hexdigest()


def ingest(store, dataset: str, manifest: Path, mapping_path: Path | None = None,
           image_root: Path | None = None, progress=None) -> IngestResult:
    """Validate a manifest and write it as ``dataset``; a no-op if nothing changed."""
    manifest = Path(manifest).resolve()
    image_root = Path(image_root).resolve() if image_root else manifest.parent
    if not image_root.is_dir():
        raise ManifestError(f"Image root {image_root} is not a folder.")
    mapping = Mapping.load(mapping_path, sidecar=manifest.parent / "dataset.json")
    df, oversized = read_manifest(manifest)
    if df.empty and not oversized:
        raise ManifestError(f"The manifest {manifest} has no data rows.")
    cases, rejected, classes = validate(df, mapping, image_root, progress=progress, oversized=oversized)
    for name in mapping.urgent_classes or []:
        if name not in classes:
            raise ManifestError(f"urgent class {name!r} is not one of the classes {classes}.")
    info = {"dataset": dataset, "manifest_path": str(manifest), "image_root": str(image_root),
            "classes": classes, "urgent_classes": mapping.urgent_classes,
            "heldout_clinic": mapping.heldout_clinic, "simulated": mapping.simulated}
    info["fingerprint"] = fingerprint(info, cases, rejected)
    changed = store.dataset_fingerprint(dataset) != info["fingerprint"]
    if changed and store.dataset_has_runs(dataset):
        raise ManifestError(f"Dataset {dataset!r} has changed but runs were trained on it; ingest the new "
                            "manifest under another --dataset name so those runs keep their cases.")
    if changed:
        store.replace_dataset(info, cases, rejected)
    return IngestResult(dataset, len(cases), len(rejected), rejected["reason"].value_counts().to_dict(),
                        changed, classes)
