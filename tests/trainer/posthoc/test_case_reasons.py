"""Why each case scores what it does: the run's stored rules replayed on its stored
predictions give back the stored deferral score, and each reason's words carry the case's
own stored values."""
import numpy as np
import pytest

from trainer.posthoc.case_reasons import case_reasons
from trainer.uncertainty.deferral import REASONS, RULE_OUT_REASON


@pytest.mark.parametrize("model", ["late_fusion", "unified"])
def test_the_replayed_score_is_the_stored_one_and_the_words_hold_the_case_s_values(quick_run, synth_store, model):
    reasons = case_reasons(synth_store, quick_run["run_id"], model, "test").set_index("case_id")
    p = quick_run["preds"]
    stored = p[(p.model == model) & (p.split == "test")].set_index("case_id")
    assert sorted(reasons.index) == sorted(stored.index)
    np.testing.assert_allclose(reasons["defer_score"], stored.loc[reasons.index, "defer_score"], atol=1e-12)
    assert set(reasons["reason"]) <= {*REASONS, RULE_OUT_REASON, "no signal above average"}
    ruled = reasons["reason"] == RULE_OUT_REASON
    assert (stored.loc[ruled[ruled].index, "defer_score"] == 1).all()
    for case_id, row in reasons.iterrows():
        s = stored.loc[case_id]
        if row["reason"] == "unlike the training cases":
            assert f"{s['train_distance']:.3f}" in row["why"]
        elif row["reason"] == "poor photo":
            assert f"{s['photo_sharpness']:.3f}" in row["why"]
        elif row["reason"] in ("low confidence", RULE_OUT_REASON):
            top = np.sort(s["probs"])[-1] if row["reason"] == "low confidence" else None
            assert top is None or f"{top:.0%}" in row["why"]


def test_a_model_without_rules_of_its_own_and_out_of_fold_scores_have_no_reasons(quick_run, synth_store):
    assert case_reasons(synth_store, quick_run["run_id"], "not_a_model", "test").empty
    assert case_reasons(synth_store, quick_run["run_id"], "late_fusion", "calib").empty  # scored out of fold
