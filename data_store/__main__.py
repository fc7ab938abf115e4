"""Command line: ``python -m data_store synth|ingest|info``."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from data_store.synth.generate import SynthConfig


def _synth(args: argparse.Namespace) -> int:
    from data_store.synth.generate import generate

    for name in ("tone_effect", "ambiguous_rate", "label_noise"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}.")
    if args.n < 20 or args.image_size < 16:
        raise ValueError("--n must be at least 20 and --image-size at least 16.")
    cfg = SynthConfig(n=args.n, seed=args.seed, image_size=args.image_size, tone_effect=args.tone_effect,
                      ambiguous_rate=args.ambiguous_rate, label_noise=args.label_noise)
    start = time.perf_counter()
    with tqdm(total=cfg.n, desc="rendering", unit="img", mininterval=1) as bar:
        manifest = generate(cfg, Path(args.out), workers=args.workers, progress=bar.update)
    print(f"wrote {len(manifest):,} cases to {args.out} in {time.perf_counter() - start:.1f} s "
          "(simulated data: not clinical evidence)")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from data_store.ingest import ingest
    from data_store.store import TriageStore

    with TriageStore(args.db) as store, tqdm(desc="checking images", unit="img", mininterval=1) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done)
        result = ingest(store, args.dataset, Path(args.manifest), Path(args.mapping) if args.mapping else None,
                        Path(args.image_root) if args.image_root else None, progress=progress,
                        unlabelled=args.unlabelled)
    state = "written" if result.changed else "unchanged (same content already in the store)"
    print(f"dataset {result.dataset!r}: {state}" + (" (unlabelled: cases to score, never trained on)"
                                                      if args.unlabelled else ""))
    print(f"  classes: {', '.join(result.classes) or 'none declared'}")
    print(f"  accepted: {result.n_cases:,}")
    print(f"  rejected: {result.n_rejected:,}")
    for reason, n in sorted(result.rejected_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"    {reason}: {n:,}")
    if result.n_rejected:
        print(f"  see: SELECT * FROM rejected_rows WHERE dataset = '{result.dataset}'")
    return 0


def _info(args: argparse.Namespace) -> int:
    from data_store.store import TriageStore

    with TriageStore(args.db, read_only=True) as store:
        print(store.list_datasets().drop(columns=["fingerprint"]).to_string(index=False))
    return 0


def _export(args: argparse.Namespace) -> int:
    from data_store.export import export_run

    written = export_run(args.db, args.run, args.out, args.with_patient_data)
    print(f"{sum(written.values()):,} rows of run {args.run} in {sum(n > 0 for n in written.values())} tables "
          f"under {args.out}: " + ", ".join(f"{t} {n:,}" for t, n in written.items() if n))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_store",
                                     description="Simulate the default dataset, ingest manifests into the store, export runs.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="write the simulated DermSynth dataset (images, manifest, datasheet)",
                       description="Simulate DermSynth: image-note pairs with documented, switchable effects.")
    s.add_argument("--out", required=True, help="output folder (images/, manifest.csv, dataset.json, DATASHEET.md)")
    s.add_argument("--n", type=int, default=14000, help="number of cases (default 14000)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same files")
    s.add_argument("--image-size", type=int, default=128, help="photo side in pixels (default 128)")
    s.add_argument("--tone-effect", type=float, default=SynthConfig.tone_effect,
                   help="loss of lesion contrast on type VI skin relative to type I, 0 turns it off "
                        "(default %(default)s)")
    s.add_argument("--ambiguous-rate", type=float, default=0.06,
                   help="share of cases whose image and note point to a neighbouring condition (default 0.06)")
    s.add_argument("--label-noise", type=float, default=0.02, help="share of wrong labels (default 0.02)")
    s.add_argument("--workers", type=int, default=None, help="rendering processes (default: all cores)")
    s.set_defaults(func=_synth)

    i = sub.add_parser("ingest", help="validate a manifest and write it to the store",
                       description="Validate a manifest (CSV, Parquet or JSONL); accepted rows go to `cases`, "
                                   "every other row to `rejected_rows` with its reason.")
    i.add_argument("--db", default="data/triage.duckdb", help="store file (default data/triage.duckdb)")
    i.add_argument("--dataset", required=True, help="name for this dataset in the store")
    i.add_argument("--manifest", required=True, help="manifest file: .csv, .parquet or .jsonl")
    i.add_argument("--mapping", help="YAML/JSON file: columns (renames), labels (raw -> class), classes, "
                                     "urgent_classes, heldout_clinic")
    i.add_argument("--image-root", help="folder image paths resolve in (default: the manifest's folder)")
    i.add_argument("--unlabelled", action="store_true",
                   help="cases without labels, to score with `python -m trainer predict`: the label column may be "
                        "absent or empty (a row with a label is refused), and no run can train on the dataset")
    i.set_defaults(func=_ingest)

    e = sub.add_parser("export", help="a run's tables as Parquet, partitioned by run and model",
                       description="Write every table of a run (predictions, metrics, policies, conformal, "
                                   "attributions, scores, shift, adaptations, ...) as Parquet under OUT/<table>/"
                                   "run_id=<run>/model=<model>/, readable by DuckDB, pandas and Spark. Carries case "
                                   "ids only: no notes, patient ids or paths unless --with-patient-data.")
    e.add_argument("--db", default="data/triage.duckdb", help="store file (default data/triage.duckdb)")
    e.add_argument("--run", required=True, help="run_id")
    e.add_argument("--out", required=True, help="output folder (other runs already there are kept)")
    e.add_argument("--with-patient-data", action="store_true",
                   help="also the run's cases with their notes, patient ids and photo paths, and the notes' words "
                        "of the attributions")
    e.set_defaults(func=_export)

    f = sub.add_parser("info", help="list the datasets in a store")
    f.add_argument("--db", default="data/triage.duckdb")
    f.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    from data_store.errors import run_command

    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
