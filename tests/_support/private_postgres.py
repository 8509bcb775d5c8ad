"""A PostgreSQL of a test's own, which it may stop and start in any shutdown mode.

The session's PostgreSQL is shared by every test (and by other developers' runs on the same
machine): a test must never restart it. Tests of database outages start this one instead:
the embedded server (``pgserver``) in a temporary directory, driven with ``pg_ctl`` directly
so the shutdown mode is the test's choice:

* ``fast``: sessions are terminated and their transactions rolled back, then a clean
  shutdown (what a service manager's restart does);
* ``immediate``: every server process is killed at once, without a checkpoint; the next start
  replays the WAL (what a crash or an OOM kill looks like to clients).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from _support.postgres import embedded_temp_dir
from evtrack._embedded_postgres import EmbeddedPostgres, start_embedded_postgres


def _pg_ctl() -> Path:
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"


class PrivatePostgres:
    """One embedded PostgreSQL in a temporary directory; :meth:`close` removes it all."""

    def __init__(self) -> None:
        self._root = embedded_temp_dir()
        self._handle: EmbeddedPostgres = start_embedded_postgres(self._root / "pg")
        self.data_dir = self._handle.data_dir
        self._socket_dir = self._handle.socket_dir
        self.running = True
        # pgserver runs PostgreSQL as its own system user when started as root.
        self._user = "pgserver" if os.geteuid() == 0 else None

    @property
    def admin_dsn(self) -> str:
        return self._handle.admin_dsn

    def dsn_for(self, database: str) -> str:
        return self._handle.dsn_for(database)

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(_pg_ctl()), "-D", str(self.data_dir), "-w", *args],
            check=True,
            user=self._user,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # pg_ctl start leaves the server holding its stdout
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )

    def stop(self, mode: str) -> None:
        """``pg_ctl stop -m mode`` (smart, fast or immediate)."""
        self._pg_ctl("-m", mode, "stop")
        self.running = False

    def start(self) -> None:
        """Start it again with the options pgserver uses (unix socket only, same directory)."""
        self._pg_ctl(
            "-o",
            '-h ""',
            "-o",
            f"-k {self._socket_dir}",
            "-l",
            str(self.data_dir / "log"),
            "start",
        )
        self.running = True

    def log_text(self) -> str:
        try:
            return (self.data_dir / "log").read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        if self.running:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._pg_ctl("-m", "fast", "stop", timeout=30)
            self.running = False
        # The handle's own stop finds its postmaster gone (or never restarted by it) and only
        # drops this process from pgserver's handle list.
        self._handle.stop()
        shutil.rmtree(self._root, ignore_errors=True)
