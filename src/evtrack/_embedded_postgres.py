"""The private PostgreSQL that ``evtrack server`` runs when it is given no database URL.

evtrack keeps its event log in PostgreSQL and nothing else, so "one command on a fresh
machine" needs a PostgreSQL that comes with the package. The ``pgserver`` wheel ships the
server binaries; this module wraps it with the few things evtrack needs on top:

* a data directory that follows the platform's conventions (and an override for containers),
* a DSN for an ``evtrack`` database (created on first use) that asyncpg and libpq accept,
* sharing: several evtrack processes (API nodes, projector workers, a CLI command) pointed at
  the same data directory use one server; the last one to let go stops it,
* recovery from the states an unclean exit leaves behind (a ``postmaster.pid`` whose process
  id now belongs to something else, handles of processes that were killed).

How pgserver behaves, which is why the code below looks the way it does:

* The server listens on a unix socket only (``-h ""``), in the data directory itself, or in a
  short per-user runtime directory when the data directory's path is too long for a socket.
  Authentication is ``trust``: the socket's directory permissions are the access control.
* Run as root, it creates a system user ``pgserver`` (``useradd``), makes it the owner of
  the data directory, runs ``initdb``/``pg_ctl`` as that user (uid only: the group stays
  root's), and adds ``o+rx`` to *every* parent directory of the data directory so that user
  can reach it; anything that later takes those bits away (a pytest run as root resets
  ``/tmp/pytest-of-root`` to 0700) cuts the server off from its files. That is why root's
  default data directory is ``/var/lib/evtrack`` rather than ``/root/.local/share``: the
  latter would make ``/root`` world-listable.
* Sharing is per data directory: an inter-process file lock serialises start-up, and
  ``<data>/.handle_pids.json`` lists the process ids holding a handle. A process that finds
  the server running joins it; at exit (``atexit``) or :meth:`EmbeddedPostgres.stop` a process
  removes itself and, if it was the last one, stops the server with ``pg_ctl stop``.
* A process killed without running ``atexit`` (SIGKILL, an unhandled SIGTERM) leaves the
  server running and its own id in the handle list. The next process reuses the server; this
  module prunes dead ids so the last live user still stops it.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import quote

import asyncpg

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

__all__ = [
    "DATABASE_NAME",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "data_root",
    "default_data_dir",
    "start_embedded_postgres",
]

_log = logging.getLogger(__name__)

#: The database evtrack uses inside the embedded server. The ``postgres`` database stays
#: free for administration (creating and dropping databases needs a connection elsewhere).
DATABASE_NAME: Final = "evtrack"

#: The role ``pgserver`` creates with ``initdb -U``; it is the superuser.
_SUPERUSER: Final = "postgres"

#: The maintenance database every cluster has; connections that create or drop databases
#: go here.
_ADMIN_DATABASE: Final = "postgres"

_T = TypeVar("_T")


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started or reached.

    Raised instead of pgserver's assorted ``subprocess`` and ``AssertionError`` failures so
    the CLI can print one clear message (the server log's path is in it).
    """


