"""``python -m trainer shift``: does a clinic differ from the run's training clinics? No label read.

For one clinic's cases (the run's held-out clinic, or a clinic of a dataset ingested
later and scored with ``predict``): a domain classifier on the photos and one on the
notes against the training clinics' ``calib`` cases (never trained on: the CNN would know
its own training photos apart from any others), the clinic's class mix estimated by BBSE and EM,
the share deferred under the default policy, far from the training data, with a poor
photo or an empty note, each against the training clinics' ``calib`` cases, and a plain
verdict (``trainer/evaluation/shift.py``). Stored in the ``shift`` table.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data_store.fitzpatrick import fitzpatrick_group
from data_store.store import TriageStore
from trainer.config import run_config
from trainer.encoders.cache import CacheStats
from trainer.encoders.run_encoders import RunMismatch, run_features
from trainer.evaluation.selection import select_model
from trainer.evaluation.shift import ShiftInputs, shift_rows
from trainer.evaluation.corrections import evaluate_corrections
from trainer.posthoc.replay import PER_CASE, RULE_TABLES, decide, load_rules, policy_thresholds, scored_cases
from trainer.uncertainty.deferral import case_embedding


class ShiftError(ValueError):
    """A request ``shift`` refuses."""


def shift_report(db: str | Path, run_id: str, clinic: str, dataset: str | None = None, model: str | None = None,
                 log=print) -> pd.DataFrame:
    """The shift report of ``clinic`` for the run's ``model`` (default: the model the run
    chose on val), stored in ``shift`` and returned."""
    with TriageStore(db, read_only=True) as store:
        run = store.read_run(run_id)
        cfg, classes = run_config(run["config"]), list(run["classes"])
        dataset = dataset or run["dataset"]
        same = dataset == run["dataset"]
        info, cases = store.read_dataset(dataset), store.read_cases(dataset)
        model = model or select_model(store.read_table("metrics", run_id)).model
        preds = store.read_predictions(run_id, model)
        scores = None if same else store.read_scores(run_id, dataset, model)
        default = store.read_table("policies", run_id, model=model, policy=cfg.default_policy)
        run_cases = cases if same else store.read_cases(run["dataset"])
        run_fingerprint = info["fingerprint"] if same else store.read_dataset(run["dataset"])["fingerprint"]
    new = _new_cases(cases, clinic, preds, scores, dataset, run)
    calib = preds[preds["split"] == "calib"].merge(run_cases[["case_id", "note", "image_path"]], on="case_id")
    reference, d_text = _embedding(calib, run_fingerprint, run, cfg, log)
    embedding, _ = _embedding(new, info["fingerprint"], run, cfg, log)
    threshold = policy_thresholds(default)[cfg.default_policy]
    inputs = ShiftInputs(
        photo_calib=reference[:, d_text:], photo_new=embedding[:, d_text:], note_calib=reference[:, :d_text],
        note_new=embedding[:, :d_text], probs_calib=np.stack(calib["probs"]),
        y_calib=calib["y_true"].map({c: i for i, c in enumerate(classes)}).to_numpy(),
        probs_new=np.stack(new["probs"]), signals_calib=_signals(calib), signals_new=_signals(new),
        deferred_calib=_decide(calib, run_cases, threshold), deferred_new=_decide(new, cases, threshold))
    rows = shift_rows(inputs, classes, cfg.seed, cfg.n_boot).assign(model=model, dataset=dataset, clinic=clinic)
    judged = None
    labels = cases.set_index("case_id").loc[new["case_id"], "label"]
    if labels.notna().all():  # the corrections use no label; judging them does
        log(f"judging the label-free corrections against {clinic}'s labels")
        judged = _judge_corrections(db, run_id, model, cfg, classes, calib, new, run_cases, cases, labels,
                                    (reference, embedding))
    with TriageStore(db) as store:
        store.write_shift(run_id, dataset, clinic, model, rows, judged)
    log(rows[rows["metric"] == "verdict"]["detail"].iloc[0])
    return rows


def _judge_corrections(db, run_id: str, model: str, cfg, classes: list[str], calib: pd.DataFrame,
                       new: pd.DataFrame, run_cases: pd.DataFrame, cases: pd.DataFrame, labels: pd.Series,
                       embeddings: tuple[np.ndarray, np.ndarray]) -> pd.DataFrame:
    """``evaluate_corrections`` of the clinic against the run's own rules."""
    with TriageStore(db, read_only=True) as store:
        tables = {name: store.read_table(name, run_id) for name in RULE_TABLES}
        urgent_names = store.read_dataset(store.read_run(run_id)["dataset"])["urgent_classes"]
    rules = load_rules(tables, model, cfg.conformal_method, cfg.alpha)
    index = {c: i for i, c in enumerate(classes)}
    rng = np.random.default_rng(cfg.seed)
    x = {"embedding_calib": embeddings[0], "embedding_new": embeddings[1],
         "probs_calib": np.stack(calib["probs"]), "probs_new": np.stack(new["probs"]),
         "y_calib": calib["y_true"].map(index).to_numpy(), "y_new": labels.map(index).to_numpy(),
         "score_calib": calib["defer_score"].to_numpy(), "score_new": new["defer_score"].to_numpy(),
         "groups_calib": _groups(calib, run_cases), "groups_new": _groups(new, cases),
         "u_calib": rng.random(len(calib)), "u_new": rng.random(len(new))}
    urgent = np.isin(classes, list(urgent_names) if urgent_names is not None else [])
    thresholds = {name: t for name, (t, _) in rules.thresholds.items()}
    return evaluate_corrections(x, rules.policy_params, thresholds, rules.conformal.qhat_, rules.conformal.method,
                                rules.conformal.alpha, urgent, cfg.seed)


