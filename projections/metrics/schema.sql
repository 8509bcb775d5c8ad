-- Every metric point, for get-history and the charts. Identical points
-- (run, key, step, timestamp, value) are stored once, as MLflow de-duplicates them.
CREATE TABLE points (
    run_id         text             NOT NULL,
    key            text             NOT NULL,
    step           bigint           NOT NULL,
    timestamp      bigint           NOT NULL,
    value          double precision NOT NULL,
    is_nan         boolean          NOT NULL,
    model_id       text,
    dataset_name   text,
    dataset_digest text,
    PRIMARY KEY (run_id, key, timestamp, step, value, is_nan)
);
CREATE INDEX points_by_step ON points (run_id, key, step, timestamp);
