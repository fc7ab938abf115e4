"""Reading a manifest (CSV, Parquet or JSONL) and its mapping file, before validation.

Rows are streamed and split as pandas reads CSV (a quote opens a field only at its start);
a row over ``MAX_ROW_BYTES`` is skipped unread and reported, so a huge line never sits in memory.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml


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
