"""Feature files written a chunk of rows at a time and read back memory-mapped, and the
sharded feature cache that ``python -m trainer features`` fills, one shard per rank.

A feature file is a plain safetensors file (``safetensors.numpy.load_file`` reads it), but
``RowWriter`` writes it one chunk of rows at a time and ``open_arrays`` maps it instead of
reading it: neither the encoders nor training ever hold a whole dataset's features in RAM.

The sharded cache splits a dataset's cases, sorted by case id, into blocks of
``block_cases``; block ``b`` is rank ``b % world``'s (so the assignment is deterministic
and a block's content does not depend on how many processes made it). Each block is
written whole under a temporary name and renamed, so a killed rank leaves at most a
temporary file that nothing reads. Rank 0 checks every block once all ranks are done and
only then writes ``index.json``: a cache without an index, or with a block missing or of
the wrong size, is never used, and the next run recomputes what is missing.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import mmap
import os
import struct
from pathlib import Path

import numpy as np
from tqdm import tqdm

DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "U8": np.uint8, "I8": np.int8,
          "I16": np.int16, "I32": np.int32, "I64": np.int64, "BOOL": np.bool_}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}
CHUNK = 2048  # rows encoded and written at once: about 100 MB of note tokens


def read_header(path: Path) -> tuple[dict, int]:
    """The safetensors header of ``path`` and where its data starts."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(size)), 8 + size


