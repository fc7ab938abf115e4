"""Why each case of a run scores what it does on the deferral score: the run's stored rules
replayed on its stored predictions, the reason of each score (``DeferralScorer.reasons``)
and the signal values behind it, in words a clinician can check against the case.

Nothing is refitted: the scorer, its ``urgent_doubt`` and the calib averages it standardises
against are the ones the run stored, and the replayed score must equal the stored one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data_store.store import TriageStore
from trainer.config import BASELINES, run_config
from trainer.posthoc.replay import PER_CASE, RULE_TABLES, load_rules
from trainer.uncertainty.deferral import NO_REASON, RULE_OUT_REASON, SIGNALS, deferral_signals, doubtful_rule_out

COLUMNS = ["case_id", "reason", "why", "defer_score"]


def case_reasons(db: str | Path, run_id: str, model: str, split: str) -> pd.DataFrame:
    """One row per case of ``model`` on ``split``: case_id, reason, why (the reason with the
    case's own signal values beside the average calib case's) and defer_score (replayed).
    Empty for a model without stored rules of its own (an adapted variant rescales them) and
    for calib, whose stored scores come from scorers fitted without each case (out of fold)."""
    with TriageStore(db, read_only=True) as store:
        run = store.read_run(run_id)
        cfg = run_config(run["config"])
        preds = store.read_predictions(run_id)
        notes = store.read_cases(run["dataset"]).set_index("case_id")["note"]
        urgent_names = store.read_dataset(run["dataset"])["urgent_classes"]
        tables = {name: store.read_table(name, run_id) for name in RULE_TABLES}
    if model not in cfg.models or split == "calib":
        return pd.DataFrame(columns=COLUMNS)
    rules = load_rules(tables, model, cfg.conformal_method, cfg.alpha)
    classes = list(run["classes"])
    urgent = np.isin(classes, list(urgent_names) if urgent_names is not None else [])
    frame = preds[(preds["model"] == model) & (preds["split"] == split)].sort_values("case_id")
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    ids = frame["case_id"].to_numpy()
    probs = np.stack(frame["probs"])
    single = {m: np.stack(preds[preds["model"] == m].set_index("case_id").loc[ids, "probs"])
              for m in BASELINES if m in set(preds["model"])}
    per_case = {c: frame[c].to_numpy(float) for c in PER_CASE}
    per_case["note_missing"] = notes.loc[ids].fillna("").str.strip().eq("").to_numpy()
    signals = deferral_signals(probs, urgent, single.get("text_only"), single.get("image_only"), **per_case)
    rule_out = doubtful_rule_out(probs, urgent, rules.urgent_doubt)
    reasons = rules.scorer.reasons(signals, rule_out)
    average = _average(rules.scorer)
    why = [_words(r, s, classes, single, i, rules.urgent_doubt, average)
           for i, (r, s) in enumerate(zip(reasons, signals.to_dict("records")))]
    return pd.DataFrame({"case_id": ids, "reason": reasons, "why": why,
                         "defer_score": rules.scorer.predict(signals, rule_out)})


def _average(scorer) -> dict[str, float]:
    """The average calib case the scorer standardises against (empty for a base-rate scorer)."""
    if scorer.model_ is None:
        return {}
    return dict(zip(SIGNALS, scorer.model_.named_steps["standardscaler"].mean_))


def _words(reason: str, s: dict, classes: list[str], single: dict, i: int, doubt: float,
           average: dict[str, float]) -> str:
    """One case's reason with its own values (and the average calib case's in brackets)."""
    def avg(name: str, fmt: str) -> str:
        return f" (average {format(average[name], fmt)})" if name in average else ""

    if reason == RULE_OUT_REASON:
        return (f"called non-urgent, yet the urgent categories hold {s['p_urgent']:.0%} of the probability; "
                f"the rule sends every such case to a clinician from {doubt:.0%}")
    if reason == "low confidence":
        return (f"top category at {s['confidence']:.0%}{avg('confidence', '.0%')}, "
                f"{s['margin']:.0%} ahead of the next{avg('margin', '.0%')}")
    if reason == "photo and note disagree":
        note, photo = (classes[int(np.argmax(single[m][i]))] if m in single else "?" for m in BASELINES)
        if note == photo:  # the fitted weights can make agreement itself add to the score
            return (f"the note alone and the photo alone both say {note}, {s['text_image_tv']:.0%} of probability "
                    f"apart{avg('text_image_tv', '.0%')}; the weights fitted on calib count this towards review")
        return (f"the note alone says {note}, the photo alone {photo}; they differ by {s['text_image_tv']:.0%} of "
                f"probability{avg('text_image_tv', '.0%')}")
    if reason == "unlike the training cases":
        return (f"distance to its 10 nearest training cases {s['train_distance']:.3f}"
                f"{avg('train_distance', '.3f')}")
    if reason == "empty note":
        return "the referral came without a note"
    if reason == "poor photo":
        return (f"photo sharpness {s['photo_sharpness']:.3f}{avg('photo_sharpness', '.3f')}, "
                f"{s['photo_overexposed']:.0%} of it overexposed{avg('photo_overexposed', '.0%')}")
    assert reason == NO_REASON, reason
    return "no signal adds to the score beyond the average calib case"
