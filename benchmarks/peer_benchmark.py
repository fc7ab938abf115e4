"""The project's models against the scikit-learn peers a user would try first, side by side
on the same stored splits, over several seeds.

    python benchmarks/peer_benchmark.py --db data/triage.duckdb --dataset dermsynth --seeds 0 1 2
    python benchmarks/peer_benchmark.py --db data/triage.duckdb --runs RUN0 RUN1 RUN2

For each seed it runs ``python -m trainer fit --seed S`` (or reads the finished runs given
with ``--runs``). The peers of ``synth_baseline.py`` (TF-IDF + logistic regression on notes,
colour and texture statistics + gradient boosting on photos, and their stacked fusion) are
trained on each run's ``train`` split, the cases the deep models are trained on, and
scored on its ``val`` and ``test`` splits. It also checks the model-selection rule
(``trainer.evaluation.selection``): the model it picks on val against the best at the
held-out clinic, and val's estimate against the held-out clinic's actual macro F1.

Writes the ``peers`` block of docs/BENCHMARKS.md, the ``results`` block of README.md and
benchmarks/results/peers.json. Simulated data: not clinical evidence.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import cross_val_predict
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._doc import machine, replace_block  # noqa: E402
from benchmarks.synth_baseline import image_features  # noqa: E402
from data_store.store import TriageStore  # noqa: E402
from trainer.config import MODEL_NAMES, run_config  # noqa: E402
from trainer.evaluation.selection import select_model  # noqa: E402

PEERS = ("peer: TF-IDF + logistic (notes)", "peer: colour/texture + boosting (photos)",
         "peer: stacked fusion (both)")


def peer_scores(cases: pd.DataFrame, split: np.ndarray, x_img: np.ndarray, seed: int) -> dict[str, dict[str, float]]:
    """Macro F1 on val and test of the three peers trained on ``train``."""
    train = split == "train"
    y = cases["label"].to_numpy()
    notes = cases["note"].fillna("").to_numpy()
    text = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit(notes[train])
    x_text = text.transform(notes)
    lr = dict(max_iter=2000, class_weight="balanced", C=2.0)
    hgb = dict(max_iter=300, learning_rate=0.08, class_weight="balanced", random_state=seed)
    text_model = LogisticRegression(**lr).fit(x_text[train], y[train])
    image_model = HistGradientBoostingClassifier(**hgb).fit(x_img[train], y[train])
    # Fusion: the text model's out-of-fold log-probabilities stacked on the image features.
    text_logp = text_model.predict_log_proba(x_text)
    text_logp[train] = cross_val_predict(LogisticRegression(**lr), x_text[train], y[train], cv=5,
                                         method="predict_log_proba")
    fusion = HistGradientBoostingClassifier(**hgb).fit(np.hstack([x_img, text_logp])[train], y[train])
    preds = {PEERS[0]: text_model.predict(x_text), PEERS[1]: image_model.predict(x_img),
             PEERS[2]: fusion.predict(np.hstack([x_img, text_logp]))}
    return {name: {s: float(f1_score(y[split == s], p[split == s], average="macro")) for s in ("val", "test")}
            for name, p in preds.items()}


def fit_run(db: str, dataset: str, seed: int) -> str:
    out = subprocess.run([sys.executable, "-m", "trainer", "fit", "--db", db, "--dataset", dataset, "--seed",
                          str(seed)], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def run_rows(db: str, run_id: str, x_img_of: dict) -> tuple[list[dict], dict]:
    """One row per model (the run's five and the peers) with val and test macro F1, and the selection."""
    with TriageStore(db, read_only=True) as store:
        run = store.read_run(run_id)
        cases = store.read_cases(run["dataset"]).set_index("case_id")
        split = store.read_splits(run_id).set_index("case_id")["split"]
        metrics = store.read_table("metrics", run_id)
    cfg = run_config(run["config"])
    cases = cases.loc[split.index].reset_index()
    x_img = np.stack([x_img_of[p] for p in cases["image_path"]])
    overall = metrics[(metrics.slice == "overall") & (metrics.metric == "macro_f1")]
    rows = [{"run": run_id, "seed": cfg.seed, "model": m,
             **{s: float(overall[(overall.model == m) & (overall.split == s)]["value"].iloc[0])
                for s in ("val", "test")}} for m in MODEL_NAMES if m in set(overall.model)]
    rows += [{"run": run_id, "seed": cfg.seed, "model": name, **v}
             for name, v in peer_scores(cases, split.to_numpy(), x_img, cfg.seed).items()]
    chosen = select_model(metrics)
    test = {r["model"]: r["test"] for r in rows if r["model"] in MODEL_NAMES}
    best = max(test, key=test.get)
    selection = {"run": run_id, "seed": cfg.seed, "val_clinic": cfg.val_clinic or "patients",
                 "picked": chosen.model, "estimate": chosen.estimate, "picked_test": test[chosen.model],
                 "best": best, "best_test": test[best]}
    return rows, selection


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    order = list(MODEL_NAMES) + list(PEERS)
    g = rows.groupby("model")
    out = pd.DataFrame({"held-out macro F1, mean": g["test"].mean(), "spread (sd)": g["test"].std(ddof=1),
                        "val macro F1, mean": g["val"].mean()})
    per_seed = rows.pivot(index="model", columns="seed", values="test").add_prefix("held-out, seed ")
    return out.join(per_seed).loc[[m for m in order if m in g.groups]].reset_index()


def targets(rows: pd.DataFrame, sel: pd.DataFrame) -> list[tuple[str, str, bool]]:
    """Issue 14's targets that this benchmark measures: (target, measured, holds)."""
    mean = rows.groupby("model")["test"].mean()
    picked_fusion = sel["picked"].mode().iloc[0]
    checks = [("text_only >= the TF-IDF peer", f"{mean['text_only']:.3f} vs {mean[PEERS[0]]:.3f}",
               mean["text_only"] >= mean[PEERS[0]]),
              ("image_only >= the image peer", f"{mean['image_only']:.3f} vs {mean[PEERS[1]]:.3f}",
               mean["image_only"] >= mean[PEERS[1]]),
              (f"the picked model ({picked_fusion}, most often) >= the peer fusion + 0.05",
               f"{mean[picked_fusion]:.3f} vs {mean[PEERS[2]] + 0.05:.3f}",
               mean[picked_fusion] >= mean[PEERS[2]] + 0.05)]
    best_fusion = max(mean[m] for m in ("late_fusion", "cross_attention") if m in mean)
    if "unified" in mean:
        checks.append(("unified within 0.02 of the best fusion", f"{mean['unified']:.3f} vs {best_fusion:.3f}",
                       mean["unified"] >= best_fusion - 0.02))
    gaps = sel["best_test"] - sel["picked_test"]
    errors = (sel["estimate"] - sel["picked_test"]).abs()
    checks += [("the picked model within 0.02 of the best at the held-out clinic, every seed",
                "gaps " + ", ".join(f"{g:.3f}" for g in gaps), bool((gaps <= 0.02).all())),
               ("val's estimate within 0.05 of the picked model's held-out macro F1, every seed",
                "errors " + ", ".join(f"{e:.3f}" for e in errors), bool((errors <= 0.05).all()))]
    return checks


def write(rows: pd.DataFrame, sel: pd.DataFrame, args, seconds: float) -> None:
    table = summary(rows).to_markdown(index=False, floatfmt=".3f")
    sel_md = sel.drop(columns="run").to_markdown(index=False, floatfmt=".3f")
    checks = "\n".join(f"- {'holds' if ok else 'MISSED'}: {name} ({measured})"
                       for name, measured, ok in targets(rows, sel))
    runs = ", ".join(f"`{r}`" for r in sel["run"])
    head = (f"Runs {runs} of dataset `{args.dataset_name}` (seeds {', '.join(map(str, sel['seed']))}), held-out "
            "clinic, calibrated models (argmax). **Simulated data: not clinical evidence.** The peers are trained "
            "on each run's `train` split; `val` is the run's validation clinic (a training clinic kept out of "
            "training) unless it says `patients`.")
    body = (f"{head}\n\n{table}\n\nThe selection rule (best macro F1 on val) per seed, against the best model at "
            f"the held-out clinic:\n\n{sel_md}\n\nTargets of issue 14 measured here:\n\n{checks}\n")
    replace_block(ROOT / "docs" / "BENCHMARKS.md", "peers",
                  f"## The models against the scikit-learn peers\n\n{body}\nCommand: "
                  f"`python benchmarks/peer_benchmark.py {' '.join(sys.argv[1:])}`; {machine()}; "
                  f"{seconds / 60:.0f} min.")
    replace_block(ROOT / "README.md", "results", f"{body}\nWritten by `python benchmarks/peer_benchmark.py`; "
                  "training times in docs/BENCHMARKS.md.")
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "peers.json").write_text(json.dumps(
        {"rows": rows.to_dict("records"), "selection": sel.to_dict("records"), "machine": machine(),
         "seconds": seconds}, indent=2))
    print(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="data/triage.duckdb", help="the store (default data/triage.duckdb)")
    parser.add_argument("--dataset", default="dermsynth", help="dataset to fit (default dermsynth)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to fit (default 0 1 2)")
    parser.add_argument("--runs", nargs="+", help="finished runs to read instead of fitting")
    args = parser.parse_args()
    start = time.perf_counter()
    run_ids = args.runs or [fit_run(args.db, args.dataset, s) for s in args.seeds]
    with TriageStore(args.db, read_only=True) as store:
        args.dataset_name = store.read_run(run_ids[0])["dataset"]
        paths = store.read_cases(args.dataset_name)["image_path"].tolist()
    x_img_of = {p: image_features(Path(p)) for p in tqdm(paths, desc="peer photo features", mininterval=2)}
    rows, selections = [], []
    for run_id in run_ids:
        r, s = run_rows(args.db, run_id, x_img_of)
        rows += r
        selections.append(s)
    write(pd.DataFrame(rows), pd.DataFrame(selections), args, time.perf_counter() - start)


if __name__ == "__main__":
    main()
