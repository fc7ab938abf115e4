"""Cases: browse the cases behind the numbers; one case's photo, note, probabilities,
deferral score and attributions (stored, or computed on demand)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from dashboard import charts, queries, tables, ui  # noqa: E402
from data_store.images import load_rgb  # noqa: E402
from trainer.explain.figures import attribution_figure  # noqa: E402

page = ui.header("Cases")
path, version, run, model, split = page.path, page.version, page.run, page.model, page.split
policies = queries.run_table(path, version, run.run_id, "policies", model=model, split="calib", slice="overall")
default = queries.default_policy(run)
threshold = float(st.query_params.get("threshold", tables.policy_thresholds(policies).get(default, 1.0)))
cases = tables.case_list(queries.predictions(path, version, run.run_id), model, split, threshold)

c = st.columns(4)
show = c[0].selectbox("Show", tables.CASE_FILTERS, key="cases.show")
options = tables.case_filter_options(cases)
group = c[1].selectbox("Skin-tone group", options["skin_tone_group"], key="cases.group")
clinic = c[2].selectbox("Clinic", options["clinic"], key="cases.clinic")
source = "the threshold in the URL" if "threshold" in st.query_params else default
c[3].caption(f"Deferred: defer score >= {threshold:.3f} ({source}).")
shown = tables.filter_cases(cases, show, group, clinic)
st.dataframe(shown[list(tables.CASE_COLUMNS)], hide_index=True, width="stretch", height=240)
if shown.empty:
    st.info("No case matches these filters.")
    st.stop()
case_id = ui.choose("Case", shown["case_id"].tolist(), "case", where=st)
row = tables.row(shown, "case_id", case_id)
case = queries.case(path, version, run["dataset"], case_id)

left, right = st.columns([1, 2])
try:
    left.image(load_rgb(case["image_path"], 256), caption=f"{ui.plain(case_id)} (photo)")
except OSError as exc:
    left.warning(f"The photo cannot be read: {exc}")
right.markdown("**Referring note** (shown as text)")
right.text(case["note"] or "(no note)")
right.altair_chart(charts.probabilities(tables.probabilities(run["classes"], row["probs"])), width="stretch")
right.write(f"True: **{ui.plain(row['y_true'])}** - predicted: **{ui.plain(row['y_pred'])}** - "
            f"deferral score **{row['defer_score']:.3f}** ({'deferred' if row['deferred'] else 'not deferred'})")

st.subheader("What drove the prediction")
attr = queries.attributions(path, version, run.run_id, model, case_id)
if attr.empty:
    st.caption("Not explained yet: computing it takes a few seconds and stores the result.")
    if st.button("Explain this case", key="cases.explain"):
        with st.spinner("Integrated Gradients and Occlusion..."):
            try:
                attr = queries.explain_now(path, run.run_id, model, case_id)
            except (ValueError, OSError, queries.StoreError) as exc:
                st.error(str(exc))
if not attr.empty:
    ig, occlusion = tables.attribution_rows(attr)
    fig = attribution_figure(lambda side: load_rgb(case["image_path"], side), ig, occlusion,
                             tables.attribution_title(ig))
    st.image(fig, caption="Yellow: evidence for the predicted class; blue: against.")
