"""``python -m trainer adapt``: recalibrate a run for a new clinic with k of its cases labelled,
and the learning curve of how many are enough.

The clinic's cases come from the run's own predictions (its held-out clinic) or from
``predict``'s scores of a dataset ingested later with labels. Nothing here trains a model:
the run's stored outputs are re-read, and its post-hoc rules refitted
(``trainer/posthoc/adapt.py``) and judged on the clinic's other cases
(``trainer/evaluation/adaptation.py``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from data_store.fitzpatrick import fitzpatrick_group
from data_store.store import TriageStore
from trainer.config import BASELINES, run_config
from trainer.evaluation.selection import select_model
from trainer.evaluation.adaptation import CURVE_DRAWS, CURVE_K, adapt_once, curve, smallest_k, summarise
from trainer.posthoc.adapt import Adaptation, ClinicCases, outputs
from trainer.posthoc.audit_tables import case_frame
from trainer.posthoc.replay import PER_CASE, RULE_TABLES, Rules, load_rules, scored_cases
from trainer.posthoc.variant_tables import baseline, variant_tables



class AdaptError(ValueError):
    """A request ``adapt`` refuses."""


def clinic_cases(db: str | Path, run_id: str, clinic: str, dataset: str | None = None,
                 model: str | None = None) -> tuple[Rules, ClinicCases, np.ndarray, dict]:
    """The run's rules for ``model`` (default: the one it chose on val), the clinic's cases
    as those rules see them, the urgent classes (bool per class) and what they came from."""
    with TriageStore(db, read_only=True) as store:
        run = store.read_run(run_id)
        if run["status"] != "complete":
            raise AdaptError(f"Run {run_id} is {run['status']}; only a complete run can be adapted.")
        cfg, classes = run_config(run["config"]), list(run["classes"])
        dataset = dataset or run["dataset"]
        own = dataset == run["dataset"]
        model = model or select_model(store.read_table("metrics", run_id)).model
        if model not in cfg.models:
            raise AdaptError(f"Run {run_id} has no model {model!r}; models: {', '.join(cfg.models)}.")
        cases = store.read_cases(dataset)
        urgent_names = store.read_dataset(run["dataset"])["urgent_classes"]
        tables = {name: store.read_table(name, run_id) for name in RULE_TABLES}
        frames = {m: _outputs(store, run_id, dataset, own, m) for m in {model, *BASELINES} & set(cfg.models)}
    rules = load_rules(tables, model, cfg.conformal_method, cfg.alpha)
    urgent = np.isin(classes, list(urgent_names) if urgent_names is not None else [])
    frame = frames[model]
    u = pd.Series(np.random.default_rng(cfg.seed).random(len(frame)), index=frame["case_id"])  # as posthoc draws them
    here = cases[cases["clinic"] == clinic].set_index("case_id")
    frame = frame[frame["case_id"].isin(here.index) & frame["split"].isin(["test", "new"])]
    if frame.empty:
        raise AdaptError(_no_cases(run_id, dataset, clinic, cases, own))
    labels = here.loc[frame["case_id"], "label"]
    if labels.isna().any():
        raise AdaptError(f"{int(labels.isna().sum())} cases of clinic {clinic!r} in {dataset!r} have no label; "
                         "local recalibration needs every case of the clinic labelled (it draws k of them).")
    ids = frame["case_id"].to_numpy()
    single = {m: np.stack(f.set_index("case_id").loc[ids, "probs"]) for m, f in frames.items() if m in BASELINES}
    notes = here.loc[ids, "note"].fillna("")
    per_case = pd.DataFrame({"note_missing": notes.str.strip().eq("").to_numpy(),
                             **{c: frame[c].to_numpy(float) for c in PER_CASE}})
    out = ClinicCases(labels.map({c: i for i, c in enumerate(classes)}).to_numpy(int), np.stack(frame["probs"]),
                      single, per_case, fitzpatrick_group(here.loc[ids, "fitzpatrick"]),
                      here.loc[ids, "patient_id"].to_numpy(), u.loc[ids].to_numpy())
    return rules, out, urgent, {"run": run, "cfg": cfg, "model": model, "dataset": dataset, "case_ids": ids,
                                "classes": classes, "cases": cases, "own": own}


def adapt(db: str | Path, run_id: str, clinic: str, labels: int, select: str = "random", seed: int = 0,
          dataset: str | None = None, model: str | None = None, log=print) -> tuple[str, pd.DataFrame]:
    """Refit ``model``'s rules on ``labels`` cases of ``clinic`` drawn by patient and store the
    variant (its name, and its metrics on the clinic's other cases, with intervals)."""
    rules, cases, urgent, info = clinic_cases(db, run_id, clinic, dataset, model)
    try:
        a, local, rest = adapt_once(rules, cases, urgent, labels, select, seed)
    except ValueError as exc:
        raise AdaptError(str(exc)) from None
    cfg, classes, ids = info["cfg"], info["classes"], info["case_ids"]
    split = "test" if info["own"] else "new"
    frame = case_frame(pd.DataFrame({"case_id": ids[rest], "split": split,
                                     "y_true": np.asarray(classes)[cases.y[rest]]}),
                       info["cases"], classes, tuple(cfg.audit_extra))
    evaluated = cases.take(rest)
    tables, preds = variant_tables(frame, evaluated.probs, outputs(rules, a, evaluated, urgent), rules, a, urgent,
                                   cfg, classes)
    before = baseline(frame, outputs(rules, Adaptation(0), evaluated, urgent), rules, urgent, cfg.default_policy)
    where = clinic if info["own"] else f"{info['dataset']}:{clinic}"  # another dataset may reuse a clinic's name
    variant = f"{info['model']}@{where}-k{labels}"
    record = {"run_id": run_id, "variant": variant, "model": info["model"], "dataset": info["dataset"],
              "clinic": clinic, "k": labels, "select_method": select, "seed": seed,
              "local_case_ids": list(ids[local]), "params": a.params(), "baseline": before}
    if not info["own"]:
        preds = preds.iloc[:0]  # predictions hold the run's own dataset's cases; the figures are kept
    with TriageStore(db) as store:
        store.write_variant(record, preds, tables)
    if labels and a.thresholds.get("urgent_sensitivity", (None,))[0] == 0.0:
        log(f"{labels} local cases hold too few urgent cases to bound the missed-urgent rate: under "
            "urgent_sensitivity the variant defers every case. Label more cases (see `adapt --curve`).")
    log(f"stored {variant}: {labels} local cases ({select}, seed {seed}); judged on the clinic's other "
        f"{len(rest):,} cases")
    return variant, tables["metrics"]


def adapt_curve(db: str | Path, run_id: str, clinic: str, select: str = "random", seed: int = 0,
                dataset: str | None = None, model: str | None = None, ks=CURVE_K, draws: int = CURVE_DRAWS,
                log=print) -> pd.DataFrame:
    """The learning curve of ``clinic`` (``adaptation_curve``), stored and returned."""
    rules, cases, urgent, info = clinic_cases(db, run_id, clinic, dataset, model)
    ks = [k for k in ks if k < len(cases.y)]
    with tqdm(total=sum(1 if k == 0 else draws for k in ks), desc="adaptation curve", unit="draw") as bar:
        try:
            raw = curve(rules, cases, urgent, ks, draws, seed, select, bar)
        except ValueError as exc:
            raise AdaptError(str(exc)) from None
    table = summarise(raw, rules)
    with TriageStore(db) as store:
        store.write_curve(run_id, info["dataset"], clinic, info["model"], select, table)
    firsts = smallest_k(table)
    log(f"{info['model']} at {clinic}: smallest k at which each promise holds: "
        + ", ".join(f"{m} {'never' if np.isnan(k) else int(k)}" for m, k in firsts.items()))
    return table


def _outputs(store: TriageStore, run_id: str, dataset: str, own: bool, model: str) -> pd.DataFrame:
    """One model's calibrated outputs and per-case signals, sorted by case id: the run's own
    predictions, or ``predict``'s scores of another dataset (split "new")."""
    if own:
        return store.read_predictions(run_id, model).sort_values("case_id").reset_index(drop=True)
    scores = store.read_scores(run_id, dataset, model)
    return scored_cases(scores, run_id, dataset, AdaptError).assign(split="new")


def _no_cases(run_id: str, dataset: str, clinic: str, cases: pd.DataFrame, own: bool) -> str:
    if clinic not in set(cases["clinic"]):
        return f"Dataset {dataset!r} has no clinic {clinic!r}; clinics: {', '.join(sorted(cases['clinic'].unique()))}."
    if own:
        return (f"Clinic {clinic!r} is one of run {run_id}'s training clinics; adaptation is for a clinic the run "
                "never trained or calibrated on (its held-out clinic, or one ingested later).")
    return f"Run {run_id} scored no case of clinic {clinic!r} in {dataset!r}."
