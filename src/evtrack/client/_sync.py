"""``evtrack sync``: deliver spool folders whose clients are gone.

A folder is only touched if its lock can be taken, i.e. its owner process is dead (or
closed without delivering everything); live clients' folders are skipped and reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from evtrack.client._batch import Limits, no_pause
from evtrack.client._client import default_server_url, default_spool_dir
from evtrack.client._delivery import Delivery, rejected_dir
from evtrack.client._spool import LockedFolder, clean_staging, client_folders
from evtrack.client._transport import Transport

log = logging.getLogger("evtrack.client")


@dataclass
class SyncReport:
    delivered: list[str] = field(default_factory=list)  # folders fully delivered
    live: list[str] = field(default_factory=list)  # owned by a running process, skipped
    incomplete: list[str] = field(default_factory=list)  # gave up (server unreachable...)
    points: int = 0
    rejected_points: int = 0

    @property
    def ok(self) -> bool:
        return not self.incomplete


def sync_spool(
    spool_dir: str | Path | None = None,
    server_url: str | None = None,
    *,
    timeout: float = 300.0,
    say: Callable[[str], None] = print,
) -> SyncReport:
    """Deliver every ownerless client folder under ``spool_dir`` to ``server_url`` (default:
    the server each folder was written for). Gives up on a folder after ``timeout``
    seconds overall; what is left stays for the next try."""
    root = Path(spool_dir).expanduser() if spool_dir else default_spool_dir()
    report = SyncReport()
    deadline = time.monotonic() + timeout
    clean_staging(root)
    for path in client_folders(root):
        folder = LockedFolder.try_lock(path)
        if folder is None:
            report.live.append(path.name)
            say(f"{path.name}: in use by a running process, skipped")
            continue
        meta = folder.meta()
        url = server_url or str(meta.get("server") or "") or default_server_url()
        transport = Transport(url, user=str(meta.get("user") or "") or None)
        delivery = Delivery(folder, transport, rejected_dir(root), limits=Limits(), pause=no_pause)
        delivery.deadline = deadline
        complete = False
        try:
            while True:
                step = delivery.step()
                if step.kind == "sent":
                    continue
                if step.kind == "idle":
                    complete = not delivery.pending()
                    break
                if time.monotonic() + step.delay >= deadline:
                    break
                time.sleep(step.delay)
        finally:
            delivery.close()
            transport.close()
        report.points += delivery.delivered_points
        report.rejected_points += delivery.rejected_points
        if complete:
            folder.remove()
            report.delivered.append(path.name)
            say(
                f"{path.name}: delivered to {url} ({delivery.delivered_points} points, "
                f"{delivery.requests} requests)"
            )
        else:
            folder.release()
            report.incomplete.append(path.name)
            say(f"{path.name}: not fully delivered to {url}; left in the spool")
    if not (report.delivered or report.live or report.incomplete):
        say(f"nothing to deliver in {root}")
    return report
