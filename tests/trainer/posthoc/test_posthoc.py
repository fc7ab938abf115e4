"""The post-hoc tables of a stored run: every metric recomputed from ``predictions`` with
scikit-learn (torchmetrics and netcal for calibration errors), and nothing fitted on test."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from netcal.metrics import ECE
from sklearn import metrics as skm
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from data_store.store import TriageStore
from trainer.__main__ import main
from trainer.evaluation.audit import patient_weights
from trainer.posthoc import posthoc_tables
from trainer.posthoc.steps import SPLITS
from trainer.config import MODEL_NAMES

ISSUE_METRICS = {"accuracy", "macro_f1", "category_accuracy", "balanced_accuracy", "ece", "adaptive_ece",
                 "classwise_ece", "nll", "brier", "aurc", "augrc", "defer_rate", "accepted_accuracy",
                 "missed_urgent_rate", "conformal_coverage", "conformal_set_size"}
GROUPS = {1: "I-II", 2: "I-II", 3: "III-IV", 4: "III-IV", 5: "V-VI", 6: "V-VI"}


@pytest.fixture(scope="module")
def stored(quick_run, synth_store):
    run_id = quick_run["run_id"]
    with TriageStore(synth_store, read_only=True) as store:
        tables = {t: store.read_table(t, run_id) for t in ("metrics", "policies", "conformal", "calibrators",
                                                             "reliability_bins", "risk_coverage", "comparisons")}
        preds = store.read_predictions(run_id)
        info = store.read_dataset("dermsynth")
    cases = quick_run["cases"].set_index("case_id")
    preds["group"] = [GROUPS.get(int(f), "unknown") if pd.notna(f) else "unknown"
                      for f in cases.loc[preds["case_id"], "fitzpatrick"]]
    preds["patient_id"] = cases.loc[preds["case_id"], "patient_id"].to_numpy()
    return {**tables, "preds": preds, "classes": list(quick_run["run"]["classes"]),
            "urgent": list(info["urgent_classes"]), "cfg": quick_run["cfg"]}


def _value(m: pd.DataFrame, model, split, slice_, value, metric) -> float:
    row = m[(m.model == model) & (m.split == split) & (m.slice == slice_) & (m.slice_value == value) &
            (m.metric == metric)]
    assert len(row) == 1, (model, split, slice_, value, metric)
    return float(row["value"].iloc[0])


def _expected(stored, rows: pd.DataFrame, model: str, split: str, group: str) -> dict[str, float]:
    """Every metric of one slice from the stored predictions, by the reference libraries."""
    classes, urgent = stored["classes"], np.isin(stored["classes"], stored["urgent"])
    y = rows["y_true"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    p, pu, s = np.stack(rows["probs"]), np.stack(rows["probs_uncal"]), rows["defer_score"].to_numpy()
    pred = p.argmax(1)
    assert (np.asarray(classes)[pred] == rows["y_pred"].to_numpy()).all()
    pol = stored["policies"]
    threshold = pol[(pol.model == model) & (pol.policy == stored["cfg"].default_policy)]["threshold"].iloc[0]
    d = s >= threshold
    conf = stored["conformal"]
    qhat = conf[(conf.model == model) & (conf.method == "lac") & (conf["mode"] == "mondrian") &
                (conf.split == "test")].set_index("slice_value")["qhat"]
    sets = p >= 1 - rows["group"].map(lambda g: qhat.get(g, np.inf)).to_numpy()[:, None]
    correct = pred == y
    needs_review = ~correct | (~urgent[pred] & (p[:, urgent].sum(1) >= stored["cfg"].urgent_doubt))
    order = np.argsort(s, kind="stable")  # keep the lowest defer scores first
    kept_wrong = np.cumsum(~correct[order])
    k = np.arange(1, len(y) + 1)
    tm = torch.tensor
    present = [c for c in range(len(classes)) if 0 < (y == c).sum() < len(y)]
    return {
        "accuracy": skm.accuracy_score(y, pred), "macro_f1": skm.f1_score(y, pred, average="macro"),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "nll": skm.log_loss(y, p, labels=range(len(classes))),
        "brier": skm.brier_score_loss(y, p, labels=range(len(classes)), scale_by_half=False),
        "ece": _bias_corrected_ece(stored, rows, p, y, split),
        "ece_uncalibrated": _bias_corrected_ece(stored, rows, pu, y, split),
        "adaptive_ece": ECE(bins=15, equal_intervals=False).measure(p, y),
        "classwise_ece": np.mean([float(binary_calibration_error(tm(p[:, c]), tm((y == c).astype(int)), n_bins=15))
                                  for c in range(len(classes))]),
        "auroc": np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in present]),
        "aurc": np.mean(kept_wrong / k), "augrc": np.mean(kept_wrong / len(y)),
        "defer_rate": d.mean(), "accepted_accuracy": skm.accuracy_score(y[~d], pred[~d]) if (~d).any() else np.nan,
        "missed_urgent_rate": np.mean((~urgent[pred] & ~d)[urgent[y]]) if urgent[y].any() else np.nan,
        "conformal_coverage": sets[np.arange(len(y)), y].mean(), "conformal_set_size": sets.sum(1).mean(),
        "defer_ece": float(binary_calibration_error(tm(s), tm(needs_review.astype(int)), n_bins=15)),
        "defer_auroc": skm.roc_auc_score(~correct, s),
    }


def _bias_corrected_ece(stored, rows: pd.DataFrame, p: np.ndarray, y: np.ndarray, split: str) -> float:
    """torchmetrics' ECE of the rows and of each patient resample of the split, written out as
    repeated cases, then bias-corrected: max(0, 2 * ECE - mean of the resamples' ECE)."""
    cfg, preds = stored["cfg"], stored["preds"]
    split_patients = preds[(preds.model == rows["model"].iloc[0]) & (preds.split == split)]["patient_id"]
    weights = patient_weights(split_patients.to_numpy(), cfg.n_boot, cfg.seed + SPLITS.index(split))
    per_patient = dict(zip(split_patients, weights.T))  # a patient's weight, whichever of their cases
    w = np.stack([per_patient[pid] for pid in rows["patient_id"]], axis=1).astype(int)  # (1 + B, rows)

    def ece(idx):
        return float(multiclass_calibration_error(torch.tensor(p[idx]), torch.tensor(y[idx]),
                                                  num_classes=len(stored["classes"]), n_bins=15))
    resamples = [ece(np.repeat(np.arange(len(y)), r)) for r in w[1:] if r.sum() > 0]
    return max(0.0, 2 * ece(np.arange(len(y))) - float(np.mean(resamples)))


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_metric_is_recomputed_from_predictions(stored, model):
    m, preds = stored["metrics"], stored["preds"]
    assert ISSUE_METRICS <= set(m["metric"])
    for slice_, value in [("overall", "all"), ("fitzpatrick_group", "III-IV")]:
        rows = preds[(preds.model == model) & (preds.split == "test")]
        if slice_ != "overall":
            rows = rows[rows.group == value]
        for metric, expected in _expected(stored, rows, model, "test", value).items():
            assert _value(m, model, "test", slice_, value, metric) == pytest.approx(expected, abs=1e-6, nan_ok=True), \
                (slice_, metric)
    rows = preds[(preds.model == model) & (preds.split == "test")]
    y = rows["y_true"].to_numpy()
    for c in stored["classes"]:
        if (y == c).any():
            expected = skm.recall_score(y == c, rows["y_pred"].to_numpy() == c)
            assert _value(m, model, "test", "category", c, "category_accuracy") == pytest.approx(expected)


def test_every_interval_of_the_run_holds_its_value(stored):
    """Every stored interval of the whole ``metrics`` table, and every gap's, contains its estimate."""
    m = stored["metrics"]
    assert m["ci_low"].notna().sum() > 1000  # the tiny store has no group large enough for a gap
    for low, value, high in (("ci_low", "value", "ci_high"), ("gap_low", "gap", "gap_high")):
        rows = m[m[low].notna()]
        outside = rows[(rows[value] < rows[low] - 1e-12) | (rows[value] > rows[high] + 1e-12)]
        assert outside.empty, outside[["model", "split", "slice", "slice_value", "metric", low, value, high]]


def test_intervals_and_gaps_are_stored_and_small_slices_marked(stored):
    m = stored["metrics"]
    boot = m[m.metric.isin(["accuracy", "macro_f1", "ece", "defer_rate"]) & (m.n >= 30)]
    assert boot["ci_low"].notna().all() and boot["ci_high"].notna().all()
    assert (boot["ci_low"] <= boot["ci_high"]).all()
    assert (m["too_small"] == (m["n"] < 30)).all()
    for key, family in m[m.ci_low.notna()].groupby(["model", "split", "slice", "metric"]):
        judged = family[~family.too_small]
        if key[2] == "overall" or key[3].startswith("conformal") or len(judged) < 2:
            assert family["gap_reference"].isna().all(), key
            continue
        ref = family.set_index("slice_value").loc[family["gap_reference"].iloc[0], "value"]
        np.testing.assert_allclose(family["gap"], family["value"] - ref, err_msg=str(key))
    assert not m[m.too_small]["flagged"].any()
    assert {"overall", "fitzpatrick", "fitzpatrick_group", "clinic", "category",
            "fitzpatrick_group x clinic"} <= set(m["slice"])


def test_calibration_tables_and_curves(stored):
    cal = stored["calibrators"]
    assert set(cal["model"]) == set(MODEL_NAMES)
    for _, row in cal.iterrows():
        scores = json.loads(row["candidates"])
        eligible = [k for k in scores if k != "none" and scores[k]["ece"] <= scores["none"]["ece"]]
        assert row["method"] == (min(eligible, key=lambda k: scores[k]["nll"]) if eligible else "none")
    bins = stored["reliability_bins"]
    assert set(bins["kind"]) == {"calibrated", "uncalibrated", "defer"}
    assert (bins.groupby(["model", "split", "kind", "slice", "slice_value"])["bin"].count() == 15).all()
    rc = stored["risk_coverage"]
    assert rc.groupby(["model", "split", "slice", "slice_value"])["coverage"].count().eq(100).all()
    comp = stored["comparisons"]
    assert len(comp) == 3 * 2 * 3  # three fusion models x two baselines x three splits


def test_nothing_is_fitted_on_test(stored, quick_run):
    preds = stored["preds"].copy()
    preds["probs_uncal"] = list(np.stack(preds["probs_uncal"]))
    test = preds["split"] == "test"
    shuffled = preds.copy()
    rng = np.random.default_rng(0)
    shuffled.loc[test, "y_true"] = rng.permutation(shuffled.loc[test, "y_true"].to_numpy())
    keep = ["model", "case_id", "split", "y_true", "probs_uncal", "train_distance"]
    a = posthoc_tables(preds[keep], quick_run["cases"], stored["classes"], stored["urgent"], stored["cfg"],
                       log=lambda m: None)
    b = posthoc_tables(shuffled[keep], quick_run["cases"], stored["classes"], stored["urgent"], stored["cfg"],
                       log=lambda m: None)
    pd.testing.assert_frame_equal(a["calibrators"], b["calibrators"])
    pd.testing.assert_frame_equal(a["deferral_scorers"], b["deferral_scorers"])
    pd.testing.assert_frame_equal(a["predictions"], b["predictions"])  # probs and defer scores of every case
    pol_a, pol_b = (t["policies"].set_index(["model", "policy", "split", "slice", "slice_value"]) for t in (a, b))
    pd.testing.assert_series_equal(pol_a["threshold"], pol_b["threshold"])


@pytest.mark.slow  # the whole post-hoc step, three times over
def test_calibrate_cli_reruns_and_adds_a_named_slice(quick_run, synth_store, capsys):
    run_id = quick_run["run_id"]
    assert main(["calibrate", "--db", str(synth_store), "--run", run_id, "--audit-extra", "sex"]) == 0
    with TriageStore(synth_store, read_only=True) as store:
        m = store.read_table("metrics", run_id)
        config = json.loads(store.read_run(run_id)["config"])
    assert "sex" in set(m["slice"]) and config["audit_extra"] == ["sex"]
    assert main(["calibrate", "--db", str(synth_store), "--run", run_id, "--audit-extra", "shoe_size"]) == 2
    assert "shoe_size" in capsys.readouterr().err
    assert main(["calibrate", "--db", str(synth_store), "--run", run_id, "--audit-extra", ""]) == 0
