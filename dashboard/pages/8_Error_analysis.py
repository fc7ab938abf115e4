"""Error analysis: where the model serves some patients worse, found for you: the largest
flagged gaps over every slice family and key metric, and skin type x category for one
measure, the training clinics and the held-out clinic side by side."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from dashboard import charts, deferral_tables as dt, error_tables as et, queries, ui, words  # noqa: E402

page = ui.header("Error analysis", "The worst slices, found over every family and key metric; never fitted on: "
                 "the held-out clinic is shown, not used.", split=False)
path, version, run, model = page.path, page.version, page.run, page.model
metrics = queries.run_table(path, version, run.run_id, "metrics", model=model)

st.subheader("The largest flagged gaps")
splits = st.multiselect("Splits", et.SPLIT_ORDER, default=list(et.SPLIT_ORDER), key="errors.splits",
                        format_func=lambda s: words.SPLIT_NAMES[s])
gaps = et.ranked_gaps(metrics[metrics["split"].isin(splits)])
st.markdown(f"**{len(gaps):,} flagged gaps** for {ui.plain(model)}, largest first: a group's value minus the "
            "best-served group's, with a 95% interval that excludes 0 (groups of at least 30 cases).")
ui.table(gaps.head(30), {c: "pts" if c.startswith("gap") else "pct" for c in et.GAP_NUMBERS} | {"cases": "int"})
st.caption("Rates and calibration errors are both shown as percentages (an ECE of 0.041 reads 4.1%), gaps in "
           "percentage points.")
ui.download_buttons(gaps, f"{run.run_id}_{model}_flagged_gaps", "errors.download",
                    page.about(model=model, split=",".join(splits), metric="key metrics"))

st.subheader("Skin type x category")
measure = st.radio("Measure", et.MEASURES, horizontal=True, key="errors.measure")
policies = queries.model_policies(path, version, run.run_id, model)
policy, threshold, groups = dt.resolve(ui.carried("point"), dt.policy_thresholds(policies),
                                       dt.group_thresholds(policies), queries.default_policy(run))
urgent = queries.urgent_classes(path, version, run["dataset"])
cells = et.tone_by_category(queries.predictions(path, version, run.run_id), model, threshold, groups, urgent, measure)
if cells.empty:
    st.info("No case of this model on the training or held-out clinics.")
else:
    st.altair_chart(charts.heatmap(cells, measure, f"{measure} of {model}, by Fitzpatrick type and true category",
                                   order=[words.SPLIT_NAMES[s] for s in et.SPLIT_ORDER]),
                    width="content")
    st.caption(f"Operating point: deferral score at or above {threshold:.3f}"
               + (f" ({ui.plain(policy)})" if policy else "") + ", from the Deferral page. Cell: value (cases); "
               "faded: under 30 cases, too few to judge.")
ui.glossary("gap to best group", "95% interval", "reviewed", "urgent missed", "splits")
