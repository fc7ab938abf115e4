"""Label-free shift estimates on data whose shift is planted (fixed seeds)."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from trainer.evaluation.shift import bbse_class_mix, domain_auroc, em_class_mix

# Four classes about as separable as the triage models' calib accuracy (about 0.8 here).
MEANS = np.array([[0, 0, 0, 0], [2.5, 0, 0, 0], [0, 2.5, 0, 0], [0, 0, 2.5, 0]], float)


def _draw(rng, shares, n):
    """n cases of the 4 classes in ``shares``; each class a Gaussian around its mean (unit variance)."""
    y = rng.choice(4, size=n, p=shares)
    return MEANS[y] + rng.normal(size=(n, 4)), y


@pytest.fixture(scope="module")
def model_and_calib():
    rng = np.random.default_rng(0)
    source = np.full(4, 0.25)
    x, y = _draw(rng, source, 8000)
    model = LogisticRegression(max_iter=1000).fit(x, y)  # well calibrated in distribution
    xc, yc = _draw(rng, source, 6000)
    return model, model.predict_proba(xc), yc, rng


@pytest.mark.parametrize("shares", [[0.25, 0.25, 0.25, 0.25], [0.55, 0.25, 0.15, 0.05], [0.05, 0.1, 0.25, 0.6]])
def test_bbse_and_em_recover_a_planted_label_shift(model_and_calib, shares):
    model, probs_calib, y_calib, rng = model_and_calib
    assert 0.75 < (probs_calib.argmax(1) == y_calib).mean() < 0.85
    xt, yt = _draw(rng, shares, 6000)
    truth = np.bincount(yt, minlength=4) / len(yt)
    probs_target = model.predict_proba(xt)
    bbse = bbse_class_mix(probs_calib, y_calib, probs_target, n_boot=200)
    em = em_class_mix(probs_target, np.bincount(y_calib, minlength=4) / len(y_calib), n_boot=200)
    for est in (bbse, em):
        assert np.abs(est.value - truth).max() < 0.03, (est.value, truth)
        assert est.value.sum() == pytest.approx(1.0)
        assert (est.ci_low <= est.value + 1e-9).all() and (est.value <= est.ci_high + 1e-9).all()
        assert ((est.ci_low <= truth + 0.01) & (truth <= est.ci_high + 0.01)).all()


def test_the_domain_classifier_flags_a_shift_and_nothing_on_exchangeable_data():
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(4000, 8))
    same = domain_auroc(pool[:2000], pool[2000:], n_boot=300)
    assert same.ci_low < 0.5 < same.ci_high and abs(same.value - 0.5) < 0.05
    moved = rng.normal(size=(2000, 8)) + np.r_[0.6, 0.6, np.zeros(6)]  # another camera: two features drift
    shifted = domain_auroc(pool[:2000], moved, n_boot=300)
    assert shifted.ci_low > 0.6 and shifted.value > 0.65
