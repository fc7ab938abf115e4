"""Deferral: pick the threshold on the deferral score with clinicians and see, as it moves,
what it does to every skin-tone group and clinic; save it as a named policy."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from dashboard import charts, queries, tables, ui  # noqa: E402
from trainer.report.numbers import pct  # noqa: E402
from trainer.uncertainty.operating_points import policy_rows  # noqa: E402

page = ui.header("Deferral")
path, version, run, model, split = page.path, page.version, page.run, page.model, page.split
urgent = queries.urgent_classes(path, version, run["dataset"])
points = queries.operating_points(path, version, run.run_id, model, split, urgent)
policies = queries.run_table(path, version, run.run_id, "policies", model=model, split="calib", slice="overall")
thresholds = tables.policy_thresholds(policies)

key = "deferral.threshold"
if key not in st.session_state:
    st.session_state[key] = float(st.query_params.get("threshold", thresholds.get("review_budget", 0.5)))


def use_policy():
    name = st.session_state["deferral.policy"]
    if name in thresholds:
        st.session_state[key] = round(thresholds[name], 3)


st.selectbox("Start from a stored policy (fitted on calib)", ["(keep the slider)"] + sorted(thresholds),
             key="deferral.policy", on_change=use_policy)
threshold = st.slider("Defer to a clinician when the deferral score is at least", 0.0, 1.0, step=0.005, key=key)
st.query_params["threshold"] = f"{threshold:.3f}"

overall, by_family = tables.operating_point(points.at(threshold))
c = st.columns(5)
c[0].metric("Deferral rate", pct(overall.defer_rate))
c[1].metric("Coverage", pct(overall.coverage))
c[2].metric("Accuracy when not deferred", pct(overall.accepted_accuracy))
c[3].metric("Missed urgent", pct(overall.missed_urgent_rate),
            help="urgent cases the model calls non-urgent and does not defer, of all urgent cases")
c[4].metric("Clinician reviews", f"{overall.deferred:,}", help=f"cases deferred to a clinician, of {overall.n:,}")

left, right = st.columns(2)
for col, family, title in ((left, "fitzpatrick_group", "By skin-tone group"), (right, "clinic", "By clinic")):
    col.markdown(f"**{title}**")
    col.dataframe(by_family[family].style.format(tables.PERCENT, na_rep="n/a"), hide_index=True, width="stretch")

curves = queries.run_table(path, version, run.run_id, "risk_coverage", model=model, split=split,
                           slice=("overall", "fitzpatrick_group"))
st.altair_chart(charts.risk_coverage(curves, float(overall.coverage),
                                     "Risk-coverage by skin-tone group (the line: this threshold)"), width="stretch")

st.subheader("Conformal sets by skin-tone group")
conf = queries.run_table(path, version, run.run_id, "conformal", model=model, split=split)
st.dataframe(tables.conformal_coverage(conf), width="stretch")
st.caption("Coverage of the true class at the target 1 - alpha; Mondrian sets have one threshold per group.")

with st.form("deferral.save"):
    name = st.text_input("Save this threshold as a policy named", key="deferral.name")
    if st.form_submit_button("Save policy") and name.strip():
        base = thresholds.get(queries.default_policy(run), 1.0)
        by_split = {sp: queries.operating_points(path, version, run.run_id, model, sp, urgent) for sp in ui.SPLITS}
        rows = policy_rows(by_split, threshold, base, {"threshold": threshold, "saved_from": "dashboard"})
        try:
            queries.save_policy(path, run.run_id, model, name.strip(), rows)
            st.success(f"Saved policy {ui.plain(repr(name.strip()))} at {threshold:.3f} for {model}.")
        except (ValueError, queries.StoreError) as exc:
            st.error(str(exc))
