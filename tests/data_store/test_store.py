import json

import pandas as pd
import pytest

from data_store.store import SCHEMA_VERSION, StoreError, TriageStore


def _rows():
    cases = pd.DataFrame({
        "case_id": ["a", "b"], "patient_id": ["p1", "p2"], "clinic": ["x", "y"],
        "image_path": ["/i/a.jpg", "/i/b.jpg"], "image_sha256": ["0" * 64, "1" * 64],
        "note": ["Red, itchy.", ""], "label": ["k1", "k2"], "fitzpatrick": pd.array([3, None], dtype="Int8"),
        "flags": [[], ["empty_note", "fitzpatrick_unknown"]], "extra": [json.dumps({"age": 4}), "{}"]})
    rejected = pd.DataFrame({"source_row": [3], "case_id": ["c"], "reason": ["label_missing"],
                             "detail": ["label is empty."]})
    info = {"dataset": "d", "manifest_path": "/m.csv", "image_root": "/i", "classes": ["k1", "k2"],
            "urgent_classes": ["k2"], "heldout_clinic": "y", "simulated": False, "fingerprint": "f"}
    return info, cases, rejected


def test_round_trip(tmp_path):
    info, cases, rejected = _rows()
    with TriageStore(tmp_path / "s.duckdb") as store:
        store.replace_dataset(info, cases, rejected)
    with TriageStore(tmp_path / "s.duckdb", read_only=True) as store:
        assert store.schema_version() == SCHEMA_VERSION
        got = store.read_cases("d")
        assert got["case_id"].tolist() == ["a", "b"]
        assert got["note"].tolist() == ["Red, itchy.", ""]
        assert got["fitzpatrick"].iloc[0] == 3 and pd.isna(got["fitzpatrick"].iloc[1])
        assert [list(f) for f in got["flags"]] == [[], ["empty_note", "fitzpatrick_unknown"]]
        assert json.loads(got["extra"].iloc[0]) == {"age": 4}
        d = store.read_dataset("d")
        assert (d["n_cases"], d["n_rejected"], list(d["classes"]), d["heldout_clinic"]) == (2, 1, ["k1", "k2"], "y")
        assert store.count_cases("d", "clinic")["n"].tolist() == [1, 1]
        assert store.count_rejected("d").to_dict("records") == [{"reason": "label_missing", "n": 1}]


def test_replace_is_whole(tmp_path):
    info, cases, rejected = _rows()
    with TriageStore(tmp_path / "s.duckdb") as store:
        store.replace_dataset(info, cases, rejected)
        store.replace_dataset({**info, "fingerprint": "g"}, cases.head(1), rejected.head(0))
        assert len(store.read_cases("d")) == 1 and store.read_rejected("d").empty
        assert store.dataset_fingerprint("d") == "g"


def test_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="No store at"):
        TriageStore(tmp_path / "missing.duckdb", read_only=True)
    with TriageStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(StoreError, match="No dataset named 'nope'"):
            store.read_dataset("nope")
        with pytest.raises(ValueError, match="by must be one of"):
            store.count_cases("d", "note; DROP TABLE cases")


def test_a_running_run_whose_process_died_reads_as_interrupted(tmp_path):
    from data_store.runlock import RunLock

    db, folder = tmp_path / "s.duckdb", tmp_path / "runs" / "r1"
    with TriageStore(db) as store, RunLock(folder):
        store.start_run("r1", "d", "{}", ["a", "b"], "x", str(folder))
        assert store.read_run("r1")["status"] == "running"  # the lock is held: alive
    with TriageStore(db) as store:  # lock released, as the kernel does when a process dies
        assert store.read_run("r1")["status"] == "interrupted"
        assert "killed" in store.list_runs().set_index("run_id").loc["r1", "error"]
        store.start_run("r2", "d", "{}", ["a", "b"], "x", str(tmp_path / "runs" / "r2"))  # persists r1's state
        raw = store.con.execute("SELECT status FROM runs WHERE run_id = 'r1'").fetchone()[0]
    assert raw == "interrupted"


@pytest.mark.parametrize("text, hint", [
    ("IO Error: Could not write file \"x.wal\": No space left on device", "the disk is full"),
    ("[Errno 28] No space left on device: 'data/runs/r/model.safetensors'", "the disk is full"),
    ("IO Error: Cannot open file \"s.duckdb\": Read-only file system", "read-only"),
    ("[Errno 13] Permission denied: 'data/report'", "read-only"),
])
def test_full_disk_and_read_only_errors_say_what_to_do(text, hint):
    from data_store.errors import cli_message

    assert hint in cli_message(OSError(text))
    assert cli_message(ValueError("label is empty.")) == "label is empty."


def test_identifiers_with_sql_in_them_are_data_not_code(tmp_path):
    info, cases, rejected = _rows()
    evil = "d'; DROP TABLE cases; --"
    info = {**info, "dataset": evil}
    cases = cases.assign(case_id=["a' OR '1'='1", "b\"); DELETE FROM runs; --"])
    with TriageStore(tmp_path / "s.duckdb") as store:
        store.replace_dataset(info, cases, rejected)
        got = store.read_cases(evil)
        assert got["case_id"].tolist() == sorted(cases["case_id"])
        assert store.read_case(evil, "a' OR '1'='1")["patient_id"] == "p1"
        with pytest.raises(StoreError, match="No case"):
            store.read_case(evil, "x' OR '1'='1")
        assert len(store.read_cases("d")) == 0 and store.count_cases(evil, "clinic")["n"].sum() == 2
        with pytest.raises(ValueError, match="by must be one of"):
            store.count_cases(evil, "clinic; DROP TABLE cases")
        with pytest.raises(ValueError, match="Cannot filter metrics"):
            store.read_table("metrics", "r", **{"metric = metric OR 1": 1})


def test_a_read_only_store_of_an_older_schema_reads_new_tables_as_empty(tmp_path):
    """The dashboard opens stores read-only, which never adds the tables of a newer schema."""
    db = tmp_path / "old.duckdb"
    with TriageStore(db) as store:
        store.con.execute("DROP TABLE adaptation_curve; DROP TABLE adaptations; DROP TABLE corrections; "
                          "DROP TABLE shift")
    with TriageStore(db, read_only=True) as store:
        for read in (store.read_curve, store.read_adaptations, store.read_corrections, store.read_shift):
            assert read("any-run").empty
    with TriageStore(db) as store:  # the next writer brings it up to date
        assert store.read_curve("any-run").empty and "holds" in store._columns("adaptation_curve")
