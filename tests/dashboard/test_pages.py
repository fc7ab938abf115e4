"""Every dashboard page on the tiny fixture store (Streamlit AppTest): no exception, and
its main numbers equal the store's."""
import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from data_store.store import TriageStore
from tests.dashboard.apptest import PAGES, open_page, param


@pytest.mark.parametrize("page", sorted(p.name for p in PAGES.glob("*.py")))
def test_every_page_runs_without_an_exception(env, page):
    at = open_page(page, env["store"], env["run_id"]).run()
    assert not at.exception, at.exception


@pytest.mark.parametrize("page", sorted(p.name for p in PAGES.glob("*.py")))
def test_every_page_without_a_store_says_how_to_make_one(page, tmp_path, monkeypatch):
    monkeypatch.setenv("TRIAGE_DB", str(tmp_path / "none.duckdb"))
    at = AppTest.from_file(str(PAGES / page), default_timeout=60).run()
    assert not at.exception
    assert "./run.sh" in at.info[0].value


def test_models_page_shows_the_chosen_model_not_the_best_on_test(env):
    at = open_page("1_Models.py", env["store"], env["run_id"]).run()
    m = env["metrics"]
    overall = m[(m.slice == "overall") & (m.metric == "macro_f1")]
    chosen = overall[overall.split == "val"].sort_values(["value", "model"], ascending=[False, True])["model"].iloc[0]
    test = overall[overall.split == "test"].set_index("model")["value"]
    assert {x.label: x.value for x in at.metric}[f"Macro F1 of {chosen}, the run's choice"] == f"{test[chosen]:.3f}"
    miss = m[(m.slice == "overall") & (m.metric == "missed_urgent_rate") & (m.split == "test")].set_index("model")
    shown = {x.label: x.value for x in at.metric}[f"Urgent patients {chosen} misses on test"]
    assert shown == f"{100 * miss.loc[chosen, 'value']:.1f}%"  # beside the choice, its urgent-miss rate


@pytest.mark.parametrize("threshold", [0.2, 0.6])
def test_deferral_page_recomputes_the_rates_at_the_threshold(env, threshold):
    at = open_page("3_Deferral.py", env["store"], env["run_id"], model="late_fusion", split="test").run()
    at.slider(key="deferral.threshold").set_value(threshold).run()
    assert not at.exception
    p = env["preds"]
    p = p[(p.model == "late_fusion") & (p.split == "test")]
    deferred = p["defer_score"].to_numpy() >= threshold
    shown = {x.label: x.value for x in at.metric}
    assert shown["Reviewed"] == f"{100 * deferred.mean():.1f}%"
    assert shown["Clinician reviews"] == f"{deferred.sum():,}"
    accepted = (p["y_pred"] == p["y_true"]).to_numpy()[~deferred]
    assert shown["Right when kept"] == (f"{100 * accepted.mean():.1f}%" if len(accepted) else "n/a")
    assert at.query_params["threshold"] in (f"{threshold:.3f}", [f"{threshold:.3f}"])  # a shared link keeps it


def test_deferral_page_saves_a_named_policy(env):
    at = open_page("3_Deferral.py", env["store"], env["run_id"], model="late_fusion").run()
    at.slider(key="deferral.threshold").set_value(0.4).run()
    at.text_input(key="deferral.name").input("meeting 2026-11-28")
    at.button[0].click().run()  # the form's submit button
    assert not at.exception
    with TriageStore(env["store"], read_only=True) as store:
        saved = store.read_table("policies", env["run_id"], policy="meeting 2026-11-28")
    assert set(saved["split"]) == {"val", "calib", "test"} and np.allclose(saved["threshold"], 0.4)
    from trainer.commands.posthoc import posthoc

    posthoc(env["store"], env["run_id"], log=lambda m: None)  # a re-fit keeps what the team saved
    with TriageStore(env["store"], read_only=True) as store:
        assert len(store.read_table("policies", env["run_id"], policy="meeting 2026-11-28")) == len(saved)


def _stored_policy(env, policy: str, split: str, model: str = "late_fusion"):
    with TriageStore(env["store"], read_only=True) as store:
        rows = store.read_table("policies", env["run_id"], model=model, policy=policy, split=split)
    return rows[rows.slice == "overall"].iloc[0]


