"""New clinic: is it different from the training clinics (no label needed), how many of its
cases must be labelled before the promises hold again, and what local recalibration did
per skin-tone group."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from dashboard import charts, clinic_tables, queries, ui  # noqa: E402

page = ui.header("New clinic", "Before a new clinic relies on the model: a label-free shift report, then how many "
                 "of its cases a team must label for local recalibration.", model=False, split=False)
run = page.run
data = queries.new_clinic(page.path, page.version, run.run_id)
shift, curve = data["shift"], data["curve"]
clinics = sorted(set(shift["clinic"]) | set(curve["clinic"])) if len(shift) or len(curve) else []
if not clinics:
    st.info(f"Run {ui.plain(run.run_id)} has no shift report or learning curve yet. `python -m trainer shift --run "
            f"{ui.plain(run.run_id)} --clinic C` and `python -m trainer adapt --run ... --clinic C --curve` make them "
            "(`fit` makes both for its held-out clinic).")
    st.stop()
clinic = ui.choose("Clinic", clinics, "clinic", default=run.get("heldout_clinic"))

st.header("1. Is this clinic different? (no label read)")
report = shift[shift["clinic"] == clinic]
if report.empty:
    st.info("No shift report of this clinic: `python -m trainer shift` makes one.")
else:
    verdict = report[report["metric"] == "verdict"]
    (st.warning if verdict["value"].iloc[0] else st.success)(ui.plain(verdict["detail"].iloc[0]))
    st.caption(f"Outputs of {ui.plain(report['model'].iloc[0])} (the run's choice on the training clinics), "
               "against the training clinics' calibration cases. 95% intervals.")
    st.dataframe(clinic_tables.shift_table(report), hide_index=True, width="stretch")

st.header("2. How many labelled local cases before the promises hold?")
c = curve[curve["clinic"] == clinic]
if c.empty:
    st.info("No learning curve of this clinic: `python -m trainer adapt --curve` makes one (every case needs a label).")
else:
    select = ui.choose("Cases drawn", sorted(set(c["select_method"])), "select", default="random")
    c = c[c["select_method"] == select]
    st.caption(f"{ui.plain(c['model'].iloc[0])}: k cases drawn by patient ({ui.plain(select)}), the calibration, "
               "deferral score, thresholds and prediction sets refitted on them, then judged on the clinic's other "
               f"cases; {int(c['draws'].max())} draws per k. k = 0: the model as trained, no local labels.")
    st.dataframe(clinic_tables.promise_table(c), hide_index=True, width="stretch")
    cols = st.columns(2)
    for i, (metric, label) in enumerate(clinic_tables.PROMISES.items()):
        rows = c[(c["metric"] == metric) & ((c["slice"] == "fitzpatrick_group") | (metric != "coverage"))]
        if len(rows):
            cols[i % 2].altair_chart(charts.learning_curve(rows, label), width="stretch")
    st.caption("Line: the mean over draws; band: 95% of draws; dashed: the promise. The urgent promise holds where "
               "its mean is within 0.02 of the floor and 9 of 10 draws within 0.05; with too few local urgent cases "
               "to bound the miss rate the recalibrated policy reviews every case.")

st.header("3. Before and after local recalibration, by skin tone")
adaptations = data["adaptations"]
adaptations = adaptations[adaptations["clinic"] == clinic] if len(adaptations) else adaptations
if adaptations.empty:
    st.info("No adapted variant of this clinic: `python -m trainer adapt --run ... --clinic ... --labels K` makes "
            "one; it then appears on every page as a model of this run.")
else:
    variant = ui.choose("Adapted variant", adaptations["variant"].tolist(), "variant")
    a = adaptations.set_index("variant").loc[variant]
    split = "test" if a["dataset"] == run["dataset"] else "new"  # a clinic of a dataset ingested later: "new"
    policies = queries.run_table(page.path, page.version, run.run_id, "policies", split=split, model=variant,
                                 slice=("overall", "fitzpatrick_group"))
    conformal = queries.run_table(page.path, page.version, run.run_id, "conformal", split=split, model=variant)
    st.caption(f"{int(a['k'])} labelled cases ({ui.plain(a['select_method'])}, seed {int(a['seed'])}); both "
               f"judged on the clinic's other cases: {ui.plain(a['model'])} before, {ui.plain(variant)} after. "
               "Rates per policy; coverage of the prediction sets (target 90%).")
    st.dataframe(clinic_tables.before_after(a["baseline"], policies, conformal), hide_index=True, width="stretch")

corrections = data["corrections"]
corrections = corrections[corrections["clinic"] == clinic] if len(corrections) else corrections
if len(corrections):
    st.header("Label-free corrections, judged against this clinic's labels")
    st.caption("Corrections made without any label of the clinic, shown for what they do; the product offers none "
               "as a way to deploy (labelled local cases, above, are). Before: the model as trained; helps: closer "
               "to the promise, or better.")
    st.dataframe(corrections[["correction", "metric", "slice_value", "before", "after", "target", "helps"]],
                 hide_index=True, width="stretch")
