"""Handoff: the tables that go into the clinical handoff document, ready to download."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from dashboard import charts, queries, tables, ui  # noqa: E402

page = ui.header("Clinical handoff tables", model=False, split=False,
                 caption="Every table carries case counts and intervals only: no patient identifiers, no notes.")
path, version, run = page.path, page.version, page.run
metrics = queries.run_table(path, version, run.run_id, "metrics")
calib = queries.run_table(path, version, run.run_id, "calibrators")
policies = queries.run_table(path, version, run.run_id, "policies", split="test", slice="overall")
for i, (title, table) in enumerate(tables.handoff_sections(metrics, calib, policies).items()):
    st.subheader(title)
    st.dataframe(table, hide_index=True, width="stretch")
    ui.download_buttons(table, f"{run.run_id}_{title.lower().replace(' ', '_').replace(',', '')}", f"handoff.{i}")

st.subheader("The handoff document")
st.caption("For clinicians and the clinical safety officer: the bottom line per 100 referrals, when the model is "
           "reliable, where deferral fires and why, the known biases by skin tone, and the safety case (five A4 "
           "pages on a default run, four to six on other data; the page count shows once it is built). Every number "
           f"is read from the store: `python -m trainer report --run {run.run_id} --out DIR` writes the same files.")
if st.button("Build handoff.pdf and handoff.md", key="handoff.build"):
    with st.spinner("Writing the document..."):
        try:
            result, st.session_state["handoff.files"] = queries.build_handoff(path, run.run_id)
            st.success(f"{result['pages']} pages, {result['slices']} slice tables.")
        except (ValueError, OSError, queries.StoreError) as exc:
            st.error(str(exc))
for name, data in st.session_state.get("handoff.files", {}).items():
    st.download_button(f"Download {name}", data, name, "application/pdf" if name.endswith("pdf") else "text/markdown",
                       key=f"handoff.dl.{name}")

st.subheader("Figures")
model = ui.model_picker("Model for the figures", where=st)
bins = queries.run_table(path, version, run.run_id, "reliability_bins", model=model, split="test",
                         slice="fitzpatrick_group", kind="calibrated")
curves = queries.run_table(path, version, run.run_id, "risk_coverage", model=model, split="test",
                           slice="fitzpatrick_group")
left, right = st.columns(2)
left.altair_chart(charts.reliability(bins, f"{model}: reliability by skin-tone group (held-out clinic)",
                                     colour="slice_value"), width="stretch")
right.altair_chart(charts.risk_coverage(curves, None, f"{model}: risk-coverage by skin-tone group"), width="stretch")
st.caption("Each chart's menu (top right) saves it as SVG or PNG.")
