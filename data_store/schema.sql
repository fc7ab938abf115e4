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
    label         VARCHAR,                  -- one of datasets.classes; NULL in an unlabelled dataset
    fitzpatrick   TINYINT,                  -- 1..6, NULL when unknown
    flags         VARCHAR[] NOT NULL,       -- e.g. empty_note, image_converted:CMYK, fitzpatrick_unparsed
    extra         JSON NOT NULL,            -- every other manifest column (age, sex, sim_*); models never read it
    PRIMARY KEY (dataset, case_id)
);

-- Schema 3: unlabelled datasets (ingest --unlabelled), cases to score that no run trains on.
ALTER TABLE datasets ADD COLUMN IF NOT EXISTS labelled BOOLEAN DEFAULT true;  -- false: ingested with --unlabelled
ALTER TABLE cases ALTER COLUMN label DROP NOT NULL;

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
    status          VARCHAR NOT NULL,       -- running -> complete | failed (set in the final transaction);
                                            -- interrupted: the writing process died (data_store/runlock.py)
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
    probs        DOUBLE[] NOT NULL,         -- calibrated (schema 1: raw); sums to 1, in runs.classes order
    defer_score  DOUBLE,                    -- P(the output needs a clinician's review); NULL before calibration
    PRIMARY KEY (run_id, model, case_id)
);

-- Schema 2: calibration, deferral, conformal sets, policies and the audit.
-- probs above holds calibrated probabilities; probs_uncal what the model gave.
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS probs_uncal DOUBLE[];  -- as the model gave them (NULL before schema 2)
-- Per-case signals of the deferral score (the same for every model of a run):
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS train_distance DOUBLE;  -- mean cosine distance to the 10 nearest training cases
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS photo_sharpness DOUBLE;  -- mean |Laplacian| of the grey photo (blur: low)
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS photo_overexposed DOUBLE;  -- share of near-white pixels

-- The calibrator chosen for each model: the lowest out-of-fold NLL on calib among the
-- candidates whose out-of-fold top-label ECE is no worse than the raw model's.
CREATE TABLE IF NOT EXISTS calibrators (
    run_id      VARCHAR NOT NULL,
    model       VARCHAR NOT NULL,
    method      VARCHAR NOT NULL,           -- temperature | vector | isotonic | none (raw probabilities kept)
    params      JSON NOT NULL,              -- e.g. {"temperature": 1.3}
    candidates  JSON NOT NULL,              -- {"temperature": {"nll": .., "ece": ..}, ..., "none": {..}}, out of fold
    PRIMARY KEY (run_id, model)
);

-- The deferral score's logistic model of P(wrong | signals), fitted on calib.
CREATE TABLE IF NOT EXISTS deferral_scorers (
    run_id  VARCHAR NOT NULL,
    model   VARCHAR NOT NULL,
    params  JSON NOT NULL,                  -- signals, standardisation, coefficients, urgent_doubt
    PRIMARY KEY (run_id, model)
);

-- Every metric of every model, split and slice; point estimates with 95% patient-bootstrap intervals.
CREATE TABLE IF NOT EXISTS metrics (
    run_id         VARCHAR NOT NULL,
    model          VARCHAR NOT NULL,
    split          VARCHAR NOT NULL,        -- val | calib (out-of-fold) | test (held-out clinic)
    slice          VARCHAR NOT NULL,        -- overall | fitzpatrick | fitzpatrick_group | clinic | category |
                                            -- fitzpatrick_group x clinic | an extra column
    slice_value    VARCHAR NOT NULL,        -- e.g. all, V, V-VI, clinic_7, emergency, 'V-VI | clinic_7'
    metric         VARCHAR NOT NULL,
    value          DOUBLE,
    ci_low         DOUBLE,                  -- 2.5th percentile of the bootstrap (NULL: point estimate only)
    ci_high        DOUBLE,
    n              INTEGER NOT NULL,        -- cases in the slice
    too_small      BOOLEAN NOT NULL,        -- n below min_slice_n: shown, not judged
    gap            DOUBLE,                  -- value minus the best-served group's value in this slice family
    gap_low        DOUBLE,
    gap_high       DOUBLE,
    gap_reference  VARCHAR,                 -- the best-served group
    flagged        BOOLEAN NOT NULL         -- the gap's interval excludes zero (and the slice is not too small)
);

