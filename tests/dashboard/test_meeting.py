"""The dashboard's meeting flows on the tiny fixture store (Streamlit AppTest): side by side,
the operating point carried to other pages, combinable case filters with the reason of each
score, the error analysis, and exports that describe themselves. Every expected number is
recomputed here from the store's rows with pandas."""
import io

import numpy as np
import pandas as pd
import pytest

from dashboard import exports
from data_store.fitzpatrick import fitzpatrick_group
from data_store.store import TriageStore
from tests.dashboard.apptest import open_page, param

URGENT = ["emergency", "urgent_cancer"]


def _policy_rows(env, policy: str, split: str, model: str = "late_fusion") -> pd.DataFrame:
    with TriageStore(env["store"], read_only=True) as store:
        rows = store.read_table("policies", env["run_id"], model=model, policy=policy, split=split)
    return rows.set_index("slice_value")


def _table(at, column: str) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_side_by_side_of_two_policies_shows_the_stored_change_per_group(env):
    at = open_page("3_Deferral.py", env["store"], env["run_id"], model="late_fusion", split="test").run()
    at.selectbox(key="deferral.other").set_value("urgent_sensitivity").run()
    assert not at.exception
    table = _table(at, "change")
    now, other = _policy_rows(env, "review_budget", "test"), _policy_rows(env, "urgent_sensitivity", "test")
    assert set(now.index) == {"all", "I-II", "III-IV", "V-VI"}
    for measure, column in (("reviewed", "defer_rate"), ("urgent missed", "missed_urgent_rate")):
        rows = table[table["measure"] == measure].set_index("group")
        for group in now.index:  # the whole split and each skin-tone group
            # shown as percentages and percentage points: the table holds the rates x 100
            a, b = now.loc[group, column], other.loc[group, column]
            assert rows.loc[group, "now"] == pytest.approx(100 * a, nan_ok=True)
            assert rows.loc[group, "policy: urgent_sensitivity"] == pytest.approx(100 * b, nan_ok=True)
            assert rows.loc[group, "change"] == pytest.approx(100 * (b - a), nan_ok=True)


def test_side_by_side_of_two_splits_applies_the_same_point_to_each(env):
    at = open_page("3_Deferral.py", env["store"], env["run_id"], model="late_fusion", split="test").run()
    at.radio(key="deferral.compare").set_value("the same operating point on another split").run()
    assert at.selectbox(key="deferral.other_split").value == "calib"  # the training clinics first
    table = _table(at, "change")
    test, calib = _policy_rows(env, "review_budget", "test"), _policy_rows(env, "review_budget", "calib")
    reviewed = table[table["measure"] == "reviewed"].set_index("group")
    assert reviewed.loc["all", "test"] == pytest.approx(100 * test.loc["all", "defer_rate"])
    assert reviewed.loc["all", "calib"] == pytest.approx(100 * calib.loc["all", "defer_rate"])
    missed = table[table["measure"] == "urgent missed"].set_index("group")
    assert missed.loc["all", "change"] == pytest.approx(
        100 * (calib.loc["all", "missed_urgent_rate"] - test.loc["all", "missed_urgent_rate"]), nan_ok=True)
    clinic = reviewed[reviewed["by"] == "clinic"]
    held_out = clinic[clinic["cases, calib"].isna()]  # only the test side has the held-out clinic
    assert len(held_out) == 1 and held_out["change"].isna().all()
    assert clinic["cases, test"].sum() == reviewed.loc["all", "cases, test"]


def test_a_group_policy_picked_on_deferral_decides_the_cases_page(env):
    """The Deferral page leaves its operating point in the session; the Cases page reads it."""
    at = open_page("5_Cases.py", env["store"], env["run_id"], model="late_fusion", split="test")
    at.session_state["carried.point"] = {"policy": "equal_group_accuracy"}
    at.run()
    assert not at.exception
    stored = _policy_rows(env, "equal_group_accuracy", "test").loc["all"]
    at.multiselect(key="cases.show").set_value(["reviewed"]).run()
    p = env["preds"]
    n = int(((p.model == "late_fusion") & (p.split == "test")).sum())
    assert f"**{round(stored['defer_rate'] * n):,} of {n:,} cases**" in [m.value.split(" (")[0] for m in at.markdown]


