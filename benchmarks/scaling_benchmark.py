"""Scaling: encoding throughput with one and two processes, and fit's peak memory as the
dataset grows.

    python benchmarks/scaling_benchmark.py encoding [--n 2000] [--repeats 3] [--block-cases 1000]
    python benchmarks/scaling_benchmark.py memory [--sizes 14000,100000] [--cap-gib 8]
    python benchmarks/scaling_benchmark.py ddp [--n 1000]   # a two-process fit against one process
    python benchmarks/scaling_benchmark.py rewrite   # the docs blocks again from the stored results

Both read DermSynth-14k from the docs store (--db, dataset dermsynth) and build their own
datasets in a scratch store under --workdir:

- encoding: ``python -m trainer features`` (the default settings: photos decoded, the
  notes through all-MiniLM-L6-v2, EfficientNet-Lite0 tokens, the LiT tower's pooled
  features) on N cases, once as one process and once under ``torchrun --standalone
  --nproc_per_node 2``, in turn, each on an empty cache; medians of the repeats. The
  per-case costs and the projection in docs/SCALING.md come from the one-process runs.
- memory: datasets of 14,000 and 100,000 cases (DermSynth's cases repeated under new case
  and patient ids, same photos and notes), the note encoder stubbed by synthetic features
  of its real shape written to the sharded cache (the issue allows it: MiniLM on 100,000
  notes alone is an hour here), then ``python -m trainer fit`` (CNN image encoder, four
  models, one epoch each) with its memory read from /proc every 0.2 s: the peak resident
  set, and the peak of its anonymous part (what the process itself holds; the rest are
  pages of memory-mapped feature files, which the kernel drops under pressure). With
  ``--cap-gib``, each fit runs in a memory cgroup capped there (page cache included):
  it completes only if its memory really is bounded.
- ddp: ``fit`` with the quick preset on N cases under torchrun with two processes and as
  one process (seed 0), beside one process with seed 1, each on an empty cache: how far two
  processes move the held-out clinic's predictions, against how far a new seed moves them.

Writes benchmarks/results/scaling.json, the `scaling` block of docs/BENCHMARKS.md and the
`costs` block of docs/SCALING.md. Simulated data: not clinical evidence.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._doc import machine, replace_block  # noqa: E402
from benchmarks.scaling_text import (capped_text, costs_text, ddp_text, encoding_text,  # noqa: E402
                                      memory_text)
from data_store.ingest import fingerprint  # noqa: E402
from data_store.store import TriageStore  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "scaling.json"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
MEMORY_CONFIG = {"image_encoder": "cnn", "models": ["text_only", "image_only", "late_fusion", "cross_attention"],
                 "epochs": 1, "encoder_epochs": 1, "patience": 1}
ENCODED = re.compile(r"^(.+?): (\d+) of (\d+) blocks encoded by (\d+) process\(es\) in ([\d.]+) s", re.M)


def make_dataset(src: Path, db: Path, name: str, n: int, seed: int = 0) -> tuple[str, list[str]]:
    """``n`` cases of DermSynth as dataset ``name`` (repeated under new ids past 14,000, or
    sampled below); returns its fingerprint and sorted case ids."""
    with TriageStore(src, read_only=True) as store:
        info, cases = store.read_dataset("dermsynth"), store.read_cases("dermsynth")
    reps = -(-n // len(cases))
    cases = pd.concat([cases.assign(case_id=cases["case_id"] + f"-r{r}", patient_id=cases["patient_id"] + f"-r{r}")
                       if r else cases for r in range(reps)], ignore_index=True)
    cases = cases.sample(n, random_state=seed) if n < len(cases) else cases
    cases = cases.drop(columns=["dataset"]).reset_index(drop=True)
    rejected = pd.DataFrame({"source_row": pd.Series([], dtype="int64"), "case_id": [], "reason": [], "detail": []})
    info = {**info, "dataset": name}
    info["fingerprint"] = fingerprint(info, cases, rejected)
    with TriageStore(db) as store:
        store.replace_dataset(info, cases, rejected)
    return info["fingerprint"], sorted(cases["case_id"].astype(str))


def encoding(args, work: Path) -> dict:
    db = work / "encoding.duckdb"
    make_dataset(Path(args.db), db, "scaling_enc", args.n)
    runs = {1: [], 2: []}
    for r in range(args.repeats):
        for procs in ((1, 2) if r % 2 == 0 else (2, 1)):
            cache = Path(tempfile.mkdtemp(dir=work))
            launcher = [sys.executable] if procs == 1 else TORCHRUN
            cmd = [*launcher, "-m", "trainer", "features", "--db", str(db), "--dataset", "scaling_enc",
                   "--cache-dir", str(cache), "--block-cases", str(args.block_cases)]
            t = time.perf_counter()
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t
            pieces = "\n".join(re.split(r"[\r\n]", out.stderr))  # progress bars end their updates with \r
            per = {m[0]: float(m[4]) for m in ENCODED.findall(pieces)}
            runs[procs].append({"wall_s": wall, "encodings": per})
            print(procs, "process(es):", round(wall, 1), "s", {k: round(v, 1) for k, v in per.items()}, flush=True)
            subprocess.run(["rm", "-rf", str(cache)], check=True)
    med = {p: {"wall_s": statistics.median(x["wall_s"] for x in v),
               "encodings": {k: statistics.median(x["encodings"][k] for x in v) for k in v[0]["encodings"]}}
           for p, v in runs.items()}
    return {"n": args.n, "repeats": args.repeats, "block_cases": args.block_cases, "runs": runs, "median": med}


def _fit(db: Path, dataset: str, cache: Path, seed: int, procs: int, max_cases: int) -> str:
    launcher = [sys.executable] if procs == 1 else TORCHRUN
    cmd = [*launcher, "-m", "trainer", "fit", "--db", str(db), "--dataset", dataset, "--preset", "quick", "--seed",
           str(seed), "--cache-dir", str(cache), "--config", str(cache.parent / "ddp.yaml")]
    cache.mkdir(parents=True, exist_ok=True)
    (cache.parent / "ddp.yaml").write_text(json.dumps({"max_cases": max_cases}))
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]


def ddp(args, work: Path) -> dict:
    """Two processes against one (seed 0), beside one process with seed 1 against seed 0,
    on the held-out clinic's cases (the test split, the same whatever the seed)."""
    db = work / "ddp.duckdb"
    make_dataset(Path(args.db), db, "scaling_ddp", args.n)
    # Each run its own cache: the CNN and the CLIP are trained in each, not read back.
    runs = {name: _fit(db, "scaling_ddp", work / f"cache-{name}", seed, procs, args.n)
            for name, seed, procs in (("one", 0, 1), ("two", 0, 2), ("seed1", 1, 1))}
    with TriageStore(db, read_only=True) as store:
        preds = {k: store.read_predictions(r).query("split == 'test'").sort_values(["model", "case_id"])
                 for k, r in runs.items()}
    out = {}
    for model in preds["one"]["model"].unique():
        base = preds["one"][preds["one"]["model"] == model]
        row = {"cases": len(base)}
        for other in ("two", "seed1"):
            frame = preds[other][preds[other]["model"] == model]
            assert frame["case_id"].tolist() == base["case_id"].tolist()
            p, q = np.stack(base["probs_uncal"]), np.stack(frame["probs_uncal"])
            row[other] = {"mean_abs_prob": float(np.abs(p - q).mean()),
                          "agreement": float((base["y_pred"].to_numpy() == frame["y_pred"].to_numpy()).mean()),
                          "accuracy_change": float((frame["y_pred"] == frame["y_true"]).mean()
                                                   - (base["y_pred"] == base["y_true"]).mean())}
        out[model] = row
        print(model, row, flush=True)
    return {"n": args.n, "runs": runs, "models": out}


