"""Cases: browse the cases behind the numbers at the Deferral page's operating point, with
combinable filters and the reason each case's deferral score is what it is; one case's
photo, note, probabilities, reason and attributions (stored, or computed on demand, for any
category)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from dashboard import case_tables as ct, charts, deferral_tables as dt, queries, ui  # noqa: E402
from data_store.images import load_rgb  # noqa: E402
from trainer.explain.figures import attribution_figure  # noqa: E402

page = ui.header("Cases")
path, version, run, model, split = page.path, page.version, page.run, page.model, page.split
policies = queries.model_policies(path, version, run.run_id, model)
ui.point_from_link()
policy, threshold, groups = dt.resolve(ui.carried("point"), dt.policy_thresholds(policies),
                                       dt.group_thresholds(policies), queries.default_policy(run))
urgent = queries.urgent_classes(path, version, run["dataset"])
reasons = queries.case_reasons(path, version, run.run_id, model, split)
cases = ct.case_list(queries.predictions(path, version, run.run_id), model, split, threshold, groups, urgent, reasons)
st.caption(f"Reviewed: deferral score at or above {threshold:.3f}"
           + (f" ({ui.plain(policy)}" + (", one threshold per skin-tone group" if groups else "") + ")" if policy
              else " (set on the Deferral page)") + ". Change it on the Deferral page; it carries here.")

show = st.multiselect("Show only cases that are (every condition at once)", list(ct.CASE_FILTERS), key="cases.show")
options = ct.case_filter_options(cases)
c = st.columns(3)
group = c[0].selectbox("Skin-tone group", options["skin_tone_group"], key="cases.group")
clinic = c[1].selectbox("Clinic", options["clinic"], key="cases.clinic")
reason = c[2].selectbox("Why the score", options["reason"], key="cases.reason")
shown = ct.filter_cases(cases, show, skin_tone_group=group, clinic=clinic, reason=reason)
st.markdown(f"**{len(shown):,} of {len(cases):,} cases** (highest deferral score first). Click a row to open it.")
# The table's key names what it lists, so a selection never outlives the list it was made in.
listed = "|".join(map(str, (run.run_id, model, split, threshold, sorted(groups.items()), show, group, clinic, reason)))
picked = ui.table(ct.shown_cases(shown), {"deferral score": "p3"}, height=260, on_select="rerun",
                  selection_mode="single-row", key=f"cases.table.{hash(listed)}")
if shown.empty:
    st.info("No case matches these filters.")
    st.stop()
rows = [r for r in (picked.selection.rows if picked is not None else []) if r < len(shown)]
if rows:
    st.query_params["case"] = shown["case_id"].iloc[rows[0]]
case_id = st.query_params.get("case")
linked = case_id in set(shown["case_id"])
case_id = case_id if linked else shown["case_id"].iloc[0]
st.query_params["case"] = case_id
row = shown.set_index("case_id").loc[case_id]
case = queries.case(path, version, run["dataset"], case_id)

st.subheader(f"Case {ui.plain(case_id)}" + (" (the row picked)" if rows else " (from the link; click a row for another)"
                                             if linked else " (the first row; click another)"))
status = "reviewed by a clinician" if row["deferred"] else "decided by the model alone"
st.markdown(f"True **{ui.plain(row['y_true'])}**, predicted **{ui.plain(row['y_pred'])}**; deferral score "
            f"**{row['defer_score']:.3f}**, so {status}"
            + (" - **an urgent patient missed and not reviewed**" if row["missed_urgent"] else "") + ".")
st.markdown(f"**Why the score: {ui.plain(row['reason'])}**: {ui.plain(row['why'])}." if row["why"] else
            "No reason shown: " + ("on calib each case's score comes from a scorer fitted without it (out of fold), "
                                   "so the run's scorer does not explain it; val and test have reasons."
                                   if split == "calib" else "this model's score is rescaled by an adaptation "
                                   "(see the New clinic page)."))
left, right = st.columns([1, 2])
try:
    left.image(load_rgb(case["image_path"], 256), caption=f"{ui.plain(case_id)} (photo)")
except OSError as exc:
    left.warning(f"The photo cannot be read: {exc}")
right.markdown("**Referring note** (shown as text)")
right.text(case["note"] or "(no note)")
right.altair_chart(charts.probabilities(ct.probabilities(run["classes"], row["probs"])), width="stretch")

st.subheader("What drove the prediction")
classes = list(run["classes"])
target = st.selectbox("Explain the evidence for (another category answers \"why not ...?\")", classes,
                      index=classes.index(row["y_pred"]), key=f"cases.target.{case_id}")
attr = queries.attributions(path, version, run.run_id, model, case_id)
attr = attr[attr["target_class"] == target] if len(attr) else attr
asked = st.session_state.get("cases.explained", {}).get((run.run_id, model, case_id, target))
attr = asked if attr.empty and asked is not None else attr
if attr.empty:
    st.caption(f"Not explained for {ui.plain(target)} yet: computing it takes a few seconds"
               + (" and stores the result." if target == row["y_pred"] else " (kept for this session only)."))
    if st.button("Explain this case", key="cases.explain"):
        with st.spinner("Integrated Gradients and Occlusion..."):
            try:
                attr = queries.explain_now(path, run.run_id, model, case_id, target)
                st.session_state.setdefault("cases.explained", {})[(run.run_id, model, case_id, target)] = attr
                st.rerun()
            except (ValueError, OSError, queries.StoreError) as exc:
                st.error(str(exc))
if not attr.empty:
    ig, occlusion = ct.attribution_rows(attr)
    fig = attribution_figure(lambda side: load_rgb(case["image_path"], side), ig, occlusion,
                             ct.attribution_title(ig))
    st.image(fig, caption=f"Yellow: evidence for {ui.plain(target)}; blue: against.")
ui.glossary("deferral score", "threshold", "reviewed", "urgent missed")