-- Reliability diagrams: 15 equal-width bins of confidence (or of the defer score).
CREATE TABLE IF NOT EXISTS reliability_bins (
    run_id       VARCHAR NOT NULL,
    model        VARCHAR NOT NULL,
    split        VARCHAR NOT NULL,
    kind         VARCHAR NOT NULL,          -- calibrated | uncalibrated | defer (score vs observed need for review)
    slice        VARCHAR NOT NULL,
    slice_value  VARCHAR NOT NULL,
    bin          INTEGER NOT NULL,
    lower        DOUBLE NOT NULL,
    upper        DOUBLE NOT NULL,
    n            INTEGER NOT NULL,
    confidence   DOUBLE,                    -- mean predicted probability in the bin (NULL when empty)
    accuracy     DOUBLE                     -- observed frequency (correct, or needs review for kind defer)
);

-- Risk when keeping the cases with the lowest defer score, at coverage 1%..100%.
CREATE TABLE IF NOT EXISTS risk_coverage (
    run_id            VARCHAR NOT NULL,
    model             VARCHAR NOT NULL,
    split             VARCHAR NOT NULL,
    slice             VARCHAR NOT NULL,
    slice_value       VARCHAR NOT NULL,
    coverage          DOUBLE NOT NULL,      -- share of cases kept (not deferred)
    risk              DOUBLE NOT NULL,      -- error rate among the kept
    generalized_risk  DOUBLE NOT NULL,      -- errors among the kept / all cases
    threshold         DOUBLE NOT NULL       -- defer score of the last case kept
);

-- Deferral policies, fitted on calib, evaluated on each split overall and per skin-tone group.
CREATE TABLE IF NOT EXISTS policies (
    run_id              VARCHAR NOT NULL,
    model               VARCHAR NOT NULL,
    policy              VARCHAR NOT NULL,   -- review_budget | target_accuracy | urgent_sensitivity |
                                            -- equal_group_accuracy | conformal_set
    params              JSON NOT NULL,
    threshold           DOUBLE,             -- defer when defer_score >= threshold (NaN for conformal_set);
                                            -- policies saved from the dashboard survive `calibrate`
    split               VARCHAR NOT NULL,
    slice               VARCHAR NOT NULL,   -- overall | fitzpatrick_group
    slice_value         VARCHAR NOT NULL,
    n                   INTEGER NOT NULL,
    defer_rate          DOUBLE NOT NULL,
    accepted_accuracy   DOUBLE,             -- accuracy on the cases not deferred
    missed_urgent_rate  DOUBLE,             -- urgent cases called non-urgent and not deferred / urgent cases
    extra_defer_rate    DOUBLE NOT NULL     -- defer_rate minus the default policy's: the cost in reviews
);

-- Paired bootstrap differences (same resampled patients) between fusion models and baselines.
CREATE TABLE IF NOT EXISTS comparisons (
    run_id    VARCHAR NOT NULL,
    split     VARCHAR NOT NULL,
    model     VARCHAR NOT NULL,
    baseline  VARCHAR NOT NULL,
    metric    VARCHAR NOT NULL,             -- macro_f1
    value     DOUBLE NOT NULL,              -- model minus baseline
    ci_low    DOUBLE NOT NULL,
    ci_high   DOUBLE NOT NULL,
    n         INTEGER NOT NULL
);

