"""Image encoders side by side on stored runs of the same dataset and seed: validation
(training clinics) and held-out macro F1 per model, held-out accuracy for skin types I-II
and V-VI, and each run's stage times and peak memory.

    python benchmarks/encoder_report.py --db data/triage.duckdb --runs RUN [RUN ...]

Writes the `encoders` block of docs/BENCHMARKS.md and benchmarks/results/encoders.json.
Every number is read from the store. One seed per encoder: a look, not the three-seed
benchmark against the scikit-learn peers. Simulated data: not clinical evidence.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._doc import machine, replace_block  # noqa: E402
from data_store.store import TriageStore  # noqa: E402
from trainer.config import MODEL_NAMES, run_config  # noqa: E402


def _value(m: pd.DataFrame, **where) -> float:
    rows = m[pd.concat([m[k] == v for k, v in where.items()], axis=1).all(axis=1)]
    return float(rows["value"].iloc[0]) if len(rows) else float("nan")


def run_rows(store: TriageStore, run_id: str) -> list[dict]:
    """One row per model of a stored run."""
    run = store.read_run(run_id)
    cfg = run_config(run["config"])
    encoder = cfg.image_encoder + (" + Shades of Gray" if cfg.colour_constancy else "") + \
        (" + photo augmentation" if cfg.photo_augment else "")
    timings = json.loads(run["timings"])
    encode_s = timings["features"] + sum(v for k, v in timings.items() if k.startswith("encoder:"))
    train_s = sum(v for k, v in timings.items() if k.startswith("train:"))
    m = store.read_table("metrics", run_id, metric=("macro_f1", "accuracy"))
    rows = []
    for model in [name for name in MODEL_NAMES if name in set(m["model"])]:
        mm = m[m.model == model]
        rows.append({"image encoder": encoder, "model": model, "run": run_id,
                     "val macro F1": _value(mm, split="val", slice="overall", metric="macro_f1"),
                     "held-out macro F1": _value(mm, split="test", slice="overall", metric="macro_f1"),
                     "held-out acc I-II": _value(mm, split="test", slice_value="I-II", metric="accuracy"),
                     "held-out acc V-VI": _value(mm, split="test", slice_value="V-VI", metric="accuracy"),
                     "features + encoders s": encode_s, "training s": train_s,
                     "peak MiB": max(v for k, v in timings.items() if k.startswith("peak_mb:")),
                     "seed": cfg.seed, "dataset": run["dataset"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="data/triage.duckdb")
    parser.add_argument("--runs", nargs="+", required=True)
    args = parser.parse_args()
    with TriageStore(args.db, read_only=True) as store:
        rows = [r for run_id in args.runs for r in run_rows(store, run_id)]
    table = pd.DataFrame(rows)
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "encoders.json").write_text(json.dumps(rows, indent=2))
    shown = table.drop(columns=["run", "seed", "dataset"]).round(3)
    text = (f"## Image encoders on the same split and seed\n\nMachine: {machine()}.\n"
            f"Command: `python benchmarks/encoder_report.py --runs {' '.join(args.runs)}` (runs of "
            f"`python -m trainer fit --image-encoder ...` on dataset `{table['dataset'].iloc[0]}`, seed "
            f"{table['seed'].iloc[0]}). `features + encoders s`: note and photo features and the encoders trained "
            "from scratch, as the run's cache found them (the first run computed the note features that the "
            "others reuse; each pretrained tower encoded the photos once, cold); `training s`: the models on "
            "top. One seed: a look, not the three-seed "
            "benchmark against the scikit-learn peers. Simulated data: not clinical evidence.\n\n"
            f"{shown.to_markdown(index=False)}\n")
    replace_block(ROOT / "docs" / "BENCHMARKS.md", "encoders", text)
    print(text)


if __name__ == "__main__":
    main()
