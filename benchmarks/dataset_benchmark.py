"""Time DermSynth generation and ingest, and write the dataset's composition from the store.

    python benchmarks/dataset_benchmark.py [--n 14000] [--repeats 3]

Writes the `dataset` block of docs/BENCHMARKS.md and the `composition` block of
README.md. Every number comes from this run. Simulated data: not clinical evidence.
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

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._doc import machine, replace_block  # noqa: E402
from data_store.fitzpatrick import ROMAN, fitzpatrick_label  # noqa: E402
from data_store.store import TriageStore  # noqa: E402



def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def composition(store: TriageStore, dataset: str) -> str:
    cases = store.read_cases(dataset)
    info = store.read_dataset(dataset)
    fitz = cases["fitzpatrick"].map(fitzpatrick_label)
    share = lambda s: (s.value_counts(normalize=True) * 100).round(1)  # noqa: E731
    by_fitz = pd.crosstab(cases["clinic"], fitz, margins=True, margins_name="all")
    by_cat = pd.crosstab(cases["clinic"], cases["label"], margins=True, margins_name="all")[
        list(info["classes"]) + ["all"]]
    return "\n\n".join([
        f"DermSynth as ingested: {len(cases):,} cases, {cases['patient_id'].nunique():,} patients, "
        f"{cases['clinic'].nunique()} clinics (held out: `{info['heldout_clinic']}`), "
        f"{int(info['n_rejected'])} rows rejected. Simulated: not clinical evidence.",
        "Fitzpatrick type share (%): " + ", ".join(f"{k} {v}" for k, v in share(fitz).sort_index(
            key=lambda i: i.map({v: k for k, v in ROMAN.items()})).items()),
        "Category share (%): " + ", ".join(f"{k} {v}" for k, v in share(cases["label"]).items()),
        "Cases by clinic and skin type:\n\n" + by_fitz.to_markdown(),
        "Cases by clinic and category:\n\n" + by_cat.to_markdown()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=14000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        out, db = Path(tmp) / "ds", Path(tmp) / "t.duckdb"
        synth_cmd = [py, "-m", "data_store", "synth", "--out", str(out), "--n", str(args.n)]
        synth_s = []
        for _ in range(args.repeats):
            subprocess.run(["rm", "-rf", str(out)], check=True)
            synth_s.append(timed(synth_cmd))
        ingest_cmd = [py, "-m", "data_store", "ingest", "--db", str(db), "--dataset", "dermsynth",
                      "--manifest", str(out / "manifest.csv")]
        ingest_s = [timed(ingest_cmd)]
        reingest_s = [timed(ingest_cmd) for _ in range(max(1, args.repeats - 1))]
        with TriageStore(db, read_only=True) as store:
            comp = composition(store, "dermsynth")
    result = {"n": args.n, "machine": machine(), "synth_s": synth_s, "ingest_s": ingest_s, "reingest_s": reingest_s}
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "dataset.json").write_text(json.dumps(result, indent=2))
    med = statistics.median
    table = pd.DataFrame([
        {"step": f"synth --n {args.n}", "median_s": med(synth_s), "runs_s": ", ".join(f"{t:.1f}" for t in synth_s)},
        {"step": "ingest (first)", "median_s": med(ingest_s), "runs_s": ", ".join(f"{t:.1f}" for t in ingest_s)},
        {"step": "ingest again (unchanged)", "median_s": med(reingest_s),
         "runs_s": ", ".join(f"{t:.1f}" for t in reingest_s)}]).to_markdown(index=False, floatfmt=".1f")
    text = (f"## Dataset: generation and ingest\n\nMachine: {machine()}.\n"
            f"Command: `python benchmarks/dataset_benchmark.py --n {args.n} --repeats {args.repeats}`.\n\n{table}\n")
    replace_block(ROOT / "docs" / "BENCHMARKS.md", "dataset", text,
                  title="# Benchmarks\n\nEvery figure here is written by the script named beside it.\n")
    replace_block(ROOT / "README.md", "composition",
                  f"{comp}\n\nGeneration took {med(synth_s):.0f} s (median of {len(synth_s)}) and the first "
                  f"ingest {med(ingest_s):.0f} s on {machine()}; see docs/BENCHMARKS.md.")
    print(text)


if __name__ == "__main__":
    main()