def data_root() -> Path:
    """Return the directory where evtrack keeps local state (embedded database and the like).

    Resolution order, first match wins:

    1. ``$EVTRACK_DATA_DIR``: an explicit choice, e.g. a container volume.
    2. ``$XDG_DATA_HOME/evtrack``: the user asked for a data home, honour it even as root.
    3. ``/var/lib/evtrack`` when running as root: pgserver opens every parent of the data
       directory to other users (see the module docstring), which is harmless for ``/var/lib``
       and not for ``/root``.
    4. ``~/.local/share/evtrack``: the XDG default for a normal user.
    """
    explicit = os.environ.get("EVTRACK_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says relative values are invalid
        return Path(xdg) / "evtrack"
    if _running_as_root():
        return Path("/var/lib/evtrack")
    return Path.home() / ".local" / "share" / "evtrack"


def default_data_dir() -> Path:
    """Return the PostgreSQL data directory ``evtrack server`` uses when given no database URL.

    It is ``<data_root()>/postgres``, so the rest of evtrack's local state can live beside it
    and ``EVTRACK_DATA_DIR`` moves all of it at once.
    """
    return data_root() / "postgres"


def _running_as_root() -> bool:
    geteuid: Callable[[], int] | None = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0


class _SharedServer:
    """This process's single pgserver handle for one data directory, reference-counted.

    pgserver keeps one handle per process and counts *processes*, not handles. Without this
    count, two ``start_embedded_postgres`` calls in one process (say the API and an embedded
    projector) would share a handle, and the first ``stop()`` would stop the server under the
    second.
    """

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.refs = 0


_registry: dict[Path, _SharedServer] = {}
_registry_lock = threading.Lock()


class EmbeddedPostgres:
    """A handle on the embedded server for one data directory.

    Use :attr:`dsn` to connect to the ``evtrack`` database. Call :meth:`stop` (or use the
    handle as a context manager) when done; the server itself stops only when no handle in
    any process remains. A handle that is never stopped is released at interpreter exit.
    """

    def __init__(self, data_dir: Path, shared: _SharedServer) -> None:
        self._data_dir = data_dir
        self._shared: _SharedServer | None = shared
        info = shared.server.get_postmaster_info()
        if info.socket_dir is None or info.port is None:  # only the Windows build uses TCP
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL in {data_dir} reports no unix socket "
                f"(postmaster.pid: {info!r})"
            )
        self._socket_dir = Path(info.socket_dir)
        self._port = int(info.port)
        self._pid = int(info.pid)

    @property
    def data_dir(self) -> Path:
        """The PostgreSQL data directory (``PGDATA``)."""
        return self._data_dir

    @property
    def socket_dir(self) -> Path:
        """The directory holding the server's ``.s.PGSQL.<port>`` socket."""
        return self._socket_dir

    @property
    def pid(self) -> int:
        """The postmaster's process id; the same for every handle on one running server."""
        return self._pid

    @property
    def dsn(self) -> str:
        """A ``postgresql://`` URL for the ``evtrack`` database.

        The form is ``postgresql://postgres@/evtrack?host=<socket dir>&port=<port>``: an
        empty host part plus a ``host`` query parameter naming a directory is how both
        asyncpg and libpq spell "unix socket in this directory". The port is spelled out so a
        ``PGPORT`` in the environment cannot redirect the connection.
        """
        return self.dsn_for(DATABASE_NAME)

    @property
    def admin_dsn(self) -> str:
        """A URL for the ``postgres`` maintenance database, for creating and dropping others."""
        return self.dsn_for(_ADMIN_DATABASE)

    def dsn_for(self, database: str) -> str:
        """Return the URL of ``database`` on this server (see :attr:`dsn` for the form)."""
        host = quote(str(self._socket_dir), safe="/")
        return (
            f"postgresql://{_SUPERUSER}@/{quote(database, safe='')}?host={host}&port={self._port}"
        )

    @property
    def log_file(self) -> Path:
        """The server's own log, the first place to look when it would not start."""
        return self._data_dir / "log"

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` has been called on this handle."""
        return self._shared is None

    def stop(self) -> None:
        """Release this handle; stop the server if it was the last user in any process.

        Idempotent. Other processes (a second ``evtrack`` on the same data directory) keep
        the server running until they let go too.
        """
        with _registry_lock:
            shared, self._shared = self._shared, None
            if shared is None:
                return
            shared.refs -= 1
            if shared.refs > 0:
                return
            if _registry.get(self._data_dir) is shared:
                del _registry[self._data_dir]
            _release(shared.server)

    def __enter__(self) -> EmbeddedPostgres:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else f"pid={self._pid}"
        return f"EmbeddedPostgres({str(self._data_dir)!r}, {state}, dsn={self.dsn!r})"


def start_embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or join) the embedded PostgreSQL in ``data_dir`` and return a handle on it.

    Creates ``data_dir`` (and its parents) and runs ``initdb`` on first use, starts the
    server unless another process already runs it on this directory, and creates the
    ``evtrack`` database if it is missing. Safe to call from several processes at once:
    pgserver serialises start-up with a file lock, and a lost ``CREATE DATABASE`` race is
    treated as success.

    This blocks for a few seconds on first start (``initdb``). From async code call it via
    ``await asyncio.to_thread(start_embedded_postgres, path)``; it is also safe to call
    directly inside a running event loop (its own database work runs on a helper thread).
    """
    data_dir = Path(data_dir).expanduser().resolve()
    _check_path_usable(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)

    with _registry_lock:
        shared = _registry.get(data_dir)
        if shared is None or not _server_alive(shared.server):
            shared = _SharedServer(_open_server(data_dir))
            _registry[data_dir] = shared
        shared.refs += 1
    handle = EmbeddedPostgres(data_dir, shared)
    try:
        _run_coroutine(lambda: _ensure_database(handle.admin_dsn, DATABASE_NAME))
    except BaseException:
        handle.stop()
        raise
    _log.info("embedded PostgreSQL ready in %s (pid %d): %s", data_dir, handle.pid, handle.dsn)
    return handle


# Characters pgserver cannot pass through: it hands the socket directory to ``pg_ctl -o``
# unquoted, and pg_ctl runs that through ``/bin/sh``. A data directory with a space gets as
# far as initdb and then fails with the cryptic 'postgres: invalid argument: "data"'.
_UNSAFE_PATH_CHARS: Final = frozenset(" \t\n\r\"'\\$`;&|<>()*?[]{}!#")


