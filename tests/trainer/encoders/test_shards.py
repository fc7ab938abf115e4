"""Feature files written in chunks and read memory-mapped, against the safetensors reference
implementation; the sharded cache's block assignment, its index and what it refuses."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from trainer.encoders.shards import BlockSet, RowWriter, file_complete, open_arrays, write_rows

RNG = np.random.default_rng(0)
ARRAYS = {"tokens": RNG.normal(size=(37, 5, 3)).astype(np.float16), "mask": RNG.random((37, 5)) < 0.5,
          "ids": RNG.integers(0, 9, (37, 2)), "pooled": RNG.normal(size=(37, 4)).astype(np.float32)}


def _compute(lo, hi):
    return {k: v[lo:hi] for k, v in ARRAYS.items()}


def test_chunked_file_reads_back_as_safetensors_writes_it(tmp_path):
    path = tmp_path / "f.safetensors"
    write_rows(path, 37, _compute, "test", {"note": "x"}, chunk=8)
    reference = load_file(str(path))  # the reference implementation reads our file
    mapped = open_arrays(path)
    for name, arr in ARRAYS.items():
        np.testing.assert_array_equal(reference[name], arr)
        np.testing.assert_array_equal(mapped[name], arr)
        assert mapped[name].dtype == arr.dtype and not mapped[name].flags.writeable  # mapped read-only
    assert file_complete(path)
    assert not list(tmp_path.glob("*.tmp*"))


def test_truncated_or_abandoned_files_are_not_complete(tmp_path):
    path = tmp_path / "f.safetensors"
    write_rows(path, 37, _compute, "test")
    path.write_bytes(path.read_bytes()[:-10])
    assert not file_complete(path)
    writer = RowWriter(tmp_path / "g.safetensors", 37, _compute(0, 8))
    writer.write(0, _compute(0, 8))
    writer.abandon()  # what an error half-way leaves: nothing
    assert not (tmp_path / "g.safetensors").exists() and not list(tmp_path.glob("g.*"))


def test_a_failing_encoder_leaves_no_file(tmp_path):
    def compute(lo, hi):
        if lo >= 16:
            raise RuntimeError("encoder failed")
        return _compute(lo, hi)
    with pytest.raises(RuntimeError, match="encoder failed"):
        write_rows(tmp_path / "f.safetensors", 37, compute, "test", chunk=8)
    assert not list(tmp_path.iterdir())


IDS = [f"case-{i:03d}" for i in range(37)]
ROWS = {c: i for i, c in enumerate(IDS)}


def _by_id(ids):
    return {k: v[[ROWS[c] for c in ids]] for k, v in ARRAYS.items()}


def test_blocks_are_the_same_whoever_writes_them(tmp_path):
    one, two = BlockSet(tmp_path / "one", "fp", "enc", 8), BlockSet(tmp_path / "two", "fp", "enc", 8)
    assert one.encode(IDS, 0, 1, _by_id) == [0, 1, 2, 3, 4]
    assert two.encode(IDS, 0, 2, _by_id) == [0, 2, 4]  # block b is rank b % world's
    assert two.rows_of(IDS) is None  # no index yet: never read
    assert two.seal(IDS) == [1, 3]  # rank 1's blocks are missing: no index
    assert not (two.dir / "index.json").exists()
    assert two.encode(IDS, 1, 2, _by_id) == [1, 3]
    assert one.seal(IDS) == [] and two.seal(IDS) == []
    for b in range(5):
        a, c = open_arrays(one.block_path(b)), open_arrays(two.block_path(b))
        for name in ARRAYS:
            np.testing.assert_allclose(a[name].astype(float), c[name].astype(float), atol=1e-6)
    shuffled = list(np.random.default_rng(1).permutation(IDS))[:20]
    rows = two.rows_of(shuffled)
    got = {k: np.concatenate([rows(0, 7)[k], rows(7, 20)[k]]) for k in ARRAYS}
    for name, arr in ARRAYS.items():
        np.testing.assert_array_equal(got[name], arr[[ROWS[c] for c in shuffled]])
    assert two.encode(IDS, 0, 2, _by_id) == []  # whole blocks are kept


def test_a_broken_block_is_never_read_and_is_encoded_again(tmp_path):
    blocks = BlockSet(tmp_path, "fp", "enc", 8)
    blocks.encode(IDS, 0, 1, _by_id)
    assert blocks.seal(IDS) == []
    path = blocks.block_path(2)
    path.write_bytes(path.read_bytes()[:-3])  # a block cut short after the index was written
    assert blocks.index() is None and blocks.rows_of(IDS) is None
    assert BlockSet(tmp_path, "fp", "enc", 8).rows_of(["case-999"]) is None
    assert blocks.encode(IDS, 0, 1, _by_id) == [2]
    assert blocks.seal(IDS) == [] and blocks.rows_of(IDS) is not None
    index = json.loads((blocks.dir / "index.json").read_text())
    assert [b["rows"] for b in index["blocks"]] == [8, 8, 8, 8, 5] and index["cases"] == 37


def test_another_block_size_is_not_mistaken_for_this_one(tmp_path):
    BlockSet(tmp_path, "fp", "enc", 8).encode(IDS, 0, 1, _by_id)
    other = BlockSet(tmp_path, "fp", "enc", 10)
    assert not other.block_valid(0, IDS[:10])  # same file name, other cases: encoded again
    assert other.encode(IDS, 0, 1, _by_id) == [0, 1, 2, 3]


def test_fit_reads_its_cases_from_the_sharded_cache_and_encodes_nothing(synth_store, tmp_path, monkeypatch):
    """``features`` (one process) fills the cache; ``build_features`` of a subset of the cases,
    in another order, then reads them from the blocks without calling an encoder."""
    from data_store.store import TriageStore
    from trainer.commands.features import features
    from trainer.config import load_config
    from trainer.encoders.cache import CacheStats, build_features
    from trainer.encoders.text import TextEncoder

    cfg = load_config(preset="quick", models=("text_only", "image_only"), cache_dir=str(tmp_path))
    rows = features(synth_store, "dermsynth", cfg, block_cases=50, log=lambda m: None)
    assert [r["blocks"] for r in rows] == [5, 5] and all(r["written"] == 5 for r in rows)
    with TriageStore(synth_store, read_only=True) as store:
        cases = store.read_cases("dermsynth")
        fp = store.read_dataset("dermsynth")["fingerprint"]
    subset = cases.sample(90, random_state=0)
    encoder = TextEncoder(cfg.text_encoder, cfg.max_tokens)
    reference = encoder.encode(subset["note"].tolist())
    monkeypatch.setattr(encoder, "encode", lambda *a, **k: pytest.fail("the note encoder ran"))
    monkeypatch.setattr("trainer.encoders.cache.load_images", lambda *a: pytest.fail("a photo was decoded"))
    stats = CacheStats()
    feats = build_features(subset, fp, tmp_path, cfg.image_size, encoder, stats=stats)
    assert (stats.hits, stats.misses) == (2, 0)
    assert list(feats.case_ids) == subset["case_id"].tolist()
    np.testing.assert_array_equal(feats.text_mask, reference[1])
    # blocks of 50 sorted cases batch the notes differently than 90 shuffled ones: float16 rounding apart
    np.testing.assert_allclose(feats.text_tokens.astype(np.float32), reference[0].astype(np.float32), atol=2e-2)