@pytest.mark.parametrize("policy", ["equal_group_accuracy", "urgent_sensitivity"])
def test_a_picked_policy_shows_what_the_policy_table_says_group_thresholds_included(env, policy):
    at = open_page("3_Deferral.py", env["store"], env["run_id"], model="late_fusion", split="test").run()
    at.selectbox(key="deferral.policy").set_value(policy).run()
    assert not at.exception
    stored = _stored_policy(env, policy, "test")
    shown = {x.label: x.value for x in at.metric}
    assert shown["Reviewed"] == f"{100 * stored['defer_rate']:.1f}%"  # per-group thresholds applied, as fitted
    assert shown["Right when kept"] == f"{100 * stored['accepted_accuracy']:.1f}%"
    at.slider(key="deferral.threshold").set_value(0.9).run()  # a move leaves the policy
    assert at.selectbox(key="deferral.policy").value == "(keep the slider)" and not at.info


def test_deferral_page_says_per_100_referrals_what_the_predictions_say(env):
    p = env["preds"]
    p = p[(p.model == "late_fusion") & (p.split == "test")]
    scores = p["defer_score"].to_numpy()
    threshold = float(np.ceil(np.median(scores[scores < 1]) * 200) / 200)  # on the slider's 0.005 grid
    deferred = scores >= threshold
    assert 0 < deferred.mean() < 1  # a threshold that both defers and keeps
    at = open_page("3_Deferral.py", env["store"], env["run_id"], model="late_fusion", split="test").run()
    at.slider(key="deferral.threshold").set_value(threshold).run()
    wrong = (p["y_pred"] != p["y_true"]).to_numpy()
    urgent = p["y_true"].isin(["emergency", "urgent_cancer"]).to_numpy()
    missed = urgent & ~p["y_pred"].isin(["emergency", "urgent_cancer"]).to_numpy() & ~deferred
    n = len(p)
    words = (f"Of 100 referrals, {100 * deferred.mean():.0f} go to a clinician; of the {100 * (~deferred).mean():.0f}"
             f" decided automatically, {100 * (wrong & ~deferred).sum() / n:.0f} are wrong; of "
             f"{100 * urgent.mean():.0f} urgent patients, {100 * missed.sum() / n:.0f} are called non-urgent and not "
             "reviewed.")
    assert words in [m.value for m in at.markdown]
    hours = [m.value for m in at.markdown if "clinician hours a day" in m.value][0]
    assert f"**{100 * deferred.mean() * 5 / 60:.1f} clinician hours a day**" in hours  # 100 a day, 5 minutes each


def test_each_stored_policy_shows_its_promise_beside_its_result(env):
    at = open_page("3_Deferral.py", env["store"], env["run_id"], model="late_fusion", split="test").run()
    promises = next(d.value for d in at.dataframe if "promise" in d.value.columns).set_index("policy")
    for policy in ("review_budget", "target_accuracy", "urgent_sensitivity"):
        stored = _stored_policy(env, policy, "test")
        # rates are shown as percentages: the table holds them x 100
        assert promises.loc[policy, "reviewed"] == pytest.approx(100 * stored["defer_rate"])
        assert promises.loc[policy, "urgent missed"] == pytest.approx(100 * stored["missed_urgent_rate"], nan_ok=True)
    budget = _stored_policy(env, "review_budget", "test")
    assert promises.loc["review_budget", "promise"] == "review at most 20.0%"
    assert promises.loc["review_budget", "promise held"] == ("kept" if budget["defer_rate"] <= 0.2 else "broken")


def test_an_empty_name_is_refused_and_a_saved_policy_can_be_deleted(env):
    at = open_page("3_Deferral.py", env["store"], env["run_id"], model="late_fusion").run()
    at.button[0].click().run()  # save with no name
    assert "Give the policy a name first." in [e.value for e in at.error]
    at.text_input(key="deferral.name").input("to delete")
    at.button[0].click().run()
    at = open_page("3_Deferral.py", env["store"], env["run_id"], model="late_fusion").run()
    assert "to delete (saved)" in at.selectbox(key="deferral.policy").options
    at.selectbox(key="deferral.delete_name").set_value("to delete")
    at.button[1].click().run()
    assert not at.exception
    with TriageStore(env["store"], read_only=True) as store:
        assert store.read_table("policies", env["run_id"], policy="to delete").empty


