"""Cases: browse the cases behind the numbers; one case's photo, note, probabilities,
deferral score and attributions (stored, or computed on demand)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import json  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from dashboard import charts, queries, ui  # noqa: E402
from data_store.images import load_rgb  # noqa: E402
from trainer.attributions import decode_heatmap  # noqa: E402
from trainer.explain.figures import case_figure  # noqa: E402
from trainer.uncertainty.operating_points import fitzpatrick_groups  # noqa: E402

st.set_page_config(page_title="Cases", layout="wide")
st.title("Cases")
path, version = ui.store_or_stop()
run = ui.run_or_stop(path, version)
model = ui.choose("Model", ui.MODELS, "model", default="late_fusion")
split = ui.choose("Split", ["test", "val", "calib"], "split")
preds = queries.predictions(path, version, run.run_id)
p = preds[(preds.model == model) & (preds.split == split)].copy()
p["skin_tone_group"] = fitzpatrick_groups(p["fitzpatrick"])
policies = queries.run_table(path, version, run.run_id, "policies", model=model, split="calib", slice="overall")
default = json.loads(run["config"]).get("default_policy", "review_budget")
threshold = float(st.query_params.get("threshold", policies.set_index("policy").loc[default, "threshold"]))
p["deferred"] = p["defer_score"] >= threshold
pair = preds[preds.split == split].pivot(index="case_id", columns="model", values="y_pred")
p["disagree"] = (p["case_id"].map(pair.get("text_only", pd.Series(dtype=str)))
                 != p["case_id"].map(pair.get("image_only", pd.Series(dtype=str))))

c = st.columns(4)
show = c[0].selectbox("Show", ["all", "deferred", "wrong", "text and image models disagree"], key="cases.show")
group = c[1].selectbox("Skin-tone group", ["all"] + sorted(p["skin_tone_group"].unique()), key="cases.group")
clinic = c[2].selectbox("Clinic", ["all"] + sorted(p["clinic"].unique()), key="cases.clinic")
source = "the threshold in the URL" if "threshold" in st.query_params else default
c[3].caption(f"Deferred: defer score >= {threshold:.3f} ({source}).")
mask = pd.Series(True, index=p.index)
mask &= {"all": True, "deferred": p["deferred"], "wrong": p["y_pred"] != p["y_true"],
         "text and image models disagree": p["disagree"]}[show]
if group != "all":
    mask &= p["skin_tone_group"] == group
if clinic != "all":
    mask &= p["clinic"] == clinic
shown = p[mask].sort_values("defer_score", ascending=False)
st.dataframe(shown[["case_id", "y_true", "y_pred", "defer_score", "deferred", "skin_tone_group", "clinic"]],
             hide_index=True, width="stretch", height=240)
if shown.empty:
    st.info("No case matches these filters.")
    st.stop()
ids = shown["case_id"].tolist()
case_id = ui.choose("Case", ids, "case", where=st)
row = shown.set_index("case_id").loc[case_id]
case = queries.case(path, version, run["dataset"], case_id)

left, right = st.columns([1, 2])
try:
    left.image(load_rgb(case["image_path"], 256), caption=f"{ui.plain(case_id)} (photo)")
except OSError as exc:
    left.warning(f"The photo cannot be read: {exc}")
right.markdown("**Referring note** (shown as text)")
right.text(case["note"] or "(no note)")
right.altair_chart(charts.probabilities(pd.DataFrame({"class": list(run["classes"]),
                                                      "probability": np.asarray(row["probs"])})), width="stretch")
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
    ig = attr[attr.method == "integrated_gradients"].iloc[0]
    occ = attr[attr.method == "occlusion"]
    heat = {"Integrated Gradients": decode_heatmap(ig["image_heatmap"], ig["heatmap_side"]), "Occlusion": None}
    if len(occ):
        heat["Occlusion"] = decode_heatmap(occ["image_heatmap"].iloc[0], occ["heatmap_side"].iloc[0])
    side = int(ig["heatmap_side"]) * 2 if pd.notna(ig["heatmap_side"]) else 64
    share = json.loads(ig["modality_share"])
    fig = case_figure(load_rgb(case["image_path"], side), heat, list(ig["tokens"]), np.asarray(ig["token_scores"]),
                      f"explaining {ig['target_class']}: image {share['image']:.0%}, note {share['text']:.0%} "
                      f"(IG completeness gap {ig['convergence_delta']:.3f})")
    st.image(fig, caption="Red: evidence for the predicted class; blue: against.")