def open_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of a safetensors file, memory-mapped read-only: pages are read when used
    and the kernel may drop them again, so memory does not grow with the file."""
    header, start = read_header(Path(path))
    header.pop("__metadata__", None)
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size > start else None
    out = {}
    for name, info in header.items():
        dtype, (lo, hi) = np.dtype(DTYPES[info["dtype"]]), info["data_offsets"]
        if hi == lo:
            out[name] = np.zeros(info["shape"], dtype)
        else:
            out[name] = np.frombuffer(mapped, dtype, (hi - lo) // dtype.itemsize, start + lo).reshape(info["shape"])
    return out


def file_complete(path: Path) -> bool:
    """The file holds every byte its header promises (a truncated file is not complete)."""
    try:
        header, start = read_header(path)
    except (OSError, ValueError, struct.error):
        return False
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    return path.stat().st_size == start + end


class RowWriter:
    """Writes a safetensors file of arrays with ``rows`` rows each, a chunk of rows at a
    time, under a temporary name; ``commit`` renames it into place (atomic)."""

    def __init__(self, path: Path, rows: int, like: dict[str, np.ndarray], metadata: dict[str, str] | None = None):
        self.path, self.tmp = Path(path), Path(path).with_suffix(f".tmp{os.getpid()}")
        header, offset, self.offsets = {}, 0, {}
        for name, arr in like.items():
            shape = [rows, *arr.shape[1:]]
            size = int(np.prod(shape)) * arr.dtype.itemsize
            header[name] = {"dtype": CODES[arr.dtype], "shape": shape, "data_offsets": [offset, offset + size]}
            self.offsets[name] = (offset, size // max(rows, 1))
            offset += size
        if metadata:
            header["__metadata__"] = metadata
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # data aligned to 8 bytes, as safetensors itself writes it
        self.start = 8 + len(text)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.tmp, "wb")
        self.file.write(struct.pack("<Q", len(text)) + text)
        self.file.truncate(self.start + offset)

    def write(self, lo: int, arrays: dict[str, np.ndarray]) -> None:
        """Rows ``lo`` to ``lo + len`` of each array."""
        for name, arr in arrays.items():
            base, row_bytes = self.offsets[name]
            self.file.seek(self.start + base + lo * row_bytes)
            self.file.write(np.ascontiguousarray(arr).tobytes())

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)

    def abandon(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def write_rows(path: Path, rows: int, compute, desc: str, metadata: dict | None = None, chunk: int = CHUNK) -> None:
    """``compute(lo, hi)`` -> arrays of rows lo..hi, called chunk by chunk into ``path``."""
    writer = None
    try:
        with tqdm(total=rows, desc=desc, unit="case", mininterval=1) as bar:
            for lo in range(0, max(rows, 1), chunk):
                part = compute(lo, min(lo + chunk, rows))
                writer = writer or RowWriter(path, rows, part, metadata)
                writer.write(lo, part)
                bar.update(min(chunk, rows - lo))
        writer.commit()
    except BaseException:
        if writer is not None:
            writer.abandon()
        raise


def ids_digest(ids) -> str:
    return hashlib.sha256(",".join(ids).encode()).hexdigest()[:24]


class BlockSet:
    """One encoding of every case of one dataset version, in blocks (see the module's doc)."""

    def __init__(self, cache_dir: str | Path, fingerprint: str, name: str, block_cases: int = CHUNK):
        self.dir = Path(cache_dir) / "shards" / f"{name}-{fingerprint[:16]}"
        self.fingerprint, self.name, self.block_cases = fingerprint, name, block_cases
        self._opened: dict[int, tuple[dict, dict]] = {}

    def block_path(self, b: int) -> Path:
        return self.dir / f"block-{b:06d}.safetensors"

    def blocks(self, sorted_ids: list[str]) -> list[list[str]]:
        return [sorted_ids[s:s + self.block_cases] for s in range(0, len(sorted_ids), self.block_cases)]

    def block_valid(self, b: int, ids: list[str]) -> bool:
        path = self.block_path(b)
        if not path.exists() or not file_complete(path):
            return False
        return read_header(path)[0].get("__metadata__", {}).get("case_ids") == json.dumps(ids)

    def encode(self, sorted_ids: list[str], rank: int, world: int, compute) -> list[int]:
        """Write this rank's missing blocks; ``compute(ids)`` -> arrays of those cases in
        that order. Returns the blocks written."""
        for tmp in self.dir.glob(f"*.tmp{os.getpid()}"):
            tmp.unlink()
        written = []
        for b, ids in enumerate(self.blocks(sorted_ids)):
            if b % world == rank and not self.block_valid(b, ids):
                write_rows(self.block_path(b), len(ids), lambda lo, hi, ids=ids: compute(ids[lo:hi]),
                           f"{self.name}: block {b + 1} of rank {rank}", {"case_ids": json.dumps(ids)})
                written.append(b)
        return written

    def seal(self, sorted_ids: list[str]) -> list[int]:
        """Rank 0, once every rank is done: check every block, then write the index. Returns
        the missing or broken blocks (the index is written only when there are none)."""
        blocks = self.blocks(sorted_ids)
        bad = [b for b, ids in enumerate(blocks) if not self.block_valid(b, ids)]
        if not bad:
            index = {"fingerprint": self.fingerprint, "name": self.name, "block_cases": self.block_cases,
                     "cases": len(sorted_ids), "ids": ids_digest(sorted_ids),
                     "blocks": [{"file": self.block_path(b).name, "first": ids[0], "rows": len(ids),
                                 "bytes": self.block_path(b).stat().st_size} for b, ids in enumerate(blocks)]}
            tmp = self.dir / f"index.json.tmp{os.getpid()}"
            tmp.write_text(json.dumps(index))
            os.replace(tmp, self.dir / "index.json")
        for tmp in self.dir.glob("*.tmp*"):  # what killed processes left: never read
            tmp.unlink(missing_ok=True)
        return bad

    def index(self) -> dict | None:
        """The index when the cache is complete: every block listed, present, of its size."""
        path = self.dir / "index.json"
        if not path.exists():
            return None
        index = json.loads(path.read_text())
        for block in index["blocks"]:
            file = self.dir / block["file"]
            if not file.exists() or file.stat().st_size != block["bytes"]:
                return None
        return index

    def rows_of(self, case_ids: list[str]):
        """``compute(lo, hi)`` giving the rows of ``case_ids[lo:hi]`` from the blocks, or
        None when the cache is incomplete or lacks one of them."""
        index = self.index()
        if index is None:
            return None
        firsts = [b["first"] for b in index["blocks"]]
        where = []
        for case in case_ids:
            b = bisect.bisect_right(firsts, case) - 1
            if b < 0:
                return None
            row = self._block(b)[1].get(case)
            if row is None:
                return None
            where.append((b, row))
        where = np.asarray(where, dtype=np.int64).reshape(-1, 2)

        def compute(lo: int, hi: int) -> dict[str, np.ndarray]:
            part = where[lo:hi]
            arrays = self._block(int(part[0, 0]))[0] if len(part) else self._block(0)[0]
            out = {k: np.empty((len(part), *v.shape[1:]), v.dtype) for k, v in arrays.items()}
            for b in np.unique(part[:, 0]):
                sel = np.flatnonzero(part[:, 0] == b)
                for k, v in self._block(int(b))[0].items():
                    out[k][sel] = v[part[sel, 1]]
            return out
        return compute

    def _block(self, b: int) -> tuple[dict, dict]:
        """Block b's arrays (mapped) and its row of each case id."""
        if b not in self._opened:
            path = self.block_path(b)
            ids = json.loads(read_header(path)[0]["__metadata__"]["case_ids"])
            self._opened[b] = (open_arrays(path), {c: i for i, c in enumerate(ids)})
        return self._opened[b]
