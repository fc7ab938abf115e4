-- The public schema of the triage store (DuckDB). Users may query it with plain SQL.
-- Bump SCHEMA_VERSION in store.py when a table changes.

CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER NOT NULL,           -- schema version of this file
    applied_at  TIMESTAMP NOT NULL
);

-- One row per ingested manifest, keyed by the dataset name the user gave.
CREATE TABLE IF NOT EXISTS datasets (
    dataset         VARCHAR PRIMARY KEY,
    manifest_path   VARCHAR NOT NULL,       -- absolute path of the manifest at ingest
    image_root      VARCHAR NOT NULL,       -- folder every image path resolved inside
    ingested_at     TIMESTAMP NOT NULL,
    n_cases         INTEGER NOT NULL,       -- rows accepted into cases
    n_rejected      INTEGER NOT NULL,       -- rows written to rejected_rows
    classes         VARCHAR[] NOT NULL,     -- ordered class names; probabilities follow this order
    urgent_classes  VARCHAR[],              -- classes whose miss is urgent (from the sidecar or mapping)
    heldout_clinic  VARCHAR,                -- default held-out clinic the dataset declares, or NULL
    simulated       BOOLEAN NOT NULL,       -- true for DermSynth and any dataset whose sidecar says so
    fingerprint     VARCHAR NOT NULL        -- sha256 of the accepted and rejected rows; same input, same value
);

-- One row per accepted case.
CREATE TABLE IF NOT EXISTS cases (
    dataset       VARCHAR NOT NULL,
    case_id       VARCHAR NOT NULL,
    patient_id    VARCHAR NOT NULL,
    clinic        VARCHAR NOT NULL,
    image_path    VARCHAR NOT NULL,         -- absolute, resolved inside the dataset's image_root
    image_sha256  VARCHAR NOT NULL,         -- of the image file's bytes
    note          VARCHAR NOT NULL,         -- '' when the manifest had none (flag empty_note)
    label         VARCHAR NOT NULL,         -- one of datasets.classes
    fitzpatrick   TINYINT,                  -- 1..6, NULL when unknown
    flags         VARCHAR[] NOT NULL,       -- e.g. empty_note, image_converted:CMYK, fitzpatrick_unparsed
    extra         JSON NOT NULL,            -- every other manifest column (age, sex, sim_*); models never read it
    PRIMARY KEY (dataset, case_id)
);

-- Every manifest row that was not accepted, with a reason a person can act on.
CREATE TABLE IF NOT EXISTS rejected_rows (
    dataset     VARCHAR NOT NULL,
    source_row  INTEGER NOT NULL,           -- 1-based data row in the manifest (header not counted)
    case_id     VARCHAR,                    -- as given, if any
    reason      VARCHAR NOT NULL,           -- short reason code, e.g. image_missing
    detail      VARCHAR NOT NULL            -- the full sentence shown to people
);

-- One row per `python -m trainer fit`.
CREATE TABLE IF NOT EXISTS runs (
    run_id          VARCHAR PRIMARY KEY,
    dataset         VARCHAR NOT NULL,
    status          VARCHAR NOT NULL,       -- running -> complete | failed (set in the final transaction)
    created_at      TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP,
    config          JSON NOT NULL,          -- the full FitConfig plus code version: enough to reproduce the run
    classes         VARCHAR[] NOT NULL,     -- ordered class names; every probs vector follows this order
    heldout_clinic  VARCHAR NOT NULL,
    timings         JSON,                   -- seconds per stage
    artifacts_dir   VARCHAR,                -- checkpoints (safetensors + JSON config) of this run
    error           VARCHAR                 -- why a failed run failed
);

-- Which split each case of a run's dataset fell in.
CREATE TABLE IF NOT EXISTS splits (
    run_id   VARCHAR NOT NULL,
    case_id  VARCHAR NOT NULL,
    split    VARCHAR NOT NULL,              -- train | val | calib | test
    PRIMARY KEY (run_id, case_id)
);

-- One row per model and case of val, calib and test.
CREATE TABLE IF NOT EXISTS predictions (
    run_id       VARCHAR NOT NULL,
    model        VARCHAR NOT NULL,          -- text_only | image_only | late_fusion | cross_attention | unified
    case_id      VARCHAR NOT NULL,
    split        VARCHAR NOT NULL,
    y_true       VARCHAR NOT NULL,          -- class name
    y_pred       VARCHAR NOT NULL,          -- class name (argmax of probs)
    probs        DOUBLE[] NOT NULL,         -- sums to 1, in runs.classes order
    defer_score  DOUBLE,                    -- NULL until calibration fills it
    PRIMARY KEY (run_id, model, case_id)
);
