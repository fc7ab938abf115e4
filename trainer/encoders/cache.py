"""Model inputs for a set of cases, with an on-disk cache keyed by content and encoder.

Frozen encoders' outputs (text token features, image tower tokens, the LiT tower's pooled
features) and decoded photos are written as safetensors files named by a hash of (dataset
fingerprint, case ids, encoder identity, settings): a second ``fit`` on the same data
skips extraction. They are written a chunk of cases at a time and read back
memory-mapped (``trainer.encoders.shards``), so memory does not grow with the dataset;
when ``python -m trainer features`` has filled the sharded cache for every case of the
dataset, the rows come from there instead of the encoders.

Under torchrun every rank takes the same decision (rank 0's view of the cache), rank 0
alone writes, and the others wait for it and read.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import save_file

from data_store.images import load_rgb
from trainer import distributed
from trainer.encoders.shards import BlockSet, open_arrays, write_rows


@dataclass
class Features:
    """Arrays aligned with ``case_ids``; nothing here comes from ``extra`` or ``sim_*``."""

    case_ids: np.ndarray  # (n,)
    notes: list[str]
    images: np.ndarray  # (n, S, S, 3) uint8
    text_tokens: np.ndarray  # (n, L, d) float16
    text_mask: np.ndarray  # (n, L) bool
    text_present: np.ndarray  # (n,) bool: False for empty notes
    image_tokens: np.ndarray | None = None  # (n, P, d) from the image encoder (CNN grid or open_clip)
    clip_tokens: np.ndarray | None = None  # (n, context) int64, open_clip's tokenisation of the notes
    clip_img: np.ndarray | None = None  # (n, E) joint-embedding photo vectors of the trained CLIP
    clip_txt: np.ndarray | None = None  # (n, E) joint-embedding note vectors
    lit_pooled: np.ndarray | None = None  # (n, 1280) the LiT image tower's pooled photo features
    ngram_ids: np.ndarray | None = None  # (n, K) int64 word n-gram ids of the notes (0 pads)
    ngram_weights: np.ndarray | None = None  # (n, K) float32 their TF-IDF weights
    ngrams: object | None = None  # the NgramVocabulary fitted on train notes
    text_identity: str | None = None  # the note encoder's identity (weights and settings)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


def _key(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def content_key(fingerprint: str, case_ids: list[str]) -> str:
    """Names the cache files of one set of cases of one dataset version."""
    return _key(fingerprint, ",".join(case_ids))


def cached_arrays(path: Path, compute, stats: CacheStats) -> dict[str, np.ndarray]:
    """Map ``path`` if it exists, else compute (on every rank: training may be inside),
    save atomically (rank 0) and map it."""
    if distributed.from_main(path.exists()):
        stats.hits += 1
        return open_arrays(path)
    stats.misses += 1
    arrays = compute()
    if distributed.is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file(arrays, str(tmp))
        os.replace(tmp, path)  # atomic: a killed run never leaves half a cache file
    distributed.barrier()
    del arrays
    return open_arrays(path)


@dataclass(frozen=True)
class Encoding:
    """One frozen encoding of cases: ``compute(photo paths, notes)`` -> arrays with a row
    per case, cached under ``{prefix}-{content}-{identity}``."""

    prefix: str
    identity: str
    compute: Callable[[list[str], list[str]], dict[str, np.ndarray]]
    desc: str

    @property
    def name(self) -> str:
        return f"{self.prefix}-{self.identity}"


def cached_rows(cases, fingerprint: str, content: str, cache_dir: str | Path, encoding: Encoding,
                stats: CacheStats) -> dict[str, np.ndarray]:
    """``encoding`` of ``cases`` (case_id, note, image_path), memory-mapped: from the cache
    file, else from the sharded cache of the whole dataset, else from the encoder."""
    path = Path(cache_dir) / f"{encoding.prefix}-{content}-{encoding.identity}.safetensors"
    if distributed.from_main(path.exists()):
        stats.hits += 1
        return open_arrays(path)
    if distributed.is_main():
        ids = cases["case_id"].astype(str).tolist()
        compute = BlockSet(cache_dir, fingerprint, encoding.name).rows_of(ids)
        if compute is not None:
            stats.hits += 1
            desc = f"{encoding.desc}: read from the sharded cache"
        else:
            stats.misses += 1
            paths, notes = cases["image_path"].tolist(), cases["note"].fillna("").astype(str).tolist()
            compute, desc = (lambda lo, hi: encoding.compute(paths[lo:hi], notes[lo:hi])), encoding.desc
        write_rows(path, len(ids), compute, desc)
    distributed.barrier()
    return open_arrays(path)


def load_images(paths: list[str], size: int) -> np.ndarray:
    """Photos decoded and resized to (n, size, size, 3) uint8."""
    out = np.zeros((len(paths), size, size, 3), np.uint8)
    with ThreadPoolExecutor(4) as pool:
        for i, arr in enumerate(pool.map(lambda p: load_rgb(p, size), paths)):
            out[i] = arr
    return out


def photos(size: int) -> Encoding:
    return Encoding("images", str(size), lambda paths, notes: {"images": load_images(paths, size)},
                    f"decoding photos ({size} px)")


def note_tokens(text_encoder) -> Encoding:
    def compute(paths, notes):
        tokens, mask = text_encoder.encode(notes)
        return {"tokens": tokens, "mask": mask}
    return Encoding("text", text_encoder.identity(), compute, "encoding notes")


def photo_tokens(image_encoder) -> Encoding:
    """A frozen pretrained image tower's patch tokens (or one token per photo)."""
    def compute(paths, notes):
        emb = image_encoder.encode(load_images(paths, image_encoder.image_size))
        return {"emb": emb if emb.ndim == 3 else emb[:, None, :]}
    return Encoding("image", image_encoder.identity(), compute, "encoding photos")


def build_features(cases, fingerprint: str, cache_dir: str | Path, image_size: int, text_encoder,
                   image_encoder=None, stats: CacheStats | None = None) -> Features:
    """Inputs for ``cases`` (a frame with case_id, note, image_path), cached on disk."""
    stats = stats if stats is not None else CacheStats()
    ids = cases["case_id"].astype(str).tolist()
    content = content_key(fingerprint, ids)
    notes = cases["note"].fillna("").astype(str).tolist()

    def rows(encoding: Encoding) -> dict[str, np.ndarray]:
        return cached_rows(cases, fingerprint, content, cache_dir, encoding, stats)
    images = rows(photos(image_size))["images"]
    text_encoding = note_tokens(text_encoder)
    text = rows(text_encoding)
    image_tokens = rows(photo_tokens(image_encoder))["emb"] if image_encoder is not None else None
    present = np.asarray([bool(n.strip()) for n in notes])
    return Features(np.asarray(ids), notes, images, text["tokens"], text["mask"], present, image_tokens,
                    text_identity=text_encoding.identity)
