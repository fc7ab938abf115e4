"""``python -m trainer predict``: new cases scored with a run's own encoders and stored rules."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from data_store.ingest import ingest
from data_store.store import TriageStore
from trainer.__main__ import main
from trainer.commands.predict import PredictError, predict
from trainer.config import MODEL_NAMES, run_config
from trainer.encoders.cache import CacheStats
from trainer.encoders.run_encoders import RunMismatch, run_features


@pytest.fixture(scope="module")
def own_scores(quick_run, synth_store, tmp_path_factory):
    """The quick run's own dataset scored again by predict, in a copy of the store."""
    db = tmp_path_factory.mktemp("predict") / "triage.duckdb"
    shutil.copy(synth_store, db)
    rows = predict(db, quick_run["run_id"], "dermsynth", log=lambda m: None)
    return db, rows


def test_predict_gives_the_scores_fit_stored_for_val_and_test(quick_run, own_scores):
    """val and test were scored by fit with the rules fitted on all of calib, as predict
    applies them: the same probabilities and deferral scores (calib rows are out of fold)."""
    _, rows = own_scores
    stored = quick_run["preds"]
    stored = stored[stored["split"].isin(["val", "test"])]
    got = rows.merge(stored, on=["model", "case_id"], suffixes=("", "_fit"))
    assert len(got) == len(stored) and set(got["model"]) == set(MODEL_NAMES)
    np.testing.assert_allclose(np.stack(got["probs"]), np.stack(got["probs_fit"]), atol=1e-6)
    np.testing.assert_allclose(got["defer_score"], got["defer_score_fit"], atol=1e-6)
    assert (got["y_pred"] == got["y_pred_fit"]).all()


def test_predict_decisions_and_sets_match_the_stored_policy_and_conformal_rows(quick_run, own_scores):
    db, rows = own_scores
    run_id = quick_run["run_id"]
    split = quick_run["splits"].set_index("case_id")["split"]
    cases = quick_run["cases"].set_index("case_id")
    test = rows[rows["case_id"].map(split) == "test"]
    with TriageStore(db, read_only=True) as store:
        policies = store.read_table("policies", run_id, split="test", slice="overall")
        conformal = store.read_table("conformal", run_id, split="test", method="lac", mode="mondrian")
    checked = 0
    for (model, policy), row in policies.set_index(["model", "policy"]).iterrows():
        decided = test[test["model"] == model]["decisions"].map(lambda d: json.loads(d)[policy])
        assert decided.mean() == pytest.approx(row["defer_rate"], abs=1e-9), (model, policy)
        checked += 1
    assert checked >= 5 * len(MODEL_NAMES)
    test = test.assign(covered=[cases.loc[c, "label"] in s for c, s in zip(test["case_id"], test["conformal_set"])])
    for r in conformal[conformal["slice_value"] == "V-VI"].itertuples():
        got = test[(test["model"] == r.model) & (test["case_id"].map(cases["fitzpatrick"]) >= 5)]["covered"]
        assert got.mean() == pytest.approx(r.coverage, abs=1e-9) and len(got) == r.n


def test_unlabelled_cases_are_scored_and_exported_with_case_ids_only(quick_run, own_scores, synth_dir, tmp_path,
                                                                       capsys):
    db, _ = own_scores
    frame = pd.read_csv(synth_dir / "manifest.csv")
    frame = frame[frame["clinic"] == "clinic_7"].drop(columns="label").head(40)
    frame.to_csv(tmp_path / "new.csv", index=False)
    with TriageStore(db) as store:
        ingest(store, "newclinic", tmp_path / "new.csv", image_root=synth_dir, unlabelled=True)
    out = tmp_path / "decisions.csv"
    assert main(["predict", "--db", str(db), "--run", quick_run["run_id"], "--dataset", "newclinic",
                 "--out", str(out)]) == 0
    assert "40 cases scored by 5 models" in capsys.readouterr().out
    with TriageStore(db, read_only=True) as store:
        scores = store.read_scores(quick_run["run_id"], "newclinic")
    assert len(scores) == 40 * len(MODEL_NAMES) and scores["defer_score"].between(0, 1).all()
    assert np.allclose(np.stack(scores["probs"]).sum(1), 1)
    exported = pd.read_csv(out)
    assert len(exported) == len(scores) and set(exported["case_id"]) == set(frame["case_id"])
    assert not {"patient_id", "note", "label"} & set(exported.columns)
    assert {"review_review_budget", "review_urgent_sensitivity", "defer_score"} <= set(exported.columns)
    # Again: the encoders' outputs come from the cache, and the scores are the same.
    again = predict(db, quick_run["run_id"], "newclinic", log=lambda m: None).sort_values(["model", "case_id"])
    np.testing.assert_allclose(np.stack(again["probs"]), np.stack(scores["probs"]), atol=1e-12)


def test_predict_refuses_other_classes_and_other_encoders(quick_run, own_scores, synth_dir, tmp_path):
    db, _ = own_scores
    frame = pd.read_csv(synth_dir / "manifest.csv").drop(columns="label").head(10)
    frame.to_csv(tmp_path / "other.csv", index=False)
    (tmp_path / "dataset.json").write_text(json.dumps({"classes": ["benign", "malignant"]}))
    with TriageStore(db) as store:
        ingest(store, "otherclasses", tmp_path / "other.csv", image_root=synth_dir, unlabelled=True)
    with pytest.raises(PredictError, match="declares the classes"):
        predict(db, quick_run["run_id"], "otherclasses", log=lambda m: None)
    # A run folder whose note encoder is not the one here is refused, not read wrongly.
    run = quick_run["run"]
    copy = tmp_path / "run"
    shutil.copytree(run["artifacts_dir"], copy)
    (copy / "encoders.json").write_text(json.dumps({"text_encoder": "0" * 16}))
    with TriageStore(db, read_only=True) as store:
        cases = store.read_cases("otherclasses")
        fingerprint = store.read_dataset("otherclasses")["fingerprint"]
    with pytest.raises(RunMismatch, match="note encoder"):
        run_features(cases, fingerprint, copy, run_config(run["config"]), 4, CacheStats(), log=lambda m: None)


def test_export_writes_parquet_like_csv_and_refuses_other_files(quick_run, own_scores, tmp_path):
    from trainer.commands.predict import export

    _, rows = own_scores
    classes = list(quick_run["run"]["classes"])
    export(rows, classes, tmp_path / "d.parquet")
    export(rows, classes, tmp_path / "d.csv")
    parquet, csv = pd.read_parquet(tmp_path / "d.parquet"), pd.read_csv(tmp_path / "d.csv")
    assert list(parquet.columns) == list(csv.columns) and len(parquet) == len(rows)
    np.testing.assert_allclose(parquet[[f"p_{c}" for c in classes]].sum(axis=1), 1)
    assert (parquet["case_id"].astype(str) == csv["case_id"].astype(str)).all()
    with pytest.raises(PredictError, match=".csv or .parquet"):
        export(rows, classes, tmp_path / "d.xlsx")
