"""Time one case's attributions on demand (what the dashboard does for a case not yet
stored), and render a stored example for the docs.

    python benchmarks/explain_benchmark.py --db data/triage.duckdb --run RUN [--repeats 3]

Cold: a fresh process loads the run's models and explains one case (what the first click
on a case costs); warm: the next cases in the same process. Writes the `explain` block of
docs/BENCHMARKS.md, benchmarks/results/explain.json and benchmarks/results/attribution_example.png
(a stored case of the run: photo, Integrated Gradients and Occlusion overlays, the note's
words tinted by score; the handoff document carries the same figure). Simulated data: not
clinical evidence.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._doc import machine, replace_block  # noqa: E402
from data_store.store import TriageStore  # noqa: E402
from trainer.config import MODEL_NAMES as MODELS  # noqa: E402



def worker(db: str, run_id: str, model: str, case_ids: list[str]) -> None:
    """In a fresh process: seconds for the first case (models loaded) and each next one."""
    start = time.perf_counter()
    import torch

    from trainer.commands.explain import _explain_one

    torch.set_num_threads(2)
    with TriageStore(db, read_only=True) as store:
        run = store.read_run(run_id)
        cases = [store.read_case(run["dataset"], c) for c in case_ids]
    times = []
    for case in cases:
        _explain_one(run, model, case, n_steps=32)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
    print(json.dumps(times))


def render_example(db: str, run_id: str, model: str) -> str:
    """Draw the report's attribution example into benchmarks/results/; returns its case id."""
    from trainer.commands.report import example_figure

    fig, case_id = example_figure(db, run_id, model)
    if fig is None:
        raise SystemExit(f"No stored attributions of {model} in run {run_id}: run `python -m trainer explain`.")
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    fig.save(ROOT / "benchmarks" / "results" / "attribution_example.png")
    return case_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="data/triage.duckdb")
    parser.add_argument("--run", required=True)
    parser.add_argument("--repeats", type=int, default=3, help="cold processes per model")
    parser.add_argument("--example-model", default="cross_attention")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.db, args.run, args.worker[0], args.worker[1:])
        return
    with TriageStore(args.db, read_only=True) as store:
        test = store.read_predictions(args.run, "late_fusion")
    ids = sorted(test[test["split"] == "test"]["case_id"])[:6]
    cold, warm = {}, {}
    for model in MODELS:
        cold[model], warm[model] = [], []
        for r in range(args.repeats):
            cmd = [sys.executable, str(Path(__file__)), "--db", args.db, "--run", args.run,
                   "--worker", model, ids[2 * r], ids[2 * r + 1]]
            out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
            times = json.loads(out.stdout.strip().splitlines()[-1])
            cold[model].append(times[0])
            warm[model].append(times[1])
    med = statistics.median
    case = render_example(args.db, args.run, args.example_model)
    result = {"machine": machine(), "run_id": args.run, "cold_s": cold, "warm_s": warm, "example_case": case}
    (ROOT / "benchmarks" / "results" / "explain.json").write_text(json.dumps(result, indent=2))
    rows = "\n".join(f"| {m} | {med(cold[m]):.2f} | {', '.join(f'{t:.2f}' for t in cold[m])} | {med(warm[m]):.2f} | "
                     f"{', '.join(f'{t:.2f}' for t in warm[m])} |" for m in MODELS)
    text = (f"## Attributions of one case on demand\n\nMachine: {machine()}.\n"
            f"Command: `python benchmarks/explain_benchmark.py --run {args.run} --repeats {args.repeats}`. "
            f"Integrated Gradients (32 steps) on pixels and note tokens, plus Occlusion; cold = a fresh process "
            f"that loads the run's models first, warm = the next case in that process. Target: under 5 s. "
            f"Simulated data: not clinical evidence.\n\n"
            f"| model | cold median s | cold runs s | warm median s | warm runs s |\n|:--|--:|:--|--:|:--|\n{rows}\n")
    replace_block(ROOT / "docs" / "BENCHMARKS.md", "explain", text)
    print(text)


if __name__ == "__main__":
    main()
