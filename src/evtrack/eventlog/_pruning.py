"""Forget idempotency keys that can no longer be used.

``idempotency_keys`` holds the first answer of every write request (about 310 bytes each).
A key is useful only while a retry may still come:

* a derived key (from the request body) protects against a retried request only for the
  recorder's ``derived_key_ttl_s``; past it, a claim overwrites it anyway;
* an explicit key (the client's ``Idempotency-Key``) is kept for a retention chosen by the
  operator. The evtrack client may resend a spool days after it was written, so the default
  is generous (a week). A request retried after its key was pruned is applied again.

Rows go in small batches (each its own short statement, by ``ctid``), so pruning a backlog
never holds many row locks or one long transaction. When several API nodes share the
database, only one prunes at a time: the others find the advisory lock taken and skip.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import asyncpg

PRUNE_LOCK_KEY = zlib.crc32(b"evtrack-idempotency-pruning")
PRUNE_BATCH = 5000
DEFAULT_EXPLICIT_RETENTION_S = 7 * 24 * 3600.0

# Both conditions on created_at: the first, on the smaller horizon, lets the planner use
# the created_at index whichever kind of key it is.
_DELETE_BATCH = """
DELETE FROM idempotency_keys
 WHERE ctid IN (
     SELECT ctid FROM idempotency_keys
      WHERE created_at < now() - make_interval(secs => least($1::float8, $2::float8))
        AND created_at < now() - make_interval(
                secs => CASE WHEN derived THEN $1::float8 ELSE $2::float8 END)
      LIMIT $3)
"""


@dataclass(frozen=True)
class Pruned:
    """What one pruning pass did: ``ran`` is false when another process held the lock."""

    ran: bool
    deleted: int


async def prune_idempotency_keys(
    pool: asyncpg.Pool,
    *,
    derived_ttl_s: float,
    explicit_retention_s: float = DEFAULT_EXPLICIT_RETENTION_S,
    batch: int = PRUNE_BATCH,
) -> Pruned:
    """Delete expired idempotency keys, ``batch`` rows per statement, until none is left.

    A derived key expires ``derived_ttl_s`` after it was stored, an explicit one after
    ``explicit_retention_s``. Returns without deleting if another process is pruning.
    """
    deleted = 0
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK_KEY):
            return Pruned(ran=False, deleted=0)
        try:
            while True:
                status = await conn.execute(
                    _DELETE_BATCH, float(derived_ttl_s), float(explicit_retention_s), batch
                )
                n = int(status.rsplit(" ", 1)[-1])
                deleted += n
                if n < batch:
                    break
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK_KEY)
    return Pruned(ran=True, deleted=deleted)
