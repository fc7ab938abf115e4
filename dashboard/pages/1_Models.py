"""Models: held-out macro F1 and per-category accuracy with intervals, paired comparisons,
confusion matrices."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from dashboard import charts, queries, tables, ui  # noqa: E402
from trainer.evaluation.metrics import confusion_matrix  # noqa: E402

st.set_page_config(page_title="Models", layout="wide")
st.title("Models")
path, version = ui.store_or_stop()
run = ui.run_or_stop(path, version)
split = ui.choose("Split", ["test", "val", "calib"], "split")
metrics = queries.run_table(path, version, run.run_id, "metrics", split=split)

f1 = metrics[(metrics.slice == "overall") & (metrics.metric == "macro_f1")].rename(columns={"model": "group"})
st.altair_chart(charts.interval_bars(f1, "group", f"Macro F1 on {split}, 95% patient-bootstrap interval", "macro F1"),
                width="stretch")
st.metric("Best macro F1", f"{f1['value'].max():.3f}", help="highest point estimate among the models")
cat = metrics[metrics.metric == "category_accuracy"]
st.markdown("**Accuracy per category** (recall of each true category)")
st.dataframe(cat.assign(shown=tables.with_interval(cat)).pivot(index="model", columns="slice_value", values="shown"),
             width="stretch")

st.subheader("Fusion against the baselines")
comp = queries.run_table(path, version, run.run_id, "comparisons", split=split)
st.dataframe(comp.assign(difference=tables.with_interval(comp))[["model", "baseline", "metric", "difference", "n"]],
             hide_index=True, width="stretch")
st.caption("Paired bootstrap: both models scored on the same resampled patients; an interval above 0 means the "
           "fusion model is better.")

st.subheader("Confusion matrix")
model = ui.choose("Model", ui.MODELS, "model", default="late_fusion", where=st)
preds = queries.predictions(path, version, run.run_id)
p = preds[(preds.model == model) & (preds.split == split)]
classes = list(run["classes"])
cm = confusion_matrix(p["y_true"].map(classes.index), p["y_pred"].map(classes.index), len(classes))
st.altair_chart(charts.confusion(pd.DataFrame([{"true": classes[i], "predicted": classes[j], "n": int(cm[i, j])}
                                               for i in range(len(classes)) for j in range(len(classes))]),
                                 f"{model} on {split}: rows true, columns predicted"), width="stretch")
