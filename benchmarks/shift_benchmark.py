"""A new clinic, without its labels: is the shift seen, and is there no alarm without one?
And how fast does ``predict`` score new cases?

    python benchmarks/shift_benchmark.py --db data/triage.duckdb --run RUN [--repeats 3]

On a stored run (``fit`` made its held-out clinic's shift report):
- the held-out clinic's report, as ``fit`` stored it (``shift`` table);
- no shift: the run's ``calib`` cases (patients of the training clinics, never trained on)
  split by patient into halves, one against the other; the domain classifiers' intervals
  should hold 0.5;
- a planted label shift: ``calib`` split by patient into halves; one half is BBSE's
  confusion matrix and EM's prior, the other resampled to other class mixes, 20 times; the worst
  error of each estimate over the classes;
- ``predict`` on the held-out clinic's cases with warm caches: cases per second, the median
  of ``--repeats`` runs (in a copy of the store; the run's store is left as it was).
Writes the ``shift`` block of docs/BENCHMARKS.md and benchmarks/results/shift.json.
Simulated data: not clinical evidence.
"""
from __future__ import annotations

import argparse
import json
import shutil
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
from trainer.config import run_config  # noqa: E402
from trainer.encoders.cache import CacheStats  # noqa: E402
from trainer.encoders.run_encoders import run_features  # noqa: E402
from trainer.evaluation.shift import bbse_class_mix, domain_auroc, em_class_mix  # noqa: E402
from trainer.uncertainty.deferral import case_embedding  # noqa: E402

MIXES = {"urgent-heavy": [0.35, 0.35, 0.2, 0.1], "routine-heavy": [0.05, 0.1, 0.45, 0.4],
         "one class in two": [0.1, 0.5, 0.2, 0.2]}


