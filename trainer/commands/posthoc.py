"""``python -m trainer posthoc`` (alias ``calibrate``): re-fit everything fitted after
training (calibration, deferral score, conformal sets, policies) from a stored run's
predictions, re-audit, and replace the run's tables, then remake the held-out clinic's shift
report and learning curve (adapted variants are removed: they refit the replaced rules).
``fit`` runs the same stage at its end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from data_store.store import TriageStore
from trainer.commands.fit import heldout_reports
from trainer.config import run_config
from trainer.posthoc import posthoc_tables


def posthoc(db, run_id: str, overrides: dict | None = None, log=print) -> dict[str, pd.DataFrame]:
    """Re-run the post-hoc stage of a stored run with ``overrides`` of its settings and
    replace its tables; returns them."""
    with TriageStore(db) as store:  # a writer: brings a store of an older schema up to date
        run = store.read_run(run_id)
        if run["status"] != "complete":
            raise ValueError(f"Run {run_id} is {run['status']}; only a complete run can be re-fitted.")
        info = store.read_dataset(run["dataset"])
        cases = store.read_cases(run["dataset"])
        preds = store.read_predictions(run_id)
    cfg = run_config(run["config"], **(overrides or {}))
    preds = preds[preds["model"].isin(cfg.models)]  # not the adapted variants (replaced with the rules)
    # Runs stored before schema 2 kept the raw probabilities in probs and no distances.
    preds["probs_uncal"] = [u if isinstance(u, (list, np.ndarray)) else p
                            for u, p in zip(preds["probs_uncal"], preds["probs"])]
    tables = posthoc_tables(preds, cases, list(run["classes"]), info["urgent_classes"], cfg, log)
    stored = json.loads(run["config"])
    with TriageStore(db) as store:
        store.write_posthoc(run_id, tables, json.dumps({**stored, **json.loads(cfg.to_json())}))
    # The shift report, the corrections and the learning curve read the rules just replaced.
    heldout_reports(Path(db), run_id, run["heldout_clinic"], log)
    return tables
