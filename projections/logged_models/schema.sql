-- MLflow 3 logged models: what log_model creates before any registration.
CREATE TABLE logged_models (
    model_id                  text    PRIMARY KEY,
    experiment_id             bigint  NOT NULL,
    name                      text    NOT NULL,
    artifact_location         text    NOT NULL,
    creation_timestamp_ms     bigint  NOT NULL,
    last_updated_timestamp_ms bigint  NOT NULL,
    status                    text    NOT NULL,
    status_message            text,
    model_type                text,
    source_run_id             text,
    deleted                   boolean NOT NULL DEFAULT false
);
CREATE INDEX logged_models_experiment ON logged_models (experiment_id, creation_timestamp_ms DESC);

CREATE TABLE logged_model_params (
    model_id text NOT NULL,
    key      text NOT NULL,
    value    text NOT NULL,
    PRIMARY KEY (model_id, key)
);

CREATE TABLE logged_model_tags (
    model_id text NOT NULL,
    key      text NOT NULL,
    value    text NOT NULL,
    PRIMARY KEY (model_id, key)
);

-- Every metric point logged with a model_id (NaN stored as 0 with is_nan, as elsewhere).
CREATE TABLE logged_model_metrics (
    model_id       text             NOT NULL,
    key            text             NOT NULL,
    value          double precision NOT NULL,
    is_nan         boolean          NOT NULL,
    timestamp      bigint           NOT NULL,
    step           bigint           NOT NULL,
    run_id         text             NOT NULL,
    dataset_name   text,
    dataset_digest text,
    PRIMARY KEY (model_id, key, run_id, timestamp, step, value, is_nan)
);
