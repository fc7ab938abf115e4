"""The whole default pipeline from nothing, stage by stage: seconds and peak memory.

    python benchmarks/pipeline_benchmark.py [--n 14000] [--workdir data/bench]

Runs what ``./run.sh`` runs on a fresh machine (after the install), each step as its own
process in an empty work folder: simulate DermSynth, ingest it, ``fit`` on an empty feature
cache, ``fit`` again on the warm cache, ``explain``, ``report``. Peak memory is each
process's peak resident set (Linux VmHWM; the rendering workers of ``synth`` separately);
inside ``fit`` each stage's peak comes from ``runs.timings`` (trainer/timings.py).
Writes benchmarks/results/pipeline.json and the `pipeline` and `fit` blocks of
docs/BENCHMARKS.md. Simulated data: not clinical evidence.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._doc import machine, replace_block  # noqa: E402
from data_store.store import TriageStore  # noqa: E402

# Runs ``python -m <module> <args>`` in this process, then writes its peak memory to $PEAK_FILE.
_WRAP = """
import json, os, resource, runpy, sys
from trainer.timings import peak_rss_mb
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
code = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code or 0
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
json.dump({"peak_mb": peak_rss_mb(), "children_peak_mb": kids / 1024}, open(os.environ["PEAK_FILE"], "w"))
sys.exit(code)
"""


def step(module: str, *args: str) -> dict:
    """Run one step; returns its seconds, peak memory and last stdout line."""
    with tempfile.NamedTemporaryFile(suffix=".json") as peak:
        env = {**os.environ, "PEAK_FILE": peak.name, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1"}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _WRAP, module, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True)
        seconds = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"{module} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
        out = json.loads(Path(peak.name).read_text())
    lines = proc.stdout.strip().splitlines()
    return {"seconds": seconds, **out, "last_line": lines[-1] if lines else ""}


def fit_stages(db: Path, run_id: str) -> dict:
    with TriageStore(db, read_only=True) as store:
        return json.loads(store.read_run(run_id)["timings"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=14000, help="cases to simulate (default 14000)")
    parser.add_argument("--workdir", default="data/bench", help="emptied first (default data/bench)")
    args = parser.parse_args()
    work = (ROOT / args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data, db, cache = work / "dermsynth", work / "triage.duckdb", work / "cache"
    steps = {}
    steps["synth"] = step("data_store", "synth", "--out", str(data), "--n", str(args.n))
    steps["ingest"] = step("data_store", "ingest", "--db", str(db), "--dataset", "dermsynth",
                           "--manifest", str(data / "manifest.csv"))
    fit_args = ("fit", "--db", str(db), "--dataset", "dermsynth", "--cache-dir", str(cache))
    steps["fit (empty cache)"] = step("trainer", *fit_args)
    steps["fit (warm cache)"] = step("trainer", *fit_args)
    run_id = steps["fit (warm cache)"]["last_line"]
    steps["explain"] = step("trainer", "explain", "--db", str(db), "--run", run_id)
    steps["report"] = step("trainer", "report", "--db", str(db), "--run", run_id, "--out", str(work / "report"))
    stages = {name: fit_stages(db, steps[name]["last_line"]) for name in ("fit (empty cache)", "fit (warm cache)")}
    result = {"machine": machine(), "n": args.n, "steps": steps, "fit_stages": stages}
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "pipeline.json").write_text(json.dumps(result, indent=2))
    write_docs(result, args)


def write_docs(result: dict, args) -> None:
    steps = result["steps"]

    def peak(name: str) -> float:  # fit resets its process peak per stage: the largest stage's counts too
        stages = result["fit_stages"].get(name, {})
        return max([steps[name]["peak_mb"], steps[name]["children_peak_mb"]]
                   + [v for k, v in stages.items() if k.startswith("peak_mb:")])
    table = pd.DataFrame([{"step": name, "seconds": round(s["seconds"], 1), "minutes": round(s["seconds"] / 60, 1),
                           "peak memory MiB": round(peak(name))} for name, s in steps.items()])
    cold = sum(steps[k]["seconds"] for k in steps if k != "fit (warm cache)")
    command = f"python benchmarks/pipeline_benchmark.py --n {args.n}"
    text = (f"## The whole default pipeline, stage by stage\n\nMachine: {result['machine']}.\nCommand: `{command}` "
            "(one run of each step, not a median: the whole takes tens of minutes). Each step is its own "
            "process, as `./run.sh` runs them on a fresh machine after the install; peak memory is the step's "
            "peak resident set (for `synth`, the larger of the main process and its rendering workers). "
            "Simulated data: not clinical evidence.\n\n"
            f"{table.to_markdown(index=False)}\n\nFrom nothing to a served dashboard (every step but the warm fit): "
            f"{cold / 60:.1f} min.\n")
    replace_block(ROOT / "docs" / "BENCHMARKS.md", "pipeline", text)
    rows = []
    for name, stage in result["fit_stages"].items():
        for key, seconds in stage.items():
            if key.startswith(("peak_mb:", "cache_")):
                continue
            rows.append({"fit": name, "stage": key, "seconds": round(seconds, 1),
                         "peak memory MiB": stage.get(f"peak_mb:{key}")})
    stage_table = pd.DataFrame(rows).pivot(index="stage", columns="fit", values=["seconds", "peak memory MiB"])
    stage_table.columns = [f"{a}, {b}" for a, b in stage_table.columns]
    order = list(dict.fromkeys(r["stage"] for r in rows))
    stage_table = stage_table.loc[order]
    c, w = steps["fit (empty cache)"]["seconds"], steps["fit (warm cache)"]["seconds"]
    text = (f"## `fit` on DermSynth-14k: each stage\n\nMachine: {result['machine']}.\nCommand: `{command}` "
            "(its two fits: `python -m trainer fit` on an empty feature cache, then again on the warm cache). "
            "Peak memory per stage is the process's peak resident set during that stage (trainer/timings.py).\n\n"
            f"- empty cache: {c / 60:.1f} min ({c:.0f} s); target under 15 min\n"
            f"- warm cache: {w / 60:.1f} min ({w:.0f} s); ratio {w / c:.2f} (target under 0.33)\n\n"
            f"{stage_table.to_markdown()}\n")
    replace_block(ROOT / "docs" / "BENCHMARKS.md", "fit", text)
    print(table.to_string(index=False))
    print(stage_table.to_string())


if __name__ == "__main__":
    main()
