-- Runs with their params, tags, latest metric values and dataset inputs: everything
-- runs/get and runs/search read.
CREATE TABLE runs (
    run_id          text   PRIMARY KEY,
    experiment_id   bigint NOT NULL,
    run_name        text   NOT NULL,
    user_id         text   NOT NULL,
    status          text   NOT NULL,
    start_time      bigint,
    end_time        bigint,
    artifact_uri    text   NOT NULL,
    lifecycle_stage text   NOT NULL,
    deleted_time    bigint
);
-- The default search order (start_time DESC, then run_id by code point; see search/_runs.py),
-- so an experiment's newest page is read straight off the index. lifecycle_stage is included
-- so that every search can find an experiment's runs without visiting the table.
CREATE INDEX runs_experiment_start ON runs
    (experiment_id, start_time DESC NULLS LAST, run_id COLLATE "C") INCLUDE (lifecycle_stage);

CREATE TABLE params (
    run_id text NOT NULL,
    key    text NOT NULL,
    value  text NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX params_key_value ON params (key, value);

CREATE TABLE tags (
    run_id text NOT NULL,
    key    text NOT NULL,
    value  text NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX tags_key_value ON tags (key, value);

-- One row per (run, key): the point with the greatest (step, timestamp, value).
-- NaN is stored as value 0 with is_nan set, which is what MLflow compares against.
CREATE TABLE latest_metrics (
    run_id    text             NOT NULL,
    key       text             NOT NULL,
    value     double precision NOT NULL,
    timestamp bigint           NOT NULL,
    step      bigint           NOT NULL,
    is_nan    boolean          NOT NULL,
    PRIMARY KEY (run_id, key)
);
-- Metric filters and sorts: "metrics.acc > 0.5 ORDER BY metrics.acc DESC" is a range scan of
-- this index in order; run_id and is_nan make it an index-only scan.
CREATE INDEX latest_metrics_key_value ON latest_metrics (key, value) INCLUDE (run_id, is_nan);

CREATE TABLE dataset_inputs (
    run_id      text NOT NULL,
    name        text NOT NULL,
    digest      text NOT NULL,
    source_type text NOT NULL,
    source      text NOT NULL,
    schema      text,
    profile     text,
    context     text,
    tags        jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (run_id, name, digest)
);

CREATE TABLE model_inputs (
    run_id   text NOT NULL,
    model_id text NOT NULL,
    PRIMARY KEY (run_id, model_id)
);

CREATE TABLE model_outputs (
    run_id   text   NOT NULL,
    model_id text   NOT NULL,
    step     bigint NOT NULL,
    PRIMARY KEY (run_id, model_id)
);
