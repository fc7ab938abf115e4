"""The patient bootstrap audit against scikit-learn on each slice and on the literal
resamples, and the skin-tone gap it must find (or not find)."""
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm
from torchmetrics.functional.classification import multiclass_calibration_error

from data_store.fitzpatrick import fitzpatrick_group
from trainer.evaluation.audit import CaseOutcomes, audit_rows, bootstrap_slices, patient_weights

URGENT = np.array([True, True, False, False])


def _outcomes(seed: int, n: int = 600, worse_on_dark: float = 0.0):
    rng = np.random.default_rng(seed)
    fitz = rng.integers(1, 7, n).astype(float)
    fitz[rng.random(n) < 0.05] = np.nan
    logits = rng.normal(size=(n, 4)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=q) for q in p])
    dark = np.nan_to_num(fitz) >= 5
    hurt = dark & (rng.random(n) < worse_on_dark)  # the planted gap: V-VI lose their right answers
    p[hurt] = np.roll(p[hurt], 1, axis=1)
    patients = rng.integers(0, int(n * 0.8), n)  # some patients have several cases
    deferred = rng.random(n) < 0.2
    sets = rng.random((n, 4)) < 0.4
    o = CaseOutcomes(y, p, np.sqrt(p) / np.sqrt(p).sum(1, keepdims=True), deferred, URGENT,
                     sets[np.arange(n), y], sets.sum(1))
    return o, patients, fitz


def _sklearn_metrics(o: CaseOutcomes, idx: np.ndarray) -> dict[str, float]:
    y, p, d = o.y_true[idx], o.probs[idx], o.deferred[idx]
    pred = p.argmax(1)
    urgent_true = URGENT[y]
    return {
        "accuracy": skm.accuracy_score(y, pred), "macro_f1": skm.f1_score(y, pred, average="macro"),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "nll": skm.log_loss(y, p, labels=range(4)),
        "brier": skm.brier_score_loss(y, p, labels=range(4), scale_by_half=False),
        "ece": float(multiclass_calibration_error(torch.tensor(p), torch.tensor(y), num_classes=4, n_bins=15)),
        "defer_rate": d.mean(), "accepted_accuracy": skm.accuracy_score(y[~d], pred[~d]),
        "missed_urgent_rate": np.mean((~URGENT[pred] & ~d)[urgent_true]),
        "conformal_coverage": o.covered[idx].mean(), "conformal_set_size": o.set_size[idx].mean(),
    }


def test_point_estimates_match_sklearn_on_every_group():
    o, patients, fitz = _outcomes(0)
    weights = patient_weights(patients, 1000, seed=0)
    groups = fitzpatrick_group(fitz)
    reps = bootstrap_slices(o, weights, {"overall": np.full(len(groups), "all"), "fitzpatrick_group": groups})
    for value in ("I-II", "III-IV", "V-VI", "unknown"):
        idx = np.flatnonzero(groups == value)
        for metric, expected in _sklearn_metrics(o, idx).items():
            got = reps[("fitzpatrick_group", value)][metric][0]
            assert got == pytest.approx(expected, abs=1e-6), (value, metric)  # torchmetrics computes in float32
    assert reps[("overall", "all")]["accuracy"].shape == (1001,)


def test_each_resample_is_sklearn_on_the_resampled_patients():
    o, patients, _ = _outcomes(1, n=300)
    weights = patient_weights(patients, 1000, seed=3)
    reps = bootstrap_slices(o, weights, {"overall": np.full(300, "all")})[("overall", "all")]
    for r in (1, 17, 999):
        idx = np.repeat(np.arange(300), weights[r].astype(int))  # the resample, written out
        for metric, expected in _sklearn_metrics(o, idx).items():
            assert reps[metric][r] == pytest.approx(expected, abs=1e-6), (r, metric)


def test_a_patient_is_resampled_with_all_of_their_cases():
    patients = np.array(["p1", "p1", "p2", "p3", "p3", "p3"])
    w = patient_weights(patients, 1000, seed=0)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 5]).all()
    np.testing.assert_array_equal(w[0], 1)
    np.testing.assert_array_equal(w[1:].reshape(1000, -1)[:, [0, 2, 3]].sum(1), 3)  # 3 patients drawn each time


def _tone_gap(worse_on_dark: float) -> dict:
    o, patients, fitz = _outcomes(5, n=1500, worse_on_dark=worse_on_dark)
    groups = fitzpatrick_group(fitz)
    rows = audit_rows(bootstrap_slices(o, patient_weights(patients, 1000, 0), {"fitzpatrick_group": groups}),
                      min_n=30)
    return rows[(rows.metric == "accuracy") & (rows.slice_value == "V-VI")].iloc[0].to_dict()


def test_a_planted_skin_tone_gap_is_flagged_and_its_absence_is_not():
    planted = _tone_gap(0.3)
    assert planted["flagged"] and planted["gap_high"] < 0 and planted["gap_reference"] != "V-VI"
    assert not _tone_gap(0.0)["flagged"]


def test_small_slices_are_marked_not_hidden():
    o, patients, fitz = _outcomes(2, n=400)
    groups = fitzpatrick_group(fitz)
    rows = audit_rows(bootstrap_slices(o, patient_weights(patients, 1000, 0), {"fitzpatrick_group": groups}), 30)
    unknown = rows[rows.slice_value == "unknown"]
    assert len(unknown) and unknown["too_small"].all() and not unknown["flagged"].any()
    assert not rows[rows.slice_value == "I-II"]["too_small"].any()


def test_a_calibration_error_is_bias_corrected_and_inside_its_interval():
    """A small group's plug-in ECE sits below every resample's (the bias this corrects); the stored
    value is 2 * plug-in - mean(resamples), clipped at 0, inside its recentred interval."""
    o, patients, fitz = _outcomes(4, n=300)
    groups = fitzpatrick_group(fitz)
    weights = patient_weights(patients, 1000, 0)
    reps = bootstrap_slices(o, weights, {"fitzpatrick_group": groups})
    rows = audit_rows(reps, min_n=30).set_index(["slice_value", "metric"])
    for (value, metric), row in rows.iterrows():
        assert row["ci_low"] - 1e-12 <= row["value"] <= row["ci_high"] + 1e-12, (value, metric)
        if pd.notna(row["gap_low"]):
            assert row["gap_low"] - 1e-12 <= row["gap"] <= row["gap_high"] + 1e-12, (value, metric)
    for value in ("I-II", "III-IV", "V-VI", "unknown"):
        r = reps[("fitzpatrick_group", value)]["ece"]
        resamples = r[1:][np.isfinite(r[1:])]
        expected = max(0.0, 2 * r[0] - resamples.mean())
        assert rows.loc[(value, "ece"), "value"] == pytest.approx(expected)
        spread = np.percentile(resamples, [2.5, 97.5]) - resamples.mean()
        np.testing.assert_allclose(rows.loc[(value, "ece"), ["ci_low", "ci_high"]].to_numpy(float),
                                   np.maximum(2 * r[0] - resamples.mean() + spread, 0))
    r = reps[("fitzpatrick_group", "III-IV")]["ece"]  # calibrated by construction, so the error is bias
    assert r[0] < np.percentile(r[1:][np.isfinite(r[1:])], 2.5)  # a percentile interval would miss its value
    gaps = rows.xs("ece", level="metric")
    ref = gaps["gap_reference"].dropna().iloc[0]
    np.testing.assert_allclose(gaps["gap"], gaps["value"] - gaps.loc[ref, "value"])
