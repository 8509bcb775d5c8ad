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
CREATE INDEX runs_experiment_start ON runs (experiment_id, start_time DESC, run_id);

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
CREATE INDEX latest_metrics_key_value ON latest_metrics (key, value);

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
