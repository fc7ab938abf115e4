"""Every number of the handoff document with the store row and column it was read from.

The content builder writes numbers only through a ``Trace``: each call formats one value and
records where it came from (a table, the key that picks its row, the column, the format), so a
test can read each number back from the store on its own and check that the text holds no
number without a source. Derived numbers (the bottom line per 100 referrals) record their
factors. Formats are those of ``numbers.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from trainer.report.numbers import p3, pct

# The columns that pick one row of each table the document reads.
KEYS = {
    "metrics": ("model", "split", "slice", "slice_value", "metric"),
    "control_metrics": ("model", "split", "slice", "slice_value", "metric"),  # of the control run
    "policies": ("model", "policy", "split", "slice", "slice_value"),
    "conformal": ("model", "split", "method", "mode", "slice_value"),
    "comparisons": ("model", "split", "baseline", "metric"),
    "adaptation_curve": ("model", "clinic", "select_method", "k", "metric", "slice", "slice_value"),
    "shift": ("model", "clinic", "metric", "slice_value"),
    "corrections": ("model", "clinic", "correction", "metric", "slice_value"),
    "case_counts": ("by", "value"),  # the dataset's cases, counted by a column (or by split and a column)
    "deferral_cases": ("model", "case_id"),  # the held-out clinic's cases as the run's rules see them
    "deferral_reasons": ("reason",),  # deferred cases counted by reason (and "missed urgent": not deferred)
    "config": ("field",),  # the run's settings
    "constant": ("name",),  # a constant of the code (module.NAME)
    "fixed": ("why",),  # a number of the wording itself (the 100 of "per 100 referrals")
}
FORMATS = {"p3": p3, "pct": pct, "int": lambda x: f"{int(x):,}", "per100": lambda x: f"{x:.0f}",
           "k": lambda x: f"{int(x)}", "neg": lambda x: p3(-x)}


@dataclass(frozen=True)
class Source:
    table: str
    key: tuple[tuple[str, object], ...]
    column: str
    complement: bool = False  # the number is 1 - the value (a factor of a derived number)


@dataclass(frozen=True)
class Record:
    text: str  # as written in the document
    form: str  # a key of FORMATS
    sources: tuple[Source, ...]  # one, or the factors of a product (per100)


class Trace:
    """Formats numbers and keeps their sources, in the order they were written."""

    def __init__(self):
        self.records: list[Record] = []
        self.lookup: dict[Source, float] = {}  # the values behind ``factor`` sources, for ``per100``

    def source(self, table: str, row, column: str, complement: bool = False) -> Source:
        key = tuple((c, _plain(row[c])) for c in KEYS[table])
        return Source(table, key, column, complement)

    def num(self, table: str, row, column: str, form: str = "p3") -> str:
        """``row[column]`` of ``table`` written in ``form``."""
        return self._add(FORMATS[form](row[column]), form, (self.source(table, row, column),))

    def ci(self, table: str, row) -> str:
        """'0.700 (0.650 to 0.750)', each of the three traced; the value alone without an interval."""
        value = self.num(table, row, "value")
        if pd.isna(row.get("ci_low")) or pd.isna(row.get("ci_high")):
            return value
        return f"{value} ({self.num(table, row, 'ci_low')} to {self.num(table, row, 'ci_high')})"

    def pct_ci(self, table: str, row) -> str:
        """'12.3% (8.0% to 16.1%)': ``ci`` as percentages."""
        value = self.num(table, row, "value", "pct")
        if pd.isna(row.get("ci_low")) or pd.isna(row.get("ci_high")):
            return value
        return f"{value} ({self.num(table, row, 'ci_low', 'pct')} to {self.num(table, row, 'ci_high', 'pct')})"

    def per100(self, *factors: Source) -> str:
        """100 x the product of the factors' values (each ``1 - value`` when ``complement``)."""
        value = 100.0
        for f in factors:
            v = float(self.lookup[f])
            value *= (1 - v) if f.complement else v
        return self._add(FORMATS["per100"](value), "per100", factors)

    def fixed(self, text: str, why: str) -> str:
        return self._add(text, "fixed", (Source("fixed", (("why", why),), "text"),))

    def constant(self, name: str, value, form: str) -> str:
        return self._add(FORMATS[form](value), form, (Source("constant", (("name", name),), "value"),))

    def config(self, cfg, field: str, form: str, complement: bool = False) -> str:
        """A setting of the run (``1 - setting`` when ``complement``)."""
        value = getattr(cfg, field)
        return self._add(FORMATS[form](1 - value if complement else value), form,
                         (Source("config", (("field", field),), "value", complement),))

    def _add(self, text: str, form: str, sources: tuple[Source, ...]) -> str:
        self.records.append(Record(text, form, sources))
        return text

    def factor(self, table: str, row, column: str, complement: bool = False) -> Source:
        """A source for ``per100``, its value remembered."""
        src = self.source(table, row, column, complement)
        self.lookup[src] = row[column]
        return src


def _plain(value):
    """Key values as plain Python (NumPy scalars hash and compare the same, but print noisily)."""
    return value.item() if hasattr(value, "item") else value
