"""What every page of the handoff document reads: the run's tables, the chosen model and
policy, and row getters that fail loudly when a row the document needs is missing."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from trainer.report.trace import Trace

GROUPS = ("I-II", "III-IV", "V-VI")  # skin-tone groups the document reports (unknown aside)
# Plain names of the run's policies and what each promises (its setting in FitConfig).
POLICY_NAMES = {"review_budget": "review budget", "target_accuracy": "target accuracy",
                "urgent_sensitivity": "urgent safety net", "equal_group_accuracy": "equal accuracy by skin tone",
                "conformal_set": "unsure between categories"}


@dataclass
class Context:
    d: dict  # read_inputs' tables
    model: str
    policy: str
    t: Trace

    @property
    def cfg(self):
        return self.d["config"]

    @property
    def level(self) -> str:
        """The intervals' level, as written."""
        return self.t.fixed("95%", "the level of every interval")

    @property
    def heldout(self) -> str:
        return self.d["run"]["heldout_clinic"]

    @property
    def urgent(self) -> list[str]:
        urgent = self.d["info"]["urgent_classes"]
        return [] if urgent is None else list(urgent)

    def metric(self, split: str, slice_: str, value: str, metric: str, model: str | None = None) -> pd.Series | None:
        m = self.d["metrics"]
        rows = m[(m.model == (model or self.model)) & (m.split == split) & (m.slice == slice_) &
                 (m.slice_value == value) & (m.metric == metric)]
        return rows.iloc[0] if len(rows) else None

    def metrics(self, split: str, slice_: str, metric: str, model: str | None = None) -> pd.DataFrame:
        m = self.d["metrics"]
        return m[(m.model == (model or self.model)) & (m.split == split) & (m.slice == slice_) &
                 (m.metric == metric)].sort_values("slice_value")

    def policy_rows(self, policy: str | None = None, split: str = "test", slice_: str = "overall") -> pd.DataFrame:
        p = self.d["policies"]
        return p[(p.model == self.model) & (p.policy == (policy or self.policy)) & (p.split == split) &
                 (p.slice == slice_)].sort_values("slice_value")

    def policy_row(self, policy: str | None = None, split: str = "test") -> pd.Series | None:
        rows = self.policy_rows(policy, split)
        return rows.iloc[0] if len(rows) else None

    def reason(self, reason: str) -> pd.Series | None:
        r = self.d["reasons"]
        rows = r[r["reason"] == reason]
        return rows.iloc[0] if len(rows) else None

    def count(self, by: str, value: str) -> pd.Series | None:
        c = self.d["counts"]
        rows = c[(c["by"] == by) & (c["value"] == value)]
        return rows.iloc[0] if len(rows) else None


def group_name(value: str) -> str:
    """'skin types V-VI' for a group, 'type V' for a type, the value itself otherwise."""
    if value in GROUPS:
        return f"skin types {value}"
    return value

