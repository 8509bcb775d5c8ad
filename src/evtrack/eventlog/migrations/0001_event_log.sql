-- The append-only event log and the bookkeeping the write side needs.

CREATE TABLE events (
    global_position bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction: projectors order by (transaction_id, global_position) and only
    -- read below the oldest running transaction, so a late committer is never skipped.
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text        NOT NULL,
    stream_position bigint      NOT NULL,
    event_type      text        NOT NULL,
    schema_version  smallint    NOT NULL,
    payload         bytea       NOT NULL,
    actor           text        NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_position UNIQUE (stream_id, stream_position)
);
CREATE INDEX events_log_order ON events (transaction_id, global_position);

CREATE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_reject_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();

-- The head of every stream: its version (for optimistic concurrency) and a snapshot of the
-- aggregate state the domain decides on, a fold of the stream's events kept in step with it.
CREATE TABLE streams (
    stream_id text   PRIMARY KEY,
    version   bigint NOT NULL,
    state     bytea
);

-- First answers of write requests, so a retry appends nothing and answers the same.
CREATE TABLE idempotency_keys (
    key        text        PRIMARY KEY,
    derived    boolean     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    result     bytea       NOT NULL
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);

-- Names that must be unique across streams (experiment names, registered model names).
CREATE TABLE unique_names (
    scope text NOT NULL,
    name  text NOT NULL,
    owner text NOT NULL,
    PRIMARY KEY (scope, name)
);

CREATE SEQUENCE experiment_ids START WITH 1;

-- One row per projection (and per projection being rebuilt): how far it has read.
CREATE TABLE projection_checkpoints (
    name            text        PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT '0',
    global_position bigint      NOT NULL DEFAULT 0,
    schema_hash     text        NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
