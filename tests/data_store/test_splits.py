import numpy as np
import pandas as pd
import pytest

from data_store.splits import choose_val_clinic, make_splits
from data_store.synth.generate import SynthConfig, sample_cases


@pytest.fixture(scope="module")
def cases():
    return sample_cases(SynthConfig(n=3000, seed=2))


def test_heldout_clinic_is_test_and_only_test(cases):
    split = make_splits(cases, "clinic_7", seed=0)
    by_case = cases.set_index("case_id")
    assert (split[by_case["clinic"] == "clinic_7"] == "test").all()
    assert (by_case.loc[split[split != "test"].index, "clinic"] != "clinic_7").all()
    assert set(split) == {"train", "val", "calib", "test"}


def test_no_patient_in_two_splits(cases):
    split = make_splits(cases, "clinic_7", seed=0)
    per_patient = cases.assign(split=split.to_numpy()).groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()


def test_stratified_by_class_and_sized_as_documented(cases):
    split = make_splits(cases, "clinic_3", seed=0)
    df = cases.assign(split=split.to_numpy())
    rest = df[df["split"] != "test"]
    shares = rest["split"].value_counts(normalize=True)
    np.testing.assert_allclose(shares[["train", "val", "calib"]], [0.70, 0.15, 0.15], atol=0.03)
    overall = rest["label"].value_counts(normalize=True)
    for name in ("train", "val", "calib"):
        part = rest.loc[rest["split"] == name, "label"].value_counts(normalize=True)
        np.testing.assert_allclose(part[overall.index], overall, atol=0.03)


def test_deterministic_for_a_seed(cases):
    a = make_splits(cases, "clinic_7", seed=5)
    pd.testing.assert_series_equal(a, make_splits(cases, "clinic_7", seed=5))
    assert not a.equals(make_splits(cases, "clinic_7", seed=6))


def test_unknown_clinic_is_refused(cases):
    with pytest.raises(ValueError, match="held-out clinic 'nowhere' is not in the dataset"):
        make_splits(cases, "nowhere")


def test_clinic_validation_keeps_one_training_clinic_whole(cases):
    split = make_splits(cases, "clinic_7", seed=0, val_clinic="clinic_2")
    df = cases.assign(split=split.to_numpy())
    assert set(df.loc[df["split"] == "val", "clinic"]) == {"clinic_2"}
    assert (df.loc[df["clinic"] == "clinic_2", "split"] == "val").all()
    assert (df.groupby("patient_id")["split"].nunique() == 1).all()
    rest = df[~df["split"].isin(["val", "test"])]
    np.testing.assert_allclose(rest["split"].value_counts(normalize=True)[["train", "calib"]], [0.85, 0.15],
                               atol=0.03)


def test_validation_clinic_by_seed_and_refusals(cases):
    training = [f"clinic_{i}" for i in range(1, 7)]
    assert [choose_val_clinic(cases, "clinic_7", seed) for seed in range(7)] == training + training[:1]
    assert choose_val_clinic(cases, "clinic_7", 3, requested="clinic_5") == "clinic_5"
    with pytest.raises(ValueError, match="'clinic_7' is not a training clinic"):
        choose_val_clinic(cases, "clinic_7", 0, requested="clinic_7")
    two = cases[cases["clinic"].isin(["clinic_1", "clinic_7"])]
    with pytest.raises(ValueError, match="needs at least two clinics besides the held-out one"):
        choose_val_clinic(two, "clinic_7", 0)
