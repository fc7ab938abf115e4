"""What a stored policy promises, read back from its params, and the judgement of whether it
held: checked against the policies' own fitted parameters and hand-made rows."""
import numpy as np
import pytest

from trainer.uncertainty.policies import GroupAccuracy, Promise, ReviewBudget, promise


def test_each_fitted_policy_promises_what_it_was_fitted_for():
    assert promise(ReviewBudget(0.2).params()) == Promise("defer_rate", 0.2, "at most")
    assert promise({"target_accuracy": 0.9}) == Promise("accepted_accuracy", 0.9, "at least")
    assert promise({"urgent_sensitivity_floor": 0.95}).goal == pytest.approx(0.05)
    rng = np.random.default_rng(0)
    fitted = GroupAccuracy(0.8).fit(rng.random(200), rng.random(200) < 0.8, np.repeat(["I-II", "V-VI"], 100))
    assert promise(fitted.params()) == Promise("accepted_accuracy", 0.8, "at least", per_group=True)
    assert promise({"method": "lac", "alpha": 0.1}).column is None


@pytest.mark.parametrize("params, overall, groups, held", [
    ({"budget": 0.2}, {"defer_rate": 0.2}, [], True),  # exactly at the budget
    ({"budget": 0.2}, {"defer_rate": 0.25}, [], False),
    ({"urgent_sensitivity_floor": 0.95}, {"missed_urgent_rate": 0.04}, [], True),
    ({"urgent_sensitivity_floor": 0.95}, {"missed_urgent_rate": float("nan")}, [], None),  # no urgent case
    # a per-group promise: every group must keep it, whatever the overall figure says
    ({"target_accuracy": 0.8, "thresholds": {"I-II": 0.3}}, {"accepted_accuracy": 0.9},
     [{"accepted_accuracy": 0.95}, {"accepted_accuracy": 0.7}], False),
    ({"target_accuracy": 0.8, "thresholds": {"I-II": 0.3}}, {"accepted_accuracy": 0.7},
     [{"accepted_accuracy": 0.85}, {"accepted_accuracy": 0.8}], True),
    ({"target_accuracy": 0.8, "thresholds": {"I-II": 0.3}}, {"accepted_accuracy": 0.9}, [], None),
    ({"threshold": 0.4, "saved_from": "dashboard"}, {"defer_rate": 0.3}, [], None),
])
def test_a_promise_is_held_as_its_rows_say(params, overall, groups, held):
    assert promise(params).held(overall, groups) is held