def _stub_notes(cache: Path, fp: str, ids: list[str]) -> None:
    """Synthetic note tokens of the real encoder's shape and identity, into the sharded cache."""
    from trainer.config import FitConfig
    from trainer.encoders.cache import note_tokens
    from trainer.encoders.shards import BlockSet
    from trainer.encoders.text import TextEncoder

    cfg = FitConfig()
    encoder = TextEncoder(cfg.text_encoder, cfg.max_tokens)
    blocks = BlockSet(cache, fp, note_tokens(encoder).name)

    def stub(block: list[str]) -> dict:
        rng = np.random.default_rng(int(hashlib.sha256(block[0].encode()).hexdigest()[:8], 16))
        lengths = rng.integers(8, cfg.max_tokens, len(block))
        return {"tokens": rng.standard_normal((len(block), cfg.max_tokens, encoder.dim), np.float32)
                .astype(np.float16), "mask": np.arange(cfg.max_tokens) < lengths[:, None]}
    blocks.encode(ids, 0, 1, stub)
    assert blocks.seal(ids) == []


def _watch(pid: int, peaks: dict, done: threading.Event) -> None:
    while not done.is_set():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            break
        for key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            m = re.search(rf"^{key}:\s+(\d+) kB", status, re.M)
            if m:
                peaks[key] = max(peaks.get(key, 0), int(m.group(1)) / 1024)
        time.sleep(0.2)


