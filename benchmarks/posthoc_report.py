"""Write the README's results from the store: held-out accuracy, calibration, the
deferral score, conformal coverage per skin-tone group, policies and the skin-tone audit.

    python benchmarks/posthoc_report.py --db data/triage.duckdb --run RUN [--tone0-run RUN0]

RUN is a default DermSynth run; RUN0 (optional) a run on DermSynth simulated with
`--tone-effect 0`, to show that the image-only skin-tone gap found in RUN is absent when
the simulator plants none. Writes the `posthoc` block of README.md and
benchmarks/results/posthoc.json. Simulated data: not clinical evidence.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._doc import replace_block  # noqa: E402
from data_store.store import TriageStore  # noqa: E402
from trainer.config import MODEL_NAMES as ORDER  # noqa: E402
from trainer.evaluation.metrics import macro_f1, per_class_recall  # noqa: E402
from trainer.config import run_config  # noqa: E402
from trainer.report.numbers import interval  # noqa: E402

SPLITS = {"calib": "calib (training clinics, out of fold)", "val": "val (validation clinic)",
          "test": "test (held-out clinic)"}


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
    return pd.DataFrame(rows).set_index("model").reindex([m for m in ORDER if m in {r["model"] for r in rows}])


def read(db: str, run_id: str) -> dict:
    with TriageStore(db, read_only=True) as store:
        out = {t: store.read_table(t, run_id) for t in ("metrics", "calibrators", "conformal", "policies",
                                                         "comparisons")}
        out["run"] = store.read_run(run_id)
        out["heldout"] = heldout_table(store, run_id)
    return out


def _fmt(row) -> str:
    return interval(row["value"], row["ci_low"], row["ci_high"])


def calibration_table(r: dict) -> pd.DataFrame:
    m = r["metrics"][(r["metrics"].slice == "overall")].set_index(["model", "split", "metric"])
    rows = []
    for model in ORDER:
        row = {"model": model, "calibrator": r["calibrators"].set_index("model").loc[model, "method"]}
        for split in ("calib", "val", "test"):
            row[f"ECE {split}: raw -> calibrated"] = (f"{m.loc[(model, split, 'ece_uncalibrated'), 'value']:.3f} -> "
                                                      f"{m.loc[(model, split, 'ece'), 'value']:.3f}")
        row["defer ECE test"] = round(m.loc[(model, "test", "defer_ece"), "value"], 3)
        row["defer AUROC test"] = round(m.loc[(model, "test", "defer_auroc"), "value"], 3)
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def coverage_table(r: dict, alpha: float) -> pd.DataFrame:
    c = r["conformal"]
    c = c[(c.method == "lac") & (c["mode"] == "mondrian")]
    rows = []
    for model in ORDER:
        for split in ("calib", "val", "test"):
            row = {"model": model, "split": split}
            for _, g in c[(c.model == model) & (c.split == split)].iterrows():
                ok = "" if g["n"] < 100 or split == "test" else (
                    " ok" if abs(g["coverage"] - (1 - alpha)) <= 0.05 else " OFF")
                row[g["slice_value"]] = f"{g['coverage']:.3f} (n={g['n']}){ok}"
            rows.append(row)
    return pd.DataFrame(rows).set_index(["model", "split"])


def tone_gap(r: dict, model: str = "image_only") -> pd.DataFrame:
    m = r["metrics"]
    m = m[(m.model == model) & (m.slice == "fitzpatrick_group") & (m.metric == "accuracy")]
    rows = []
    for split in ("calib", "val", "test"):
        g = m[(m.split == split)].set_index("slice_value")
        if "V-VI" not in g.index:
            continue
        v = g.loc["V-VI"]
        rows.append({"split": split, "accuracy V-VI": _fmt(v), "n": int(v["n"]),
                     "best-served group": v["gap_reference"],
                     "gap": interval(v["gap"], v["gap_low"], v["gap_high"]),
                     "flagged": bool(v["flagged"])})
    return pd.DataFrame(rows).set_index("split")


def policy_table(r: dict, model: str = "late_fusion") -> pd.DataFrame:
    p = r["policies"]
    p = p[(p.model == model) & (p.slice == "overall")]
    out = p.pivot_table(index="policy", columns="split", values=["defer_rate", "accepted_accuracy",
                                                                  "missed_urgent_rate"])
    out.columns = [f"{a} {b}" for a, b in out.columns]
    keep = [c for c in out.columns if c.endswith(("calib", "test"))]
    return out[keep].round(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="data/triage.duckdb")
    parser.add_argument("--run", required=True)
    parser.add_argument("--tone0-run", help="a run on DermSynth simulated with --tone-effect 0")
    args = parser.parse_args()
    r = read(args.db, args.run)
    config = run_config(r["run"]["config"])
    comp = r["comparisons"][r["comparisons"].split == "test"].copy()
    comp["macro F1 difference (95% CI)"] = comp.apply(_fmt, axis=1)
    parts = [
        f"Run `{args.run}`; **simulated data, not clinical evidence.** Written by "
        f"`python benchmarks/posthoc_report.py`.",
        f"**Held-out clinic by category** (test split of this run; the mean over seeds against the peers is "
        f"in the results above). acc_<category> is the share of that category's cases classified correctly; "
        f"macro_f1_raw is before calibration.\n\n{r['heldout'].round(3).to_markdown()}",
        "**Calibration.** Top-label ECE (15 bins) of the raw and the calibrated probabilities, as the audit "
        "stores it (bootstrap bias-corrected, as the Audit item says); `calib` is out of fold; the deferral "
        "score's own ECE (plug-in) against the observed need for review, and its AUROC for "
        "catching errors, on the held-out clinic.",
        calibration_table(r).to_markdown(),
        f"**Conformal sets** (LAC, Mondrian by skin-tone group, target coverage {1 - config.alpha:.2f}): "
        "coverage per group; on the training clinics `ok` means within 0.05 of the target (groups of "
        "n >= 100), the held-out clinic is reported as it is.",
        coverage_table(r, config.alpha).to_markdown(),
        "**Skin-tone audit of the image-only model**: accuracy of Fitzpatrick V-VI with its 95% patient-"
        "bootstrap interval, and its gap to the best-served group (`flagged`: the gap's interval excludes 0).",
        tone_gap(r).to_markdown(),
    ]
    result = {"run": args.run, "calibration": calibration_table(r).reset_index().to_dict("records"),
              "tone_gap": tone_gap(r).reset_index().to_dict("records")}
    if args.tone0_run:
        r0 = read(args.db, args.tone0_run)
        parts += [f"The same on run `{args.tone0_run}` of `{r0['run']['dataset']}` (DermSynth simulated with "
                  f"`--tone-effect 0`: no planted skin-tone effect):", tone_gap(r0).to_markdown()]
        result["tone_gap_tone0"] = tone_gap(r0).reset_index().to_dict("records")
    parts += [f"**Deferral policies of late_fusion** (fitted on calib; default `{config.default_policy}`):",
              policy_table(r).to_markdown(),
              "**Paired comparisons on the held-out clinic** (fusion minus baseline, same resampled patients):",
              comp.set_index(["model", "baseline"])[["macro F1 difference (95% CI)"]].to_markdown()]
    replace_block(ROOT / "README.md", "posthoc", "\n\n".join(parts))
    (ROOT / "benchmarks" / "results" / "posthoc.json").write_text(json.dumps(result, indent=2, default=str))
    print("\n\n".join(parts))


if __name__ == "__main__":
    main()
