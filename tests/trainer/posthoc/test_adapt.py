"""Local recalibration (trainer/posthoc/adapt.py) and its evaluation
(trainer/evaluation/adaptation.py) on synthetic clinics: references are the run's own
policies and conformal quantile (equal weights), the binomial law, and planted samples."""
import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from trainer.evaluation.adaptation import adapt_once, curve, draw, figures, smallest_k, summarise
from trainer.posthoc.adapt import (Adaptation, ClinicCases, accuracy_threshold, allowed_misses, budget_threshold,
                                   fit_adaptation, outputs, urgent_threshold, weighted_quantile)
from trainer.posthoc.replay import Rules
from trainer.uncertainty.conformal import SplitConformal, conformal_quantile
from trainer.uncertainty.deferral import DeferralScorer, deferral_signals, doubtful_rule_out
from trainer.uncertainty.policies import ReviewBudget, TargetAccuracy, UrgentSensitivity

URGENT = np.array([True, True, False, False])
GROUPS = np.array(["I-II", "III-IV", "V-VI"])


def _cases(n: int, seed: int, sharp: float = 2.0) -> ClinicCases:
    """A clinic: labels, probabilities that favour the label (more or less), single-modality
    probabilities, per-case signals, skin-tone groups and patients (some with two cases)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    logits = rng.normal(size=(n, 4)) + sharp * np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    single = {m: np.roll(probs, s, axis=0) for s, m in ((1, "text_only"), (2, "image_only"))}
    per_case = pd.DataFrame({"note_missing": rng.random(n) < 0.1, "train_distance": rng.random(n),
                             "photo_sharpness": rng.random(n), "photo_overexposed": rng.random(n) * 0.1})
    patients = np.array([f"p{i // 2 if i % 3 == 0 else i}" for i in range(n)])
    return ClinicCases(y, probs, single, per_case, GROUPS[rng.integers(0, 3, n)], patients, rng.random(n))


def _rules(calib: ClinicCases) -> Rules:
    """The run's rules, fitted on a calib set as fit does."""
    signals = deferral_signals(calib.probs, URGENT, calib.single["text_only"], calib.single["image_only"],
                               **{c: calib.per_case[c].to_numpy() for c in calib.per_case})
    rule_out = doubtful_rule_out(calib.probs, URGENT, 0.2)
    pred = calib.probs.argmax(1)
    scorer = DeferralScorer().fit(signals, pred != calib.y, rule_out)
    score = scorer.predict(signals, rule_out)
    conformal = SplitConformal("lac", 0.1).fit(calib.probs, calib.y, calib.groups)
    policies = {"review_budget": ReviewBudget(0.2).fit(score),
                "target_accuracy": TargetAccuracy(0.9).fit(score, pred == calib.y),
                "urgent_sensitivity": UrgentSensitivity(0.95).fit(score, urgent_true=URGENT[calib.y],
                                                                  flagged_urgent=URGENT[pred])}
    return Rules(None, scorer, 0.2, conformal, {n: (p.threshold_, {}) for n, p in policies.items()},
                 {n: p.params() for n, p in policies.items()})


@pytest.fixture(scope="module")
def clinic():
    rules = _rules(_cases(1500, 0))
    return rules, _cases(1200, 1, sharp=1.2)  # the new clinic: the model is less sure there


def test_equal_weights_reproduce_the_run_policies_and_conformal_quantile():
    rng = np.random.default_rng(3)
    score, correct = rng.random(400), rng.random(400) < 0.8
    w = np.ones(400)
    assert budget_threshold(score, w, 0.2) == ReviewBudget(0.2).fit(score).threshold_
    assert accuracy_threshold(score, correct, w, 0.9) == TargetAccuracy(0.9).fit(score, correct).threshold_
    assert weighted_quantile(score, w, 0.1) == conformal_quantile(score, 0.1)
    assert weighted_quantile(score[:5], w[:5], 0.1) == np.inf  # too few for 1 - alpha


def test_allowed_misses_is_the_binomial_bound():
    for n in (20, 45, 70, 150, 400):
        m = allowed_misses(n, 0.95, 0.9)
        assert m == -1 or binom.sf(m, n, 0.05) >= 0.9  # P(Binomial > m - 1) = P(at least m + 1 below)
        assert binom.sf(m + 1, n, 0.05) < 0.9 or m + 1 == n
    assert allowed_misses(20, 0.95, 0.9) == -1  # 20 urgent cases cannot bound a 5% miss rate


def test_the_urgent_floor_holds_in_nine_of_ten_draws():
    """Monte Carlo on a known population: the threshold from n local urgent cases leaves at
    most 5% of the population's urgent cases missed in at least 90% of draws."""
    rng = np.random.default_rng(0)
    population = rng.random(200_000)  # each urgent case's deferral score; all called non-urgent
    held = []
    for _ in range(400):
        local = rng.choice(population, 120)
        t = urgent_threshold(local, np.ones(120, bool), np.zeros(120, bool), np.ones(120), 0.95, 0.9)
        held.append(np.mean(population < t) <= 0.05)
    assert np.mean(held) >= 0.9