def _embedding(frame: pd.DataFrame, fingerprint: str, run: dict, cfg, log) -> tuple[np.ndarray, int]:
    """Cases in the space of the distance signal (``case_embedding``), read by the run's own
    encoders; and where its note part ends."""
    try:
        feats = run_features(frame[["case_id", "note", "image_path"]], fingerprint, Path(run["artifacts_dir"]), cfg,
                             len(run["classes"]), CacheStats(), log, unified=False)
    except RunMismatch as exc:
        raise ShiftError(str(exc)) from None
    return case_embedding(feats), feats.text_tokens.shape[-1]


def _new_cases(cases: pd.DataFrame, clinic: str, preds: pd.DataFrame, scores: pd.DataFrame | None, dataset: str,
               run: dict) -> pd.DataFrame:
    """The clinic's cases with their calibrated probs, deferral score and signals: from the
    run's predictions (its own dataset: its val and test cases) or from predict's scores."""
    here = cases[cases["clinic"] == clinic]
    if here.empty:
        raise ShiftError(f"Dataset {dataset!r} has no clinic {clinic!r}; clinics: "
                         f"{', '.join(sorted(cases['clinic'].unique()))}.")
    if scores is None:
        rows = preds[preds["split"] != "calib"]
    else:
        rows = scored_cases(scores, run["run_id"], dataset, ShiftError)
    out = here[["case_id", "note", "image_path"]].merge(rows, on="case_id")
    if out.empty:
        raise ShiftError(f"Clinic {clinic!r} has no case outside the run's train and calib splits (calib is what "
                         "it is compared with).")
    return out


def _signals(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[list(PER_CASE)].astype(float).reset_index(drop=True)
    return out.assign(note_missing=frame["note"].fillna("").str.strip().eq("").to_numpy())


def _groups(frame: pd.DataFrame, cases: pd.DataFrame) -> np.ndarray:
    return fitzpatrick_group(frame["case_id"].map(cases.set_index("case_id")["fitzpatrick"]))


def _decide(frame: pd.DataFrame, cases: pd.DataFrame, threshold: tuple[float, dict]) -> np.ndarray:
    """The default policy's decisions (True: review) from each case's stored deferral score."""
    return decide(threshold, frame["defer_score"].to_numpy(), _groups(frame, cases))
