"""Split conformal sets: the coverage guarantee, marginally and per group (Mondrian)."""
import numpy as np
import pytest
from scipy.special import softmax

from trainer.uncertainty.conformal import SplitConformal, class_scores, conformal_quantile


def _data(seed: int, n: int, groups_hard: bool = True):
    """Probabilities that are honest for group 'a' and overconfident for group 'b'."""
    rng = np.random.default_rng(seed)
    group = np.where(rng.random(n) < 0.7, "a", "b")
    logits = rng.normal(size=(n, 4)) * 2
    truth_logits = np.where((group == "b")[:, None] & groups_hard, logits / 4, logits)
    y = np.array([rng.choice(4, p=p) for p in softmax(truth_logits, axis=1)])
    return softmax(logits, axis=1), y, group, rng.random(n)


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_marginal_coverage_holds_but_can_fail_a_group_and_mondrian_fixes_it(method):
    p, y, g, u = _data(0, 12000)
    fit, test = np.arange(6000), np.arange(6000, 12000)
    marginal = SplitConformal(method, 0.1).fit(p[fit], y[fit], u=u[fit]).predict_sets(p[test], u=u[test])
    covered = marginal[np.arange(len(test)), y[test]]
    assert covered.mean() == pytest.approx(0.9, abs=0.02)
    assert covered[g[test] == "b"].mean() < 0.85  # the marginal guarantee hides the hard group
    mondrian = SplitConformal(method, 0.1).fit(p[fit], y[fit], g[fit], u[fit]).predict_sets(p[test], g[test], u[test])
    covered = mondrian[np.arange(len(test)), y[test]]
    for group in ("a", "b"):
        assert covered[g[test] == group].mean() == pytest.approx(0.9, abs=0.025), group


def test_quantile_is_the_finite_sample_one():
    scores = np.arange(1, 20, dtype=float)  # n = 19: ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(scores, 0.1) == 18.0
    assert conformal_quantile(scores[:5], 0.1) == np.inf  # too few for 90%: every class


def test_lac_keeps_classes_above_one_minus_q_and_aps_sets_grow_with_q():
    p = np.array([[0.6, 0.3, 0.1, 0.0]])
    np.testing.assert_array_equal(class_scores(p, "lac"), 1 - p)
    np.testing.assert_allclose(class_scores(p, "aps", np.array([1.0])), [[0.6, 0.9, 1.0, 1.0]])
    cp = SplitConformal("aps", 0.1)
    cp.qhat_ = {0: 0.95}
    np.testing.assert_array_equal(cp.predict_sets(p, u=np.array([1.0])), [[True, True, False, False]])


def test_unseen_group_gets_every_class():
    p, y, g, u = _data(1, 400)
    cp = SplitConformal("lac", 0.1).fit(p, y, g)
    sets = cp.predict_sets(p[:3], np.array(["unknown"] * 3))
    assert sets.all()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="method"):
        SplitConformal("raps")
    with pytest.raises(ValueError, match="alpha"):
        SplitConformal("lac", 1.5)
