"""Regenerate the generated files of docs/ from a store: the default run's clinical handoff
document (docs/clinical_handoff/: handoff.pdf, handoff.md, its figures, slices/ and each page
rendered as page-N.png) and a screenshot of every dashboard page (docs/screenshots/).

    python docs/regenerate.py [--db data/triage.duckdb] [--run RUN] [--only report|screenshots]

RUN defaults to the newest complete run of the store. Page renders need Debian's
poppler-utils; screenshots need Debian's chromium and Playwright (.ci/run installs the
Debian packages where missing). The data behind them are simulated unless
the store says otherwise.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_store.store import TriageStore  # noqa: E402
from trainer.commands.report import write_report  # noqa: E402

DOCS = ROOT / "docs"


def render_pages(pdf: Path, dpi: int = 100) -> list[Path]:
    """Every page of ``pdf`` as page-N.png beside it (Debian's poppler-utils: pdftoppm)."""
    if shutil.which("pdftoppm") is None:
        raise SystemExit("pdftoppm not found: install Debian's poppler-utils (apt-get install poppler-utils).")
    for old in pdf.parent.glob("page-*.png"):
        old.unlink()
    subprocess.run(["pdftoppm", "-r", str(dpi), "-png", str(pdf), str(pdf.parent / "page")], check=True)
    return sorted(pdf.parent.glob("page-*.png"))


def newest_run(db: Path) -> str:
    with TriageStore(db, read_only=True) as store:
        runs = store.list_runs()
    runs = runs[runs.status == "complete"]
    if runs.empty:
        raise SystemExit(f"{db} holds no complete run; train one first (./run.sh fit).")
    return str(runs["run_id"].iloc[0])


def screenshots(db: Path, run_id: str, out: Path) -> list[Path]:
    """Every page of the dashboard on ``run_id``, 1400 wide and as tall as its content."""
    from tests.dashboard.browser import PAGES, Server, browser, settle

    out.mkdir(parents=True, exist_ok=True)
    server = Server(db)
    with tempfile.TemporaryDirectory() as profile:
        pw, context = browser(Path(profile))
        try:
            page = context.new_page()
            written = []
            for name in PAGES:
                page.goto(server.url(name, run=run_id, model="late_fusion", split="test"))
                page.wait_for_selector('[data-testid="stMain"]', timeout=90_000)
                page.wait_for_timeout(1500)
                settle(page)
                # The page scrolls inside Streamlit's main block, not the document: grow the
                # window to the content so the picture holds the whole page.
                height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
                page.set_viewport_size({"width": 1400, "height": max(1000, int(height) + 40)})
                page.wait_for_timeout(1500)
                settle(page)
                written.append(out / f"{name or 'Home'}.png")
                page.screenshot(path=str(written[-1]), full_page=True)
                page.set_viewport_size({"width": 1400, "height": 1000})
        finally:
            context.close()
            pw.stop()
            server.stop()
    return written


def main() -> int:
    from data_store.errors import run_command

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="data/triage.duckdb", help="store file (default data/triage.duckdb)")
    parser.add_argument("--run", help="run_id (default: the newest complete run)")
    parser.add_argument("--only", choices=("report", "screenshots"), help="regenerate one of the two")
    return run_command(_regenerate, parser.parse_args())


def _regenerate(args) -> int:
    db = Path(args.db).resolve()
    run_id = args.run or newest_run(db)
    if args.only != "screenshots":
        result = write_report(db, run_id, DOCS / "clinical_handoff")
        print(f"wrote {result['pdf']} ({result['pages']} pages) and {result['slices']} slice tables")
        pages = render_pages(result["pdf"])
        print(f"rendered its pages to {', '.join(p.name for p in pages)}")
    if args.only != "report":
        print(f"wrote {len(screenshots(db, run_id, DOCS / 'screenshots'))} screenshots to {DOCS / 'screenshots'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
