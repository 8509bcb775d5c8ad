-- The model registry as the MLflow API shows it: registered models, their versions, tags,
-- aliases, and promotion requests. A registered model is keyed by a stable id (its stream),
-- so a rename moves the name, not the history.
CREATE TABLE registered_models (
    model_key              text   PRIMARY KEY,
    name                   text   NOT NULL UNIQUE,
    creation_timestamp     bigint NOT NULL,
    last_updated_timestamp bigint NOT NULL,
    description            text,
    user_id                text
);

CREATE TABLE registered_model_tags (
    model_key text NOT NULL,
    key       text NOT NULL,
    value     text NOT NULL,
    PRIMARY KEY (model_key, key)
);

-- Deleted versions stay (deleted = true): their numbers are never reused, and audit
-- queries can still name them. Searches and gets skip them.
CREATE TABLE model_versions (
    model_key              text    NOT NULL,
    name                   text    NOT NULL,
    version                bigint  NOT NULL,
    creation_timestamp     bigint  NOT NULL,
    last_updated_timestamp bigint  NOT NULL,
    user_id                text,
    current_stage          text    NOT NULL DEFAULT 'None',
    description            text,
    source                 text    NOT NULL,
    storage_location       text    NOT NULL,
    run_id                 text,
    run_link               text,
    status                 text    NOT NULL DEFAULT 'READY',
    status_message         text,
    model_id               text,
    deleted                boolean NOT NULL DEFAULT false,
    PRIMARY KEY (model_key, version)
);
CREATE INDEX model_versions_name ON model_versions (name, version);
CREATE INDEX model_versions_run ON model_versions (run_id);

CREATE TABLE model_version_tags (
    model_key text   NOT NULL,
    version   bigint NOT NULL,
    key       text   NOT NULL,
    value     text   NOT NULL,
    PRIMARY KEY (model_key, version, key)
);

CREATE TABLE aliases (
    model_key text   NOT NULL,
    alias     text   NOT NULL,
    version   bigint NOT NULL,
    PRIMARY KEY (model_key, alias)
);

-- Promotion approval: requests to move a version into a stage, and their outcome.
CREATE TABLE transition_requests (
    request_id     text   PRIMARY KEY,
    model_key      text   NOT NULL,
    version        bigint NOT NULL,
    to_stage       text   NOT NULL,
    status         text   NOT NULL,  -- PENDING, APPROVED, REJECTED, CANCELLED
    requested_by   text   NOT NULL,
    requested_at   bigint NOT NULL,
    comment        text,
    archive_existing_versions boolean NOT NULL DEFAULT false,
    decided_by     text,
    decided_at     bigint,
    decision_comment text
);
CREATE INDEX transition_requests_model ON transition_requests (model_key, version);

-- Every name a registered model has had, so history stays findable after renames and deletes.
CREATE TABLE model_names (
    name      text   NOT NULL,
    model_key text   NOT NULL,
    since     bigint NOT NULL,
    PRIMARY KEY (name, model_key)
);
