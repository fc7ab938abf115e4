"""Home: pick a dataset and see what is in the store."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `streamlit run` does not add the repo root

import streamlit as st  # noqa: E402

from dashboard import charts, deferral_tables as dt, queries, tables, ui, words  # noqa: E402

path, version = ui.page_start("Skin triage: multimodal model audit")
datasets = ui.read_or_stop(queries.datasets, path, version)
if datasets.empty:
    st.info(f"The store `{path}` holds no dataset yet. Ingest one with `python -m data_store ingest`.")
    st.stop()

dataset = ui.choose("Dataset", datasets["dataset"].tolist(), "dataset", where=st)
info = tables.row(datasets, "dataset", dataset)
if info["simulated"]:
    st.warning("This dataset is **simulated** (DermSynth). Its results test the pipeline; "
               "they are not clinical evidence.")

summary = queries.dataset_summary(path, version, dataset)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Cases", f"{int(info['n_cases']):,}")
c2.metric("Rejected rows", f"{int(info['n_rejected']):,}")
c3.metric("Clinics", len(summary["clinic"]))
c4.metric("Held-out clinic", ui.plain(info["heldout_clinic"]) if info["heldout_clinic"] else "not declared")
labelled = bool(info.get("labelled", True))
st.caption((f"Classes, in probability order: {', '.join(map(ui.plain, info['classes']))}. " if labelled else
            "Unlabelled (ingested with `--unlabelled`): cases to score with `python -m trainer predict`; no run "
            "trains on them. ")
           + f"Ingested {info['ingested_at']:%Y-%m-%d %H:%M} from {ui.plain(info['manifest_path'])}.")

fitz = tables.fitzpatrick_counts(summary["fitzpatrick"])
left, middle, right = st.columns(3)
left.altair_chart(charts.count_bars(summary["clinic"], "clinic", "Cases by clinic", sort="stored"),
                  width="stretch")
middle.altair_chart(charts.count_bars(fitz, "fitzpatrick", "Cases by Fitzpatrick skin type", sort="stored"),
                    width="stretch")
if labelled:
    right.altair_chart(charts.count_bars(summary["label"], "label", "Cases by category"), width="stretch")
else:
    right.info("No labels: the cases' categories are unknown until clinicians label them.")

st.subheader("Rejected rows by reason")
if summary["rejected"].empty:
    st.write("No row was rejected.")
else:
    st.dataframe(summary["rejected"], hide_index=True, width="stretch")
    st.caption("Each row's detail, in the store:")
    st.code(f"SELECT * FROM rejected_rows WHERE dataset = '{dataset.replace(chr(39), chr(39) * 2)}'", language="sql")

st.subheader("Runs")
runs = queries.runs(path, version)
unfinished = queries.unfinished_runs(path, version)
if len(unfinished):
    st.caption("Not complete, so not shown on any page: " + tables.status_counts(unfinished)
               + " (running: still training; interrupted: the process ended before finishing; failed: see its error).")
    with st.expander("Unfinished runs"):
        st.dataframe(unfinished, hide_index=True, width="stretch")
if runs.empty:
    st.info("No complete run yet. Train one with `./run.sh fit` or `python -m trainer fit --dataset NAME`.")
    st.stop()
run_id = ui.choose("Run (every dataset, newest first)", runs["run_id"].tolist(), "run", where=st)
run = tables.row(runs, "run_id", run_id)
st.caption(f"Dataset {ui.plain(run['dataset'])}, held-out clinic {ui.plain(run['heldout_clinic'])}, finished "
           f"{run['finished_at']:%Y-%m-%d %H:%M}. Every page below reads this run (the `run` query parameter).")
metrics = queries.run_table(path, version, run_id, "metrics", slice="overall")
st.markdown("**Held-out clinic (test split)**: value (95% patient-bootstrap interval); deferral at the "
            "run's default policy.")
st.table(words.columns(tables.headline(metrics)))  # a static table wraps: every column shows

chosen = tables.chosen_model(metrics[metrics["split"] == "val"])
miss = tables.overall(metrics[metrics["split"] == "test"], "missed_urgent_rate")
st.markdown(f"**The run's choice: {ui.plain(chosen)}**, the best macro F1 on the validation clinic (val), never on "
            "the held-out clinic. At the held-out clinic it misses "
            f"{tables.value_of(miss, chosen, 'missed_urgent_rate')} of urgent patients (called non-urgent and not "
            "reviewed, at the default policy).")
policy = queries.default_policy(run)
stored = queries.run_table(path, version, run_id, "policies", model=chosen, policy=policy, split="calib",
                           slice="overall")
if len(stored):
    urgent = queries.urgent_classes(path, version, run["dataset"])
    points = queries.operating_points(path, version, run_id, chosen, "test", urgent)
    view = points.at(float(stored["threshold"].iloc[0]), dt.group_thresholds(stored).get(policy, {}))
    st.markdown(f"**In plain numbers**, {ui.plain(chosen)} at its default policy ({ui.plain(policy)}) on the "
                "held-out clinic: " + dt.plain_words(dt.per_hundred(view).iloc[0]))
ui.glossary("macro F1", "calibration error (ECE)", "reviewed", "right when kept", "urgent missed", "95% interval",
            "splits")
