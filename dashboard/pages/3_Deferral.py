"""Deferral: pick the threshold on the deferral score with clinicians and see, as it moves,
what it does to every skin-tone group and clinic, in plain numbers per 100 referrals; compare
each stored policy's promise with what it achieved; save a threshold as a named policy."""
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
thresholds, per_group = tables.policy_thresholds(policies), tables.group_thresholds(policies)
saved = tables.saved_policies(policies)
KEEP = "(keep the slider)"

key = "deferral.threshold"
if key not in st.session_state:
    st.session_state[key] = round(float(st.query_params.get("threshold", thresholds.get("review_budget", 0.5))), 3)


def use_policy():
    name = st.session_state["deferral.policy"]
    st.session_state["deferral.exact"] = None
    if name in thresholds:  # a fitted threshold can lie beyond the slider (inf: defer none); it is applied as is
        st.session_state[key] = min(max(round(thresholds[name], 3), 0.0), 1.0)
        st.session_state["deferral.exact"] = thresholds[name]
    st.session_state["deferral.groups"] = per_group.get(name, {})  # a group policy: one threshold per group


def moved():
    """A slider move leaves the stored policy: its name and its thresholds no longer apply."""
    st.session_state["deferral.policy"] = KEEP
    st.session_state["deferral.groups"] = {}
    st.session_state["deferral.exact"] = None


st.selectbox("Start from a stored policy (fitted on calib; 'saved' ones were saved here)",
             [KEEP] + sorted(thresholds), key="deferral.policy", on_change=use_policy,
             format_func=lambda p: f"{p} (saved)" if p in saved else p)
threshold = st.slider("Defer to a clinician when the deferral score is at least", 0.0, 1.0, step=0.005, key=key,
                      format="%.3f", on_change=moved)
st.query_params["threshold"] = f"{threshold:.3f}"
groups = st.session_state.get("deferral.groups", {})
exact = st.session_state.get("deferral.exact")
if exact is not None and exact != threshold:
    threshold = exact
if groups or exact is not None and not 0 <= exact <= 1:
    st.info(f"Policy {ui.plain(st.session_state['deferral.policy'])} defers "
            + ("each skin-tone group at its own threshold: " + ", ".join(f"{g} {t:.3f}" for g, t in
                                                                       sorted(groups.items()))
               + f" (others {threshold:.3f})" if groups else f"at {threshold:.3f}, beyond the slider")
            + ". Moving the slider returns to one threshold for all.")

view = points.at(threshold, groups)
overall, by_family = tables.operating_point(view)
c = st.columns(5)
c[0].metric("Deferral rate", pct(overall.defer_rate))
c[1].metric("Coverage", pct(overall.coverage))
c[2].metric("Accuracy when not deferred", pct(overall.accepted_accuracy))
c[3].metric("Missed urgent", pct(overall.missed_urgent_rate),
            help="urgent cases the model calls non-urgent and does not defer, of all urgent cases")
c[4].metric("Clinician reviews", f"{overall.deferred:,}", help=f"cases deferred to a clinician, of {overall.n:,}")

st.subheader("In plain numbers")
hundred = tables.per_hundred(view[view.slice.isin(["overall", "fitzpatrick_group"])])
st.markdown(tables.plain_words(hundred.iloc[0]))
st.dataframe(hundred.style.format("{:.0f}", subset=list(hundred.columns[1:]), na_rep="n/a"), hide_index=True,
             width="stretch")
left, right = st.columns(2)
per_day = left.number_input("Referrals a day", min_value=0, value=100, step=10, key="deferral.per_day")
minutes = right.number_input("Minutes a clinician spends on a review", min_value=0.0, value=5.0, step=1.0,
                             key="deferral.minutes")
hours = tables.clinician_hours(float(overall.defer_rate), int(per_day), float(minutes))
st.markdown(f"At {per_day:,} referrals a day this is **{hours:.1f} clinician hours a day**.")

for family, title in (("fitzpatrick_group", "By skin-tone group"), ("clinic", "By clinic")):
    st.markdown(f"**{title}**")  # full width: every column shows whole
    shown = tables.readable(by_family[family])
    st.dataframe(shown.style.format(tables.READABLE_PERCENT, na_rep="n/a"), hide_index=True, width="stretch")

st.subheader(f"The stored policies on {split}: promise against result")
achieved = queries.run_table(path, version, run.run_id, "policies", model=model, split=split, slice="overall")
st.dataframe(tables.policy_promises(achieved).style.format(tables.READABLE_PERCENT, na_rep="n/a"), hide_index=True,
             width="stretch")

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
    if st.form_submit_button("Save policy"):
        if not name.strip():
            st.error("Give the policy a name first.")
        else:
            base = thresholds.get(queries.default_policy(run), 1.0)
            by_split = {sp: queries.operating_points(path, version, run.run_id, model, sp, urgent) for sp in ui.SPLITS}
            rows = policy_rows(by_split, threshold, base, {"threshold": threshold, "saved_from": "dashboard"})
            try:
                queries.save_policy(path, run.run_id, model, name.strip(), rows)
                st.success(f"Saved policy {ui.plain(repr(name.strip()))} at {threshold:.3f} for {model}.")
            except (ValueError, queries.StoreError) as exc:
                st.error(str(exc))
if saved:
    with st.form("deferral.delete"):
        gone = st.selectbox("Delete a saved policy", saved, key="deferral.delete_name")
        if st.form_submit_button("Delete"):
            try:
                queries.delete_policy(path, run.run_id, model, gone)
                st.success(f"Deleted {ui.plain(repr(gone))}.")
            except (ValueError, queries.StoreError) as exc:
                st.error(str(exc))
