"""Handoff: the tables that go into the clinical handoff document, ready to download, and
the document itself for the model and policy picked."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from dashboard import charts, deferral_tables as dt, queries, tables, ui, words  # noqa: E402
from trainer.config import MODEL_NAMES  # noqa: E402

page = ui.header("Clinical handoff tables", model=False, split=False,
                 caption="Every table carries case counts and intervals only: no patient identifiers, no notes. "
                         "The document shows one example case (its photo, case id and the words of its note).")
path, version, run = page.path, page.version, page.run
metrics = queries.run_table(path, version, run.run_id, "metrics")
calib = queries.run_table(path, version, run.run_id, "calibrators")
policies = queries.run_table(path, version, run.run_id, "policies", split="test", slice="overall")
for i, (title, (shown, export)) in enumerate(tables.handoff_sections(metrics, calib, policies).items()):
    st.subheader(title)
    numeric = set(shown.select_dtypes("number").columns)
    rates = {words.name(c): "pct" for c in words.PERCENT if words.name(c) in numeric}
    ui.table(shown, rates | ({"threshold": "p3"} if "threshold" in numeric else {}))
    ui.download_buttons(export, f"{run.run_id}_{title.lower().replace(' ', '_').replace(',', '')}", f"handoff.{i}",
                        page.about(split="test"))

st.subheader("The handoff document")
chosen = tables.chosen_model(metrics[metrics["split"] == "val"])
trained = [m for m in MODEL_NAMES if m in set(metrics["model"])]
carried = ui.carried("model")
model = st.selectbox("Model", trained, index=trained.index(carried if carried in trained else chosen),
                     key="handoff.model", format_func=lambda m: f"{m} (the run's choice)" if m == chosen else m)
model_policies = queries.model_policies(path, version, run.run_id, model)
policy, _, _ = dt.resolve(ui.carried("point"), dt.policy_thresholds(model_policies),
                          dt.group_thresholds(model_policies), queries.default_policy(run))
if policy is None:
    st.warning("The Deferral page's operating point is a threshold set by hand, not a stored policy; the document "
               f"reports the run's default policy ({ui.plain(queries.default_policy(run))}). Save the threshold as "
               "a policy on the Deferral page to report it.")
policy = policy or queries.default_policy(run)
st.caption(f"For clinicians and the clinical safety officer: {ui.plain(model)} at policy {ui.plain(policy)} (picked on "
           "the Models and Deferral pages): the bottom line per 100 referrals, when the model is reliable, where "
           "deferral fires and why, the known biases by skin tone, and the safety case (five A4 pages on a default "
           "run, four to six on other data). Every number is read from the store: "
           f"`python -m trainer report --run {run.run_id} --model {model} --policy {policy} --out DIR` writes the "
           "same files.")
built = (run.run_id, model, policy)  # what the document on offer is about
if st.button("Build handoff.pdf and handoff.md", key="handoff.build"):
    with st.spinner("Writing the document..."):
        try:
            result, files = queries.build_handoff(path, run.run_id, model, policy)
            st.session_state["handoff.files"] = {"about": built, "files": files}
            st.success(f"{result['pages']} pages, {result['slices']} slice tables, {model} at {policy}.")
        except (ValueError, OSError, queries.StoreError) as exc:
            st.error(str(exc))
document = st.session_state.get("handoff.files", {})
for name, data in (document.get("files", {}) if document.get("about") == built else {}).items():
    st.download_button(f"Download {name}", data, name, "application/pdf" if name.endswith("pdf") else "text/markdown",
                       key=f"handoff.dl.{name}")

st.subheader("Figures")
bins = queries.run_table(path, version, run.run_id, "reliability_bins", model=model, split="test",
                         slice="fitzpatrick_group", kind="calibrated")
curves = queries.run_table(path, version, run.run_id, "risk_coverage", model=model, split="test",
                           slice="fitzpatrick_group")
left, right = st.columns(2)
left.altair_chart(charts.reliability(bins, f"{model}: reliability by skin-tone group (held-out clinic)",
                                     colour="slice_value"), width="stretch")
right.altair_chart(charts.risk_coverage(curves, None, f"{model}: risk-coverage by skin-tone group"), width="stretch")
st.caption("Each chart's menu (top right) saves it as SVG or PNG.")
ui.glossary("macro F1", "calibration error (ECE)", "reviewed", "right when kept", "urgent missed", "policy",
            "95% interval")
