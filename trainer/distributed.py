"""PyTorch's own distributed engine, when ``torchrun`` launched this process; one process otherwise.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address. ``start()`` joins
the process group (gloo on CPU, nccl when a GPU is there); every other helper here is a
no-op in a single process, so the same code serves both. Rank 0 alone writes the store,
the run's folder and cache files; the other ranks compute alongside it and wait.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist


def launched() -> bool:
    """True when torchrun (or another launcher that sets WORLD_SIZE) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    """This rank's GPU when one is there (LOCAL_RANK picks it), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def start() -> None:
    """Join the process group torchrun describes (once); nothing in a single process."""
    if not launched() or active():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(device())
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def stop() -> None:
    if active():
        dist.destroy_process_group()


@contextmanager
def process_group():
    """``start()`` on entry, ``stop()`` on exit, however the body ends."""
    start()
    try:
        yield
    finally:
        stop()


def barrier() -> None:
    if active():
        dist.barrier()


def from_main(value):
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(value) -> list | None:
    """Every rank's ``value``, in rank order, on rank 0 (None elsewhere)."""
    if not active():
        return [value]
    out = [None] * world() if is_main() else None
    dist.gather_object(value, out, dst=0)
    return out