def memory(args, work: Path) -> dict:
    db, out = work / "memory.duckdb", {}
    config = work / "memory.yaml"
    config.write_text(json.dumps(MEMORY_CONFIG))
    for n in (int(s) for s in args.sizes.split(",")):
        name, cache = f"scaling_{n}", work / f"cache-{n}"
        fp, ids = make_dataset(Path(args.db), db, name, n)
        _stub_notes(cache, fp, ids)
        cmd = [sys.executable, "-m", "trainer", "fit", "--db", str(db), "--dataset", name, "--config", str(config),
               "--cache-dir", str(cache)]
        group = None
        if args.cap_gib:  # a memory cgroup (v1) capped at cap_gib, page cache included; fit joins it first
            group = Path("/sys/fs/cgroup/memory") / f"triage-bench-{os.getpid()}-{n}"
            group.mkdir()
            (group / "memory.limit_in_bytes").write_text(str(int(args.cap_gib * 2**30)))
            cmd = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *cmd]
        peaks, done = {}, threading.Event()
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watcher = threading.Thread(target=_watch, args=(proc.pid, peaks, done))
        watcher.start()
        stdout, stderr = proc.communicate()
        done.set()
        watcher.join()
        capped = {}
        if group is not None:
            oom = re.search(r"oom_kill (\d+)", (group / "memory.oom_control").read_text())
            capped = {"cap_gib": args.cap_gib, "returncode": proc.returncode,
                      "cgroup_peak_mib": int((group / "memory.max_usage_in_bytes").read_text()) / 2**20,
                      "cgroup_limit_hits": int((group / "memory.failcnt").read_text()),
                      "oom_kills": int(oom.group(1)) if oom else None}
            group.rmdir()
        if proc.returncode and group is None:
            raise SystemExit(f"fit of {n} cases failed:\n{stderr[-3000:]}")
        out[n] = {"wall_s": time.perf_counter() - t, "run": (stdout.strip().splitlines() or [""])[-1], **capped,
                  **{f"peak_{k}_mib": v for k, v in peaks.items()}}
        print(n, {k: round(v, 1) if isinstance(v, float) else v for k, v in out[n].items()}, flush=True)
        subprocess.run(["rm", "-rf", str(cache), str(db.parent / "runs")], check=True)
    return out


def write(result: dict) -> None:
    text = (f"## Scaling: encoding with one and two processes, and fit's memory as the dataset grows\n\n"
            f"Machine: {result['machine']}.\n")
    if "encoding" in result:
        enc = result["encoding"]
        text += (f"\nCommand: `python benchmarks/scaling_benchmark.py encoding --n {enc['n']} --repeats "
                 f"{enc['repeats']} --block-cases {enc['block_cases']}`: `python -m trainer features` on "
                 f"{enc['n']:,} DermSynth cases in blocks of {enc['block_cases']} with the default settings, as one "
                 "process (torch's two threads) and under `torchrun --standalone --nproc_per_node 2` (one thread "
                 "each, torchrun's default), in turn, each on an empty cache.\n\n" + encoding_text(enc) + "\n")
    if "memory" in result:
        text += ("\nCommand: `python benchmarks/scaling_benchmark.py memory`: `python -m trainer fit` (settings "
                 f"`{json.dumps(MEMORY_CONFIG)}`) on DermSynth's cases repeated under new ids, the note encoder "
                 "stubbed by synthetic features of its shape in the sharded cache; memory read from /proc every "
                 "0.2 s. The features are memory-mapped: the resident set counts their pages while they are "
                 "read, the anonymous part is what the process holds itself.\n\n" + memory_text(result["memory"])
                 + "\n")
    if "ddp" in result:
        text += (f"\nCommand: `python benchmarks/scaling_benchmark.py ddp --n {result['ddp']['n']}`: `fit` with the "
                 f"quick preset on {result['ddp']['n']:,} DermSynth cases, under torchrun with 2 processes and as one "
                 "process (seed 0), beside one process with seed 1; each against the one-process seed-0 run, on the "
                 "held-out clinic's cases.\n\n" + ddp_text(result["ddp"]) + "\n")
    if "memory_capped" in result:
        text += ("\nThe same fit inside a memory cgroup capped at the target (`python benchmarks/scaling_benchmark.py "
                 "memory --sizes 100000 --cap-gib 8`): everything the process holds counts against the cap, page "
                 "cache included: the kernel must drop mapped feature pages to stay under it, and kills the process if "
                 "it cannot.\n\n" + capped_text(result["memory_capped"]) + "\n")
    replace_block(ROOT / "docs" / "BENCHMARKS.md", "scaling", text)
    if "encoding" in result:
        replace_block(ROOT / "docs" / "SCALING.md", "costs", costs_text(result))
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("encoding", "memory", "ddp", "rewrite"))
    parser.add_argument("--db", default="data/triage.duckdb", help="the store holding dataset dermsynth")
    parser.add_argument("--workdir", default="data/bench-scaling", help="scratch folder (removed at the end)")
    parser.add_argument("--n", type=int, default=2000, help="cases to encode (encoding) or fit on (ddp)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (encoding)")
    parser.add_argument("--block-cases", type=int, default=1000, help="cases per block (encoding)")
    parser.add_argument("--sizes", default="14000,100000", help="dataset sizes (memory)")
    parser.add_argument("--cap-gib", type=float, help="run each fit in a memory cgroup capped here (memory; cgroup "
                                                      "v1, as root)")
    args = parser.parse_args()
    result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.part != "rewrite":
        work = Path(args.workdir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        try:
            key = "memory_capped" if args.part == "memory" and args.cap_gib else args.part
            result[key] = {"encoding": encoding, "memory": memory, "ddp": ddp}[args.part](args, work)
        finally:
            subprocess.run(["rm", "-rf", str(work)], check=False)
        result["machine"] = machine()
        RESULTS.write_text(json.dumps(result, indent=2, default=str))
    write(json.loads(RESULTS.read_text()))


if __name__ == "__main__":
    main()
