"""The deferral score and the policies built on it."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from trainer.evaluation import metrics as M
from trainer.uncertainty.deferral import SIGNALS, DeferralScorer, deferral_signals, doubtful_rule_out
from trainer.uncertainty.policies import GroupAccuracy, ReviewBudget, TargetAccuracy, UrgentSensitivity

URGENT = np.array([True, True, False, False])


def _cases(seed: int, n: int = 4000):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 4)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=q) for q in p])  # calibrated by construction
    return p, y, rng


def test_doubtful_rule_out_is_a_non_urgent_call_with_enough_urgent_mass():
    p = np.array([[0.1, 0.15, 0.7, 0.05], [0.05, 0.05, 0.8, 0.1], [0.5, 0.1, 0.3, 0.1]])
    np.testing.assert_array_equal(doubtful_rule_out(p, URGENT, 0.2), [True, False, False])


def test_score_is_one_for_rule_outs_and_a_calibrated_error_probability_elsewhere():
    p, y, _ = _cases(0, 20000)
    signals = deferral_signals(p, URGENT)
    assert list(signals.columns) == list(SIGNALS)
    wrong, rule_out = p.argmax(1) != y, doubtful_rule_out(p, URGENT, 0.2)
    fit, test = np.arange(10000), np.arange(10000, 20000)
    scorer = DeferralScorer().fit(signals.iloc[fit], wrong[fit], rule_out[fit])
    score = scorer.predict(signals.iloc[test], rule_out[test])
    assert (score[rule_out[test]] == 1).all()
    keep = ~rule_out[test]
    assert M.binary_ece(score[keep], wrong[test][keep]) < 0.03
    assert roc_auc_score(wrong[test][keep], score[keep]) > 0.65
    assert scorer.params()["model"] == "logistic"


def test_scorer_without_enough_errors_falls_back_to_the_base_rate_and_says_so():
    signals = pd.DataFrame(np.random.default_rng(0).normal(size=(20, len(SIGNALS))), columns=list(SIGNALS))
    wrong = np.zeros(20, bool)
    wrong[:2] = True
    scorer = DeferralScorer().fit(signals, wrong, np.zeros(20, bool))
    assert scorer.params()["model"] == "base_rate"
    np.testing.assert_allclose(scorer.predict(signals, np.zeros(20, bool)), 3 / 22)


def test_review_budget_defers_the_top_share():
    score = np.random.default_rng(0).random(1000)
    policy = ReviewBudget(0.2).fit(score)
    assert policy.decide(score).sum() == 200
    assert policy.decide(score)[np.argsort(score)[-200:]].all()
    assert not ReviewBudget(0.0).fit(score).decide(score).any()


def test_target_accuracy_is_met_with_the_fewest_deferrals():
    p, y, _ = _cases(1)
    correct = p.argmax(1) == y
    score = 1 - p.max(1)
    policy = TargetAccuracy(0.9).fit(score, correct)
    deferred = policy.decide(score)
    assert correct[~deferred].mean() >= 0.9
    # one threshold step lower (deferring more is the only way to raise it): the next
    # larger candidate threshold must miss the target
    higher = np.sort(np.unique(score[score > policy.threshold_]))
    if len(higher):
        accepted = score < higher[0]
        assert correct[accepted].mean() < 0.9


def test_urgent_sensitivity_floor_is_met_at_least_workload():
    p, y, _ = _cases(2)
    urgent_true, flagged = URGENT[y], URGENT[p.argmax(1)]
    score = p[:, URGENT].sum(1) * ~flagged + 0.01 * flagged
    policy = UrgentSensitivity(0.95).fit(score, urgent_true=urgent_true, flagged_urgent=flagged)
    deferred = policy.decide(score)
    caught = (flagged | deferred)[urgent_true].mean()
    assert caught >= 0.95
    looser = score >= np.min(score[score > policy.threshold_])
    assert (flagged | looser)[urgent_true].mean() < 0.95


def test_group_thresholds_equalise_accepted_accuracy_at_a_cost_in_reviews():
    p, y, rng = _cases(3, 8000)
    group = np.where(rng.random(len(y)) < 0.5, "I-II", "V-VI")
    # the model is worse on V-VI: flip a third of its correct answers there
    pred = p.argmax(1).copy()
    flip = (group == "V-VI") & (rng.random(len(y)) < 0.3)
    pred[flip] = (pred[flip] + 1) % 4
    correct, score = pred == y, 1 - p.max(1)
    policy = GroupAccuracy(0.85).fit(score, correct, group)
    deferred = policy.decide(score, group)
    for g in ("I-II", "V-VI"):
        assert correct[(group == g) & ~deferred].mean() >= 0.85
    assert deferred[group == "V-VI"].mean() > deferred[group == "I-II"].mean()
    assert set(policy.params()["thresholds"]) == {"I-II", "V-VI"}
    with pytest.raises(ValueError, match="budget"):
        ReviewBudget(1.5)


def test_operating_points_match_a_direct_count_at_every_threshold():
    from trainer.uncertainty.operating_points import OperatingPoints

    rng = np.random.default_rng(7)
    n = 3000
    score = np.round(rng.random(n), 2)  # ties on purpose
    correct, urgent_true, flagged = rng.random(n) < 0.7, rng.random(n) < 0.3, rng.random(n) < 0.3
    tone = rng.choice(["I-II", "III-IV", "V-VI"], n)
    points = OperatingPoints(score, correct, urgent_true, flagged, {"fitzpatrick_group": tone})
    for t in (0.0, 0.25, 0.5, 0.505, 0.99, 1.0, 1.5):
        view = points.at(t).set_index(["slice", "slice_value"])
        for (family, value), row in view.iterrows():
            m = np.ones(n, bool) if family == "overall" else tone == value
            d = score[m] >= t
            assert row["n"] == m.sum() and row["deferred"] == d.sum()
            assert row["defer_rate"] == pytest.approx(d.mean())
            acc = correct[m][~d].mean() if (~d).any() else np.nan
            assert row["accepted_accuracy"] == pytest.approx(acc, nan_ok=True)
            missed = (urgent_true & ~flagged)[m][~d].sum() / urgent_true[m].sum()
            assert row["missed_urgent_rate"] == pytest.approx(missed)


def test_group_thresholds_decide_each_case_by_its_group_as_the_replay_does():
    """A group policy's operating point (one threshold per skin-tone group) against
    ``replay.decide`` on every case, for every group and clinic."""
    from trainer.posthoc.replay import decide
    from trainer.uncertainty.operating_points import OperatingPoints

    rng = np.random.default_rng(8)
    n = 2000
    score = np.round(rng.random(n), 2)
    correct, urgent_true, flagged = rng.random(n) < 0.7, rng.random(n) < 0.3, rng.random(n) < 0.3
    tone, clinic = rng.choice(["I-II", "III-IV", "V-VI", "unknown"], n), rng.choice(["a", "b"], n)
    points = OperatingPoints(score, correct, urgent_true, flagged, {"fitzpatrick_group": tone, "clinic": clinic})
    per_group = {"I-II": 0.6, "III-IV": 0.3, "V-VI": 0.1}  # unknown: the overall threshold
    deferred = decide((0.45, per_group), score, tone)
    view = points.at(0.45, per_group).set_index(["slice", "slice_value"])
    for (family, value), row in view.iterrows():
        m = np.ones(n, bool) if family == "overall" else (tone if family == "fitzpatrick_group" else clinic) == value
        assert row["deferred"] == deferred[m].sum() and row["n"] == m.sum()
        assert row["accepted_accuracy"] == pytest.approx(correct[m & ~deferred].mean())
        missed = (urgent_true & ~flagged & ~deferred)[m].sum() / urgent_true[m].sum()
        assert row["missed_urgent_rate"] == pytest.approx(missed)
    pd.testing.assert_frame_equal(points.at(0.45, {}), points.at(0.45))  # no groups: the one threshold


def test_a_stored_deferral_scorer_scores_as_the_fitted_one():
    """What ``predict`` rebuilds from a run's ``deferral_scorers`` row gives the fitted scores."""
    import json

    p, y, rng = _cases(3)
    signals = deferral_signals(p, URGENT, train_distance=rng.random(len(p)))
    rule_out = doubtful_rule_out(p, URGENT, 0.2)
    wrong = p.argmax(1) != y
    for fitted in (DeferralScorer().fit(signals[:2000], wrong[:2000], rule_out[:2000]),
                   DeferralScorer().fit(signals[:6], wrong[:6], rule_out[:6])):  # too few: the base rate
        stored = DeferralScorer.from_params(json.loads(json.dumps(fitted.params())))
        np.testing.assert_allclose(stored.predict(signals[2000:], rule_out[2000:]),
                                   fitted.predict(signals[2000:], rule_out[2000:]), rtol=0, atol=1e-12)
    assert DeferralScorer.from_params(fitted.params()).params()["model"] == "base_rate"
    with pytest.raises(ValueError, match="signals"):
        DeferralScorer.from_params({**DeferralScorer().fit(signals, wrong, rule_out).params(), "signals": ["x"]})


