"""Model inputs for a set of cases, with an on-disk cache keyed by content and encoder.

Frozen encoders' outputs (text token features, open_clip image embeddings) and decoded
photos are written as safetensors files named by a hash of (dataset fingerprint, case
ids, encoder identity, settings): a second ``fit`` on the same data skips extraction.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from data_store.images import load_rgb


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
    """Load ``path`` if it exists, else compute, save atomically and return the arrays."""
    if path.exists():
        stats.hits += 1
        return load_file(str(path))
    stats.misses += 1
    arrays = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(arrays, str(tmp))
    os.replace(tmp, path)  # atomic: a killed run never leaves half a cache file
    return arrays


def load_images(paths: list[str], size: int, desc: str = "decoding photos") -> np.ndarray:
    out = np.zeros((len(paths), size, size, 3), np.uint8)
    with ThreadPoolExecutor(4) as pool, tqdm(total=len(paths), desc=desc, unit="img", mininterval=1) as bar:
        for i, arr in enumerate(pool.map(lambda p: load_rgb(p, size), paths)):
            out[i] = arr
            bar.update()
    return out


def build_features(cases, fingerprint: str, cache_dir: str | Path, image_size: int, text_encoder,
                   image_encoder=None, stats: CacheStats | None = None) -> Features:
    """Inputs for ``cases`` (a frame with case_id, note, image_path), cached on disk."""
    stats = stats if stats is not None else CacheStats()
    cache = Path(cache_dir)
    ids = cases["case_id"].astype(str).tolist()
    content = content_key(fingerprint, ids)
    notes = cases["note"].fillna("").astype(str).tolist()
    paths = cases["image_path"].tolist()

    images = cached_arrays(cache / f"images-{content}-{image_size}.safetensors",
                           lambda: {"images": load_images(paths, image_size)}, stats)["images"]

    def encode_text():
        with tqdm(total=len(notes), desc="encoding notes", unit="note", mininterval=1) as bar:
            tokens, mask = text_encoder.encode(notes, progress=bar.update)
        return {"tokens": tokens, "mask": mask}
    text_identity = text_encoder.identity()
    text = cached_arrays(cache / f"text-{content}-{text_identity}.safetensors", encode_text, stats)

    image_tokens = None
    if image_encoder is not None:
        def encode_images():
            pixels = load_images(paths, image_encoder.image_size, desc="decoding photos for the image encoder")
            with tqdm(total=len(paths), desc="encoding photos", unit="img", mininterval=1) as bar:
                emb = image_encoder.encode(pixels, progress=bar.update)
            return {"emb": emb if emb.ndim == 3 else emb[:, None, :]}  # patch tokens, or one token per photo
        image_tokens = cached_arrays(cache / f"image-{content}-{image_encoder.identity()}.safetensors",
                                     encode_images, stats)["emb"]
    present = np.asarray([bool(n.strip()) for n in notes])
    return Features(np.asarray(ids), notes, images, text["tokens"], text["mask"], present, image_tokens,
                    text_identity=text_identity)
