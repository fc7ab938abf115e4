#!/usr/bin/env bash
# One command for everything: ./run.sh [all|test|test-slow|synth|ingest|fit|explain|report|docs|serve|env] (see ./run.sh --help).
set -euo pipefail
cd "$(dirname "$0")"

DATA_DIR="${TRIAGE_DATA:-data/dermsynth}"
DB="${TRIAGE_DB:-data/triage.duckdb}"
DATASET="${TRIAGE_DATASET:-dermsynth}"
PORT="${TRIAGE_PORT:-8501}"
ADDRESS="${TRIAGE_ADDRESS:-127.0.0.1}"
PYTHON="${PYTHON:-python3}"
# The environment lives outside the clone, keyed on requirements.txt, so a clean clone
# (as in CI) reuses it instead of reinstalling several GB.
REQ_KEY=$(sha256sum requirements.txt | cut -c1-16)
VENV="${TRIAGE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/skin-triage/venv-$REQ_KEY}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

usage() {
  cat <<USAGE
Usage: ./run.sh [command]

  all (default)  set up, simulate DermSynth-14k (once), ingest it, train and explain (once), serve the dashboard
  test           set up, then run the test suite but its slow tier (pytest -m "not slow"; extra pytest
                 arguments pass through)
  test-slow      the slow tier: fault injection with real processes killed, torchrun process groups,
                 whole fits beyond the session's one quick run
  synth          simulate DermSynth-14k into \$TRIAGE_DATA (default data/dermsynth)
  ingest         ingest \$TRIAGE_DATA/manifest.csv into \$TRIAGE_DB (default data/triage.duckdb)
  fit            train the five models, calibrate, audit, report the held-out clinic's shift and learning
                 curve (labels needed to recalibrate there), and explain them
                 (python -m trainer fit, then explain; see docs/BENCHMARKS.md for the time)
  explain        Captum attributions of the newest complete run's deferred and misclassified test cases,
                 then its handoff document
  report         the clinical handoff document of the newest complete run (data/report/<run>/handoff.pdf)
  docs           regenerate docs/clinical_handoff/ and docs/screenshots/ from the newest complete run
                 (python docs/regenerate.py; the screenshots need Debian's chromium)
  serve          serve the dashboard on http://\$TRIAGE_ADDRESS:\$TRIAGE_PORT (default 127.0.0.1:8501)
  env            only create or check the Python environment (\$TRIAGE_VENV, default under ~/.cache)

The default dataset is simulated: its results are not clinical evidence.
USAGE
}

ensure_env() {
  if [ ! -f "$VENV/.complete" ]; then
    echo "[run.sh] creating the environment in $VENV (first run only)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -qq -r requirements.txt
    touch "$VENV/.complete"
  fi
  PY="$VENV/bin/python"
}

synth() {
  if [ -f "$DATA_DIR/manifest.csv" ]; then
    echo "[run.sh] $DATA_DIR already holds a dataset; delete it to regenerate"
  else
    "$PY" -m data_store synth --out "$DATA_DIR"
  fi
}

ingest() { "$PY" -m data_store ingest --db "$DB" --dataset "$DATASET" --manifest "$DATA_DIR/manifest.csv"; }

# The newest complete run of $DATASET and whether every model of it has attributions ("" when none).
newest_run() {
  "$PY" -c "import sys; from data_store.store import TriageStore
with TriageStore(sys.argv[1], read_only=True) as s:
    runs = s.list_runs()
    runs = runs[(runs.dataset == sys.argv[2]) & (runs.status == 'complete')]
    if len(runs):
        run = runs.run_id.iloc[0]
        try:  # explained once every model has attributions (explain writes one model at a time)
            models = set(s.read_table('calibrators', run)['model'])
            done = bool(models) and models <= set(s.read_attributions(run)['model'])
        except Exception:  # a store from before attributions existed
            done = False
        print(run, 'explained' if done else 'unexplained')" "$DB" "$DATASET" 2>/dev/null || true
}

explain() {
  local run
  run=$(newest_run | cut -d' ' -f1)
  if [ -z "$run" ]; then echo "[run.sh] no complete run of $DATASET to explain; './run.sh fit' first" >&2; exit 2; fi
  echo "[run.sh] attributions of the deferred and misclassified test cases of $run (a few minutes per model)"
  "$PY" -m trainer explain --db "$DB" --run "$run"
  report
}

report() {
  local run
  run=$(newest_run | cut -d' ' -f1)
  if [ -z "$run" ]; then echo "[run.sh] no complete run of $DATASET to report on; './run.sh fit' first" >&2; exit 2; fi
  "$PY" -m trainer report --db "$DB" --run "$run" --out "$(dirname "$DB")/report/$run"
}

fit() { "$PY" -m trainer fit --db "$DB" --dataset "$DATASET"; explain; }

fit_once() {
  local state
  state=$(newest_run)
  if [ -z "$state" ]; then
    fit
  elif [ "${state#* }" = "unexplained" ]; then
    explain
  else
    echo "[run.sh] a complete, explained run of $DATASET exists; './run.sh fit' trains a new one"
  fi
}

serve() {
  echo "[run.sh] dashboard on http://$ADDRESS:$PORT (store: $DB)"
  TRIAGE_DB="$DB" exec "$PY" -m streamlit run dashboard/Home.py --server.address "$ADDRESS" \
    --server.port "$PORT" --server.headless true --browser.gatherUsageStats false --client.toolbarMode viewer
}

case "${1:-all}" in
  -h|--help|help) usage ;;
  env) ensure_env; echo "[run.sh] environment ready: $VENV" ;;
  test) ensure_env; shift; exec "$PY" -m pytest -m "not slow" "$@" ;;
  test-slow) ensure_env; shift; exec "$PY" -m pytest -m slow "$@" ;;
  synth) ensure_env; synth ;;
  ingest) ensure_env; ingest ;;
  fit) ensure_env; fit ;;
  explain) ensure_env; explain ;;
  report) ensure_env; report ;;
  docs) ensure_env; shift; "$PY" docs/regenerate.py --db "$DB" "$@" ;;
  serve) ensure_env; serve ;;
  all) ensure_env; synth; ingest; fit_once; serve ;;
  *) usage >&2; exit 2 ;;
esac