def no_shift(run: dict, cases: pd.DataFrame, calib: pd.DataFrame, fingerprint: str) -> list[dict]:
    """Domain AUROC between two halves of the run's calib cases, split by patient (nothing moved)."""
    cfg = run_config(run["config"])
    frame = cases.set_index("case_id").loc[calib["case_id"]].reset_index()
    feats = run_features(frame[["case_id", "note", "image_path"]], fingerprint, Path(run["artifacts_dir"]), cfg,
                         len(run["classes"]), CacheStats(), log=lambda m: None, unified=False)
    emb, d = case_embedding(feats), feats.text_tokens.shape[-1]
    patients = frame["patient_id"].unique()
    half = frame["patient_id"].isin(np.random.default_rng(cfg.seed).permutation(patients)[: len(patients) // 2])
    half = half.to_numpy()
    out = []
    for name, cols in {"photo": slice(d, None), "note": slice(0, d)}.items():
        e = domain_auroc(emb[half, cols], emb[~half, cols], cfg.seed, n_boot=cfg.n_boot)
        out.append({"modality": name, "auroc": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high,
                    "flags nothing": bool(e.ci_low <= 0.5 <= e.ci_high)})
    return out


def planted(calib: pd.DataFrame, classes: list[str], seed: int, repeats: int = 20) -> list[dict]:
    """BBSE and EM on one half of calib resampled to each mix of MIXES, the other half as
    reference, over ``repeats`` splits and resamples: the worst class's error, its mean and
    its largest over repeats, and the share of repeats within 0.03."""
    y_all = calib["y_true"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    probs, patients = np.stack(calib["probs"]), calib["patient_id"].unique()
    out = []
    for name, mix in MIXES.items():
        errors = {"BBSE": [], "EM": []}
        for r in range(repeats):
            rng = np.random.default_rng(seed + r)
            half = calib["patient_id"].isin(rng.permutation(patients)[: len(patients) // 2]).to_numpy()
            ref_p, ref_y, pool_p, pool_y = probs[half], y_all[half], probs[~half], y_all[~half]
            prior = np.bincount(ref_y, minlength=len(classes)) / len(ref_y)
            pick = np.concatenate([rng.choice(np.flatnonzero(pool_y == k), int(round(share * len(pool_y))))
                                   for k, share in enumerate(mix)])
            truth = np.bincount(pool_y[pick], minlength=len(classes)) / len(pick)
            errors["BBSE"].append(np.abs(bbse_class_mix(ref_p, ref_y, pool_p[pick], seed, 2).value - truth).max())
            errors["EM"].append(np.abs(em_class_mix(pool_p[pick], prior, seed, 2).value - truth).max())
        row = {"mix": name, "n": len(pick), "repeats": repeats}
        for method, e in errors.items():
            row.update({f"{method} worst error, mean": float(np.mean(e)), f"{method} largest": float(np.max(e)),
                        f"{method} within 0.03": f"{int(np.sum(np.array(e) <= 0.03))}/{repeats}"})
        out.append(row)
    return out


def predict_speed(db: str, run_id: str, heldout: str, cases: pd.DataFrame, repeats: int) -> dict:
    """Cases per second of ``predict`` on the held-out clinic's cases (first run fills the caches)."""
    from data_store.ingest import ingest
    from trainer.commands.predict import predict

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "triage.duckdb"
        shutil.copy(db, copy)
        here = cases[cases["clinic"] == heldout]
        root = Path(here["image_path"].iloc[0]).parents[1]  # <root>/images/<file>
        manifest = Path(tmp) / "new.csv"
        pd.DataFrame({"case_id": here["case_id"], "patient_id": here["patient_id"], "clinic": heldout,
                      "image_path": [str(Path(x).relative_to(root)) for x in here["image_path"]],
                      "note": here["note"], "fitzpatrick": here["fitzpatrick"]}).to_csv(manifest, index=False)
        with TriageStore(copy) as store:
            ingest(store, "new_clinic", manifest, image_root=root, unlabelled=True)
        seconds = []
        for _ in range(repeats + 1):
            t = time.perf_counter()
            predict(copy, run_id, "new_clinic", log=lambda m: None)
            seconds.append(time.perf_counter() - t)
    warm = float(np.median(seconds[1:]))
    return {"cases": len(here), "first_s": seconds[0], "warm_median_s": warm, "cases_per_s": len(here) / warm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="data/triage.duckdb")
    parser.add_argument("--run", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with TriageStore(args.db, read_only=True) as store:
        run = store.read_run(args.run)
        info, cases = store.read_dataset(run["dataset"]), store.read_cases(run["dataset"])
        report = store.read_shift(args.run, run["heldout_clinic"])
        if report.empty:
            raise SystemExit(f"Run {args.run} has no shift report of {run['heldout_clinic']}; run "
                             "`python -m trainer shift` first.")
        model = report["model"].iloc[0]
        preds = store.read_predictions(args.run, model)
    calib = preds[preds["split"] == "calib"].merge(cases[["case_id", "patient_id"]], on="case_id")
    seed = run_config(run["config"]).seed
    result = {"run": args.run, "model": model, "heldout": run["heldout_clinic"],
              "report": report.drop(columns=["created_at"]).to_dict("records"),
              "no_shift": no_shift(run, cases, calib, info["fingerprint"]),
              "planted": planted(calib, list(run["classes"]), seed),
              "predict": predict_speed(args.db, args.run, run["heldout_clinic"], cases, args.repeats),
              "machine": machine()}
    write(result, args)


def write(r: dict, args) -> None:
    report = pd.DataFrame(r["report"])
    table = report[report["metric"] != "verdict"][["metric", "slice_value", "value", "ci_low", "ci_high",
                                                   "reference", "n"]]
    verdict = report[report["metric"] == "verdict"]["detail"].iloc[0]
    p = r["predict"]
    body = f"""Run `{r['run']}` (model `{r['model']}`, the run's choice on val). **Simulated data: not clinical evidence.**

The held-out clinic `{r['heldout']}`, without its labels (as `fit` stored it; reference: the training clinics):

{table.to_markdown(index=False, floatfmt='.3f')}

Verdict: {verdict}

No shift: the run's `calib` cases (training clinics, never trained on), one half (by patient) against the other:

{pd.DataFrame(r['no_shift']).to_markdown(index=False, floatfmt='.3f')}

A planted label shift: half of `calib` (by patient) resampled to other class mixes, the other half as BBSE's
confusion matrix and EM's prior, 20 times over (new halves, new resamples); the error of the worst-estimated
class share (target: every class share within 0.03):

{pd.DataFrame(r['planted']).to_markdown(index=False, floatfmt='.3f')}

`predict` on the held-out clinic's {p['cases']:,} cases (ingested again with `--unlabelled`), every model of the
run: {p['cases_per_s']:.0f} cases/s with warm caches (median of {args.repeats} runs, {p['warm_median_s']:.1f} s;
the first run, {p['first_s']:.1f} s, encodes the photos and notes unless an earlier run cached them). Target: at least
50 cases/s.

`python benchmarks/shift_benchmark.py {' '.join(sys.argv[1:])}`; {r['machine']}."""
    replace_block(ROOT / "docs" / "BENCHMARKS.md", "shift", body)
    (ROOT / "benchmarks" / "results" / "shift.json").write_text(json.dumps(r, indent=2, default=float))
    print(body)


if __name__ == "__main__":
    main()
