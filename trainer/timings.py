"""Seconds and peak resident memory of each stage of ``fit``, kept in ``runs.timings``.

``lap(timings, name, start)`` records the stage that began at ``start`` (a
``time.perf_counter()``) as ``timings[name]`` seconds and ``timings["peak_mb:" + name]``:
the process's peak resident memory since the previous lap (Linux ``VmHWM``, reset through
``/proc/self/clear_refs``). Where the peak cannot be reset it is the peak so far.
"""
from __future__ import annotations

import time
from pathlib import Path


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MiB (None where /proc is not available)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size
    except OSError:
        pass


def lap(timings: dict, name: str, start: float) -> float:
    """Record a stage's seconds and peak memory; returns the seconds."""
    timings[name] = time.perf_counter() - start
    peak = peak_rss_mb()
    if peak is not None:
        timings[f"peak_mb:{name}"] = round(peak, 1)
    reset_peak()
    return timings[name]
