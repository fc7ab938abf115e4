"""The default-size fixture of the handoff document: what ``read_inputs`` reads for a default
DermSynth run, saved so that a test can build and lay out the five pages without a 14,000-case
store. It holds no note, no photo path and no patient id (the attributions are left out).

    python tests/trainer/report/default_run.py --db data/triage.duckdb --run RUN

rewrites ``tests/trainer/report/default_run/`` from a run made with the current code.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent / "default_run"
FRAMES = ("metrics", "policies", "conformal", "calibrators", "comparisons", "reliability_bins", "risk_coverage",
          "curve", "shift", "corrections", "counts", "cases", "reasons")


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return str(value) if not isinstance(value, (str, int, float, bool, list, dict, type(None))) else value


def save(d: dict, out: Path = HERE) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in FRAMES:
        frame = d[name]
        if name in ("reliability_bins", "risk_coverage"):  # the document draws the test split only
            frame = frame[frame["split"].isin(["test", "calib"])]
        frame.to_parquet(out / f"{name}.parquet", index=False)
    for k, frame in d["by"].items():
        frame.to_parquet(out / f"by_{k}.parquet", index=False)
    run = {k: _plain(v) for k, v in d["run"].items() if k not in ("artifacts_dir",)}
    info = {k: _plain(v) for k, v in d["info"].items() if k not in ("manifest_path", "image_root")}
    (out / "run.json").write_text(json.dumps({"run": run, "info": info}, indent=1, default=str))


def load(path: Path = HERE) -> dict:
    """The saved inputs, as ``read_inputs`` returns them (attributions empty)."""
    from trainer.config import run_config

    d = {name: pd.read_parquet(path / f"{name}.parquet") for name in FRAMES}
    d["by"] = {k: pd.read_parquet(path / f"by_{k}.parquet") for k in ("clinic", "fitzpatrick", "label")}
    meta = json.loads((path / "run.json").read_text())
    d["run"], d["info"] = meta["run"], meta["info"]
    d["config"] = run_config(d["run"]["config"])
    d["attributions"] = pd.DataFrame(columns=["model", "method"])
    d["control"] = None  # the default store holds no control run
    return d


if __name__ == "__main__":
    from trainer.commands.report import read_inputs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="data/triage.duckdb")
    parser.add_argument("--run", required=True)
    args = parser.parse_args()
    save(read_inputs(args.db, args.run))
    print(f"wrote {HERE}: {sum(f.stat().st_size for f in HERE.iterdir()) / 1e6:.1f} MB")
