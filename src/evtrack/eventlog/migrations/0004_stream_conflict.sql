-- A version conflict raised from inside one statement.
--
-- An optimistic append is a single statement that claims the idempotency key, moves the
-- stream head by compare-and-set and inserts the events. When the key is claimed but the head
-- had moved, the statement must fail as a whole, so that the claim is undone with it; this
-- function raises the error that does it (SQLSTATE EV409, which evtrack reads as a conflict).
CREATE OR REPLACE FUNCTION evtrack_stream_conflict(stream_id text) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'stream % moved on', stream_id USING ERRCODE = 'EV409';
END
$$;
