"""PostgreSQL restarts under load, fast and immediate (invariant 12).

While writers ingest (MLflow log-batch and native ingest) and readers read, the database is
stopped with ``pg_ctl -m fast`` (sessions terminated, clean shutdown) or ``-m immediate``
(every PostgreSQL process killed, WAL replayed at the next start), kept down for a moment and
started again. Meanwhile the server must answer only 200 or 503 with ``Retry-After`` (never a
500), log the outage in one line and its end in one more (no traceback per request), and
recover by itself; every acknowledged point must be stored, once.

The database is a private one (``private_postgres``): the shared one is never restarted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from _support import postgres as pgsupport
from _support.private_postgres import PrivatePostgres
from _support.server import EvtrackServer

from evtrack.projections.registry import all_projections

from ._load import Answers, BatchWriter, Reader, create_experiment, create_run, wait_until
from ._tally import tally

OUTAGE_S = 2.0


@pytest.fixture
def private_dsn(private_postgres: PrivatePostgres) -> Iterator[str]:
    name = pgsupport.new_database_name()
    dsn = pgsupport.create_database(private_postgres.admin_dsn, name)
    yield dsn
    if not private_postgres.running:
        private_postgres.start()
    pgsupport.drop_database(private_postgres.admin_dsn, name)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_under_load_is_503_then_recovers_losing_nothing(
    mode: str,
    private_postgres: PrivatePostgres,
    private_dsn: str,
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    server = evtrack_server_factory(dsn=private_dsn)
    experiment_id = create_experiment(server.url, f"restart-{mode}")
    runs = [create_run(server.url, experiment_id) for _ in range(3)]
    answers = Answers()
    writers = [
        BatchWriter([server.url], runs[0], answers, kind="log_batch", size=200),
        BatchWriter([server.url], runs[1], answers, kind="log_batch", size=200),
        BatchWriter([server.url], runs[2], answers, kind="ingest", size=2000),
    ]
    readers = [Reader([server.url], run_id, experiment_id, answers) for run_id in runs[:2]]
    load = [*writers, *readers]
    for thread in load:
        thread.start()
    try:
        wait_until(lambda: all(w.acknowledged >= 3 * w.size for w in writers), 30, "ingest")
        private_postgres.stop(mode)
        before = sum(w.acknowledged for w in writers)
        time.sleep(OUTAGE_S)
        during = sum(w.acknowledged for w in writers)
        private_postgres.start()
        started = time.monotonic()
        after = {id(w): w.acknowledged for w in writers}
        wait_until(lambda: all(w.acknowledged > after[id(w)] for w in writers), 30, "recovery")
        recovered_in = time.monotonic() - started
        time.sleep(0.5)  # reads and writes go on a moment after the recovery
    finally:
        for thread in load:
            thread.stop.set()
        for thread in load:
            thread.join(30)
        for writer in writers:
            writer.give_up.set()

    print(f"pg_ctl -m {mode}: {answers.summary()}; writes resumed {recovered_in:.2f}s after start")
    assert answers.unexpected == [], answers.unexpected[:5]
    assert answers.statuses() <= {200, 503}, answers.summary()
    assert answers.count(503) > 0, "the outage was not seen: " + answers.summary()
    assert answers.without_retry_after == 0
    # Nothing is acknowledged while the database is down (but the answer to a batch that
    # committed just before the stop, one per writer at most).
    assert during - before <= sum(w.size for w in writers), (before, during)

    log = server.stderr_path.read_text() + server.stdout_path.read_text()
    assert log.count('"database.unavailable"') == 1, log[-4000:]
    assert log.count('"database.recovered"') == 1, log[-4000:]
    assert '"request.failed"' not in log, log[-4000:]
    # Besides that line, each projector says that it lost the database, once per failed
    # reconnect attempt (at most two in a restart this short): the log grows with the number
    # of read models, not with the number of requests refused.
    warnings = [line for line in log.splitlines() if '"level": "warning"' in line]
    assert len(warnings) <= 1 + 2 * len(all_projections()), "\n".join(warnings)
    assert "Traceback" not in log, log[-4000:]
    assert server.is_running()

    tally(
        f"PostgreSQL restart (-m {mode}) during ingest and reads",
        private_dsn,
        runs,
        sent=sum(w.sent for w in writers),
        acknowledged=sum(w.acknowledged for w in writers),
    ).check()
