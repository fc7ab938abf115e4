"""Which cases get explained, and attributions in and out of the store.

``explain_run`` is ``python -m trainer explain``; ``explain_case`` is what the dashboard
calls for one case that is not stored yet (it computes, stores and returns it). Torch and
Captum are imported only when something is computed.
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from data_store.store import TriageStore

METHODS = ("integrated_gradients", "occlusion")


def encode_heatmap(heatmap: np.ndarray | None) -> bytes | None:
    return None if heatmap is None else np.asarray(heatmap, "<f2").tobytes()


def decode_heatmap(blob, side) -> np.ndarray | None:
    """(side, side) float array from the stored float16 bytes (None when there is none)."""
    if blob is None or side is None or (isinstance(side, float) and np.isnan(side)):
        return None
    return np.frombuffer(bytes(blob), dtype="<f2").astype(np.float32).reshape(int(side), int(side))


def select_cases(preds: pd.DataFrame, threshold: float, n_cases: int, sample: int, seed: int) -> list[str]:
    """Every deferred or misclassified test case (highest defer score first) up to
    ``n_cases``, plus a random ``sample`` of the rest."""
    test = preds[preds["split"] == "test"]
    flagged = (test["defer_score"] >= threshold) | (test["y_pred"] != test["y_true"])
    first = test[flagged].sort_values(["defer_score", "case_id"], ascending=[False, True])["case_id"].tolist()
    rest = sorted(set(test["case_id"]) - set(first))
    rng = np.random.default_rng(seed)
    extra = rng.choice(rest, size=min(sample, len(rest)), replace=False).tolist() if rest else []
    return first[:n_cases] + sorted(extra)


def rows_for(run_id: str, model: str, case_id: str, classes: list[str], e, n_steps: int) -> list[dict]:
    base = {"run_id": run_id, "model": model, "case_id": case_id, "target_class": classes[e.target]}
    side = None if e.heatmap_ig is None else e.heatmap_ig.shape[0]
    rows = [{**base, "method": "integrated_gradients", "image_heatmap": encode_heatmap(e.heatmap_ig),
             "heatmap_side": side, "tokens": e.words, "token_scores": e.word_scores.tolist(),
             "modality_share": e.modality_share, "convergence_delta": e.delta, "n_steps": n_steps}]
    if e.heatmap_occlusion is not None:
        rows.append({**base, "method": "occlusion", "image_heatmap": encode_heatmap(e.heatmap_occlusion),
                     "heatmap_side": side})
    return rows


@functools.lru_cache(maxsize=8)
def _pipeline(run_dir: str, model: str):
    from trainer.explain import load_pipeline

    return load_pipeline(run_dir, model)


def _explain_one(run: dict, model: str, case: dict, n_steps: int, target: int | None = None):
    from data_store.images import load_rgb
    from trainer.explain import explain

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
    classes = list(run["classes"])
    default = json.loads(run["config"]).get("default_policy", "review_budget")
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


def explain_case(db, run_id: str, model: str, case_id: str, n_steps: int = 32) -> pd.DataFrame:
    """The stored attributions of one case, computing and storing them first if needed."""
    with TriageStore(db, read_only=True) as store:
        stored = store.read_attributions(run_id, model, case_id)
        if not stored.empty:
            return stored
        run = store.read_run(run_id)
        case = store.read_case(run["dataset"], case_id)
        pred = store.read_predictions(run_id, model)
    if not Path(run["artifacts_dir"]).exists():
        raise ValueError(f"The checkpoints of run {run_id} are not at {run['artifacts_dir']}; cannot explain.")
    shown = pred.set_index("case_id")["y_pred"]
    if case_id not in shown.index:
        raise ValueError(f"Case {case_id} has no prediction of {model} in run {run_id} (only val, calib and test do).")
    e = _explain_one(run, model, case, n_steps, list(run["classes"]).index(shown[case_id]))
    with TriageStore(db) as store:
        store.write_attributions(pd.DataFrame(rows_for(run_id, model, case_id, list(run["classes"]), e, n_steps)))
        return store.read_attributions(run_id, model, case_id)
