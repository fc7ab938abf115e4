"""Security properties of the whole code base: no pickle anywhere, checkpoints load only
weights, SQL lives in one module, Markdown never renders data, exports carry no notes or paths.

(The dashboard's plain-text rendering of hostile notes in a real browser and its
localhost-only binding are in tests/dashboard/test_browser.py; SQL given as data in
tests/data_store/test_store.py; paths escaping the image root in tests/data_store/test_ingest.py.)
"""
from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data_store", "trainer", "dashboard", "benchmarks")
SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func), {k.arg: ast.unparse(k.value) for k in node.keywords}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pickle_no_eval_and_sql_only_in_the_store(path):
    tree = ast.parse(path.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & UNPICKLERS, imported & UNPICKLERS
    if path.relative_to(ROOT).as_posix() != "data_store/store.py":
        assert "duckdb" not in imported  # every statement is in the store, with bound parameters
    for node, func, kw in _calls(tree):
        assert func not in ("eval", "exec", "torch.save", "pd.read_pickle", "pandas.read_pickle"), func
        assert not func.endswith((".to_pickle", ".read_pickle")), func
        if func == "torch.load" or func.endswith(".torch.load"):
            assert kw.get("weights_only") == "True", f"line {node.lineno}: torch.load without weights_only=True"
        if func in ("np.load", "numpy.load"):
            assert kw.get("allow_pickle", "False") == "False", f"line {node.lineno}: np.load with pickles"
        if path.parts[-2:][0] in ("dashboard", "pages"):
            assert kw.get("unsafe_allow_html", "False") == "False", f"line {node.lineno}: raw HTML in the dashboard"


class _Payload:
    """Unpickling this runs a command: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path: Path, marker: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Payload(marker)}, f)


def test_a_malicious_open_clip_checkpoint_is_refused_without_running(tmp_path):
    from trainer.encoders.image import OpenClipImageEncoder
    from trainer.models.unified import tiny_clip_config

    folder, marker = tmp_path / "tower", tmp_path / "pwned"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": tiny_clip_config(32, 16, 16),
                                                              "preprocess_cfg": {}}))
    _malicious(folder / "open_clip_pytorch_model.bin", marker)
    with pytest.raises(ValueError, match="Cannot load the open_clip image encoder"):
        OpenClipImageEncoder(f"local-dir:{folder}")
    assert not marker.exists()


def test_a_malicious_text_encoder_is_refused_without_running(tmp_path):
    from transformers import BertConfig

    from trainer.encoders.text import TextEncoder, resolve_text_encoder

    folder, marker = tmp_path / "bert", tmp_path / "pwned"
    folder.mkdir()
    BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=16).save_pretrained(folder)
    source = Path(resolve_text_encoder("all-MiniLM-L6-v2"))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).write_bytes((source / name).read_bytes())
    _malicious(folder / "pytorch_model.bin", marker)
    with pytest.raises(ValueError, match="Cannot load the text encoder"):
        TextEncoder(str(folder))
    assert not marker.exists()


def test_our_checkpoints_are_safetensors_and_reload(tmp_path):
    from trainer.models.checkpoints import load_checkpoint, save_checkpoint
    from trainer.models import build_model

    spec = {"name": "text_only", "n_classes": 3, "text_dim": 8, "hidden": 16, "image_encoder": "cnn",
            "image_dim": 8, "embed_dim": 8, "text_encoder": "x"}
    torch.manual_seed(0)
    model = build_model(spec)
    save_checkpoint(tmp_path / "m", model, spec)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.safetensors", "spec.json"]
    with open(tmp_path / "m" / "model.safetensors", "rb") as f:
        header = f.read(16)
    assert header[8:9] == b"{"  # safetensors: an 8-byte length, then a JSON header; no pickle opcodes
    again = load_checkpoint(tmp_path / "m")
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("text, shown", [
    ("**bold**", r"\*\*bold\*\*"),
    ("<img src=x onerror=alert(1)>", r"\<img src\=x onerror\=alert\(1\)\>"),
    ("[a](javascript:x)", r"\[a\]\(javascript\:x\)"),
    (":red[alert] $x$", r"\:red\[alert\] \$x\$"),
    ("line one\n# heading", r"line one \# heading"),
    ("clinic_7", r"clinic\_7"),
])
def test_plain_escapes_every_markdown_construct(text, shown):
    from dashboard.ui import plain

    assert plain(text) == shown


def test_exports_carry_case_ids_never_notes_paths_or_patients(quick_run, synth_store, tmp_path):
    """Everything the report writes: handoff.md is the PDF's content (one document, two renderings),
    and slices/ holds the tables the dashboard offers for download."""
    from trainer.commands.report import write_report

    write_report(synth_store, quick_run["run_id"], tmp_path / "out")
    cases = quick_run["cases"]
    secrets = [n for n in cases["note"] if len(n) > 12] + list(cases["image_path"]) + list(cases["patient_id"])
    texts = {p: p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*") if p.suffix in (".md", ".csv")}
    assert len(texts) > 5
    for path, text in texts.items():
        leaked = [s for s in secrets if s in text]
        assert not leaked, (path.name, leaked[:3])
    for csv in (tmp_path / "out" / "slices").glob("*.csv"):
        assert not {"note", "image_path", "patient_id"} & set(pd.read_csv(csv).columns)
