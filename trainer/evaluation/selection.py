"""Which model a run ships, chosen on the training clinics only.

The rule: the highest macro F1 on ``val``. With the default clinic validation ``val`` is a
whole training clinic the models never trained on, so the choice (and the number behind
it, the run's estimate of skill at a new clinic) never looks at the held-out clinic.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

SELECTION_SPLIT = "val"


@dataclass(frozen=True)
class Selection:
    model: str
    estimate: float  # the chosen model's val macro F1
    evidence: pd.DataFrame  # model, macro_f1 (val), ci_low, ci_high; best first


def select_model(metrics: pd.DataFrame, candidates: list[str] | None = None) -> Selection:
    """The model with the highest overall macro F1 on val among ``candidates`` (default all);
    ties go to the name first in alphabetical order, so the choice is repeatable."""
    rows = metrics[(metrics["split"] == SELECTION_SPLIT) & (metrics["slice"] == "overall")
                   & (metrics["metric"] == "macro_f1")]
    if candidates is not None:
        rows = rows[rows["model"].isin(candidates)]
    if rows.empty:
        raise ValueError("The run has no macro F1 on val to choose a model by.")
    evidence = (rows[["model", "value", "ci_low", "ci_high"]].rename(columns={"value": "macro_f1"})
                .sort_values(["macro_f1", "model"], ascending=[False, True]).reset_index(drop=True))
    return Selection(str(evidence["model"].iloc[0]), float(evidence["macro_f1"].iloc[0]), evidence)
