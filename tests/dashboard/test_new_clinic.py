"""The New clinic page (AppTest) on a copy of the quick run's store with an adapted variant:
its shift verdict, promise table and before/after table equal the store's; the other pages
show the variant like any model."""
import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from data_store.store import TriageStore
from trainer.commands.adapt import adapt
from trainer.evaluation.adaptation import smallest_k

PAGES = Path(__file__).resolve().parents[2] / "dashboard" / "pages"


@pytest.fixture(scope="module")
def adapted(quick_run, synth_store, tmp_path_factory):
    db = tmp_path_factory.mktemp("new_clinic") / "triage.duckdb"
    shutil.copy(synth_store, db)
    variant, _ = adapt(db, quick_run["run_id"], "clinic_7", 10, log=lambda m: None)
    with TriageStore(db, read_only=True) as store:
        data = {"shift": store.read_shift(quick_run["run_id"]), "curve": store.read_curve(quick_run["run_id"]),
                "adaptations": store.read_adaptations(quick_run["run_id"]),
                "policies": store.read_table("policies", quick_run["run_id"], model=variant, split="test")}
    return {"db": db, "run_id": quick_run["run_id"], "variant": variant, **data}


def _page(name: str, adapted, monkeypatch, **params) -> AppTest:
    monkeypatch.setenv("TRIAGE_DB", str(adapted["db"]))
    at = AppTest.from_file(str(PAGES / name), default_timeout=120)
    at.query_params["run"] = adapted["run_id"]
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_new_clinic_page_shows_the_stored_report_curve_and_variant(adapted, monkeypatch):
    at = _page("7_New_clinic.py", adapted, monkeypatch)
    assert not at.exception, at.exception
    verdict = adapted["shift"].query("metric == 'verdict'")["detail"].iloc[0]
    shown = [m.value for m in (*at.warning, *at.success) if not m.value.startswith("Simulated data")]
    assert len(shown) == 1 and shown[0].replace("\\", "") == verdict
    report, promises, before_after = (t.value for t in at.dataframe[:3])
    assert len(report) == len(adapted["shift"]) - 1  # every figure but the verdict
    curve = adapted["curve"]
    ece = promises[promises["promise"].str.contains("ECE")].iloc[0]
    zero = curve[(curve["k"] == 0) & (curve["metric"] == "defer_ece")]["value"].iloc[0]
    assert ece["without local labels"] == f"{zero:.3f}"
    first = smallest_k(curve)["defer_ece"]
    assert ece["labels needed"] == ("not reached by k = 400" if first != first else str(int(first)))
    row = before_after[(before_after["policy"] == "review_budget") & (before_after["skin tone"] == "all")].iloc[0]
    stored = adapted["policies"].query("policy == 'review_budget' and slice == 'overall'").iloc[0]
    assert row["defer_rate after"] == pytest.approx(stored["defer_rate"], abs=5e-4)  # shown to 3 decimals
    base = json.loads(adapted["adaptations"]["baseline"].iloc[0])["policies"]
    before = next(r for r in base if r["policy"] == "review_budget" and r["slice"] == "overall")
    assert row["defer_rate before"] == pytest.approx(before["defer_rate"], abs=5e-4)
    assert before["n"] == stored["n"]  # the same cases: the clinic's, less the 10 used to adapt


@pytest.mark.parametrize("page", ["1_Models.py", "2_Reliability.py", "3_Deferral.py", "4_Slices.py", "5_Cases.py"])
def test_other_pages_show_the_variant_like_any_model(adapted, monkeypatch, page):
    at = _page(page, adapted, monkeypatch, model=adapted["variant"], split="test")
    assert not at.exception, at.exception
    assert adapted["variant"] in at.selectbox(key="model").options


def test_new_clinic_page_without_reports_says_how_to_make_them(quick_run, synth_store, tmp_path, monkeypatch):
    db = tmp_path / "triage.duckdb"
    shutil.copy(synth_store, db)
    with TriageStore(db) as store:
        store.con.execute("DELETE FROM shift; DELETE FROM adaptation_curve")
    monkeypatch.setenv("TRIAGE_DB", str(db))
    at = AppTest.from_file(str(PAGES / "7_New_clinic.py"), default_timeout=60)
    at.query_params["run"] = quick_run["run_id"]
    at.run()
    assert not at.exception and "adapt" in at.info[0].value
