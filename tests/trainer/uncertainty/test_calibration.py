"""Calibrators: properties after scikit-learn's calibration tests, and selection by
out-of-fold NLL."""
import numpy as np
import pytest
from scipy.special import softmax

from trainer.evaluation import metrics as M
from trainer.uncertainty.calibration import (IsotonicCalibrator, TemperatureScaler, VectorScaler, log_probs, out_of_fold,
                                 select_calibrator)


def _overconfident(seed: int, n: int = 2000, k: int = 4, scale: float = 3.0):
    """Logits of a model whose true temperature is ``scale`` (its softmax is overconfident)."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(size=(n, k)) * 1.5
    y = np.array([rng.choice(k, p=p) for p in softmax(true_logits, axis=1)])
    return true_logits * scale, y


@pytest.mark.parametrize("cls", [TemperatureScaler, VectorScaler, IsotonicCalibrator])
def test_probabilities_sum_to_one_and_nll_does_not_rise_on_the_fitting_data(cls):
    logits, y = _overconfident(0)
    cal = cls().fit(logits, y)
    p = cal.predict_proba(logits)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)
    assert (p > 0).all() and (p <= 1).all()
    assert M.nll(y, p) <= M.nll(y, softmax(logits, axis=1)) + 1e-9


def test_temperature_recovers_the_true_temperature_and_keeps_the_argmax():
    logits, y = _overconfident(1, n=20000, scale=3.0)
    cal = TemperatureScaler().fit(logits, y)
    assert cal.temperature_ == pytest.approx(3.0, rel=0.05)
    np.testing.assert_array_equal(cal.predict_proba(logits).argmax(1), logits.argmax(1))


def test_calibration_lowers_ece_out_of_fold():
    logits, y = _overconfident(2)
    before = M.ece(y, softmax(logits, axis=1))
    for cls in (TemperatureScaler, VectorScaler, IsotonicCalibrator):
        after = M.ece(y, out_of_fold(cls, logits, y, n_folds=5, seed=0))
        assert after < before / 2, cls.__name__


def test_selection_is_by_out_of_fold_nll_and_refits_on_everything():
    logits, y = _overconfident(3)
    choice = select_calibrator(logits, y, n_folds=5, seed=0)
    scores = choice.candidates
    eligible = [m for m in scores if m != "none" and scores[m]["ece"] <= scores["none"]["ece"]]
    assert choice.method == min(eligible, key=lambda m: scores[m]["nll"])
    assert scores["none"]["nll"] > scores[choice.method]["nll"]
    assert M.ece(y, choice.oof_probs) == pytest.approx(scores[choice.method]["ece"])
    expected = {"temperature": TemperatureScaler, "vector": VectorScaler, "isotonic": IsotonicCalibrator}
    refit = expected[choice.method]().fit(logits, y)
    np.testing.assert_allclose(choice.calibrator.predict_proba(logits), refit.predict_proba(logits), atol=1e-6)


def test_log_probs_round_trip_through_softmax():
    p = softmax(np.random.default_rng(0).normal(size=(10, 4)), axis=1)
    np.testing.assert_allclose(softmax(log_probs(p), axis=1), p, atol=1e-12)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="finite"):
        TemperatureScaler().fit(np.array([[np.nan, 1.0]]), [0])
    with pytest.raises(ValueError, match="one label per row"):
        TemperatureScaler().fit(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="at least"):
        select_calibrator(np.zeros((6, 2)), [0, 1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="subset"):
        select_calibrator(np.zeros((60, 2)), np.arange(60) % 2, methods=("platt",))


def test_an_already_calibrated_model_is_left_alone_rather_than_made_worse():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(300, 4))
    y = np.array([rng.choice(4, p=p) for p in softmax(logits, axis=1)])  # calibrated by construction
    choice = select_calibrator(logits, y, methods=("isotonic",), n_folds=5, seed=0)
    # isotonic on 240 cases is noisier than the truth: it raises the out-of-fold ECE
    assert choice.candidates["isotonic"]["ece"] > choice.candidates["none"]["ece"]
    assert choice.method == "none"
    np.testing.assert_allclose(choice.calibrator.predict_proba(logits), softmax(logits, axis=1))


@pytest.mark.parametrize("method", ["temperature", "vector", "isotonic", "none"])
def test_a_stored_calibrator_predicts_as_the_fitted_one(method):
    """What ``predict`` rebuilds from a run's ``calibrators`` row gives the fitted calibrator's probabilities."""
    import json

    from trainer.uncertainty.calibration import CALIBRATORS, Uncalibrated, calibrator_from_params

    logits, y = _overconfident(1)
    fitted = CALIBRATORS.get(method, Uncalibrated)().fit(logits[:1000], y[:1000])
    stored = json.loads(json.dumps(fitted.params()))  # as the store keeps it
    new = logits[1000:] * 1.3  # other cases, some beyond the fitted range
    np.testing.assert_allclose(calibrator_from_params(method, stored).predict_proba(new), fitted.predict_proba(new),
                               rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="Unknown calibrator"):
        calibrator_from_params("platt", {})
