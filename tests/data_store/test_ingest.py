"""Every bad input of the foundation issue, each rejected or kept as documented."""
import json
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_store.__main__ import main
from data_store.images import load_rgb
from data_store.ingest import ManifestError, ingest, parse_fitzpatrick
from data_store.store import TriageStore

HEADER = ["case_id", "patient_id", "clinic", "image_path", "note", "label", "fitzpatrick", "age"]


def _bomb_png(path, width=60000, height=60000):
    """A tiny valid PNG whose header declares an enormous size."""
    raw = b"\x00\x00\x00\x00"  # one filter byte + one RGB pixel
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture()
def messy(tmp_path):
    """A manifest folder with one row per bad input and the expected outcome of each."""
    root = tmp_path / "export"
    img = root / "img"
    img.mkdir(parents=True)
    rgb = np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(img / "good.jpg")
    for i in range(4):
        Image.fromarray(np.roll(rgb, i + 1, axis=0)).save(img / f"good{i}.png")
    Image.fromarray(rgb[:, :, 0]).save(img / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((24, 24), 128, np.uint8)])).save(img / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(img / "cmyk.jpg")
    Image.fromarray((np.arange(576, dtype=np.uint16).reshape(24, 24) * 100)).save(img / "deep16.png")
    (img / "empty.jpg").write_bytes(b"")
    (img / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    (img / "notes.jpg").write_text("this is a text file, not a photo")
    good = (img / "good.jpg").read_bytes()
    (img / "truncated.jpg").write_bytes(good[: len(good) // 2])
    _bomb_png(img / "bomb.png")
    outside = tmp_path / "secret.jpg"
    Image.fromarray(rgb).save(outside)
    (img / "link.jpg").symlink_to(outside)

    # (row fields..., expected): expected is ("accept", flags) or ("reject", reason)
    R = []
    def row(cid, pid, clinic, path, note, label, fitz, expect):
        R.append(([cid, pid, clinic, path, note, label, fitz, "50"], expect))
    row("ok", "p1", "A", "img/good.jpg", "Itchy red patch.", "benign", "2", ("accept", []))
    row("gray", "p2", "A", "img/gray.png", "note", "benign", "III", ("accept", ["image_converted:L"]))
    row("rgba", "p3", "A", "img/rgba.png", "note", "malignant", "type IV", ("accept", ["image_converted:RGBA"]))
    row("cmyk", "p4", "B", "img/cmyk.jpg", "note", "benign", "Fitzpatrick 5", ("accept", ["image_converted:CMYK"]))
    row("deep", "p5", "B", "img/deep16.png", "note", "benign", "VI", ("accept", ["image_converted:I;16"]))
    row("nonote", "p6", "B", "img/good0.png", "", "benign", "1", ("accept", ["empty_note"]))
    row("fitz7", "p7", "B", "img/good1.png", "n", "benign", "7", ("accept", ["fitzpatrick_unparsed:7"]))
    row("fitzblank", "p8", "B", "img/good2.png", "n", "benign", "", ("accept", ["fitzpatrick_unknown"]))
    row("fitztext", "p9", "B", "img/good3.png", "n", "BENIGN ", "purple", ("accept", ["fitzpatrick_unparsed:purple"]))
    row("missing", "p10", "A", "img/nope.jpg", "n", "benign", "2", ("reject", "image_missing"))
    row("zero", "p11", "A", "img/empty.jpg", "n", "benign", "2", ("reject", "image_empty"))
    row("corrupt", "p12", "A", "img/corrupt.jpg", "n", "benign", "2", ("reject", "image_unreadable"))
    row("textfile", "p13", "A", "img/notes.jpg", "n", "benign", "2", ("reject", "image_unreadable"))
    row("trunc", "p14", "A", "img/truncated.jpg", "n", "benign", "2", ("reject", "image_corrupt"))
    row("bomb", "p15", "A", "img/bomb.png", "n", "benign", "2", ("reject", "image_too_many_pixels"))
    row("dotdot", "p16", "A", "../secret.jpg", "n", "benign", "2", ("reject", "image_outside_root"))
    row("abs", "p17", "A", str(outside), "n", "benign", "2", ("reject", "image_outside_root"))
    row("symlink", "p18", "A", "img/link.jpg", "n", "benign", "2", ("reject", "image_outside_root"))
    row("long", "p19", "A", "img/good.jpg", "x" * 100_000, "benign", "2", ("reject", "note_too_long"))
    row("unknownlabel", "p20", "A", "img/good.jpg", "n", "unsure", "2", ("reject", "label_unknown"))
    row("nolabel", "p21", "A", "img/good.jpg", "n", "", "2", ("reject", "label_missing"))
    row("ok", "p22", "A", "img/good0.png", "n", "benign", "2", ("reject", "duplicate_case_id"))
    row("twin1", "p23", "C", "img/good1.png", "n", "benign", "2", ("reject", "label_conflict"))
    row("twin2", "p23", "C", "img/good1.png", "n", "malignant", "2", ("reject", "label_conflict"))
    row("nopatient", "", "C", "img/good.jpg", "n", "benign", "2", ("reject", "patient_id_missing"))
    row("noclinic", "p25", "", "img/good.jpg", "n", "benign", "2", ("reject", "clinic_missing"))
    row("multiline", "p26", "C", "img/good2.png", 'Line one,\r\nline "two".', "malignant", "4", ("accept", []))
    row("badutf8", "p27", "C", "img/good.jpg", "@@BAD@@", "benign", "2", ("reject", "note_invalid_utf8"))

    def cell(v):
        return '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\r\n') else v
    lines = [",".join(HEADER)] + [",".join(cell(v) for v in fields) for fields, _ in R]
    data = ("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8").replace(b"@@BAD@@", b"caf\xe9 \xff")
    (root / "manifest.csv").write_bytes(data)
    (root / "dataset.json").write_text(json.dumps({"classes": ["benign", "malignant"],
                                                   "urgent_classes": ["malignant"], "heldout_clinic": "C"}))
    return root / "manifest.csv", R


def test_every_bad_input_is_rejected_or_kept_as_documented(messy, tmp_path):
    manifest, rows = messy
    with TriageStore(tmp_path / "t.duckdb") as store:
        result = ingest(store, "messy", manifest)
        cases = store.read_cases("messy").set_index("case_id")
        rejected = store.read_rejected("messy")
        info = store.read_dataset("messy")
    assert result.n_cases + result.n_rejected == len(rows)  # nothing dropped silently
    for i, (fields, (outcome, what)) in enumerate(rows, start=1):
        got = rejected[rejected["source_row"] == i]
        if outcome == "accept":
            assert got.empty, (fields[0], got)
            assert sorted(cases.loc[fields[0], "flags"]) == sorted(what), fields[0]
        else:
            assert got["reason"].tolist() == [what], (fields[0], got)
            assert got["detail"].iloc[0]  # a sentence a person can read
    assert result.n_cases == sum(1 for _, (o, _) in rows if o == "accept")
    assert cases.loc["fitztext", "label"] == "benign"  # trailing space and case folded
    assert cases.loc["multiline", "note"] == 'Line one,\r\nline "two".'
    assert cases.loc["gray", "fitzpatrick"] == 3 and cases.loc["rgba", "fitzpatrick"] == 4
    assert cases.loc["cmyk", "fitzpatrick"] == 5 and pd.isna(cases.loc["fitz7", "fitzpatrick"])
    assert json.loads(cases.loc["ok", "extra"]) == {"age": 50}
    assert list(info["classes"]) == ["benign", "malignant"] and info["heldout_clinic"] == "C"
    for cid in ("gray", "rgba", "cmyk", "deep"):
        arr = load_rgb(cases.loc[cid, "image_path"])
        assert arr.shape == (24, 24, 3) and arr.dtype == np.uint8
    deep = load_rgb(cases.loc["deep", "image_path"])
    assert 0 < deep.max() <= 255 and deep.std() > 1  # scaled, not clipped to white


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


def test_unusable_file_or_column_exits_non_zero(tmp_path, capsys, synth_dir):
    db = str(tmp_path / "x.duckdb")
    assert main(["ingest", "--db", db, "--dataset", "x", "--manifest", str(tmp_path / "none.csv")]) == 2
    assert "Manifest not found" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,image_path,note\n1,a.jpg,hi\n")
    assert main(["ingest", "--db", db, "--dataset", "x", "--manifest", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "lacks required column(s) ['patient_id', 'clinic', 'label']" in err
    odd = tmp_path / "m.xlsx"
    odd.write_text("x")
    assert main(["ingest", "--db", db, "--dataset", "x", "--manifest", str(odd)]) == 2
    assert "Unsupported manifest type" in capsys.readouterr().err
    with pytest.raises(ManifestError, match="no data rows"):
        (tmp_path / "empty.csv").write_text(",".join(HEADER[:-1]) + "\n")
        with TriageStore(db) as store:
            ingest(store, "x", tmp_path / "empty.csv")


def test_cli_prints_counts_by_reason(messy, tmp_path, capsys):
    manifest, rows = messy
    assert main(["ingest", "--db", str(tmp_path / "c.duckdb"), "--dataset", "m", "--manifest", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "accepted: 10" in out and f"rejected: {len(rows) - 10}" in out
    assert "image_outside_root: 3" in out and "label_conflict: 2" in out
