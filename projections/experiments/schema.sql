-- Experiments as the MLflow API shows them.
CREATE TABLE experiments (
    experiment_id     bigint PRIMARY KEY,
    name              text   NOT NULL,
    artifact_location text   NOT NULL,
    lifecycle_stage   text   NOT NULL,
    creation_time     bigint NOT NULL,
    last_update_time  bigint NOT NULL
);
CREATE INDEX experiments_name ON experiments (name);
CREATE INDEX experiments_creation ON experiments (creation_time DESC, experiment_id);

CREATE TABLE experiment_tags (
    experiment_id bigint NOT NULL,
    key           text   NOT NULL,
    value         text   NOT NULL,
    PRIMARY KEY (experiment_id, key)
);
