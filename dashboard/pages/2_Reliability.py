"""Reliability: diagrams before and after calibration, by skin-tone group and by clinic,
with ECE and its interval; the deferral score's own reliability."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from dashboard import charts, queries, tables, ui, words  # noqa: E402

page = ui.header("Reliability")
run, model, split = page.run, page.model, page.split
family = ui.choose("By", ["overall", "fitzpatrick_group", "clinic"], "by")

cal = queries.run_table(page.path, page.version, run.run_id, "calibrators", model=model)
if len(cal):
    st.caption(f"Calibrator of {model}: **{cal['method'].iloc[0]}**, chosen on the calib split by out-of-fold "
               "NLL among methods that do not worsen the out-of-fold ECE. The held-out clinic (test) is shown as "
               "it is: calibration can get worse under a shift of clinic.")
bins = queries.run_table(page.path, page.version, run.run_id, "reliability_bins", model=model, split=split,
                         slice=family)
metrics = queries.run_table(page.path, page.version, run.run_id, "metrics", model=model, split=split, slice=family)
st.markdown("**Calibration error (ECE)**, 15 bins: value (95% interval) where bootstrapped")
st.dataframe(words.columns(tables.ece_table(metrics)), width="stretch")
groups = tables.reliability_groups(bins)
cols = st.columns(min(3, max(1, len(groups))))
for i, (group, rows) in enumerate(groups.items()):
    cols[i % len(cols)].altair_chart(charts.reliability(rows, f"{group}: top-label confidence"), width="stretch")
st.subheader("The deferral score against the observed need for review")
st.altair_chart(charts.reliability(tables.defer_bins(bins), "defer score reliability", colour="slice_value"),
                width="stretch")
st.caption("Points are sized by their cases; bins under 10 cases are faded and left off the line.")
ui.glossary("calibration error (ECE)", "deferral score", "95% interval", "splits")