def test_draws_take_whole_patients_and_stratified_draws_each_group(clinic):
    _, cases = clinic
    local, w = draw(cases, 90, "random", 0, np.zeros(len(cases.y)))
    assert len(local) == 90 and np.allclose(w, 1)
    rest = np.setdiff1d(np.arange(len(cases.y)), local)
    assert not set(cases.patients[local]) & set(cases.patients[rest])
    local, w = draw(cases, 90, "stratified", 0, np.zeros(len(cases.y)))
    assert (pd.Series(cases.groups[local]).value_counts() == 30).all()
    share = pd.Series(w).groupby(cases.groups[local]).sum() / w.sum()  # the weights restore the clinic's mix
    assert share.to_dict() == pytest.approx(pd.Series(cases.groups).value_counts(normalize=True).to_dict())
    with pytest.raises(ValueError, match="--labels"):
        draw(cases, len(cases.y), "random", 0, np.zeros(len(cases.y)))


def test_k_zero_is_the_run_itself(clinic):
    rules, cases = clinic
    a, local, rest = adapt_once(rules, cases, URGENT, 0, "random", 0)
    assert len(local) == 0 and len(rest) == len(cases.y)
    out = outputs(rules, a, cases, URGENT)
    assert np.array_equal(out["probs"], cases.probs)
    assert np.array_equal(out["sets"], rules.conformal.predict_sets(cases.probs, cases.groups))
    signals = deferral_signals(cases.probs, URGENT, cases.single["text_only"], cases.single["image_only"],
                               **{c: cases.per_case[c].to_numpy() for c in cases.per_case})
    rule_out = doubtful_rule_out(cases.probs, URGENT, 0.2)
    assert np.array_equal(out["defer_score"], rules.scorer.predict(signals, rule_out))


def test_adaptation_never_judges_its_own_cases(clinic):
    """Plant a perfect local sample (every drawn case predicted right) in a clinic where every
    other case is predicted wrong: any leak of the k cases into the figures would show."""
    rules, cases = clinic
    score = outputs(rules, Adaptation(0), cases, URGENT)["defer_score"]
    local, _ = draw(cases, 200, "random", 7, score)
    pred = cases.probs.argmax(1)
    planted = ClinicCases((pred + 1) % 4, cases.probs, cases.single, cases.per_case, cases.groups, cases.patients,
                          cases.u)
    planted.y[local] = pred[local]
    a, drawn, rest = adapt_once(rules, planted, URGENT, 200, "random", 7)
    assert np.array_equal(drawn, local) and not set(drawn) & set(rest)
    rows = pd.DataFrame(figures(rules, a, planted.take(rest), URGENT)).set_index(["metric", "slice_value"])
    # Judged on the other cases alone, the model is wrong nearly everywhere (the adapted layer
    # turns a few predictions); the 200 perfect cases leaking in would lift macro F1 past 0.1.
    assert rows.loc[("macro_f1", "all"), "value"] < 0.03
    assert rows.loc[("macro_f1", "all"), "n"] == len(cases.y) - 200


def test_local_recalibration_mends_a_shifted_clinic(clinic):
    """At a clinic where the run is overconfident, 400 local cases bring the deferral score's
    ECE and the conformal coverage back near their targets."""
    rules, cases = clinic
    before = pd.DataFrame(figures(rules, Adaptation(0), cases, URGENT)).set_index(["metric", "slice_value"])
    a, _, rest = adapt_once(rules, cases, URGENT, 400, "random", 0)
    after = pd.DataFrame(figures(rules, a, cases.take(rest), URGENT)).set_index(["metric", "slice_value"])
    assert after.loc[("defer_ece", "all"), "value"] < before.loc[("defer_ece", "all"), "value"]
    assert before.loc[("coverage", "all"), "value"] < 0.87 <= after.loc[("coverage", "all"), "value"] <= 0.95
    assert after.loc[("urgent_caught", "all"), "value"] >= 0.93


def test_curve_summary_and_smallest_k(clinic):
    rules, cases = clinic
    raw = curve(rules, cases, URGENT, ks=(0, 100, 400), draws=3, seed=0)
    assert set(raw.groupby("k")["draw"].nunique().items()) == {(0, 1), (100, 3), (400, 3)}
    table = summarise(raw, rules)
    ece = table[(table["metric"] == "defer_ece")].set_index("k")
    assert ece.loc[0, "value"] == raw[(raw["k"] == 0) & (raw["metric"] == "defer_ece")]["value"].iloc[0]
    assert (ece["worst"] >= ece["value"]).all() and (ece["target"] == 0.05).all()
    assert (table["n_eval"] == table["k"].map({0: 1200, 100: 1100, 400: 800})).all()
    firsts = smallest_k(table)
    assert set(firsts) >= {"defer_ece", "urgent_caught", "accepted_accuracy", "coverage"}
    for metric, k in firsts.items():
        if np.isfinite(k):  # holds at k and at every larger k
            assert table[(table["metric"] == metric) & (table["k"] >= k)]["holds"].dropna().all()


def test_fit_adaptation_with_weights_matches_repeated_cases(clinic):
    """A case of weight 2 counts as that case twice (the stratified draw's weights). Weights
    are rescaled to the k cases actually labelled, so the comparison is without the pull
    towards the run's calibration, which the total evidence would scale."""
    rules, cases = clinic
    idx = np.arange(100)
    doubled = np.r_[idx, idx[:50]]
    w = np.r_[np.full(50, 2.0), np.ones(50)]
    a = fit_adaptation(rules, cases.take(idx), URGENT, w, pull=0.0)
    b = fit_adaptation(rules, cases.take(doubled), URGENT, pull=0.0)
    assert np.allclose(a.scale, b.scale, atol=1e-4) and np.allclose(a.platt, b.platt, atol=1e-4)
    assert a.thresholds["review_budget"][0] == pytest.approx(b.thresholds["review_budget"][0])
