"""``python -m trainer adapt``: local recalibration of a quick run at its held-out clinic, the
learning curve fit stores, and their refusals."""
import shutil

import numpy as np
import pandas as pd
import pytest

from data_store.ingest import ingest
from trainer.commands.predict import predict

from data_store.store import TriageStore
from trainer.__main__ import main
from trainer.commands.adapt import AdaptError, adapt, adapt_curve
from trainer.commands.posthoc import posthoc


@pytest.fixture(scope="module")
def store_copy(quick_run, synth_store, tmp_path_factory):
    db = tmp_path_factory.mktemp("adapt") / "triage.duckdb"
    shutil.copy(synth_store, db)
    return db


def _stored(db, run_id):
    with TriageStore(db, read_only=True) as store:
        metrics = store.read_table("metrics", run_id, split="test", slice="overall")
        policies = store.read_table("policies", run_id, split="test", slice="overall")
        conformal = store.read_table("conformal", run_id, split="test", method="lac", mode="mondrian")
        return metrics, policies, conformal, store.read_curve(run_id), store.read_adaptations(run_id)


def test_fit_stores_the_curve_and_its_k0_point_is_the_run(quick_run, store_copy):
    run_id = quick_run["run_id"]
    metrics, policies, conformal, table, _ = _stored(store_copy, run_id)
    model = table["model"].iloc[0]
    assert set(table["clinic"]) == {"clinic_7"} and 0 in set(table["k"])
    zero = table[table["k"] == 0].set_index(["metric", "slice_value"])
    assert (zero["draws"] == 1).all()
    m = metrics[metrics["model"] == model].set_index("metric")["value"]
    assert zero.loc[("defer_ece", "all"), "value"] == pytest.approx(m["defer_ece"], abs=1e-12, nan_ok=True)
    assert zero.loc[("macro_f1", "all"), "value"] == pytest.approx(m["macro_f1"], abs=1e-12, nan_ok=True)
    p = policies[policies["model"] == model].set_index("policy")
    assert zero.loc[("accepted_accuracy", "all"), "value"] == pytest.approx(p.loc["target_accuracy",
                                                                                 "accepted_accuracy"], abs=1e-12, nan_ok=True)
    if "urgent_sensitivity" in p.index:
        assert zero.loc[("urgent_caught", "all"), "value"] == pytest.approx(
            1 - p.loc["urgent_sensitivity", "missed_urgent_rate"], abs=1e-12, nan_ok=True)
    for policy, row in p.iterrows():
        assert zero.loc[("defer_rate", policy), "value"] == pytest.approx(row["defer_rate"], abs=1e-12, nan_ok=True)
    c = conformal[conformal["model"] == model].set_index("slice_value")["coverage"]
    for group, coverage in c.items():
        assert zero.loc[("coverage", group), "value"] == pytest.approx(coverage, abs=1e-12, nan_ok=True)


def test_adapt_stores_a_variant_judged_without_its_own_cases(quick_run, store_copy, capsys):
    run_id = quick_run["run_id"]
    assert main(["adapt", "--db", str(store_copy), "--run", run_id, "--clinic", "clinic_7", "--labels", "10"]) == 0
    variant = capsys.readouterr().out.strip().splitlines()[-1]
    with TriageStore(store_copy, read_only=True) as store:
        record = store.read_adaptations(run_id).set_index("variant").loc[variant]
        preds = store.read_predictions(run_id, variant)
        test = store.read_splits(run_id).query("split == 'test'")["case_id"]
        metrics = store.read_table("metrics", run_id, model=variant, slice="overall", metric="macro_f1")
    local = set(record["local_case_ids"])
    assert len(local) == 10 and record["k"] == 10 and record["clinic"] == "clinic_7"
    assert not local & set(preds["case_id"]) and set(preds["case_id"]) | local == set(test)
    assert metrics["n"].iloc[0] == len(test) - 10 and (preds["split"] == "test").all()
    assert metrics["ci_low"].iloc[0] <= metrics["value"].iloc[0] <= metrics["ci_high"].iloc[0]


def test_adapt_refuses_what_it_cannot_do(quick_run, store_copy):
    run_id = quick_run["run_id"]
    with pytest.raises(AdaptError, match="training clinics"):
        adapt(store_copy, run_id, "clinic_1", 5, log=lambda m: None)
    with pytest.raises(AdaptError, match="no clinic"):
        adapt(store_copy, run_id, "clinic_99", 5, log=lambda m: None)
    with pytest.raises(AdaptError, match="--labels must be between"):
        adapt(store_copy, run_id, "clinic_7", 10_000, log=lambda m: None)
    with pytest.raises(AdaptError, match="no model"):
        adapt_curve(store_copy, run_id, "clinic_7", model="resnet", log=lambda m: None)


def test_a_new_posthoc_drops_the_variants_and_remakes_the_curve(quick_run, store_copy, tmp_path):
    db = tmp_path / "triage.duckdb"
    shutil.copy(store_copy, db)
    run_id = quick_run["run_id"]
    adapt(db, run_id, "clinic_7", 8, log=lambda m: None)
    with TriageStore(db, read_only=True) as store:
        made = store.read_curve(run_id)["created_at"].max()
    posthoc(db, run_id, {"default_policy": "target_accuracy"}, log=lambda m: None)
    with TriageStore(db, read_only=True) as store:
        assert store.read_adaptations(run_id).empty
        assert set(store.read_predictions(run_id)["model"]) == set(quick_run["cfg"].models)
        assert not np.any(store.read_table("metrics", run_id)["model"].str.contains("@"))
        curve, shift = store.read_curve(run_id), store.read_shift(run_id)
        policies = store.read_table("policies", run_id, split="test", slice="overall", policy="target_accuracy")
    assert curve["created_at"].min() > made and len(shift)
    zero = curve[(curve["k"] == 0) & (curve["slice_value"] == "target_accuracy")].iloc[0]
    assert zero["value"] == pytest.approx(policies.set_index("model").loc[zero["model"], "defer_rate"])


def test_a_clinic_of_another_dataset_is_adapted_after_predict(quick_run, store_copy, synth_dir, tmp_path):
    """A labelled dataset ingested later: predict scores it, then adapt draws from its clinic;
    the figures are stored under split "new" (its cases are not the run's own)."""
    frame = pd.read_csv(synth_dir / "manifest.csv")
    frame[frame["clinic"] == "clinic_3"].head(40).to_csv(tmp_path / "later.csv", index=False)
    shutil.copy(synth_dir / "dataset.json", tmp_path / "dataset.json")  # the classes in the run's order
    run_id = quick_run["run_id"]
    with TriageStore(store_copy) as store:
        ingest(store, "later", tmp_path / "later.csv", image_root=synth_dir)
    with pytest.raises(AdaptError, match="predict"):
        adapt(store_copy, run_id, "clinic_3", 10, dataset="later", log=lambda m: None)
    predict(store_copy, run_id, "later", log=lambda m: None)
    variant, metrics = adapt(store_copy, run_id, "clinic_3", 10, dataset="later", log=lambda m: None)
    assert variant.endswith("@later:clinic_3-k10")
    with TriageStore(store_copy, read_only=True) as store:
        n = len(store.read_cases("later"))  # what ingest accepted of the 40 rows
    assert set(metrics["split"]) == {"new"} and metrics.query("slice == 'overall'")["n"].iloc[0] == n - 10
    with TriageStore(store_copy, read_only=True) as store:
        assert store.read_predictions(run_id, variant).empty
        assert store.read_adaptations(run_id).set_index("variant").loc[variant, "dataset"] == "later"
