"""A new clinic with k of its cases labelled: do the promises come back, how many labels
does it take, and what do the label-free corrections do without any?

    python benchmarks/adapt_benchmark.py --db data/triage.duckdb --run RUN [--repeats 3]

On a stored run, for its held-out clinic and the model it chose on val (the issue's
targets), in a copy of the store (the run's store is left as it was):
- the learning curve ``adapt --curve`` stores (k in 0, 25, 50, 100, 200, 400; 10 draws of
  k cases by patient each; every figure on the clinic's other cases), and the time of the
  whole command, the median of ``--repeats`` runs;
- the same curve with the plain urgent-floor rule (the threshold refitted on the sample,
  no binomial bound), the peer the conservative rule is measured against;
- the curve for each way of drawing the k cases (random, stratified, uncertainty), and the
  smallest k of every promise for every model of the run (random draws);
- the label-free corrections as ``shift`` judged them against the clinic's labels.
Writes the ``adapt`` blocks of docs/BENCHMARKS.md and README.md and benchmarks/results/adapt.json.
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
from trainer.commands.adapt import adapt_curve, clinic_cases  # noqa: E402
from trainer.config import run_config  # noqa: E402
from trainer.evaluation.adaptation import SELECT, curve, smallest_k, summarise  # noqa: E402

SHOWN = ("defer_ece", "urgent_caught", "accepted_accuracy", "coverage", "macro_f1")


def timed_curve(db: str, run_id: str, clinic: str, repeats: int) -> tuple[pd.DataFrame, list[float]]:
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "triage.duckdb"
        shutil.copy(db, copy)
        for _ in range(repeats):
            t = time.perf_counter()
            adapt_curve(copy, run_id, clinic, log=lambda m: None)
            seconds.append(time.perf_counter() - t)
        with TriageStore(copy, read_only=True) as store:
            table = store.read_curve(run_id, clinic)
    return table, seconds


def urgent_rules(db: str, run_id: str, clinic: str, seed: int) -> pd.DataFrame:
    """urgent_caught and its workload under the binomial-bound rule and the plain one."""
    rules, cases, urgent, _ = clinic_cases(db, run_id, clinic)
    rows = []
    for name, confidence in (("binomial bound (90%)", 0.9), ("plain refit (peer)", None)):
        raw = curve(rules, cases, urgent, seed=seed, confidence=confidence)
        caught = raw[raw["metric"] == "urgent_caught"]
        work = raw[(raw["metric"] == "defer_rate") & (raw["slice_value"] == "urgent_sensitivity")]
        for k, g in caught.groupby("k"):
            rows.append({"rule": name, "k": k, "urgent caught (mean)": g["value"].mean(),
                         "worst draw": g["value"].min(), "draws >= 0.90": f"{int((g['value'] >= 0.9).sum())}/{len(g)}",
                         "deferred (mean)": work[work["k"] == k]["value"].mean()})
    return pd.DataFrame(rows)


def by_selection(db: str, run_id: str, clinic: str, seed: int) -> pd.DataFrame:
    rules, cases, urgent, _ = clinic_cases(db, run_id, clinic)
    rows = []
    for method in SELECT:
        table = summarise(curve(rules, cases, urgent, seed=seed, method=method), rules)
        at = table[(table["k"] == 200) & table["target"].notna()]
        row = {"draw": method, **{f"smallest k: {m}": _k(k) for m, k in smallest_k(table).items()}}
        row.update({f"{r.metric} {r.slice_value if r.metric == 'coverage' else ''}".strip() + " at k=200": r.value
                    for r in at.itertuples()})
        rows.append(row)
    return pd.DataFrame(rows)


def every_model(db: str, run_id: str, clinic: str, models: tuple[str, ...], seed: int) -> pd.DataFrame:
    rows = []
    for model in models:
        rules, cases, urgent, _ = clinic_cases(db, run_id, clinic, model=model)
        firsts = smallest_k(summarise(curve(rules, cases, urgent, seed=seed), rules))
        rows.append({"model": model, **{m: _k(k) for m, k in firsts.items()}})
    return pd.DataFrame(rows)


def other_seeds(db: str, runs: list[str]) -> pd.DataFrame:
    """Each run's chosen model at its held-out clinic: the promises at k = 200 (random draws)."""
    rows = []
    for run_id in runs:
        with TriageStore(db, read_only=True) as store:
            run = store.read_run(run_id)
        rules, cases, urgent, info = clinic_cases(db, run_id, run["heldout_clinic"])
        table = summarise(curve(rules, cases, urgent, seed=info["cfg"].seed), rules)
        at = table[(table["k"] == 200) & table["target"].notna()]
        row = {"run": run_id, "seed": info["cfg"].seed, "model": info["model"]}
        for metric, g in at.groupby("metric", sort=False):
            row[metric] = _values(g, "value") + (" (holds)" if g["holds"].all() else " (misses)")
        rows.append(row)
    return pd.DataFrame(rows)


