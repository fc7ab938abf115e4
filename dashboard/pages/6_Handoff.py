"""Handoff: the tables that go into the clinical handoff document, ready to download."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from dashboard import charts, queries, tables, ui  # noqa: E402

st.set_page_config(page_title="Handoff", layout="wide")
st.title("Clinical handoff tables")
path, version = ui.store_or_stop()
run = ui.run_or_stop(path, version)
st.caption("Every table carries case counts and intervals only: no patient identifiers, no notes.")
metrics = queries.run_table(path, version, run.run_id, "metrics")
calib = queries.run_table(path, version, run.run_id, "calibrators")
policies = queries.run_table(path, version, run.run_id, "policies", split="test", slice="overall")
tone = metrics[(metrics.split == "test") & (metrics.slice == "fitzpatrick_group") &
               metrics.metric.isin(["accuracy", "macro_f1", "ece", "defer_rate", "missed_urgent_rate"])]
sections = {
    "Held-out clinic, every model": tables.headline(metrics).reset_index(),
    "Skin-tone groups on the held-out clinic": tone.assign(shown=tables.with_interval(tone)).pivot_table(
        index=["model", "slice_value"], columns="metric", values="shown", aggfunc="first").reset_index(),
    "Calibrators": calib[["model", "method"]],
    "Deferral policies on the held-out clinic": policies[["model", "policy", "threshold", "defer_rate",
                                                          "accepted_accuracy", "missed_urgent_rate"]].round(3),
}
for i, (title, table) in enumerate(sections.items()):
    st.subheader(title)
    st.dataframe(table, hide_index=True, width="stretch")
    c1, c2 = st.columns(2)
    stem = f"{run.run_id}_{title.lower().replace(' ', '_').replace(',', '')}"
    c1.download_button("CSV", table.to_csv(index=False), f"{stem}.csv", "text/csv", key=f"handoff.csv{i}")
    c2.download_button("Markdown", table.to_markdown(index=False), f"{stem}.md", "text/markdown",
                       key=f"handoff.md{i}")

st.subheader("The handoff document")
st.caption("Five pages for clinicians, every number read from the store: "
           f"`python -m trainer report --run {run.run_id} --out DIR` writes the same files.")
if st.button("Build handoff.pdf and handoff.md", key="handoff.build"):
    import tempfile
    from pathlib import Path as _Path

    from trainer.commands.report import write_report

    with st.spinner("Writing the document..."):
        out = _Path(tempfile.mkdtemp(prefix="handoff-"))
        try:
            result = write_report(path, run.run_id, out)
            st.session_state["handoff.files"] = {name: (out / name).read_bytes()
                                                 for name in ("handoff.pdf", "handoff.md")}
            st.success(f"{result['pages']} pages, {result['slices']} slice tables.")
        except (ValueError, OSError, queries.StoreError) as exc:
            st.error(str(exc))
for name, data in st.session_state.get("handoff.files", {}).items():
    st.download_button(f"Download {name}", data, name, "application/pdf" if name.endswith("pdf") else "text/markdown",
                       key=f"handoff.dl.{name}")

st.subheader("Figures")
model = ui.choose("Model for the figures", ui.MODELS, "model", default="late_fusion", where=st)
bins = queries.run_table(path, version, run.run_id, "reliability_bins", model=model, split="test",
                         slice="fitzpatrick_group", kind="calibrated")
curves = queries.run_table(path, version, run.run_id, "risk_coverage", model=model, split="test",
                           slice="fitzpatrick_group")
left, right = st.columns(2)
left.altair_chart(charts.reliability(bins, f"{model}: reliability by skin-tone group (held-out clinic)",
                                     colour="slice_value"), width="stretch")
right.altair_chart(charts.risk_coverage(curves, None, f"{model}: risk-coverage by skin-tone group"), width="stretch")
st.caption("Each chart's menu (top right) saves it as SVG or PNG.")
