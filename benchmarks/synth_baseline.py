"""Difficulty check of a DermSynth folder with quick scikit-learn baselines.

Trains on every clinic but the held-out one and reports held-out macro F1 for a
text-only model (TF-IDF + logistic regression), an image-only model (colour and
texture statistics + gradient boosting) and their fusion (both feature sets).
Writes docs/synth_baseline.md and .json. Simulated data: not clinical evidence.

    python benchmarks/synth_baseline.py --data data/dermsynth
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import cross_val_predict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._doc import machine  # noqa: E402


def image_features(path: Path) -> np.ndarray:
    """Log-colour statistics of the centre and the surround, edge energy, a 8x8 thumbnail."""
    img = np.asarray(Image.open(path).convert("RGB").resize((64, 64)), np.float32) / 255 + 1e-3
    log = np.log(img)
    centre, surround = log[16:48, 16:48].reshape(-1, 3), np.concatenate([log[:8], log[-8:]]).reshape(-1, 3)
    diff = centre.mean(0) - surround.mean(0)
    gy, gx = np.gradient(log.mean(2))
    edges = np.hypot(gx, gy)
    thumb = (log - surround.mean(0)).reshape(8, 8, 8, 8, 3).mean((1, 3)).ravel()
    quant = np.percentile(centre - surround.mean(0), [5, 25, 50, 75, 95], axis=0).ravel()
    return np.concatenate([diff, centre.std(0), surround.mean(0), quant,
                           [edges[16:48, 16:48].mean(), edges.mean(), edges[16:48, 16:48].std()], thumb])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a folder written by `python -m data_store synth`")
    parser.add_argument("--out", default="docs/synth_baseline", help="output path without suffix")
    args = parser.parse_args()
    folder = Path(args.data)
    meta = json.loads((folder / "dataset.json").read_text())
    m = pd.read_csv(folder / "manifest.csv", keep_default_na=False)
    start = time.perf_counter()
    test = (m["clinic"] == meta["heldout_clinic"]).to_numpy()
    y = m["label"].to_numpy()
    preds = _predictions(folder, m, test, y)
    rows = []
    dark = m.loc[test, "fitzpatrick"].isin([5, 6]).to_numpy()
    for name, pred in preds.items():
        rows.append({"model": name, "macro_f1_heldout": f1_score(y[test], pred, average="macro"),
                     "macro_f1_types_I_IV": f1_score(y[test][~dark], pred[~dark], average="macro"),
                     "macro_f1_types_V_VI": f1_score(y[test][dark], pred[dark], average="macro")})
    _write(pd.DataFrame(rows), rows, args, folder, meta, test, time.perf_counter() - start)


def _predictions(folder: Path, m: pd.DataFrame, test: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Held-out predictions of the three quick baselines, trained on the training clinics."""
    text = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_text_train = text.fit_transform(m.loc[~test, "note"])
    x_text_test = text.transform(m.loc[test, "note"])
    x_img = np.stack([image_features(folder / p) for p in m["image_path"]])

    def fit_predict(model, x_train, x_test):
        return model.fit(x_train, y[~test]).predict(x_test)

    lr = dict(max_iter=2000, class_weight="balanced", C=2.0)
    hgb = dict(max_iter=300, learning_rate=0.08, class_weight="balanced", random_state=0)
    preds = {
        "text_only (TF-IDF + logistic)": fit_predict(LogisticRegression(**lr), x_text_train, x_text_test),
        "image_only (colour/texture + boosting)": fit_predict(HistGradientBoostingClassifier(**hgb),
                                                               x_img[~test], x_img[test]),
    }
    # Fusion: the text model's out-of-fold log-probabilities stacked on the image features.
    oof = cross_val_predict(LogisticRegression(**lr), x_text_train, y[~test], cv=5, method="predict_log_proba")
    text_test = LogisticRegression(**lr).fit(x_text_train, y[~test]).predict_log_proba(x_text_test)
    preds["fusion (text log-probs + image features)"] = fit_predict(
        HistGradientBoostingClassifier(**hgb), np.hstack([x_img[~test], oof]), np.hstack([x_img[test], text_test]))
    return preds


def _write(table: pd.DataFrame, rows: list[dict], args, folder: Path, meta: dict, test: np.ndarray,
           elapsed: float) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"data": str(folder), "generator": meta.get("generator"), "n_train": int((~test).sum()),
              "n_heldout": int(test.sum()), "heldout_clinic": meta["heldout_clinic"], "seconds": elapsed,
              "machine": machine(), "results": rows}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    md = table.to_markdown(index=False, floatfmt=".3f")
    out.with_suffix(".md").write_text(
        "# DermSynth difficulty check (quick scikit-learn baselines)\n\n"
        "Simulated data: these numbers describe the simulator, not any clinical task.\n\n"
        f"Command: `python benchmarks/synth_baseline.py --data {folder}`; "
        f"trained on {result['n_train']:,} cases of the training clinics, scored on {result['n_heldout']:,} "
        f"cases of the held-out clinic `{result['heldout_clinic']}`; {elapsed:.0f} s.\n\n{md}\n")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
