"""``python -m trainer shift``: the label-free report of a clinic, stored in ``shift``."""
import shutil

import numpy as np
import pandas as pd
import pytest

from data_store.ingest import ingest
from data_store.store import TriageStore
from trainer.__main__ import main
from trainer.commands.predict import predict
from trainer.commands.shift import ShiftError, shift_report


@pytest.fixture(scope="module")
def store_copy(quick_run, synth_store, tmp_path_factory):
    db = tmp_path_factory.mktemp("shift") / "triage.duckdb"
    shutil.copy(synth_store, db)
    return db


def _check_report(rows: pd.DataFrame, n: int) -> None:
    auroc = rows[rows["metric"] == "domain_auroc"].set_index("slice_value")
    assert set(auroc.index) == {"photo", "note"} and auroc["value"].between(0, 1).all()
    assert (auroc["ci_low"] <= auroc["value"]).all() and (auroc["value"] <= auroc["ci_high"]).all()
    for method in ("class_share_bbse", "class_share_em"):
        shares = rows[rows["metric"] == method]
        assert len(shares) == 4 and shares["value"].sum() == pytest.approx(1.0)
        assert shares["reference"].sum() == pytest.approx(1.0)  # calib's class mix
    rates = rows[rows["metric"].isin(["defer_rate", "far_from_training", "blurred_photo", "empty_note"])]
    assert len(rates) == 4 and rates["value"].between(0, 1).all() and (rates["n"] == n).all()
    verdict = rows[rows["metric"] == "verdict"]["detail"].iloc[0]
    assert verdict.startswith(("Calibration is likely to hold", "Calibration is unlikely to hold"))


def test_shift_of_the_heldout_clinic_is_stored(quick_run, store_copy, capsys):
    run_id = quick_run["run_id"]
    with TriageStore(store_copy, read_only=True) as store:  # fit wrote it for its held-out clinic
        assert set(store.read_shift(run_id)["clinic"]) == {"clinic_7"}
    assert main(["shift", "--db", str(store_copy), "--run", run_id, "--clinic", "clinic_7"]) == 0
    assert "domain_auroc" in capsys.readouterr().out
    with TriageStore(store_copy, read_only=True) as store:
        rows = store.read_shift(run_id, "clinic_7")
    n_test = int((quick_run["splits"]["split"] == "test").sum())
    _check_report(rows, n_test)
    assert rows["dataset"].eq("dermsynth").all() and rows["model"].nunique() == 1
    # The default policy's deferral rate at the clinic is the one fit stored for test.
    with TriageStore(store_copy, read_only=True) as store:
        policy = store.read_table("policies", run_id, model=rows["model"].iloc[0], policy="review_budget",
                                  split="test", slice="overall")
    assert rows[rows["metric"] == "defer_rate"]["value"].iloc[0] == pytest.approx(policy["defer_rate"].iloc[0])
    # The clinic has labels, so the label-free corrections are judged against them; "before"
    # is the run's own figure at the clinic.
    with TriageStore(store_copy, read_only=True) as store:
        judged = store.read_corrections(run_id, "clinic_7")
    assert {"prior_shift", "weighted_conformal:features", "weighted_conformal:outputs"} <= set(judged["correction"])
    before = judged[(judged["correction"] == "weighted_thresholds:outputs:review_budget")
                    & (judged["metric"] == "defer_rate")]["before"]
    assert before.iloc[0] == pytest.approx(policy["defer_rate"].iloc[0])


def test_shift_of_an_unlabelled_clinic_needs_predict_first(quick_run, store_copy, synth_dir, tmp_path):
    frame = pd.read_csv(synth_dir / "manifest.csv")
    frame = frame[frame["clinic"] == "clinic_7"].drop(columns="label").head(50)
    frame.to_csv(tmp_path / "new.csv", index=False)
    with TriageStore(store_copy) as store:
        ingest(store, "later", tmp_path / "new.csv", image_root=synth_dir, unlabelled=True)
    run_id = quick_run["run_id"]
    with pytest.raises(ShiftError, match="predict"):
        shift_report(store_copy, run_id, "clinic_7", dataset="later", log=lambda m: None)
    predict(store_copy, run_id, "later", log=lambda m: None)
    rows = shift_report(store_copy, run_id, "clinic_7", dataset="later", log=lambda m: None)
    _check_report(rows, 50)
    with TriageStore(store_copy, read_only=True) as store:  # no label, nothing to judge the corrections with
        assert store.read_corrections(run_id, "clinic_7").query("dataset == 'later'").empty
    with pytest.raises(ShiftError, match="clinics: clinic_7"):
        shift_report(store_copy, run_id, "clinic_9", dataset="later", log=lambda m: None)
    assert np.isfinite(rows[rows["metric"] != "verdict"]["value"]).all()
