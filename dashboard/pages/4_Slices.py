"""Slices: every audit metric by skin tone, clinic, category, their intersection and any
extra column, with 95% intervals, gaps to the best-served group, and downloads."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from dashboard import charts, queries, tables, ui, words  # noqa: E402

page = ui.header("Slices")
run, model, split = page.run, page.model, page.split
metrics = queries.run_table(page.path, page.version, run.run_id, "metrics", model=model, split=split)
family = ui.choose("Slice by", tables.slice_families(metrics), "slice", format_func=words.name)
names = tables.metric_names(metrics, family)
metric = ui.choose("Metric", names, "metric", default="accuracy", format_func=words.name)

table = tables.slice_table(metrics, family, metric)
found = tables.slice_findings(table)
if len(table) < 2:
    st.info(f"Only {len(table)} group of {words.name(family)} on {split}: nothing to compare here. The training "
            "clinics (calib, val) and the Error analysis page compare groups across splits.")
elif found["flagged"]:
    st.error(f"{len(found['flagged'])} group(s) differ from the best-served group ({ui.plain(found['reference'])}) "
             f"with an interval that excludes zero: {', '.join(map(ui.plain, found['flagged']))}.")
else:
    st.success("No group's gap to the best-served group has an interval that excludes zero.")
if found["small"]:
    st.warning(f"Too small to judge (n < 30), shown but never flagged: {', '.join(map(ui.plain, found['small']))}.")
rate = metric in words.PERCENT
st.altair_chart(charts.interval_bars(table, "group", f"{words.name(metric)} by {words.name(family)} ({model}, {split})",
                                    words.name(metric), ".1%" if rate else ".3f"), width="stretch")
values = {words.name(c): "pct" if rate else "p3" for c in ("value", "ci_low", "ci_high")}
gaps = {words.name(c): "pts" if rate else "p3" for c in ("gap", "gap_low", "gap_high")}  # differences of rates
ui.table(words.columns(table), values | gaps)
ui.download_buttons(table, f"{run.run_id}_{model}_{split}_{family.replace(' ', '')}_{metric}", "slices.download",
                    page.about(model=model, split=split, metric=metric, slice=family))
st.caption("Intervals: 1,000 bootstrap resamples of patients. Exports carry no patient identifiers or notes.")
ui.glossary("gap to best group", "95% interval", "skin-tone group", "splits")