def _check_path_usable(data_dir: Path) -> None:
    bad = sorted(set(str(data_dir)) & _UNSAFE_PATH_CHARS)
    if bad:
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL cannot use {str(data_dir)!r}: its path contains "
            f"{''.join(bad)!r}, which the bundled pg_ctl does not quote. Choose another "
            "directory with EVTRACK_DATA_DIR, or pass a database URL."
        )


def _import_pgserver() -> Any:
    """Import pgserver lazily and quietly.

    Lazily, so that ``evtrack`` with a database URL never pays for it. Quietly, because its
    import asks platformdirs for a runtime directory, which warns when ``XDG_RUNTIME_DIR``
    is unset (root shells, containers, CI) and then falls back to ``/tmp/runtime-<uid>``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    return pgserver


def _open_server(data_dir: Path) -> PostgresServer:
    pgserver = _import_pgserver()
    server_cls = pgserver.PostgresServer
    # pgserver's per-process cache can hold a handle whose server another process stopped.
    server_cls._instances.pop(data_dir, None)
    with server_cls._lock:
        _remove_stale_postmaster_pid(data_dir)
        _prune_dead_handles(data_dir, keep=None)
    try:
        server: PostgresServer = pgserver.get_server(data_dir, cleanup_mode="stop")
    except Exception as exc:
        raise EmbeddedPostgresError(
            f"could not start the embedded PostgreSQL in {data_dir}: {exc}"
            f" (server log: {data_dir / 'log'})"
        ) from exc
    return server


def _release(server: PostgresServer) -> None:
    """Give up this process's pgserver handle; stop the server if no live process holds one."""
    server_cls = type(server)
    with server_cls._lock:
        _prune_dead_handles(server.pgdata, keep=os.getpid())
    try:
        # Removes our pid from the handle list and, if we were the last, runs ``pg_ctl stop``.
        server.cleanup()
    except Exception as exc:  # a failed stop must not mask the caller's own exit path
        _log.warning("stopping the embedded PostgreSQL in %s failed: %s", server.pgdata, exc)
    # pgserver forgets its cached handle only when it stopped the server. Forget it in every
    # case, so a later start in this process builds a new handle and registers this pid
    # again, and drop the atexit hook that would otherwise release the handle a second time.
    if server_cls._instances.get(server.pgdata) is server:
        del server_cls._instances[server.pgdata]
    atexit.unregister(server._cleanup)


def _server_alive(server: PostgresServer) -> bool:
    """Whether the server behind a cached handle still runs (another process may stop it)."""
    pid_file = Path(server.pgdata) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False
    return pid == server.get_pid() and _is_postmaster(pid, Path(server.pgdata))


