"""Which failures mean "the database is not there right now", as opposed to a bad request.

During a PostgreSQL restart or failover, every statement fails: connections are refused or cut
(class 08, ``OSError``), the server says it is shutting down or starting (57P01..57P03), or the
pool finds its connections closed. These are not the request's fault and not evtrack's bugs:
the answer is 503 with ``Retry-After`` (MLflow's client retries it), and the log says so once
per outage rather than once per request.
"""

from __future__ import annotations

import os

import asyncpg

_ASYNCPG_DIR = os.path.dirname(asyncpg.__file__) + os.sep

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    ConnectionRefusedError,  # nothing listens on the database's port or socket
    asyncpg.PostgresConnectionError,  # 08
    asyncpg.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,  # 57P01
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.TooManyConnectionsError,  # 53300
    asyncpg.ConnectionDoesNotExistError,  # the connection was closed under a statement
)


# asyncpg's protocol state machine, confused by a message the server sent to an idle
# connection: at a shutdown PostgreSQL sends every session a FATAL "terminating connection
# due to administrator command", and the next statement on that pooled connection fails with
# one of these before asyncpg has noticed the connection is closed.
_BROKEN_PROTOCOL = ("cannot switch to state", "cannot process message", "not connected")


def _raised_in_asyncpg(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if _ASYNCPG_DIR in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached now (retry later), not that the
    statement or the request was wrong."""
    if isinstance(exc, _UNAVAILABLE):
        return True
    # An OSError from inside asyncpg is its connection to the database (a socket file gone, a
    # reset, a timeout connecting). Other OSErrors (a full disk, a reset from an object store)
    # are not the database's absence and stay what they are.
    if isinstance(exc, OSError) and _raised_in_asyncpg(exc):
        return True
    # Only that exact class: its subclasses (an outdated statement cache...) mean other things.
    if type(exc) is asyncpg.InternalClientError and str(exc).startswith(_BROKEN_PROTOCOL):
        return True
    # A pooled connection found closed, or a pool closing during shutdown.
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)