-- Split-conformal prediction sets: coverage and size per method, mode and skin-tone group.
CREATE TABLE IF NOT EXISTS conformal (
    run_id       VARCHAR NOT NULL,
    model        VARCHAR NOT NULL,
    split        VARCHAR NOT NULL,          -- calib rows are cross-conformal (thresholds from the other folds)
    method       VARCHAR NOT NULL,          -- lac | aps
    mode         VARCHAR NOT NULL,          -- marginal | mondrian (one threshold per skin-tone group)
    slice_value  VARCHAR NOT NULL,          -- the group (all for marginal)
    alpha        DOUBLE NOT NULL,
    qhat         DOUBLE,                    -- the group's threshold on the nonconformity score (inf: every class)
    n_calib      INTEGER NOT NULL,          -- calib cases behind the threshold
    n            INTEGER NOT NULL,
    coverage     DOUBLE NOT NULL,
    set_size     DOUBLE NOT NULL
);

-- Captum attributions per case (python -m trainer explain, or on demand from the dashboard).
CREATE TABLE IF NOT EXISTS attributions (
    run_id             VARCHAR NOT NULL,
    model              VARCHAR NOT NULL,
    case_id            VARCHAR NOT NULL,
    target_class       VARCHAR NOT NULL,    -- the class explained: the model's prediction
    method             VARCHAR NOT NULL,    -- integrated_gradients | occlusion
    image_heatmap      BLOB,                -- float16 little-endian, row-major, heatmap_side x heatmap_side;
                                            -- IG: signed attribution summed over channels; occlusion: mean
                                            -- drop of the target logit when hidden (NULL: no photo path)
    heatmap_side       INTEGER,
    tokens             VARCHAR[],           -- the note's words and punctuation, in order (IG only)
    token_scores       DOUBLE[],            -- signed attribution per word, word pieces summed (IG only)
    modality_share     JSON,                -- {"image": .., "text": ..}: shares of |attribution| (IG only)
    convergence_delta  DOUBLE,              -- IG completeness gap, in logits (IG only)
    n_steps            INTEGER,             -- IG steps (Gauss-Legendre)
    created_at         TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, model, case_id, method)
);

-- Cases scored by a run after it was trained (python -m trainer predict): any dataset,
-- labelled or not, with the run's stored calibrator, deferral scorer, conformal thresholds
-- and policies. Nothing here is a label or enters a metric.
CREATE TABLE IF NOT EXISTS scores (
    run_id             VARCHAR NOT NULL,
    dataset            VARCHAR NOT NULL,
    model              VARCHAR NOT NULL,
    case_id            VARCHAR NOT NULL,
    probs              DOUBLE[] NOT NULL,   -- calibrated, in runs.classes order
    y_pred             VARCHAR NOT NULL,    -- the most probable class
    defer_score        DOUBLE NOT NULL,     -- probability that a clinician should review the output
    doubtful_rule_out  BOOLEAN NOT NULL,    -- a non-urgent call that still gives urgent classes urgent_doubt
    signals            JSON NOT NULL,       -- the deferral score's inputs (confidence, train_distance, ...)
    conformal_set      VARCHAR[] NOT NULL,  -- the run's default conformal set (Mondrian by skin-tone group)
    decisions          JSON NOT NULL,       -- {policy: true = review, false = accept} for every stored policy
    scored_at          TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, dataset, model, case_id)
);

-- Label-free signs that a clinic differs from a run's training clinics (python -m trainer
-- shift; fit writes one for its held-out clinic). No label of the clinic is read.
CREATE TABLE IF NOT EXISTS shift (
    run_id       VARCHAR NOT NULL,
    model        VARCHAR NOT NULL,          -- whose outputs the class mix and deferral come from
    dataset      VARCHAR NOT NULL,
    clinic       VARCHAR NOT NULL,
    metric       VARCHAR NOT NULL,          -- domain_auroc (slice photo | note), class_share_bbse,
                                            -- class_share_em (slice: the class), defer_rate,
                                            -- far_from_training, blurred_photo, overexposed_photo,
                                            -- empty_note, verdict (detail: the sentence)
    slice_value  VARCHAR NOT NULL,
    value        DOUBLE,
    ci_low       DOUBLE,                    -- 95% interval
    ci_high      DOUBLE,
    reference    DOUBLE,                    -- the training clinics' value (calib; 0.5 for an AUROC)
    n            INTEGER NOT NULL,          -- the clinic's cases behind it
    detail       VARCHAR,
    created_at   TIMESTAMP NOT NULL
);

