"""Models: held-out macro F1 and per-category accuracy with intervals, paired comparisons,
confusion matrices."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from dashboard import charts, queries, tables, ui  # noqa: E402

page = ui.header("Models", model=False)
run, split = page.run, page.split
metrics = queries.run_table(page.path, page.version, run.run_id, "metrics", split=split)

f1 = tables.overall(metrics, "macro_f1")
st.altair_chart(charts.interval_bars(f1, "group", f"Macro F1 on {split}, 95% patient-bootstrap interval", "macro F1"),
                width="stretch")
chosen = tables.chosen_model(queries.run_table(page.path, page.version, run.run_id, "metrics", split="val"))
st.metric(f"Macro F1 of {chosen}, the run's choice", tables.value_of(f1, chosen),
          help="The model is chosen by the highest macro F1 on val (training clinics only); never by the figures on "
               "test, the held-out clinic, which would flatter it.")
st.markdown("**Accuracy per category** (recall of each true category)")
st.dataframe(tables.by_category(metrics), width="stretch")

st.subheader("Fusion against the baselines")
comp = queries.run_table(page.path, page.version, run.run_id, "comparisons", split=split)
st.dataframe(tables.comparisons(comp), hide_index=True, width="stretch")
st.caption("Paired bootstrap: both models scored on the same resampled patients; an interval above 0 means the "
           "fusion model is better.")

st.subheader("Confusion matrix")
model = ui.model_picker(where=st, variants=queries.variants(page.path, page.version, run.run_id))
preds = queries.predictions(page.path, page.version, run.run_id)
st.altair_chart(charts.confusion(tables.confusion(preds, model, split, list(run["classes"])),
                                 f"{model} on {split}: rows true, columns predicted"), width="content")
