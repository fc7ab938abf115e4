"""Every bad input of the foundation issue, each rejected or kept as documented."""
import io
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_store.__main__ import main
from data_store.images import load_rgb
from data_store.ingest import ingest, parse_fitzpatrick
from data_store.store import TriageStore
from tests.bad_inputs.corpus import build_rows, unusable_files, write_manifest

ROOT = Path(__file__).resolve().parents[2]

CLASSES = {"classes": ["benign", "malignant"], "urgent_classes": ["malignant"], "heldout_clinic": "C"}


@pytest.fixture()
def messy(tmp_path):
    """The bad-input corpus (tests/bad_inputs) as one manifest, and its rows."""
    root = tmp_path / "export"
    rows = build_rows(root)
    write_manifest(root / "manifest.csv", rows)
    (root / "dataset.json").write_text(json.dumps(CLASSES))
    return root / "manifest.csv", rows


def test_every_bad_input_is_rejected_or_kept_as_documented(messy, tmp_path):
    manifest, rows = messy
    assert len({r.kind for r in rows}) >= 50
    with TriageStore(tmp_path / "t.duckdb") as store:
        result = ingest(store, "messy", manifest)
        cases = store.read_cases("messy").set_index("case_id")
        rejected = store.read_rejected("messy")
        info = store.read_dataset("messy")
    assert result.n_cases + result.n_rejected == len(rows)  # nothing dropped silently
    for i, r in enumerate(rows, start=1):
        got = rejected[rejected["source_row"] == i]
        outcome, what = r.expect
        if outcome == "accept":
            assert got.empty, (r.kind, got.to_dict("records"))
            assert sorted(cases.loc[r.case_id, "flags"]) == sorted(what), r.kind
            assert cases.loc[r.case_id, "note"] == r.fields[4].strip(), r.kind  # the good row, intact
            assert cases.loc[r.case_id, "patient_id"] == r.fields[1], r.kind
        else:
            assert got["reason"].tolist() == [what], (r.kind, got.to_dict("records"))
            assert len(got["detail"].iloc[0]) > 10  # a sentence a person can read
    assert result.n_cases == sum(1 for r in rows if r.expect[0] == "accept")
    assert cases.loc["bi-labelspace", "label"] == "benign" and cases.loc["bi-labelcase", "label"] == "malignant"
    assert cases.loc["bi-gray", "fitzpatrick"] == 3 and cases.loc["bi-rgba", "fitzpatrick"] == 4
    assert cases.loc["bi-cmyk", "fitzpatrick"] == 5 and pd.isna(cases.loc["bi-fitznan", "fitzpatrick"])
    assert json.loads(cases.loc["bi-ok", "extra"]) == {"age": 50}
    assert json.loads(cases.loc["bi-agenan", "extra"]) == {"age": None}
    assert json.loads(cases.loc["bi-ageinf", "extra"]) == {"age": None}
    assert set(cases["clinic"]) == {"A", "B", "C"}  # the look-alike spellings made no new clinic
    assert list(info["classes"]) == ["benign", "malignant"] and info["heldout_clinic"] == "C"
    for cid in ("bi-gray", "bi-rgba", "bi-cmyk", "bi-deep", "bi-gif", "bi-anim", "bi-pixel"):
        arr = load_rgb(cases.loc[cid, "image_path"], 32)
        assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    deep = load_rgb(cases.loc["bi-deep", "image_path"])
    assert 0 < deep.max() <= 255 and deep.std() > 1  # scaled, not clipped to white
    look = rejected[rejected.reason == "clinic_lookalike"]["detail"].tolist()
    assert len(look) == 3 and all("looks like 'A'" in d for d in look)
    assert any("U+0410 CYRILLIC CAPITAL LETTER A" in d for d in look)


def test_inferred_classes_fold_case_and_refuse_look_alikes(messy, tmp_path):
    manifest, rows = messy
    (manifest.parent / "dataset.json").unlink()  # no declared classes: the labels define them
    with TriageStore(tmp_path / "t.duckdb") as store:
        result = ingest(store, "messy", manifest)
        rejected = store.read_rejected("messy").set_index("case_id")
    assert result.classes == ["benign", "malignant", "unsure"]  # not also "MALIGNANT" or a Cyrillic "benign"
    assert rejected.loc["bi-labellook", "reason"] == "label_lookalike"


def test_unusable_manifest_files_are_refused_with_a_reason(tmp_path, capsys):
    files = unusable_files(tmp_path / "files")
    assert len(files) >= 10
    for kind, path, pattern in files:
        db = tmp_path / f"{path.stem}.duckdb"
        assert main(["ingest", "--db", str(db), "--dataset", "x", "--manifest", str(path)]) == 2, kind
        err = capsys.readouterr().err
        assert re.search(pattern, err) and "Traceback" not in err, (kind, err)
        with TriageStore(db, read_only=True) as store:
            assert store.list_datasets().empty, kind  # nothing written


