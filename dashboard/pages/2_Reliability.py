"""Reliability: diagrams before and after calibration, by skin-tone group and by clinic,
with ECE and its interval; the deferral score's own reliability."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from dashboard import charts, queries, tables, ui  # noqa: E402

st.set_page_config(page_title="Reliability", layout="wide")
st.title("Reliability")
path, version = ui.store_or_stop()
run = ui.run_or_stop(path, version)
model = ui.choose("Model", ui.MODELS, "model", default="late_fusion")
split = ui.choose("Split", ["test", "val", "calib"], "split")
family = ui.choose("By", ["overall", "fitzpatrick_group", "clinic"], "by")

cal = queries.run_table(path, version, run.run_id, "calibrators").set_index("model")
if model in cal.index:
    st.caption(f"Calibrator of {model}: **{cal.loc[model, 'method']}**, chosen on the calib split by out-of-fold "
               "NLL among methods that do not worsen the out-of-fold ECE. The held-out clinic (test) is shown as "
               "it is: calibration can get worse under a shift of clinic.")
bins = queries.run_table(path, version, run.run_id, "reliability_bins", model=model, split=split, slice=family)
metrics = queries.run_table(path, version, run.run_id, "metrics", model=model, split=split, slice=family)
ece = metrics[metrics.metric.isin(["ece", "ece_uncalibrated", "defer_ece"])]
st.markdown("**Expected calibration error** (15 bins; value [95% interval] where bootstrapped)")
st.dataframe(ece.assign(shown=tables.with_interval(ece)).pivot(index="slice_value", columns="metric", values="shown"),
             width="stretch")
groups = sorted(bins["slice_value"].unique())
cols = st.columns(min(3, max(1, len(groups))))
for i, group in enumerate(groups):
    g = bins[(bins.slice_value == group) & bins.kind.isin(["calibrated", "uncalibrated"])]
    cols[i % len(cols)].altair_chart(charts.reliability(g, f"{group}: top-label confidence"), width="stretch")
st.subheader("The deferral score against the observed need for review")
d = bins[bins.kind == "defer"]
st.altair_chart(charts.reliability(d, "defer score reliability", colour="slice_value"), width="stretch")
