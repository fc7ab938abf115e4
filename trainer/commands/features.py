"""``python -m trainer features``: every case's photo and note through a run's frozen
encoders into the sharded feature cache, where ``fit`` then finds them.

Launched by ``torchrun --nproc_per_node N [--nnodes M ...] -m trainer features ...``,
each rank encodes its own blocks of cases (block b is rank b % N's), writes each block
whole and renames it into place; rank 0 checks that every block is there before it writes
the cache's index. A run that loses a rank ends failed without an index, so nothing of it
is read; the next run keeps the blocks that are whole and encodes the rest.
"""
from __future__ import annotations

import signal
import time
from dataclasses import replace

from data_store.store import TriageStore
from trainer import distributed
from trainer.config import FitConfig
from trainer.encoders.cache import Encoding, note_tokens, photo_tokens, photos
from trainer.encoders.choice import AUTO
from trainer.encoders.shards import CHUNK, BlockSet


class FeaturesError(RuntimeError):
    """The cache could not be completed (a rank stopped, a block is missing)."""


def _stopped(signum, frame):
    raise FeaturesError("stopped by torchrun because another rank failed (see its error above). The cache index was "
                        "not written, so nothing of this run is read; run the command again to encode what is "
                        "missing (the whole blocks already written are kept).")


def frozen_encodings(cfg: FitConfig) -> list[Encoding]:
    """What ``fit`` with ``cfg`` reads through frozen encoders: decoded photos, note
    tokens, each pretrained image tower it may use, the LiT tower's pooled features."""
    from trainer.encoders import lit
    from trainer.encoders.prepare import image_tower
    from trainer.encoders.text import TextEncoder

    encodings = [photos(cfg.image_size), note_tokens(TextEncoder(cfg.text_encoder, cfg.max_tokens))]
    for name in cfg.image_candidates if cfg.image_encoder == AUTO else (cfg.image_encoder,):
        tower = image_tower(replace(cfg, image_encoder=name))
        if tower is not None:  # the CNN is trained on each run's own split: nothing frozen to cache
            encodings.append(photo_tokens(tower))
    if "unified" in cfg.models and cfg.unified_clip == "lit":
        encodings.append(lit.pooled_encoding(lit.image_tower(cfg.encoder_image_size, cfg.cache_dir)))
    return encodings


def features(db: str, dataset: str, cfg: FitConfig, block_cases: int = CHUNK, log=print) -> list[dict]:
    """Fill the sharded cache of ``dataset`` for ``cfg``'s frozen encoders (this rank's
    blocks under torchrun); returns, on rank 0, a row per encoding."""
    if block_cases < 1:
        raise ValueError(f"--block-cases must be at least 1, got {block_cases}.")
    if distributed.launched():  # torchrun stops the other ranks with SIGTERM when one fails: say so
        signal.signal(signal.SIGTERM, _stopped)
    with distributed.process_group():
        rank, world = distributed.rank(), distributed.world()
        with TriageStore(db, read_only=True) as store:
            info = store.read_dataset(dataset)
            cases = store.read_cases(dataset)
        cases = cases.assign(case_id=cases["case_id"].astype(str)).set_index("case_id")
        ids = sorted(cases.index)
        log(f"rank {rank} of {world}: {len(ids):,} cases of {dataset!r} in blocks of {block_cases:,}")
        summary = []
        for encoding in frozen_encodings(cfg):
            blocks = BlockSet(cfg.cache_dir, info["fingerprint"], encoding.name, block_cases)

            def compute(block_ids: list[str], encoding=encoding) -> dict:
                rows = cases.loc[block_ids]
                return encoding.compute(rows["image_path"].tolist(), rows["note"].fillna("").astype(str).tolist())
            t = time.perf_counter()
            written = blocks.encode(ids, rank, world, compute)
            seconds = time.perf_counter() - t
            try:
                done = distributed.gather_to_main((len(written), seconds))
                missing = blocks.seal(ids) if distributed.is_main() else []
                missing = distributed.from_main(missing)
            except RuntimeError as exc:  # a peer died: the collective breaks on the ranks left
                raise FeaturesError(f"{encoding.desc}: another rank stopped before its blocks were done ({exc}). "
                                    f"The cache index of {blocks.dir} was not written, so nothing of this run is "
                                    "read; run the command again to encode the missing blocks.") from exc
            if missing:
                raise FeaturesError(f"{encoding.desc}: blocks {missing} of {blocks.dir} are missing or broken; the "
                                    "index was not written. Run the command again to encode them.")
            if distributed.is_main():
                row = {"encoding": encoding.name, "cases": len(ids), "blocks": len(blocks.blocks(ids)),
                       "written": sum(d[0] for d in done), "seconds": max(d[1] for d in done), "folder": blocks.dir}
                log(f"{encoding.desc}: {row['written']} of {row['blocks']} blocks encoded by {world} process(es) "
                    f"in {row['seconds']:.1f} s; index {blocks.dir / 'index.json'}")
                summary.append(row)
        return summary