# Runs the data_store CLI and prints this process's peak resident memory (MiB) last.
_PEAK_RSS = """
import runpy, sys
from trainer.timings import peak_rss_mb
sys.argv = ["data_store", *sys.argv[1:]]
try:
    runpy.run_module("data_store", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    assert not exc.code, exc.code
print(peak_rss_mb())
"""


def test_a_one_gib_manifest_line_is_skipped_without_reading_it(synth_dir, tmp_path):
    """The 1 GiB row is rejected as row_too_long; every other row is kept; the ingest never holds it in memory."""
    good = pd.read_csv(synth_dir / "manifest.csv", dtype=str, keep_default_na=False).head(30)
    good["image_path"] = [str(synth_dir / p) for p in good["image_path"]]
    manifest = tmp_path / "huge.csv"
    try:
        with open(manifest, "w", newline="") as f:
            good.head(10).to_csv(f, index=False)
            f.write("huge,p,clinic_1,x.jpg,")
            block = "z" * (1 << 20)
            for _ in range(1024):
                f.write(block)
            f.write(",cat,2\n")
            good.iloc[10:].to_csv(f, index=False, header=False)
        assert manifest.stat().st_size > 1 << 30
        args = ["ingest", "--db", str(tmp_path / "h.duckdb"), "--dataset", "h", "--manifest", str(manifest),
                "--image-root", str(synth_dir)]
        proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
    finally:
        manifest.unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stderr
    assert "accepted: 30" in proc.stdout and "row_too_long: 1" in proc.stdout
    peak_mb = float(proc.stdout.strip().splitlines()[-1])
    assert peak_mb < 600  # well under the line's 1 GiB: it is never held in memory
    with TriageStore(tmp_path / "h.duckdb", read_only=True) as store:
        assert store.read_rejected("h")[["source_row", "reason"]].values.tolist() == [[11, "row_too_long"]]
        assert sorted(store.read_cases("h")["case_id"]) == sorted(good["case_id"])


@pytest.mark.parametrize("raw, expected", [
    ("1", 1), ("6", 6), ("IV", 4), ("iv", 4), ("type V", 5), ("Fitzpatrick II", 2), ("FST 3", 3), ("3.0", 3),
    ("0", None), ("7", None), ("", None), ("  ", None), ("VII", None), ("brown", None)])
def test_parse_fitzpatrick(raw, expected):
    assert parse_fitzpatrick(raw)[0] == expected


def test_reingest_changes_nothing(synth_dir, tmp_path):
    db = tmp_path / "r.duckdb"
    with TriageStore(db) as store:
        first = ingest(store, "d", synth_dir / "manifest.csv")
        before = store.read_dataset("d")
        second = ingest(store, "d", synth_dir / "manifest.csv")
        after = store.read_dataset("d")
    assert first.changed and not second.changed
    assert before["ingested_at"] == after["ingested_at"] and before["fingerprint"] == after["fingerprint"]


class _DiesMidWrite:
    """Wraps a connection; dies once the cases are deleted and re-inserted, before COMMIT."""

    def __init__(self, con, die):
        self._con, self._die = con, die

    def register(self, name, df):
        if name == "new_rejected":
            self._die()
        return self._con.register(name, df)

    def __getattr__(self, name):
        return getattr(self._con, name)


def _small_manifest(synth_dir, tmp_path):
    m = pd.read_csv(synth_dir / "manifest.csv", keep_default_na=False).head(50)
    m["image_path"] = [str(synth_dir / p) for p in m["image_path"]]
    m.to_csv(tmp_path / "small.csv", index=False)
    return tmp_path / "small.csv"


def test_interrupted_write_leaves_store_as_it_was(synth_dir, tmp_path):
    db = tmp_path / "f.duckdb"
    with TriageStore(db) as store:
        ingest(store, "d", synth_dir / "manifest.csv")
        n_before, fingerprint = len(store.read_cases("d")), store.dataset_fingerprint("d")

        def interrupt():
            raise KeyboardInterrupt("interrupted mid-write")
        store.con = _DiesMidWrite(store.con, interrupt)
        with pytest.raises(KeyboardInterrupt):
            ingest(store, "d", _small_manifest(synth_dir, tmp_path), image_root=synth_dir)
    with TriageStore(db, read_only=True) as store:
        assert len(store.read_cases("d")) == n_before and store.dataset_fingerprint("d") == fingerprint


