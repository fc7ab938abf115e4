"""Models: held-out macro F1 and per-category accuracy with intervals, paired comparisons,
confusion matrices before and after deferral."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402

from dashboard import charts, deferral_tables as dt, queries, tables, ui, words  # noqa: E402
from data_store.fitzpatrick import fitzpatrick_group  # noqa: E402
from trainer.posthoc.replay import decide  # noqa: E402

page = ui.header("Models", model=False)
run, split = page.run, page.split
metrics = queries.run_table(page.path, page.version, run.run_id, "metrics", split=split)

f1 = tables.overall(metrics, "macro_f1")
st.altair_chart(charts.interval_bars(f1, "group", f"Macro F1 on {split}, 95% patient-bootstrap interval", "macro F1"),
                width="stretch")
chosen = tables.chosen_model(queries.run_table(page.path, page.version, run.run_id, "metrics", split="val"))
c = st.columns(2)
c[0].metric(f"Macro F1 of {chosen}, the run's choice", tables.value_of(f1, chosen, "macro_f1"),
            help="The model is chosen by the highest macro F1 on val (training clinics only); never by the figures "
                 "on test, the held-out clinic, which would flatter it.")
c[1].metric(f"Urgent patients {chosen} misses on {split}",
            tables.value_of(tables.overall(metrics, "missed_urgent_rate"), chosen, "missed_urgent_rate"),
            help=words.GLOSSARY["urgent missed"] + " At the run's default policy.")
st.markdown("**Accuracy per category** (share of each true category predicted right)")
st.dataframe(tables.by_category(metrics), width="stretch")
st.markdown("**Urgent patients missed, reviewed and right when kept, per model** (at the run's default policy)")
head = tables.headline(metrics, split)
st.dataframe(words.columns(head[[c for c in ("missed_urgent_rate", "defer_rate", "accepted_accuracy") if c in head]]),
             width="stretch")

st.subheader("Fusion against the baselines")
comp = queries.run_table(page.path, page.version, run.run_id, "comparisons", split=split)
st.dataframe(words.columns(tables.comparisons(comp)), hide_index=True, width="stretch")
st.caption("Paired bootstrap: both models scored on the same resampled patients; an interval above 0 means the "
           "fusion model is better.")

st.subheader("Confusion matrix")
model = ui.model_picker(where=st, variants=queries.variants(page.path, page.version, run.run_id))
preds = queries.predictions(page.path, page.version, run.run_id)
policies = queries.model_policies(page.path, page.version, run.run_id, model)
policy, threshold, groups = dt.resolve(ui.carried("point"), dt.policy_thresholds(policies),
                                       dt.group_thresholds(policies), queries.default_policy(run))
classes = list(run["classes"])


def kept(p):
    return ~decide((threshold, groups), p["defer_score"].to_numpy(), np.asarray(fitzpatrick_group(p["fitzpatrick"])))


left, right = st.columns(2)
left.altair_chart(charts.confusion(tables.confusion(preds, model, split, classes),
                                   f"{model} on {split}, every case"), width="content")
right.altair_chart(charts.confusion(tables.confusion(preds, model, split, classes, kept),
                                    f"the cases it decides alone (below {threshold:.3f})"), width="content")
st.caption("Rows: true category; columns: predicted. Right: after deferral at the Deferral page's operating point"
           + (f" ({ui.plain(policy)})" if policy else "") + ".")
ui.glossary("macro F1", "calibration error (ECE)", "urgent missed", "95% interval", "splits")
