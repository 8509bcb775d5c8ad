-- The bound below which the log can be read in order without skipping a late committer.
--
-- Readers take only events of transactions older than every transaction that may still
-- commit events. pg_snapshot_xmin() of the current snapshot is such a bound for the whole
-- cluster, so a long write transaction in any other database (a bulk load, another
-- application) would hold every projection and every read-your-writes wait back.
-- Transactions of other databases cannot write this log: they are left out when
-- pg_stat_activity says which database a running transaction id belongs to. Anything not
-- known to be foreign (finished since the snapshot was taken, prepared, or hidden from this
-- role) still counts, which keeps the bound safe; it can only be later, never wrong.
--
-- STABLE: it sees the calling statement's snapshot, the one the caller's rows come from.
CREATE FUNCTION log_read_horizon() RETURNS xid8 LANGUAGE sql STABLE AS $$
    WITH snapshot AS (SELECT pg_current_snapshot() AS s),
    foreign_xids AS (
        SELECT backend_xid::text::bigint AS xid FROM pg_stat_activity
        WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database()
    )
    SELECT COALESCE(
        (SELECT min(x) FROM snapshot, pg_snapshot_xip(snapshot.s) AS x
         WHERE (x::text::bigint % 4294967296) NOT IN (SELECT xid FROM foreign_xids)),
        (SELECT pg_snapshot_xmax(s) FROM snapshot)
    )
$$;
