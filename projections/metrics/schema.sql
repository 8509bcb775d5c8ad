-- Metric series, stored in columnar chunks: one row per (logging request, run, key) holding
-- that request's points as parallel arrays. Ingesting a 50,000-point batch writes a handful of
-- rows, not 50,000, and a history page unnests only the chunks it needs.
CREATE TABLE chunks (
    run_id          text             NOT NULL,
    key             text             NOT NULL,
    seq             bigint           NOT NULL,  -- global position of the event that carried them
    n               integer          NOT NULL,
    min_ts          bigint           NOT NULL,
    max_ts          bigint           NOT NULL,
    min_step        bigint           NOT NULL,
    max_step        bigint           NOT NULL,
    timestamps      bigint[]         NOT NULL,
    steps           bigint[]         NOT NULL,
    vals            double precision[] NOT NULL,  -- NaN stays NaN
    model_ids       text[],
    dataset_names   text[],
    dataset_digests text[],
    PRIMARY KEY (run_id, key, seq)
);
-- History pages list a series' chunks in timestamp order; a series logged one point per
-- request has one chunk per point, so this must be an index-only scan, not a sort.
CREATE INDEX chunks_by_min_ts ON chunks (run_id, key, min_ts, seq) INCLUDE (n, max_ts);

-- One row per series: how many points it received and the stride of its overview, plus the
-- smallest and largest points by (step, timestamp, value): charts always show both ends.
CREATE TABLE series (
    run_id     text             NOT NULL,
    key        text             NOT NULL,
    total      bigint           NOT NULL,
    stride     bigint           NOT NULL,
    kept       integer          NOT NULL,  -- points in the series' overview rows
    rows       integer          NOT NULL,  -- overview rows (merged into one past a few dozen)
    first_ts   bigint           NOT NULL,
    first_step bigint           NOT NULL,
    first_val  double precision NOT NULL,
    last_ts    bigint           NOT NULL,
    last_step  bigint           NOT NULL,
    last_val   double precision NOT NULL,
    PRIMARY KEY (run_id, key)
);

-- The overview of a series: every stride-th point it received, in arrival order, at most a
-- few thousand, so charts of a million-point series read a few thousand points. Rows are
-- appended per batch until the overview outgrows its cap (then the series' rows are thinned
-- into one and the stride doubles, log2(total / cap) times in all) or a series has more than a
-- few dozen rows (then they are merged into one, so a chart reads a handful of rows).
CREATE TABLE overview (
    run_id     text               NOT NULL,
    key        text               NOT NULL,
    -- arrival index (0 for the series' first point) of the row's first point: rows in this
    -- order are the overview in arrival order, however projector batches fell
    first_index bigint            NOT NULL,
    timestamps bigint[]           NOT NULL,
    steps      bigint[]           NOT NULL,
    vals       double precision[] NOT NULL,
    PRIMARY KEY (run_id, key, first_index)
);

-- Arrays of a large chunk are hundreds of kilobytes: compress them with lz4 (about twenty
-- times cheaper than the default pglz, and smaller), or not at all where PostgreSQL lacks lz4.
DO $$
DECLARE
    col record;
BEGIN
    FOR col IN SELECT * FROM (VALUES ('chunks', 'timestamps'), ('chunks', 'steps'),
                                     ('chunks', 'vals'), ('overview', 'timestamps'),
                                     ('overview', 'steps'), ('overview', 'vals')) AS c(t, c)
    LOOP
        BEGIN
            EXECUTE format('ALTER TABLE %I ALTER COLUMN %I SET COMPRESSION lz4', col.t, col.c);
        EXCEPTION WHEN OTHERS THEN
            EXECUTE format('ALTER TABLE %I ALTER COLUMN %I SET STORAGE EXTERNAL', col.t, col.c);
        END;
    END LOOP;
END
$$;
