"""Temperature scaling, ours against netcal's, side by side on a stored run.

    python benchmarks/calibration_benchmark.py --db data/triage.duckdb --run RUN [--repeats 5]

For each model of the run: fit on the calib split's uncalibrated probabilities (ours,
``trainer.uncertainty.calibration.TemperatureScaler``, takes their logs as logits; netcal 1.4's
``TemperatureScaling`` with its defaults takes the probabilities), then score the test
split (the held-out clinic). Reports the median fitting time over ``--repeats`` and the
test NLL of each, with the NLL before calibration. Writes benchmarks/results/calibration.json
and the `calibration` block of docs/BENCHMARKS.md. Simulated data: not clinical evidence.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._doc import machine, replace_block  # noqa: E402
from data_store.store import TriageStore  # noqa: E402
from trainer.uncertainty.calibration import TemperatureScaler, log_probs  # noqa: E402
from trainer.evaluation.metrics import nll  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    from netcal.scaling import TemperatureScaling

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="data/triage.duckdb")
    parser.add_argument("--run", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with TriageStore(args.db, read_only=True) as store:
        run = store.read_run(args.run)
        preds = store.read_predictions(args.run)
    classes = list(run["classes"])
    rows = []
    for model, df in preds.groupby("model", sort=False):
        data = {}
        for split in ("calib", "test"):
            part = df[df["split"] == split]
            data[split] = (np.clip(np.stack(part["probs_uncal"]), 1e-12, 1),
                           part["y_true"].map(classes.index).to_numpy())
        (p_cal, y_cal), (p_test, y_test) = data["calib"], data["test"]
        ours_s, ours = timed(lambda: TemperatureScaler().fit(log_probs(p_cal), y_cal), args.repeats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peer_s, peer = timed(lambda: TemperatureScaling().fit(p_cal, y_cal), args.repeats)
            peer_test = np.asarray(peer.transform(p_test))
        rows.append({"model": model, "n_calib": len(y_cal), "n_test": len(y_test),
                     "nll_uncalibrated": nll(y_test, p_test), "ours_s": ours_s,
                     "ours_nll": nll(y_test, ours.predict_proba(log_probs(p_test))),
                     "ours_temperature": ours.temperature_, "netcal_s": peer_s, "netcal_nll": nll(y_test, peer_test),
                     "netcal_temperature": float(np.ravel(peer.temperature)[0])})
    result = {"machine": machine(), "run": args.run, "repeats": args.repeats, "rows": rows}
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "calibration.json").write_text(json.dumps(result, indent=2))
    text = _markdown(rows, args)
    replace_block(ROOT / "docs" / "BENCHMARKS.md", "calibration", text)
    print(text)


def _markdown(rows: list[dict], args) -> str:
    agree = max(abs(r["ours_temperature"] * r["netcal_temperature"] - 1) for r in rows)
    lines = "\n".join(
        f"| {r['model']} | {r['n_calib']:,} / {r['n_test']:,} | {r['nll_uncalibrated']:.4f} | {r['ours_nll']:.4f} | "
        f"{r['netcal_nll']:.4f} | {r['ours_temperature']:.3f} / {r['netcal_temperature']:.3f} | "
        f"{1000 * r['ours_s']:.1f} | {1000 * r['netcal_s']:.1f} | {r['netcal_s'] / r['ours_s']:.0f}x |" for r in rows)
    return (f"## Temperature scaling against netcal\n\nMachine: {machine()}.\n"
            f"Command: `python benchmarks/calibration_benchmark.py --run {args.run} --repeats {args.repeats}`. "
            "Both fitted on the calib split's uncalibrated probabilities of each model, both scored on the test split "
            "(the held-out clinic): NLL by `trainer.evaluation.metrics.nll` (checked against scikit-learn in the tests); "
            f"fitting time the median of {args.repeats}. Ours: `TemperatureScaler` (one bounded scalar search on the "
            "log temperature); netcal 1.4 `TemperatureScaling()` with its defaults (the `temperature` it reports "
            "multiplies the logits: it is the inverse of ours, so the two columns agreeing as T and 1/T is a check "
            "that both found the same optimum). Simulated data: not clinical evidence.\n\n"
            "| model | calib / test cases | test NLL uncalibrated | test NLL ours | test NLL netcal | "
            "temperature ours / netcal | fit ms ours | fit ms netcal | netcal / ours |\n"
            f"|:--|--:|--:|--:|--:|--:|--:|--:|--:|\n{lines}\n\n"
            f"Largest |T_ours x T_netcal - 1| over the models: {agree:.1e}.\n")


if __name__ == "__main__":
    main()