-- Local recalibration of a run for a new clinic (python -m trainer adapt): k labelled
-- cases of the clinic refit the model's calibration, deferral score, policy thresholds and
-- conformal thresholds. The variant's outputs on the clinic's other cases live in
-- predictions, metrics, policies, conformal, ... under its own model name (variant).
CREATE TABLE IF NOT EXISTS adaptations (
    run_id          VARCHAR NOT NULL,
    variant         VARCHAR NOT NULL,       -- e.g. cross_attention@clinic_7-k200: the model name its rows carry
    model           VARCHAR NOT NULL,       -- the run's model it adapts
    dataset         VARCHAR NOT NULL,
    clinic          VARCHAR NOT NULL,
    k               INTEGER NOT NULL,       -- labelled local cases used
    select_method   VARCHAR NOT NULL,       -- random | stratified | uncertainty
    seed            INTEGER NOT NULL,
    local_case_ids  VARCHAR[] NOT NULL,     -- the k cases: never in the variant's figures
    params          JSON NOT NULL,          -- the refitted layers, thresholds and conformal thresholds
    baseline        JSON NOT NULL,          -- {"policies": [...], "conformal": [...]}: the model itself on the same cases
    created_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, variant)
);

-- How many labelled local cases a clinic needs (python -m trainer adapt --curve; fit makes
-- one for its held-out clinic): each figure over repeated draws of k cases, judged on the
-- clinic's other cases. k = 0 is the run's own rules.
CREATE TABLE IF NOT EXISTS adaptation_curve (
    run_id         VARCHAR NOT NULL,
    model          VARCHAR NOT NULL,
    dataset        VARCHAR NOT NULL,
    clinic         VARCHAR NOT NULL,
    select_method  VARCHAR NOT NULL,
    k              INTEGER NOT NULL,
    metric         VARCHAR NOT NULL,        -- defer_ece, urgent_caught, accepted_accuracy, coverage, macro_f1, defer_rate
    slice          VARCHAR NOT NULL,        -- overall | fitzpatrick_group | policy (defer_rate)
    slice_value    VARCHAR NOT NULL,
    value          DOUBLE,                  -- the mean over draws
    ci_low         DOUBLE,                  -- 2.5% point over draws
    ci_high        DOUBLE,                  -- 97.5% point over draws
    worst          DOUBLE,                  -- the worst draw (lowest; highest for defer_ece)
    draws          INTEGER NOT NULL,
    n_eval         INTEGER NOT NULL,        -- the clinic's cases judged (those not drawn)
    target         DOUBLE,                  -- the promise (NULL: no promise, e.g. macro_f1)
    holds          BOOLEAN,                 -- whether the promise holds at this k (trainer/evaluation/adaptation.py)
    created_at     TIMESTAMP NOT NULL
);

-- The label-free corrections of a clinic (prior-shift re-weighting, weighted conformal sets,
-- importance-weighted thresholds), judged against its labels where it has them (python -m
-- trainer shift). A correction is offered only where it helps; these rows say whether it does.
CREATE TABLE IF NOT EXISTS corrections (
    run_id       VARCHAR NOT NULL,
    model        VARCHAR NOT NULL,
    dataset      VARCHAR NOT NULL,
    clinic       VARCHAR NOT NULL,
    correction   VARCHAR NOT NULL,          -- prior_shift | weighted_conformal:<source> | weighted_thresholds:<source>:<policy> | likelihood_ratio:<source> (source: features or outputs)
    metric       VARCHAR NOT NULL,          -- macro_f1, ece, nll, coverage, set_size, accepted_accuracy, urgent_caught, defer_rate, ...
    slice_value  VARCHAR NOT NULL,          -- all, or the skin-tone group (coverage)
    before       DOUBLE,                    -- the run's own rules at the clinic
    after        DOUBLE,                    -- with the correction
    target       DOUBLE,                    -- the promise, where there is one
    helps        BOOLEAN,                   -- closer to the target (else better); NULL: a workload or diagnostic figure
    created_at   TIMESTAMP NOT NULL
);
