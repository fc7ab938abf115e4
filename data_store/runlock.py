"""Is the process that writes a run still alive?

A ``fit`` holds an exclusive ``flock`` on ``<artifacts_dir>/.lock`` from before it
registers its run until it exits. The kernel drops the lock however the process ends
(SIGKILL, power loss, OOM killer), so a run still marked ``running`` whose lock is free
was interrupted: the store reports it as such instead of as running forever.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pandas as pd

LOCK_NAME = ".lock"
INTERRUPTED = ("the process ended before the run finished (killed, out of memory or a crash); nothing of it "
               "counts as a result. Its partial files are in artifacts_dir; train again with fit.")


class RunLock:
    """Hold the liveness lock of a run's artifacts folder (created if needed) while in use."""

    def __init__(self, artifacts_dir: str | Path):
        self.path = Path(artifacts_dir) / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh folder: nobody else holds it
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None


def run_alive(artifacts_dir: str | Path | None) -> bool:
    """True while a process holds the run's lock; False when none does or there is no lock file."""
    if not artifacts_dir:
        return False
    path = Path(artifacts_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock if we got it
    return False


def live_status(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs with the status their writer's liveness implies: 'running' with a free lock is 'interrupted'."""
    dead = (runs["status"] == "running") & ~runs["artifacts_dir"].map(run_alive).astype(bool)
    if dead.any():
        runs = runs.copy()
        runs.loc[dead, "status"] = "interrupted"
        runs.loc[dead, "error"] = INTERRUPTED
    return runs
