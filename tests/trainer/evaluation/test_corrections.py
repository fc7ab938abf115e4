"""Label-free corrections (trainer/evaluation/corrections.py) on planted shifts with known
answers, and the weighted conformal sets against the unweighted reference."""
import numpy as np
import pytest
from scipy.special import softmax

from trainer.evaluation import metrics as M
from trainer.evaluation.corrections import likelihood_ratios, prior_shift, weighted_sets
from trainer.uncertainty.conformal import SplitConformal, class_scores


def _gaussian_classes(prior: np.ndarray, n: int, seed: int, model_prior: np.ndarray):
    """Three classes, x ~ N(mean_y, 1); probabilities: the exact posterior under ``model_prior``."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=prior)
    x = rng.normal(np.array([-2.0, 0.0, 2.0])[y], 1.0)
    loglik = -0.5 * (x[:, None] - np.array([-2.0, 0.0, 2.0])) ** 2
    return y, softmax(loglik + np.log(model_prior), axis=1)


def test_prior_shift_recovers_a_planted_label_shift():
    calib_prior, new_prior = np.array([0.2, 0.5, 0.3]), np.array([0.6, 0.2, 0.2])
    y, probs = _gaussian_classes(new_prior, 6000, 0, calib_prior)
    shifted, q = prior_shift(probs, calib_prior)
    assert q == pytest.approx(new_prior, abs=0.03)
    exact = _gaussian_classes(new_prior, 6000, 0, new_prior)[1]  # the posterior under the true new mix
    assert np.abs(shifted - exact).max() < 0.05
    assert M.nll(y, shifted) < M.nll(y, probs)


def test_equal_weights_give_the_mondrian_sets():
    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(size=(900, 4)) * 2, axis=1)
    y = np.array([rng.choice(4, p=p) for p in probs])
    groups = np.array(["a", "b", "c"])[rng.integers(0, 3, 900)]
    calib, new = np.arange(600), np.arange(600, 900)
    scores = class_scores(probs, "lac")
    reference = SplitConformal("lac", 0.1).fit(probs[calib], y[calib], groups[calib]).predict_sets(
        probs[new], groups[new])
    ours = weighted_sets(scores[calib, y[calib]], groups[calib], np.ones(600), scores[new], groups[new],
                         np.ones(300), 0.1)
    assert np.array_equal(ours, reference)


def test_likelihood_ratios_are_flat_without_shift_and_follow_a_planted_one():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(1500, 5)), rng.normal(size=(1500, 5))
    w_a, _ = likelihood_ratios(a, b)
    assert w_a.sum() ** 2 / (w_a ** 2).sum() / len(w_a) > 0.9  # nearly every calib case keeps its weight
    shifted = rng.normal(size=(1500, 5)) + np.r_[1.0, np.zeros(4)]
    w_a, _ = likelihood_ratios(a, shifted)
    # the true ratio N(1, 1) / N(0, 1) is exp(x - 1/2): increasing in the first feature
    assert np.corrcoef(w_a, np.exp(a[:, 0] - 0.5))[0, 1] > 0.8