def test_missed_urgent_not_reviewed_combines_with_other_filters(env, quick_run):
    # A shared link at a threshold that reviews nothing: in the tiny fixture the urgent
    # rule-out rule reviews every urgent patient a model misses at any threshold up to 1.
    at = open_page("5_Cases.py", env["store"], env["run_id"], model="text_only", split="test", threshold="1.5").run()
    at.multiselect(key="cases.show").set_value(["missed urgent, not reviewed", "wrong"]).run()
    assert not at.exception
    p = env["preds"]
    p = p[(p.model == "text_only") & (p.split == "test")]
    missed = p.y_true.isin(URGENT) & ~p.y_pred.isin(URGENT) & (p.defer_score < 1.5)
    assert missed.sum() > 0  # the check below can fail
    shown = _table(at, "why the score")
    assert sorted(shown["case"]) == sorted(p[missed & (p.y_pred != p.y_true)]["case_id"])
    groups = pd.Series(fitzpatrick_group(quick_run["cases"].set_index("case_id").loc[p.case_id, "fitzpatrick"]),
                       index=p.index)
    group = groups[missed].mode().iloc[0]
    at.selectbox(key="cases.group").set_value(group).run()
    both = missed & (p.y_pred != p.y_true) & (groups == group)
    assert sorted(_table(at, "why the score")["case"]) == sorted(p[both]["case_id"])
    at.multiselect(key="cases.show").set_value(["missed urgent, not reviewed", "reviewed"]).run()
    assert _table(at, "why the score").empty  # contradictory conditions: nothing


def test_a_case_shows_why_its_score_is_what_it_is(env):
    from trainer.posthoc.case_reasons import case_reasons

    at = open_page("5_Cases.py", env["store"], env["run_id"], model="late_fusion", split="test").run()
    case_id = param(at, "case")
    reasons = case_reasons(env["store"], env["run_id"], "late_fusion", "test").set_index("case_id")
    text = next(m.value for m in at.markdown if m.value.startswith("**Why the score"))
    assert reasons.loc[case_id, "reason"] in text.replace("\\", "")
    assert reasons.loc[case_id, "why"].split(" ")[0] in text


def test_the_error_analysis_ranks_every_flagged_gap(env):
    at = open_page("8_Error_analysis.py", env["store"], env["run_id"], model="late_fusion").run()
    assert not at.exception
    m = env["metrics"]
    from dashboard.error_tables import KEY_METRICS

    flagged = m[(m.model == "late_fusion") & m.flagged.fillna(False).astype(bool) & m.metric.isin(KEY_METRICS)
                & (m.slice != "overall")]
    assert f"**{len(flagged):,} flagged gaps**" in " ".join(x.value for x in at.markdown)
    if len(flagged):
        shown = _table(at, "best-served group")
        assert shown["gap"].abs().iloc[0] == pytest.approx(100 * flagged["gap"].abs().max())  # in points


def test_exports_say_what_they_hold_and_keep_numbers_numeric():
    table = pd.DataFrame({"group": ["I-II", "V-VI"], "value": [0.81, 0.74], "ci_low": [0.78, 0.69],
                          "ci_high": [0.84, 0.79]})
    about = {"run_id": "r1", "dataset": "d", "simulated": True, "model": "unified", "split": "test",
             "metric": "accuracy", "threshold": 0.375, "exported_at": "2026-12-01T00:00:00Z"}
    back = pd.read_csv(io.StringIO(exports.csv(table, about)))
    assert back[["run_id", "model", "split", "metric"]].iloc[0].tolist() == ["r1", "unified", "test", "accuracy"]
    assert back["threshold"].iloc[0] == 0.375 and back["exported_at"].iloc[0] == "2026-12-01T00:00:00Z"
    np.testing.assert_allclose(back[["value", "ci_low", "ci_high"]], table[["value", "ci_low", "ci_high"]])
    md = exports.markdown(table, about)
    assert "- run_id: r1" in md and "- threshold: 0.375" in md and "not clinical evidence" in md


def test_a_shared_link_reopens_a_group_policy_and_refuses_a_bad_threshold(env):
    at = open_page("3_Deferral.py", env["store"], env["run_id"], model="late_fusion", split="test",
                   policy="equal_group_accuracy", threshold="0.123").run()
    stored = _policy_rows(env, "equal_group_accuracy", "test").loc["all"]
    assert at.selectbox(key="deferral.policy").value == "equal_group_accuracy"
    assert {m.label: m.value for m in at.metric}["Reviewed"] == f"{100 * stored['defer_rate']:.1f}%"
    at.text_input(key="deferral.name").input("groups")
    at.button[0].click().run()  # saving a group policy as one threshold is refused
    assert any("one threshold per skin-tone group" in e.value for e in at.error)
    bad = open_page("3_Deferral.py", env["store"], env["run_id"], threshold="abc").run()
    assert not bad.exception and any("is not a number" in w.value for w in bad.warning)
