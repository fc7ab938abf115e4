"""Deferral: pick the threshold on the deferral score with clinicians and see, as it moves,
what it does to every skin-tone group and clinic; save it as a named policy."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import json  # noqa: E402

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from dashboard import charts, queries, ui  # noqa: E402
from trainer.uncertainty.operating_points import from_predictions  # noqa: E402

st.set_page_config(page_title="Deferral", layout="wide")
st.title("Deferral")
path, version = ui.store_or_stop()
run = ui.run_or_stop(path, version)
model = ui.choose("Model", ui.MODELS, "model", default="late_fusion")
split = ui.choose("Split", ["test", "val", "calib"], "split")


@st.cache_resource(show_spinner=False)
def operating_points(path: str, version: float, run_id: str, model: str, split: str, urgent: tuple):
    preds = queries.predictions(path, version, run_id)
    return from_predictions(preds[(preds.model == model) & (preds.split == split)], urgent)


info = queries.datasets(path, version).set_index("dataset").loc[run["dataset"]]
urgent = tuple(info["urgent_classes"]) if info["urgent_classes"] is not None else ()
points = operating_points(path, version, run.run_id, model, split, urgent)
policies = queries.run_table(path, version, run.run_id, "policies", model=model, split="calib", slice="overall")
thresholds = {r.policy: float(r.threshold) for r in policies.itertuples() if pd.notna(r.threshold)}

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

view = points.at(threshold)
overall = view[view.slice == "overall"].iloc[0]
c = st.columns(5)
c[0].metric("Deferral rate", f"{overall.defer_rate:.1%}")
c[1].metric("Coverage", f"{overall.coverage:.1%}")
c[2].metric("Accuracy when not deferred", "n/a" if pd.isna(overall.accepted_accuracy)
            else f"{overall.accepted_accuracy:.1%}")
c[3].metric("Missed urgent", "n/a" if pd.isna(overall.missed_urgent_rate) else f"{overall.missed_urgent_rate:.1%}",
            help="urgent cases the model calls non-urgent and does not defer, of all urgent cases")
c[4].metric("Clinician reviews", f"{overall.deferred:,}", help=f"cases deferred to a clinician, of {overall.n:,}")

left, right = st.columns(2)
for col, family, title in ((left, "fitzpatrick_group", "By skin-tone group"), (right, "clinic", "By clinic")):
    col.markdown(f"**{title}**")
    rows = view[view.slice == family].drop(columns="slice").rename(columns={"slice_value": "group"})
    col.dataframe(rows.style.format({"defer_rate": "{:.1%}", "coverage": "{:.1%}", "accepted_accuracy": "{:.1%}",
                                     "missed_urgent_rate": "{:.1%}"}, na_rep="n/a"), hide_index=True, width="stretch")

curves = queries.run_table(path, version, run.run_id, "risk_coverage", model=model, split=split,
                           slice="fitzpatrick_group")
overall_curve = queries.run_table(path, version, run.run_id, "risk_coverage", model=model, split=split,
                                  slice="overall")
st.altair_chart(charts.risk_coverage(pd.concat([overall_curve, curves]), float(overall.coverage),
                                     "Risk-coverage by skin-tone group (the line: this threshold)"), width="stretch")

st.subheader("Conformal sets by skin-tone group")
conf = queries.run_table(path, version, run.run_id, "conformal", model=model, split=split)
st.dataframe(conf.pivot_table(index=["method", "mode"], columns="slice_value", values="coverage").round(3),
             width="stretch")
st.caption("Coverage of the true class at the target 1 - alpha; Mondrian sets have one threshold per group.")

with st.form("deferral.save"):
    name = st.text_input("Save this threshold as a policy named", key="deferral.name")
    if st.form_submit_button("Save policy") and name.strip():
        rows = []
        default = json.loads(run["config"]).get("default_policy", "review_budget")
        for sp in ("val", "calib", "test"):
            sp_points = operating_points(path, version, run.run_id, model, sp, urgent)
            v, base = sp_points.at(threshold), sp_points.at(thresholds.get(default, 1.0))
            keep = v.slice.isin(["overall", "fitzpatrick_group"])
            rows.append(v[keep].assign(split=sp, threshold=threshold,
                                       extra_defer_rate=(v.defer_rate - base.defer_rate)[keep],
                                       params=[{"threshold": threshold, "saved_from": "dashboard"}] * int(keep.sum())))
        try:
            queries.save_policy(path, run.run_id, model, name.strip(), pd.concat(rows, ignore_index=True))
            st.success(f"Saved policy {ui.plain(repr(name.strip()))} at {threshold:.3f} for {model}.")
        except (ValueError, queries.StoreError) as exc:
            st.error(str(exc))
