"""Time the default ``fit`` twice (empty feature cache, then warm) and write the results.

    python benchmarks/fit_benchmark.py --db data/triage.duckdb --dataset dermsynth [--repeats 1]

Writes the `fit` block of docs/BENCHMARKS.md (wall time of both runs, each stage); the
README's results come from benchmarks/posthoc_report.py. Simulated data: not clinical
evidence.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._doc import machine, replace_block  # noqa: E402
from data_store.store import TriageStore  # noqa: E402
from trainer.metrics import macro_f1, per_class_recall  # noqa: E402


def run_fit(db: str, dataset: str, cache: Path, extra: list[str]) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "trainer", "fit", "--db", db, "--dataset", dataset, "--cache-dir", str(cache)]
    start = time.perf_counter()
    out = subprocess.run(cmd + extra, cwd=ROOT, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, out.stdout.strip().splitlines()[-1]


def heldout_table(store: TriageStore, run_id: str) -> pd.DataFrame:
    run = store.read_run(run_id)
    classes = list(run["classes"])
    preds = store.read_predictions(run_id)
    rows = []
    for model, df in preds[preds["split"] == "test"].groupby("model", sort=False):
        y_true = df["y_true"].map(classes.index).to_numpy()
        y_pred = df["y_pred"].map(classes.index).to_numpy()
        recall = per_class_recall(y_true, y_pred, len(classes))
        raw = [p if isinstance(p, (list, np.ndarray)) else q for p, q in zip(df["probs_uncal"], df["probs"])]
        y_raw = np.stack(raw).argmax(1)
        rows.append({"model": model, "n": len(df), "macro_f1": macro_f1(y_true, y_pred, len(classes)),
                     "macro_f1_raw": macro_f1(y_true, y_raw, len(classes)),
                     **{f"acc_{c}": r for c, r in zip(classes, recall)}})
    order = ["text_only", "image_only", "late_fusion", "cross_attention", "unified"]
    return pd.DataFrame(rows).set_index("model").reindex([m for m in order if m in {r["model"] for r in rows}])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="data/triage.duckdb")
    parser.add_argument("--dataset", default="dermsynth")
    parser.add_argument("--repeats", type=int, default=1, help="cold+warm pairs to run (each takes minutes)")
    args, extra = parser.parse_known_args()
    cold, warm, run_ids, cold_ids = [], [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(dir=ROOT / "data") as tmp:
            t, run_id = run_fit(args.db, args.dataset, Path(tmp) / "cache", extra)
            cold.append(t)
            cold_ids.append(run_id)
            t, run_id = run_fit(args.db, args.dataset, Path(tmp) / "cache", extra)
            warm.append(t)
            run_ids.append(run_id)
    with TriageStore(args.db, read_only=True) as store:
        runs = store.list_runs().set_index("run_id")
        table = heldout_table(store, run_ids[-1])
    stages = {rid: json.loads(runs.loc[rid, "timings"]) for rid in cold_ids + run_ids}
    med = statistics.median
    result = {"machine": machine(), "cold_s": cold, "warm_s": warm, "run_ids": run_ids, "stages": stages}
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "fit.json").write_text(json.dumps(result, indent=2))

    stage_rows = pd.DataFrame(stages).T.drop(columns=["cache_hits", "cache_misses"], errors="ignore")
    stage_rows.index.name = "run_id"
    text = (f"## Default fit on DermSynth-14k\n\nMachine: {machine()}.\n"
            f"Command: `python benchmarks/fit_benchmark.py --repeats {args.repeats}` "
            f"(each pair: `python -m trainer fit` with an empty cache, then again on the warm cache).\n\n"
            f"- first run (empty cache): median {med(cold) / 60:.1f} min over {len(cold)} "
            f"({', '.join(f'{t:.0f} s' for t in cold)}); limit 15 min\n"
            f"- second run (warm cache): median {med(warm) / 60:.1f} min ({', '.join(f'{t:.0f} s' for t in warm)}); "
            f"ratio {med(warm) / med(cold):.2f} (limit 0.33)\n\n"
            f"Seconds per stage (cold runs, then warm runs):\n\n{stage_rows.round(1).to_markdown()}\n")
    replace_block(ROOT / "docs" / "BENCHMARKS.md", "fit", text,
                  title="# Benchmarks\n\nEvery figure here is written by the script named beside it.\n")
    print(text)
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