def _remove_stale_postmaster_pid(data_dir: Path) -> None:
    """Delete a ``postmaster.pid`` left by a server that died without cleaning up.

    pgserver takes "a process with that id exists" as "the server runs", and PostgreSQL
    itself refuses to start while the id is alive. After a crash or a container restart the
    id is often reused by an unrelated process, which would leave evtrack pointing at a dead
    socket. On Linux we can tell: the real postmaster is a live ``postgres`` process whose
    command line names this data directory. Elsewhere we leave the file alone.
    """
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    if not Path("/proc/self").exists():
        return
    if not _is_postmaster(pid, data_dir):
        _log.warning(
            "removing stale %s (process %d is not this data directory's postmaster)",
            pid_file,
            pid,
        )
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()


def _is_postmaster(pid: int, data_dir: Path) -> bool:
    """Best-effort check that ``pid`` is the live postmaster of ``data_dir``."""
    proc = Path("/proc") / str(pid)
    if not Path("/proc/self").exists():  # no procfs (macOS): existence is all we can test
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # /proc/<pid>/stat is "pid (comm) state ..."; a zombie ("Z") is no server.
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    if state in {"Z", "X", "x"}:
        return False
    if not cmdline or not os.path.basename(cmdline[0].decode(errors="replace")).startswith(
        "postgres"
    ):
        return False
    return os.fsencode(str(data_dir)) in cmdline


def _prune_dead_handles(data_dir: Path, keep: int | None) -> None:
    """Drop process ids of killed processes from pgserver's handle list.

    Otherwise a holder that died without ``atexit`` keeps the count above one forever and
    no later process ever stops the server. ``keep`` is a pid to leave alone (our own).
    """
    pids_file = data_dir / ".handle_pids.json"
    pgserver = _import_pgserver()
    handles = pgserver.utils.DiskList(pids_file)
    try:
        pids = [int(p) for p in handles.get()]
    except (OSError, ValueError, TypeError):
        return
    alive = [p for p in pids if p == keep or _pid_alive(p)]
    if alive != pids:
        _log.info("dropping dead handles %s from %s", sorted(set(pids) - set(alive)), pids_file)
        handles.put(alive)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    stat = Path("/proc") / str(pid) / "stat"
    with contextlib.suppress(OSError):
        text = stat.read_text()
        if ")" in text and text.rsplit(")", 1)[-1].split()[0] in {"Z", "X", "x"}:
            return False
    return True


async def _ensure_database(admin_dsn: str, name: str) -> None:
    """Create database ``name`` unless it exists; losing a concurrent race is fine."""
    conn = await asyncpg.connect(admin_dsn, timeout=30)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return
        ident = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {ident}")
        except asyncpg.DuplicateDatabaseError:
            pass
        except asyncpg.UniqueViolationError:
            # Two CREATE DATABASE at once can also collide on pg_database's unique index.
            pass
    finally:
        await conn.close()


def _run_coroutine(factory: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion from synchronous code, inside or outside an event loop.

    ``asyncio.run`` refuses to run inside a running loop (the server's start-up may call us
    from one), and outside one it still replaces the thread's current loop, which would upset
    a caller that has set one up (pytest-asyncio does). A private loop on a helper thread
    touches neither.
    """

    async def main() -> _T:
        return await factory()

    with concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="evtrack-embedded-pg"
    ) as pool:
        return pool.submit(asyncio.run, main()).result()


@contextlib.contextmanager
def embedded_postgres(data_dir: Path | None = None) -> Iterator[EmbeddedPostgres]:
    """Context manager form: ``with embedded_postgres() as pg: connect(pg.dsn)``."""
    handle = start_embedded_postgres(default_data_dir() if data_dir is None else data_dir)
    try:
        yield handle
    finally:
        handle.stop()


if __name__ == "__main__":  # pragma: no cover - a manual smoke test
    logging.basicConfig(level=logging.INFO)
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else default_data_dir()
    with embedded_postgres(target) as pg:
        print(pg.dsn)
