"""``python -m trainer explain``: attributions of a run's cases into the store.

``explain_run`` is the command; ``explain_case`` is what the dashboard calls for one case
that is not stored yet (it computes, stores and returns it). Torch and Captum are imported
only when something is computed.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path

import pandas as pd

from data_store.store import TriageStore
from trainer.config import run_config, stored_default_policy
from trainer.explain.records import rows_for, select_cases

@functools.lru_cache(maxsize=8)
def _pipeline(run_dir: str, model: str):
    from trainer.explain.loading import load_pipeline

    return load_pipeline(run_dir, model)


def _explain_one(run: dict, model: str, case: dict, n_steps: int, target: int | None = None):
    from data_store.images import load_rgb
    from trainer.explain.attribution import explain

    pipe = _pipeline(str(run["artifacts_dir"]), model)
    return explain(pipe, load_rgb(case["image_path"], pipe.image_size), case["note"], target=target, n_steps=n_steps)


def explain_run(db, run_id: str, models: list[str] | None = None, n_cases: int = 200, sample: int = 20,
                case_ids: list[str] | None = None, n_steps: int = 32, log=print) -> int:
    """Explain the selected test cases of each model and store them; returns rows written."""
    import torch
    from tqdm import tqdm

    torch.set_num_threads(2)
    with TriageStore(db) as store:  # a writer: brings an older store up to date
        run = store.read_run(run_id)
        if run["status"] != "complete":
            raise ValueError(f"Run {run_id} is {run['status']}; only a complete run can be explained.")
        preds = store.read_predictions(run_id)
        cases = store.read_cases(run["dataset"]).set_index("case_id")
        policies = store.read_table("policies", run_id, split="calib", slice="overall")
    preds = preds[preds["model"].isin(run_config(run["config"]).models)]  # trained models, not adapted variants
    classes = list(run["classes"])
    default = stored_default_policy(run["config"])
    models = models or sorted(preds["model"].unique())
    unknown = sorted(set(models) - set(preds["model"]))
    if unknown:
        raise ValueError(f"Run {run_id} has no model {unknown}; models: {sorted(set(preds['model']))}.")
    if case_ids:
        missing = sorted(set(case_ids) - set(preds["case_id"]))
        if missing:
            raise ValueError(f"Cases {missing[:5]} have no prediction in run {run_id} (only val, calib and test do).")
    written = 0
    for model in models:
        p = preds[preds["model"] == model]
        threshold = policies[(policies.model == model) & (policies.policy == default)]["threshold"]
        chosen = case_ids or select_cases(p, float(threshold.iloc[0]) if len(threshold) else 1.0, n_cases, sample,
                                          seed=0)
        shown = p.set_index("case_id")["y_pred"]  # the class the tool shows (after calibration)
        rows, start = [], time.perf_counter()
        for case_id in tqdm(chosen, desc=f"explaining {model}", unit="case", mininterval=1):
            e = _explain_one(run, model, {**cases.loc[case_id].to_dict()}, n_steps, classes.index(shown[case_id]))
            rows += rows_for(run_id, model, case_id, classes, e, n_steps)
        with TriageStore(db) as store:
            store.write_attributions(pd.DataFrame(rows))
        written += len(rows)
        log(f"{model}: {len(chosen)} cases explained in {time.perf_counter() - start:.1f} s")
    return written


def explain_case(db, run_id: str, model: str, case_id: str, n_steps: int = 32,
                 target: str | None = None) -> pd.DataFrame:
    """The stored attributions of one case, computing and storing them first if needed.
    ``target``: another class to explain ("why not urgent?"); computed, returned and not
    stored (the store keeps one explanation per case: its predicted class)."""
    with TriageStore(db, read_only=True) as store:
        stored = store.read_attributions(run_id, model, case_id)
        run = store.read_run(run_id)
        classes = list(run["classes"])
        if not stored.empty and target in (None, stored["target_class"].iloc[0]):
            return stored
        case = store.read_case(run["dataset"], case_id)
        pred = store.read_predictions(run_id, model)
    if not Path(run["artifacts_dir"]).exists():
        raise ValueError(f"The checkpoints of run {run_id} are not at {run['artifacts_dir']}; cannot explain.")
    shown = pred.set_index("case_id")["y_pred"]
    if case_id not in shown.index:
        raise ValueError(f"Case {case_id} has no prediction of {model} in run {run_id} (only val, calib and test do).")
    if target is not None and target not in classes:
        raise ValueError(f"Run {run_id} has no class {target!r}; classes: {', '.join(classes)}.")
    e = _explain_one(run, model, case, n_steps, classes.index(target or shown[case_id]))
    rows = pd.DataFrame(rows_for(run_id, model, case_id, classes, e, n_steps))
    if target not in (None, shown[case_id]):
        return rows
    with TriageStore(db) as store:
        store.write_attributions(rows)
        return store.read_attributions(run_id, model, case_id)