def test_home_says_per_100_referrals_what_the_chosen_model_does_at_the_default_policy(env):
    home = AppTest.from_file(str(PAGES.parent / "Home.py"), default_timeout=120)
    home.query_params["run"] = env["run_id"]
    home.run()
    m = env["metrics"]
    val = m[(m.split == "val") & (m.slice == "overall") & (m.metric == "macro_f1")]
    chosen = val.sort_values(["value", "model"], ascending=[False, True])["model"].iloc[0]
    stored = _stored_policy(env, "review_budget", "test", model=chosen)
    p = env["preds"]
    p = p[(p.model == chosen) & (p.split == "test")]
    deferred = p["defer_score"].to_numpy() >= stored["threshold"]
    assert deferred.mean() == pytest.approx(stored["defer_rate"])  # the stored policy, replayed
    text = next(x.value for x in home.markdown if x.value.startswith("**In plain numbers**"))
    assert f"{chosen} at its default policy (review_budget)" in text.replace("\\", "")  # Markdown escapes
    assert f"Of 100 referrals, {100 * deferred.mean():.0f} go to a clinician" in text


def test_slices_page_table_matches_the_store(env):
    at = open_page("4_Slices.py", env["store"], env["run_id"], model="image_only", split="test",
               slice="fitzpatrick_group", metric="accuracy").run()
    assert not at.exception
    shown = at.dataframe[0].value.set_index("group")["value"]
    m = env["metrics"]
    stored = m[(m.model == "image_only") & (m.split == "test") & (m.slice == "fitzpatrick_group") &
               (m.metric == "accuracy")].set_index("slice_value")["value"]
    np.testing.assert_allclose(shown.sort_index(), 100 * stored.sort_index())  # shown as percentages


def test_cases_page_shows_the_cases_note_as_text(env, quick_run):
    at = open_page("5_Cases.py", env["store"], env["run_id"], model="text_only", split="test").run()
    assert not at.exception
    case_id = param(at, "case")
    cases = quick_run["cases"].set_index("case_id")
    assert at.text[0].value == (cases.loc[case_id, "note"] or "(no note)")  # st.text: plain text, never Markdown


def test_reliability_page_shows_the_stored_ece(env):
    at = open_page("2_Reliability.py", env["store"], env["run_id"], model="cross_attention", split="test",
               by="fitzpatrick_group").run()
    assert not at.exception
    table = at.dataframe[0].value
    m = env["metrics"]
    stored = m[(m.model == "cross_attention") & (m.split == "test") & (m.slice == "fitzpatrick_group") &
               (m.metric == "ece")].set_index("slice_value")["value"]
    for group, value in stored.items():
        assert table.loc[group, "calibration error (ECE)"].startswith(f"{value:.3f}")


def test_home_headline_and_handoff_tables_match_the_store(env):
    m = env["metrics"]
    f1 = m[(m.split == "test") & (m.slice == "overall") & (m.metric == "macro_f1")].set_index("model")["value"]
    home = AppTest.from_file(str(PAGES.parent / "Home.py"), default_timeout=120)
    home.query_params["run"] = env["run_id"]
    home.run()
    assert not home.exception
    headline = home.table[-1].value
    handoff = open_page("6_Handoff.py", env["store"], env["run_id"]).run()
    assert not handoff.exception
    first = handoff.dataframe[0].value.set_index("model")
    for model, value in f1.items():
        assert headline.loc[model, "macro F1"].startswith(f"{value:.3f}")
        assert first.loc[model, "macro F1"].startswith(f"{value:.3f}")


def test_cases_page_shows_the_stored_defer_score(env):
    at = open_page("5_Cases.py", env["store"], env["run_id"], model="late_fusion", split="test").run()
    assert not at.exception
    case_id = param(at, "case")
    p = env["preds"]
    score = p[(p.model == "late_fusion") & (p.case_id == case_id)]["defer_score"].iloc[0]
    assert any(f"deferral score **{score:.3f}**" in md.value for md in at.markdown)


def test_handoff_page_builds_the_document(env):
    at = open_page("6_Handoff.py", env["store"], env["run_id"]).run()
    at.button(key="handoff.build").click().run()
    assert not at.exception
    pdf = at.session_state["handoff.files"]["files"]["handoff.pdf"]
    pages = len(re.findall(rb"/Type\s*/Page\b", pdf))
    assert pdf.startswith(b"%PDF") and at.success[0].value.startswith(f"{pages} pages, ")
    assert [b.label for b in at.get("download_button")][-2:] == ["Download handoff.pdf", "Download handoff.md"]