def test_sigkill_mid_write_leaves_store_as_it_was(synth_dir, tmp_path):
    db = tmp_path / "k.duckdb"
    with TriageStore(db) as store:
        ingest(store, "d", synth_dir / "manifest.csv")
        n_before, fingerprint = len(store.read_cases("d")), store.dataset_fingerprint("d")
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from pathlib import Path
from data_store.ingest import ingest
from data_store.store import TriageStore
from test_ingest import _DiesMidWrite
store = TriageStore({str(db)!r})
store.con = _DiesMidWrite(store.con, lambda: os.kill(os.getpid(), signal.SIGKILL))
ingest(store, "d", Path({str(_small_manifest(synth_dir, tmp_path))!r}), image_root=Path({str(synth_dir)!r}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with TriageStore(db) as store:  # the next command works
        assert len(store.read_cases("d")) == n_before and store.dataset_fingerprint("d") == fingerprint


def test_sigkill_while_checking_images_then_the_next_ingest_works(synth_dir, tmp_path):
    db, small = tmp_path / "v.duckdb", _small_manifest(synth_dir, tmp_path)
    with TriageStore(db) as store:
        ingest(store, "d", synth_dir / "manifest.csv")
        n_before = len(store.read_cases("d"))
    script = """
import os, signal, sys
import data_store.ingest as ingest
from data_store.__main__ import main
calls, check = [], ingest._image_check
def dying(raw, root):
    calls.append(raw)
    if len(calls) == 10:
        os.kill(os.getpid(), signal.SIGKILL)
    return check(raw, root)
ingest._image_check = dying
sys.exit(main(sys.argv[1:]))
"""
    args = ["ingest", "--db", str(db), "--dataset", "small", "--manifest", str(small), "--image-root", str(synth_dir)]
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with TriageStore(db, read_only=True) as store:
        assert len(store.read_cases("d")) == n_before and "small" not in set(store.list_datasets()["dataset"])
    assert main(args) == 0  # the next command works
    with TriageStore(db, read_only=True) as store:
        assert len(store.read_cases("small")) == 50


def test_parquet_jsonl_and_mapping(tmp_path, synth_dir):
    m = pd.read_csv(synth_dir / "manifest.csv", keep_default_na=False).head(40)
    m = m.rename(columns={"note": "referral_text", "label": "dx", "fitzpatrick": "skin_type"})
    m["dx"] = m["dx"].map({"emergency": "E", "urgent_cancer": "U", "routine_referral": "R", "primary_care": "P"})
    mapping = tmp_path / "map.yaml"
    mapping.write_text("columns: {referral_text: note, dx: label}\n"
                       "labels: {E: emergency, U: urgent_cancer, R: routine_referral, P: primary_care}\n"
                       "classes: [emergency, urgent_cancer, routine_referral, primary_care]\n")
    m.to_parquet(tmp_path / "m.parquet")
    m.to_json(tmp_path / "m.jsonl", orient="records", lines=True)
    with TriageStore(tmp_path / "p.duckdb") as store:
        for name, file in (("pq", "m.parquet"), ("js", "m.jsonl")):
            result = ingest(store, name, tmp_path / file, mapping, image_root=synth_dir)
            assert result.n_cases == 40 and result.n_rejected == 0
            cases = store.read_cases(name)
            assert set(cases["label"]) <= {"emergency", "urgent_cancer", "routine_referral", "primary_care"}
            assert cases["fitzpatrick"].notna().all()
        assert store.read_dataset("pq")["classes"].tolist()[0] == "emergency"


def test_cli_prints_counts_by_reason(messy, tmp_path, capsys):
    manifest, rows = messy
    assert main(["ingest", "--db", str(tmp_path / "c.duckdb"), "--dataset", "m", "--manifest", str(manifest)]) == 0
    out = capsys.readouterr().out
    n_ok = sum(1 for r in rows if r.expect[0] == "accept")
    assert f"accepted: {n_ok}" in out and f"rejected: {len(rows) - n_ok}" in out
    assert "image_outside_root: 3" in out and "label_conflict: 2" in out and "clinic_lookalike: 3" in out


def test_rows_are_split_as_pandas_reads_csv(tmp_path):
    """Stray quotes inside unquoted fields, quoted newlines, doubled quotes and blank lines:
    the streaming splitter finds the rows pandas finds, numbered by data row."""
    from data_store.ingest import read_manifest

    text = ('case_id,note\n'
            'a,lesion 2" wide\n'
            '\n'
            'b,"two\nlines, ""quoted"""\n'
            'c,5\'10" patient; plain\n'
            'd,"a long quoted field ' + "x" * 100 + '"\n')
    (tmp_path / "m.csv").write_text(text)
    df, oversized = read_manifest(tmp_path / "m.csv")
    expected = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    assert df["note"].tolist() == expected["note"].tolist() and df["case_id"].tolist() == ["a", "b", "c", "d"]
    assert df.index.tolist() == [1, 2, 3, 4] and oversized == []