def test_a_case_is_deferred_for_the_signal_group_that_adds_most_to_its_log_odds():
    """Against a scorer with known weights, a case that differs from the calib mean in one
    signal alone is named by that signal's group; a doubtful rule-out by the rule."""
    from trainer.uncertainty.deferral import NO_REASON, REASONS, RULE_OUT_REASON

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(400, len(SIGNALS))), columns=list(SIGNALS))
    coef = {"confidence": -1.0, "train_distance": 1.5, "note_missing": 2.0, "photo_sharpness": -1.0}
    logit = sum(w * x[c] for c, w in coef.items())
    wrong = rng.random(400) < 1 / (1 + np.exp(-logit))
    scorer = DeferralScorer(C=100).fit(x, wrong, np.zeros(400, bool))
    mean = x.mean()
    cases = pd.DataFrame([mean] * 5)
    cases.loc[0, "train_distance"] += 3  # far from the training cases
    cases.loc[1, "photo_sharpness"] -= 3  # blurred
    cases.loc[2, "note_missing"] += 3
    cases.loc[3, "confidence"] -= 3
    cases.loc[4, "confidence"] += 3  # only lowers the score
    got = scorer.reasons(cases, np.array([False] * 4 + [False]))
    assert list(got) == ["unlike the training cases", "poor photo", "empty note", "low confidence", NO_REASON]
    assert scorer.reasons(cases, np.array([True] + [False] * 4))[0] == RULE_OUT_REASON
    assert set(got) <= set(REASONS) | {NO_REASON}
    base = DeferralScorer().fit(x.iloc[:6], np.array([True] + [False] * 5), np.zeros(6, bool))
    assert list(base.reasons(cases, np.zeros(5, bool))) == [NO_REASON] * 5  # the base rate reads no signal
