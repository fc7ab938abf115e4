"""Slices: every audit metric by skin tone, clinic, category, their intersection and any
extra column, with 95% intervals, gaps to the best-served group, and downloads."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from dashboard import charts, queries, tables, ui  # noqa: E402

st.set_page_config(page_title="Slices", layout="wide")
st.title("Slices")
path, version = ui.store_or_stop()
run = ui.run_or_stop(path, version)
model = ui.choose("Model", ui.MODELS, "model", default="late_fusion")
split = ui.choose("Split", ["test", "val", "calib"], "split")
metrics = queries.run_table(path, version, run.run_id, "metrics", model=model, split=split)
families = [f for f in ["fitzpatrick_group", "fitzpatrick", "clinic", "category", "fitzpatrick_group x clinic"]
            if f in set(metrics["slice"])] + sorted(set(metrics["slice"]) - {
                "overall", "fitzpatrick_group", "fitzpatrick", "clinic", "category", "fitzpatrick_group x clinic"})
family = ui.choose("Slice by", families, "slice")
names = sorted(metrics[metrics.slice == family]["metric"].unique())
metric = ui.choose("Metric", names, "metric", default="accuracy" if "accuracy" in names else names[0])

rows = metrics[(metrics.slice == family) & (metrics.metric == metric)]
table = tables.slice_table(rows)
flagged = table[table["flagged"]]
if len(flagged):
    st.error(f"{len(flagged)} group(s) differ from the best-served group "
             f"({ui.plain(table['gap_reference'].dropna().iloc[0])}) with an interval that excludes zero: "
             f"{', '.join(map(ui.plain, flagged['group']))}.")
else:
    st.success("No group's gap to the best-served group has an interval that excludes zero.")
small = table[table["too_small"]]
if len(small):
    st.warning(f"Too small to judge (n < 30), shown but never flagged: {', '.join(map(ui.plain, small['group']))}.")
st.altair_chart(charts.interval_bars(table.rename(columns={"group": "slice_value"}), "slice_value",
                                     f"{metric} by {family} ({model}, {split})", metric), width="stretch")
st.dataframe(table, hide_index=True, width="stretch")
name = f"{run.run_id}_{model}_{split}_{family.replace(' ', '')}_{metric}"
c1, c2 = st.columns(2)
c1.download_button("Download CSV", table.to_csv(index=False), f"{name}.csv", "text/csv")
c2.download_button("Download Markdown", table.to_markdown(index=False, floatfmt=".3f"), f"{name}.md", "text/markdown")
st.caption("Intervals: 1,000 bootstrap resamples of patients. Exports carry no patient identifiers or notes.")