def _values(rows: pd.DataFrame, column: str) -> str:
    """One figure, or one per skin-tone group (named), in the groups' order, overall last."""
    if len(rows) == 1:
        return f"{rows[column].iloc[0]:.3f}"
    rows = rows.sort_values("slice_value", key=lambda v: v.eq("all"), kind="stable")
    return ", ".join(f"{g} {v:.3f}" for g, v in zip(rows["slice_value"], rows[column]))


def _k(k: float) -> str:
    return "not by 400" if np.isnan(k) else str(int(k))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="data/triage.duckdb")
    parser.add_argument("--run", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--also", nargs="*", default=[], help="runs of other seeds: the targets at k = 200 for each")
    args = parser.parse_args()
    with TriageStore(args.db, read_only=True) as store:
        run = store.read_run(args.run)
        corrections = store.read_corrections(args.run, run["heldout_clinic"])
    if corrections.empty:
        raise SystemExit(f"Run {args.run} has no judged corrections of {run['heldout_clinic']}; run `python -m "
                         "trainer shift` first.")
    cfg, clinic = run_config(run["config"]), run["heldout_clinic"]
    table, seconds = timed_curve(args.db, args.run, clinic, args.repeats)
    result = {"run": args.run, "clinic": clinic, "model": table["model"].iloc[0], "seconds": seconds,
              "n_classes": len(run["classes"]),
              "curve": table.drop(columns=["created_at", "run_id"]).to_dict("records"),
              "urgent_rules": urgent_rules(args.db, args.run, clinic, cfg.seed).to_dict("records"),
              "selection": by_selection(args.db, args.run, clinic, cfg.seed).to_dict("records"),
              "models": every_model(args.db, args.run, clinic, cfg.models, cfg.seed).to_dict("records"),
              "corrections": corrections.drop(columns=["created_at", "run_id"]).to_dict("records"),
              "seeds": other_seeds(args.db, [args.run, *args.also]).to_dict("records"),
              "machine": machine()}
    write(result, args)


def targets(curve_table: pd.DataFrame) -> pd.DataFrame:
    """The issue's targets at k <= 200, from the curve."""
    rows = []
    t = curve_table[(curve_table["k"] <= 200) & curve_table["holds"].notna()]
    firsts = smallest_k(curve_table)
    policy = {"urgent_caught": "urgent_sensitivity", "accepted_accuracy": "target_accuracy"}
    for metric, g in t.groupby("metric", sort=False):
        at = g[g["k"] == 200]
        work = curve_table[(curve_table["metric"] == "defer_rate") & (curve_table["slice_value"] == policy.get(metric))]
        rows.append({"promise": metric, "target": g["target"].iloc[0], "k = 0": _values(g[g["k"] == 0], "value"),
                     "k = 200 (mean over draws)": _values(at, "value"), "worst draw at k = 200": _values(at, "worst"),
                     "holds at k = 200": bool(at["holds"].all()), "smallest k": _k(firsts.get(metric, np.nan)),
                     "deferred, k = 0 -> 200": " -> ".join(f"{v:.0%}" for v in work[work["k"].isin([0, 200])]["value"])})
    return pd.DataFrame(rows)


def write(r: dict, args) -> None:
    table = pd.DataFrame(r["curve"])
    shown = table[table["metric"].isin(SHOWN) | (table["slice_value"].isin(["urgent_sensitivity", "target_accuracy"]))][
        ["k", "metric", "slice_value", "value", "ci_low", "ci_high", "worst", "target", "holds"]]
    corr = pd.DataFrame(r["corrections"])[["correction", "metric", "slice_value", "before", "after", "target",
                                           "helps"]]
    goals = targets(table)
    body = f"""Run `{r['run']}`, held-out clinic `{r['clinic']}`, model `{r['model']}` (the run's choice on val).
**Simulated data: not clinical evidence.**

Targets (k <= 200 labelled local cases; every figure on the clinic's other cases; coverage per skin-tone group,
then overall (all); deferred: the share of cases its policy sends to a clinician;
smallest k: the first k from which the promise holds at every larger k of the curve):

{goals.to_markdown(index=False, floatfmt='.3f')}

The learning curve (`python -m trainer adapt --curve`; 10 random draws per k, by patient; value: the mean over
draws, ci: the 2.5-97.5% spread, worst: the worst draw):

{shown.to_markdown(index=False, floatfmt='.3f')}

Each seed's run (its own choice of model on val), the promises at k = 200 (mean over 10 random draws):

{pd.DataFrame(r['seeds']).to_markdown(index=False)}

`adapt --curve` time, the whole command on 2 cores: median {np.median(r['seconds']):.1f} s of {len(r['seconds'])}
runs ({', '.join(f'{s:.1f}' for s in r['seconds'])} s). Target: at most 120 s.

The urgent floor (95% of urgent cases caught): the binomial bound against the plain refit on the local sample:

{pd.DataFrame(r['urgent_rules']).to_markdown(index=False, floatfmt='.3f')}

How the k cases are drawn (each draw weighted back to the clinic's mix):

{pd.DataFrame(r['selection']).to_markdown(index=False, floatfmt='.3f')}

Smallest k at which each promise holds, every model of the run (random draws; NaN: not by k = 400):

{pd.DataFrame(r['models']).to_markdown(index=False)}

Label-free corrections, judged against the clinic's labels (`corrections` table, written by `shift`;
before: the run's own rules at the clinic):

{corr.to_markdown(index=False, floatfmt='.3f')}

`python benchmarks/adapt_benchmark.py {' '.join(sys.argv[1:])}`; {r['machine']}."""
    replace_block(ROOT / "docs" / "BENCHMARKS.md", "adapt", body)
    write_readme(r, goals, corr)
    (ROOT / "benchmarks" / "results" / "adapt.json").write_text(json.dumps(r, indent=2, default=str))
    print(body)


def conformal_gap(corr: pd.DataFrame, n_classes: int) -> tuple[str, bool]:
    """How much of the coverage gap weighted conformal closes without labels, per ratio
    source, and whether any closes at least half of it without overshooting past 0.95."""
    parts, any_closes = [], False
    for source in ("features", "outputs"):
        rows = corr[(corr["correction"] == f"weighted_conformal:{source}") & (corr["slice_value"] == "all")]
        cov, size = rows.set_index("metric").loc["coverage"], rows.set_index("metric").loc["set_size"]
        closed = (cov["after"] - cov["before"]) / (cov["target"] - cov["before"])
        any_closes |= bool(closed >= 0.5 and cov["after"] <= cov["target"] + 0.05)
        parts.append(f"likelihood ratios from the {source}: coverage {cov['before']:.3f} -> {cov['after']:.3f} "
                     f"({closed:.0%} of the gap to {cov['target']:.2f}; mean set size {size['before']:.2f} -> "
                     f"{size['after']:.2f} of {n_classes} classes)")
    return "; ".join(parts), any_closes


def write_readme(r: dict, goals: pd.DataFrame, corr: pd.DataFrame) -> None:
    gap, closes = conformal_gap(corr, r["n_classes"])
    readme = f"""Measured by `benchmarks/adapt_benchmark.py` on run `{r['run']}` (held-out clinic `{r['clinic']}`, model
`{r['model']}`; simulated data, not clinical evidence; details in docs/BENCHMARKS.md):

{goals.to_markdown(index=False, floatfmt='.3f')}

Every seed's run (its own choice of model on val), the promises at k = 200:

{pd.DataFrame(r['seeds']).drop(columns="run").to_markdown(index=False)}

Weighted conformal sets without labels {'close' if closes else 'do not close'} half of the coverage gap at the held-out
clinic without overshooting it: {gap}."""
    replace_block(ROOT / "README.md", "adapt", readme)


if __name__ == "__main__":
    main()
