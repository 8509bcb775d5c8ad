"""The ``evtrack`` command line: run the server, upgrade the database, manage projections."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from evtrack import __version__
from evtrack._cli_accounts import add_account_commands, run_account_command
from evtrack.config import (
    Settings,
    StartupRefused,
    check_auth_settings,
    env,
    parse_duration,
    parse_list,
    parse_size,
)

if TYPE_CHECKING:
    from evtrack.projector import Projection

_DESCRIPTION = """\
evtrack: an event-sourced ML experiment tracking server and model registry.

It speaks the MLflow REST API, so the official mlflow client works against it unchanged:
    evtrack server            # then: MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python train.py

Without --database-url (or EVTRACK_DATABASE_URL), evtrack starts a private PostgreSQL in
its data directory (EVTRACK_DATA_DIR, default ~/.local/share/evtrack), so one command gives
a working server on a fresh machine.
"""


def _add_database_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=env("DATABASE_URL"),
        help="PostgreSQL URL, e.g. postgresql://user@host:5432/evtrack "
        "(env EVTRACK_DATABASE_URL; default: the embedded PostgreSQL in the data directory)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evtrack",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"evtrack {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    server = commands.add_parser(
        "server",
        help="run the tracking server (MLflow REST API, artifacts proxy, projectors)",
        description="Run the tracking server. Stops gracefully on SIGTERM/SIGINT, letting "
        "in-flight requests finish.",
    )
    server.add_argument(
        "--host",
        default=env("HOST", "127.0.0.1"),
        help="address to bind (env EVTRACK_HOST; default 127.0.0.1)",
    )
    server.add_argument(
        "--port",
        type=int,
        default=int(env("PORT", "5000") or 5000),
        help="port (env EVTRACK_PORT; default 5000)",
    )
    _add_database_flag(server)
    server.add_argument(
        "--artifacts-uri",
        default=env("ARTIFACTS_URI"),
        help="where artifacts are stored: a local directory or s3://bucket/prefix (endpoint "
        "and credentials from the usual AWS settings; clients never need them) "
        "(env EVTRACK_ARTIFACTS_URI; default <data dir>/artifacts)",
    )
    server.add_argument(
        "--no-projectors",
        action="store_true",
        help="do not run projectors in this process (use with `evtrack projections run` workers)",
    )
    server.add_argument(
        "--ingest-max-in-flight",
        type=int,
        default=int(env("INGEST_MAX_IN_FLIGHT", "16") or 16),
        help="native ingestion requests processed at once; more wait up to --ingest-queue-wait "
        "seconds, then get 429 with Retry-After (env EVTRACK_INGEST_MAX_IN_FLIGHT; default 16)",
    )
    server.add_argument(
        "--ingest-queue-wait",
        type=float,
        default=float(env("INGEST_QUEUE_WAIT", "2") or 2),
        help="seconds an ingestion request may wait for a slot (default 2)",
    )
    server.add_argument(
        "--ingest-max-lag",
        type=int,
        default=int(env("INGEST_MAX_LAG_EVENTS", "50000") or 50000),
        help="answer native ingestion with 429 while the read models are more than this many "
        "events behind the log (env EVTRACK_INGEST_MAX_LAG_EVENTS; default 50000)",
    )
    server.add_argument(
        "--idempotency-retention",
        type=parse_duration,
        default=parse_duration(env("IDEMPOTENCY_RETENTION", "7d") or "7d"),
        metavar="DURATION",
        help="how long an explicit Idempotency-Key keeps its first answer, e.g. 7d, 12h, 3600 "
        "(env EVTRACK_IDEMPOTENCY_RETENTION; default 7d)",
    )
    server.add_argument(
        "--idempotency-prune-interval",
        type=parse_duration,
        default=parse_duration(env("IDEMPOTENCY_PRUNE_INTERVAL", "1h") or "1h"),
        metavar="DURATION",
        help="how often expired idempotency keys are pruned; one server at a time does it "
        "(env EVTRACK_IDEMPOTENCY_PRUNE_INTERVAL; default 1h)",
    )
    server.add_argument(
        "--read-wait-timeout",
        type=float,
        default=float(env("READ_WAIT_TIMEOUT", "10") or 10),
        help="seconds a read waits for the read models to include the writes before it; past "
        "that it is refused with 503 and Retry-After (env EVTRACK_READ_WAIT_TIMEOUT; default 10)",
    )
    server.add_argument(
        "--ready-max-lag",
        type=int,
        default=int(env("READY_MAX_LAG", "10000") or 10000),
        help="GET /ready answers 503 while a read model is more than this many events behind "
        "the log (env EVTRACK_READY_MAX_LAG; default 10000)",
    )
    server.add_argument(
        "--ready-stall-after",
        type=float,
        default=float(env("READY_STALL_AFTER", "30") or 30),
        help="GET /ready answers 503 while a read model has been behind without progress for "
        "this many seconds (env EVTRACK_READY_STALL_AFTER; default 30)",
    )
    server.add_argument(
        "--require-approval",
        action="append",
        metavar="STAGE",
        default=[x for x in (env("APPROVAL_REQUIRED_STAGES") or "").split(",") if x],
        help="a stage (e.g. Production) that model versions may only enter through an approved "
        "transition request; repeatable (env EVTRACK_APPROVAL_REQUIRED_STAGES, comma-separated)",
    )
    server.add_argument(
        "--allow-self-approval",
        action="store_true",
        help="let the requester of a transition approve it (default: someone else must)",
    )
    server.add_argument(
        "--auth",
        action="store_true",
        default=(env("AUTH") or "").lower() in ("1", "true", "yes", "on"),
        help="require authentication: Basic credentials (MLFLOW_TRACKING_USERNAME/PASSWORD) or "
        "a token (MLFLOW_TRACKING_TOKEN) on every route but /health, /ready, /version and "
        "server-info; the first start creates the admin from EVTRACK_ADMIN_USERNAME (default "
        "admin) and EVTRACK_ADMIN_PASSWORD, and refuses to start without one (env EVTRACK_AUTH)",
    )
    server.add_argument(
        "--default-permission",
        default=(env("DEFAULT_PERMISSION") or "READ").upper(),
        choices=["READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS"],
        help="what a user may do on an experiment or model nobody granted them anything on; "
        "creators get MANAGE (env EVTRACK_DEFAULT_PERMISSION; default READ)",
    )
    server.add_argument(
        "--auth-proxy-header",
        default=env("AUTH_PROXY_HEADER"),
        metavar="HEADER",
        help="behind an authenticating proxy (oauth2-proxy, ...): take the user name from this "
        "header, e.g. X-Forwarded-User, but only from --auth-trusted-proxies "
        "(env EVTRACK_AUTH_PROXY_HEADER)",
    )
    server.add_argument(
        "--auth-trusted-proxies",
        default=env("AUTH_TRUSTED_PROXIES", "") or "",
        metavar="CIDRS",
        help="comma-separated addresses or networks of the proxies whose user header is "
        "trusted, e.g. 10.0.0.5,10.1.0.0/16 (env EVTRACK_AUTH_TRUSTED_PROXIES)",
    )
    server.add_argument(
        "--ui-dir",
        default=env("UI_DIR"),
        metavar="DIR",
        help="serve MLflow's web UI at / from this build directory (the one holding its "
        "index.html) (env EVTRACK_UI_DIR; default: the installed mlflow package's, from "
        "pip install 'evtrack[ui]')",
    )
    server.add_argument(
        "--log-level", default=env("LOG_LEVEL", "info"), help="debug, info, warning or error"
    )
    _add_protection_flags(server)

    db = commands.add_parser("db", help="database schema management")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply pending event-log migrations")
    _add_database_flag(upgrade)

    projections = commands.add_parser(
        "projections", help="inspect, rebuild and run read-model projectors"
    )
    p_commands = projections.add_subparsers(
        dest="projections_command", metavar="ACTION", required=True
    )
    status = p_commands.add_parser(
        "status",
        help="show each projection's position, lag and parked events",
        description="Show, per projection, its checkpoint, how many events it is behind, "
        "whether a worker holds its lease, whether its schema is current, and how many events "
        "it has parked: events it could not apply and stepped over so that it could go on. "
        "With --parked, also list those events (position, stream, type, attempts, error).",
    )
    status.add_argument(
        "--parked", action="store_true", help="list the parked events of every projection"
    )
    _add_database_flag(status)
    retry = p_commands.add_parser(
        "retry-parked",
        help="apply a projection's parked events again, after a fix",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Apply the events projection NAME (or 'all') parked again, in log order, with its
handlers and in its live schema. Events that apply now leave the parked list; those
that still fail stay parked, with one more attempt and their new error.

Safe while servers run: the retry holds the projection's checkpoint, so its live
projector pauses between two batches until the retry commits.

A parked event is applied after the later events the read model already holds, which
is what you ask for by retrying: where the order matters (a tag or param set by the
parked event and changed again later, a run's status), the parked event's value wins.
`evtrack projections rebuild NAME` instead replays the whole log in order.

Exits with status 1 when some events are still parked.""",
    )
    retry.add_argument("name", help="projection name (see `evtrack projections status`) or 'all'")
    _add_database_flag(retry)
    rebuild = p_commands.add_parser(
        "rebuild",
        help="replay the log into a fresh copy of a read model and swap it in",
        description="Replay the whole event log into a fresh copy of the read model NAME "
        "(or 'all'), then swap it in atomically. The live model keeps answering meanwhile.",
    )
    rebuild.add_argument("name", help="projection name (see `evtrack projections status`) or 'all'")
    _add_database_flag(rebuild)
    run = p_commands.add_parser("run", help="run projector workers only (no HTTP server)")
    _add_database_flag(run)

    audit = commands.add_parser(
        "audit", help="who changed what and when, from the event log of a running server"
    )
    a_commands = audit.add_subparsers(dest="audit_command", metavar="WHAT", required=True)
    a_model = a_commands.add_parser(
        "model",
        help="history of a registered model (every version, stage, alias and approval event)",
        description="Print every event of the registered model NAME in order, with its actor "
        "and time. With --as-of, print the stages and aliases the model had at that instant.",
    )
    a_model.add_argument("name")
    a_model.add_argument("--version", type=int, help="only events of this version")
    a_model.add_argument("--as-of", help="instant (ISO 8601 or epoch ms): show the stage map then")
    a_run = a_commands.add_parser("run", help="history of a run")
    a_run.add_argument("run_id")
    a_exp = a_commands.add_parser("experiment", help="history of an experiment")
    a_exp.add_argument("experiment_id")
    for p in (a_model, a_run, a_exp):
        _add_server_flags(p)

    add_account_commands(commands, _add_server_flags)

    reg = commands.add_parser(
        "registry", help="promotion approval: request, approve, reject, cancel, list transitions"
    )
    r_commands = reg.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    r_request = r_commands.add_parser("request", help="request moving a version to a stage")
    r_request.add_argument("name")
    r_request.add_argument("version", type=int)
    r_request.add_argument("stage", help="None, Staging, Production or Archived")
    r_request.add_argument(
        "--archive-existing", action="store_true", help="archive versions now in that stage"
    )
    r_request.add_argument("--comment")
    for action in ("approve", "reject", "cancel"):
        r_action = r_commands.add_parser(action, help=f"{action} a pending transition request")
        r_action.add_argument("name")
        r_action.add_argument("request_id")
        r_action.add_argument("--comment")
    r_list = r_commands.add_parser("requests", help="list transition requests of a model")
    r_list.add_argument("name")
    r_list.add_argument("--status", help="PENDING, APPROVED, REJECTED or CANCELLED")
    for p in r_commands.choices.values():
        _add_server_flags(p)

    _add_transfer_commands(commands)

    sync = commands.add_parser(
        "sync",
        help="deliver what evtrack.client left in a spool directory (crashed or offline jobs)",
        description="Send the records that evtrack.client processes spooled but did not get "
        "acknowledged (the process was killed, or exited while the server was unreachable). "
        "Each record is applied exactly once, however often this is run. Spools of processes "
        "that are still running are left to them.",
    )
    sync.add_argument(
        "--spool-dir",
        help="the spool directory (env EVTRACK_SPOOL_DIR; default ~/.cache/evtrack/spool)",
    )
    sync.add_argument(
        "--server",
        help="evtrack server URL (default: the server each spool was written for)",
    )
    sync.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="give up after this many seconds, leaving the rest in the spool (default 300)",
    )
    return parser


def _add_protection_flags(server: argparse.ArgumentParser) -> None:
    """Flags of the limits that hold under abuse and of the cross-site protection."""
    cross_site = server.add_argument_group(
        "cross-site protection",
        "Browsers on other sites must not be able to use evtrack through a user's browser. "
        "Requests addressed to a name that is not allowed (Host header) are refused with 403, "
        "as MLflow's server does against DNS rebinding; so are writes from pages (Origin "
        "header) of origins that are neither allowed hosts nor listed for CORS. /health, "
        "/ready and /version answer whatever the Host.",
    )
    cross_site.add_argument(
        "--allowed-hosts",
        type=parse_list,
        default=parse_list(env("ALLOWED_HOSTS")) or None,
        metavar="HOSTS",
        help="comma-separated names clients use to reach the server: host (any port), "
        "host:port, *.example.com, or * for any (env EVTRACK_ALLOWED_HOSTS; default: "
        "localhost, 127.0.0.1 and [::1], plus, when bound to a non-loopback address, any IP "
        "address and this machine's host name; a DNS name such as mlflow.example.com must be "
        "listed)",
    )
    cross_site.add_argument(
        "--cors-allowed-origins",
        type=parse_list,
        default=parse_list(env("CORS_ALLOWED_ORIGINS")),
        metavar="ORIGINS",
        help="comma-separated origins (scheme://host[:port]) whose pages may call the API "
        "from a browser, with credentials: they get CORS headers and preflight answers, and "
        "their writes are accepted. '*' is refused (env EVTRACK_CORS_ALLOWED_ORIGINS; "
        "default: none, no CORS header is ever sent)",
    )
    limits = server.add_argument_group(
        "limits",
        "Bounds on what clients can make one server hold: memory for request bodies, "
        "connections, time, and requests per user.",
    )
    limits.add_argument(
        "--max-buffered-body-bytes",
        type=parse_size,
        default=parse_size(env("MAX_BUFFERED_BODY_BYTES", "256M") or "256M"),
        metavar="SIZE",
        help="request-body memory all requests together may hold, e.g. 256M or 1G, each body "
        "counted twice (its bytes and their decoded form); a request that cannot get its "
        "share in time gets 503 with Retry-After (a single body "
        "over the per-request limit of 64 MiB gets 413). Artifact uploads stream and do not "
        "count (env EVTRACK_MAX_BUFFERED_BODY_BYTES; default 256M)",
    )
    limits.add_argument(
        "--body-budget-wait",
        type=float,
        default=float(env("BODY_BUDGET_WAIT", "5") or 5),
        metavar="SECONDS",
        help="how long a request waits for its share of --max-buffered-body-bytes before "
        "503 (env EVTRACK_BODY_BUDGET_WAIT; default 5)",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=float(env("BODY_TIMEOUT", "20") or 20),
        metavar="SECONDS",
        help="time a request body has to arrive, extended by 1 s for every --body-min-rate "
        "bytes received; a client that stalls or trickles slower gets 408 and is disconnected "
        "(env EVTRACK_BODY_TIMEOUT; default 20)",
    )
    limits.add_argument(
        "--body-min-rate",
        type=float,
        default=float(env("BODY_MIN_RATE", "500") or 500),
        metavar="BYTES_PER_S",
        help="the slowest upload rate that keeps extending --body-timeout; 0 for no floor, "
        "where only a pause of --body-timeout between two reads ends a body "
        "(env EVTRACK_BODY_MIN_RATE; default 500)",
    )
    limits.add_argument(
        "--keepalive-timeout",
        type=float,
        default=float(env("KEEPALIVE_TIMEOUT", "15") or 15),
        metavar="SECONDS",
        help="close a connection that sends nothing, or nothing more after its last answer, "
        "after this long (env EVTRACK_KEEPALIVE_TIMEOUT; default 15)",
    )
    limits.add_argument(
        "--header-timeout",
        type=float,
        default=float(env("HEADER_TIMEOUT", "10") or 10),
        metavar="SECONDS",
        help="close a connection whose request head (request line and headers) is not "
        "complete this long after its first byte (env EVTRACK_HEADER_TIMEOUT; default 10)",
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=int(env("MAX_CONNECTIONS", "0") or 0) or None,
        metavar="N",
        help="client connections held at once; at the cap the longest-idle connection is "
        "closed for a new one, and when all are busy the newcomer gets 503. The server raises "
        "its soft file-descriptor limit to the hard limit at start (env "
        "EVTRACK_MAX_CONNECTIONS; default: the descriptor limit less a reserve for the "
        "database pool and files, e.g. 776 at ulimit -n 1024)",
    )
    limits.add_argument(
        "--rate-limit",
        type=float,
        default=float(env("RATE_LIMIT", "0") or 0),
        metavar="PER_SECOND",
        help="requests per second per user (the authenticated user, else the client "
        "address); beyond it, 429 with Retry-After, which MLflow's client waits for and "
        "retries. /health, /ready and /version are exempt. Best used with authentication: "
        "without it, users behind one proxy share a limit (env EVTRACK_RATE_LIMIT; default 0, "
        "no limit)",
    )
    limits.add_argument(
        "--rate-limit-burst",
        type=int,
        default=int(env("RATE_LIMIT_BURST", "0") or 0) or None,
        metavar="N",
        help="requests a user may make at once before --rate-limit applies (env "
        "EVTRACK_RATE_LIMIT_BURST; default twice the rate)",
    )


def _add_artifacts_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifacts-uri",
        default=env("ARTIFACTS_URI"),
        help="the artifact store `evtrack server` uses: a local directory or s3://bucket/prefix "
        "(env EVTRACK_ARTIFACTS_URI; default <data dir>/artifacts)",
    )


def _add_transfer_commands(commands: Any) -> None:
    imp = commands.add_parser(
        "import",
        help="copy a live MLflow server into evtrack, or load an evtrack export",
        description="Bring data in: `evtrack import mlflow --from URL` copies a running MLflow "
        "tracking server; `evtrack import evtrack DIR` loads what `evtrack export` wrote.",
    )
    i_commands = imp.add_subparsers(dest="import_command", metavar="SOURCE", required=True)
    mlflow = i_commands.add_parser(
        "mlflow",
        help="copy a live MLflow tracking server (REST API, MLflow 2.x or 3.x)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Copy a live MLflow tracking server into the database and artifact store that
`evtrack server` uses with the same settings (servers may be running meanwhile):

  experiments  with their ids, names, tags, times and lifecycle (deleted stay deleted)
  runs         with their ids, status, times, names, params, tags (parent links are
               tags), deleted state and every metric point (NaN and infinities too)
  artifacts    byte for byte, into evtrack's artifact store
  registry     registered models with their versions (numbers kept), stages, aliases,
               tags and descriptions

Each fact becomes an event with `import:<URL>` as its actor and the URL in its
metadata. Experiments created here later get ids above every imported one.

Running it again copies only what changed at the source: a run already imported in
the same state is skipped without reading its points. An import that was
interrupted resumes where it stopped. Exits with status 1 if something could not be
copied (each such item is named; run it again after fixing the cause).

The source's REST API serves metric histories at some ten thousand points per second
per worker. If you can reach the source's database, --source-database reads the points
from it instead, many times faster; everything else still comes through the API.

Source credentials: MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, as for the mlflow client.

Example:
  evtrack import mlflow --from http://mlflow.internal:5000 \\
      --database-url postgresql://evtrack@db/evtrack --artifacts-uri s3://ml/artifacts""",
    )
    mlflow.add_argument(
        "--from",
        dest="source",
        default=env("IMPORT_FROM"),
        metavar="URL",
        help="the MLflow server, e.g. http://mlflow.internal:5000 (env EVTRACK_IMPORT_FROM)",
    )
    mlflow.add_argument(
        "--source-database",
        default=env("IMPORT_SOURCE_DATABASE"),
        metavar="URI",
        help="read metric points straight from the source's backend store, read-only: "
        "sqlite:///path/mlflow.db or postgresql://... (env EVTRACK_IMPORT_SOURCE_DATABASE)",
    )
    mlflow.add_argument(
        "--parallel-runs",
        type=int,
        default=4,
        metavar="N",
        help="runs copied at once (default 4)",
    )
    mlflow.add_argument(
        "--source-concurrency",
        type=int,
        default=8,
        metavar="N",
        help="requests in flight to the source at once (default 8)",
    )
    mlflow.add_argument(
        "--no-artifacts", action="store_true", help="copy everything but artifact files"
    )
    mlflow.add_argument("--no-registry", action="store_true", help="leave the model registry out")
    evtrack = i_commands.add_parser(
        "evtrack",
        help="load a directory written by `evtrack export` into an empty database",
        description="Load the events, write-side bookkeeping and artifacts of an evtrack "
        "export (docs/export-format.md) into an empty database and artifact store; the read "
        "models are rebuilt from the events by the next server or `evtrack projections "
        "run`. Every event keeps its actor, metadata and time. A load that was interrupted "
        "resumes when run again.",
    )
    evtrack.add_argument("directory", metavar="DIR", help="the export directory")
    export = commands.add_parser(
        "export",
        help="write the event log and artifacts to a directory (a versioned, documented format)",
        description="Write the whole event log (every event with its actor, metadata and "
        "time, in log order), the write side's bookkeeping and a copy of the artifact store "
        "to DIR, in the format docs/export-format.md describes. The log is read in one "
        "snapshot, so servers may keep writing. `evtrack import evtrack DIR` loads it.",
    )
    export.add_argument(
        "--to", dest="directory", required=True, metavar="DIR", help="a new or empty directory"
    )
    export.add_argument("--no-artifacts", action="store_true", help="leave the artifact store out")
    for parser in (mlflow, evtrack, export):
        _add_database_flag(parser)
        _add_artifacts_flag(parser)
        parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    from evtrack._http_client import default_server

    parser.add_argument(
        "--server",
        default=default_server(),
        help="evtrack server URL (env EVTRACK_SERVER or MLFLOW_TRACKING_URI; default %(default)s)",
    )
    parser.add_argument("--user", help="who you are, recorded as the actor (when auth is off)")


def resolve_database_url(url: str | None) -> str:
    if url:
        return url
    from evtrack._embedded_postgres import default_data_dir as postgres_data_dir
    from evtrack._embedded_postgres import start_embedded_postgres

    data_dir = postgres_data_dir()
    print(
        f"evtrack: no database URL given; using the embedded PostgreSQL in {data_dir}",
        file=sys.stderr,
    )
    return start_embedded_postgres(data_dir).dsn


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "server":
        return _server(args)
    if args.command in ("audit", "registry"):
        return _remote(args)
    if args.command in ("users", "tokens"):
        return run_account_command(args)
    if args.command == "sync":
        return _sync(args)
    if args.command in ("import", "export"):
        from evtrack._cli_transfer import run_transfer_command

        return run_transfer_command(args, resolve_database_url)
    dsn = resolve_database_url(args.database_url)
    if args.command == "db":
        return asyncio.run(_db_upgrade(dsn))
    if args.projections_command == "status":
        return asyncio.run(_projections_status(dsn, list_parked=args.parked))
    if args.projections_command == "retry-parked":
        return asyncio.run(_projections_retry_parked(dsn, args.name))
    if args.projections_command == "rebuild":
        return asyncio.run(_projections_rebuild(dsn, args.name))
    return asyncio.run(_projections_run(dsn))


def _canonical_stages(stages: list[str]) -> list[str]:
    from evtrack.domain.registry import canonical_stage

    return [canonical_stage(s.strip()) for s in stages]


def _server(args: argparse.Namespace) -> int:
    from evtrack._logging import configure_logging
    from evtrack.api import check_limits, connection_limits, serve
    from evtrack.server import create_app

    configure_logging(args.log_level)
    settings = Settings(
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        artifacts_uri=args.artifacts_uri,
        run_projectors=not args.no_projectors,
        approval_required_stages=tuple(_canonical_stages(args.require_approval)),
        distinct_approver=not args.allow_self_approval,
        ingest_max_in_flight=args.ingest_max_in_flight,
        ingest_queue_wait_s=args.ingest_queue_wait,
        ingest_max_lag_events=args.ingest_max_lag,
        idempotency_retention_s=args.idempotency_retention,
        idempotency_prune_interval_s=args.idempotency_prune_interval,
        read_wait_timeout_s=args.read_wait_timeout,
        ready_max_lag_events=args.ready_max_lag,
        ready_stall_after_s=args.ready_stall_after,
        auth=args.auth,
        default_permission=args.default_permission,
        admin_username=env("ADMIN_USERNAME", "admin") or "admin",
        admin_password=env("ADMIN_PASSWORD") or None,
        auth_proxy_header=args.auth_proxy_header or None,
        auth_trusted_proxies=tuple(
            p.strip() for p in args.auth_trusted_proxies.split(",") if p.strip()
        ),
        ui_dir=args.ui_dir,
        allowed_hosts=args.allowed_hosts,
        cors_allowed_origins=args.cors_allowed_origins,
        max_buffered_body_bytes=args.max_buffered_body_bytes,
        body_budget_wait_s=args.body_budget_wait,
        body_timeout_s=args.body_timeout,
        body_min_rate=args.body_min_rate,
        keepalive_timeout_s=args.keepalive_timeout,
        header_timeout_s=args.header_timeout,
        max_connections=args.max_connections,
        rate_limit=args.rate_limit,
        rate_limit_burst=args.rate_limit_burst,
    )
    try:
        check_auth_settings(settings)
        check_limits(settings)
    except ValueError as exc:
        print(f"evtrack: {exc}", file=sys.stderr)
        return 2
    dsn = resolve_database_url(settings.database_url)
    app = create_app(settings, dsn)
    try:
        serve(
            app,
            host=settings.host,
            port=settings.port,
            shutdown_timeout=settings.shutdown_timeout_s,
            limits=connection_limits(settings),
        )
    except StartupRefused as exc:
        print(f"evtrack: {exc}", file=sys.stderr)
        return 2
    return 0


def _sync(args: argparse.Namespace) -> int:
    import logging

    from evtrack.client import sync_spool

    logging.basicConfig(level=logging.WARNING, format="evtrack: %(message)s")
    try:
        report = sync_spool(args.spool_dir, args.server, timeout=args.timeout)
    except ValueError as exc:  # e.g. a server URL that is not http(s)
        print(f"evtrack: {exc}", file=sys.stderr)
        return 2
    return 0 if report.ok else 1


def _remote(args: argparse.Namespace) -> int:
    """Commands that talk to a running server over its HTTP API."""
    import json

    from evtrack._http_client import ApiClient, ServerError

    client = ApiClient(args.server, args.user)
    try:
        if args.command == "audit":
            if args.audit_command == "model" and args.as_of:
                result = client.call(
                    "GET", "evtrack/audit/registered-models/as-of", name=args.name, at=args.as_of
                )
                print(json.dumps(result, indent=2))
                return 0
            if args.audit_command == "model":
                result = client.call(
                    "GET",
                    "evtrack/audit/registered-models/history",
                    name=args.name,
                    version=args.version,
                )
            elif args.audit_command == "run":
                result = client.call("GET", "evtrack/audit/runs/history", run_id=args.run_id)
            else:
                result = client.call(
                    "GET", "evtrack/audit/experiments/history", experiment_id=args.experiment_id
                )
            _print_history(result["events"])
            return 0
        base = "evtrack/registry/transition-requests"
        if args.registry_command == "request":
            result = client.call(
                "POST",
                f"{base}/create",
                {
                    "name": args.name,
                    "version": str(args.version),
                    "stage": args.stage,
                    "archive_existing_versions": args.archive_existing,
                    "comment": args.comment,
                },
            )
        elif args.registry_command == "requests":
            result = client.call("GET", f"{base}/list", name=args.name, status=args.status)
        else:
            result = client.call(
                "POST",
                f"{base}/{args.registry_command}",
                {"name": args.name, "request_id": args.request_id, "comment": args.comment},
            )
        print(json.dumps(result, indent=2))
        return 0
    except ServerError as exc:
        print(f"evtrack: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"evtrack: cannot reach {args.server}: {exc}", file=sys.stderr)
        return 1


def _print_history(events: list[dict[str, Any]]) -> None:
    import json

    for event in events:
        change = json.dumps(event["change"], sort_keys=True)
        if len(change) > 160:
            change = change[:157] + "..."
        print(f"{event['recorded_at']}  {event['actor']:<16} {event['type']:<28} {change}")


async def _db_upgrade(dsn: str) -> int:
    from evtrack.eventlog import upgrade

    conn = await asyncpg.connect(dsn)
    try:
        applied = await upgrade(conn)
    finally:
        await conn.close()
    if applied:
        for migration in applied:
            print(f"applied {migration.version:04d} {migration.name}")
    else:
        print("database is up to date")
    return 0


async def _projections_status(dsn: str, *, list_parked: bool = False) -> int:
    from evtrack.eventlog import LogPosition, count_events_after, upgrade
    from evtrack.projections.registry import all_projections
    from evtrack.projector import checkpoint_rows, ensure_tables, lease_key, parked_counts

    conn = await asyncpg.connect(dsn)
    try:
        await upgrade(conn)
        await ensure_tables(conn)
        rows = await checkpoint_rows(conn)
        parked = await parked_counts(conn)
        print(
            f"{'projection':<14} {'position':>12} {'behind':>10} {'parked':>7} {'owner':<8} "
            f"{'schema':<9} updated"
        )
        for projection in all_projections():
            row = rows.get(projection.name)
            n_parked = parked.get(projection.name, 0)
            if row is None:
                print(
                    f"{projection.name:<14} {'-':>12} {'-':>10} {n_parked:>7} {'-':<8} "
                    f"{'missing':<9} -"
                )
                continue
            behind = await count_events_after(
                conn, LogPosition(row["transaction_id"], row["global_position"])
            )
            held = await conn.fetchval(
                """SELECT EXISTS (SELECT 1 FROM pg_locks
                   WHERE locktype = 'advisory' AND objid = $1::bigint::oid AND granted)""",
                lease_key(projection.name) & 0xFFFFFFFF,
            )
            schema = "current" if row["schema_hash"] == projection.schema_hash else "outdated"
            print(
                f"{projection.name:<14} {row['global_position']:>12} {behind:>10} "
                f"{n_parked:>7} {'leased' if held else 'none':<8} {schema:<9} "
                f"{row['updated_at']:%Y-%m-%d %H:%M:%S}"
            )
        if list_parked:
            await _print_parked(conn)
        elif sum(parked.values()):
            print(
                "\nSome events are parked (not in the read models); list them with "
                "`evtrack projections status --parked`, apply them after a fix with "
                "`evtrack projections retry-parked NAME`."
            )
    finally:
        await conn.close()
    return 0


async def _print_parked(conn: Any) -> None:
    from evtrack.projector import list_parked

    entries = await list_parked(conn)
    print(f"\nparked events: {len(entries)}")
    for p in entries:
        print(
            f"{p.projection:<14} position {p.position.global_position:<10} "
            f"{p.event_type:<22} {p.stream_id:<40} attempts {p.attempts:<3} "
            f"since {p.first_parked_at:%Y-%m-%d %H:%M:%S}\n    {p.error}"
        )


def _projections_named(name: str) -> list[Projection] | None:
    """The projection ``name`` (or all for 'all'); None, said on stderr, if unknown."""
    from evtrack.projections.registry import all_projections, projection_named

    try:
        return all_projections() if name == "all" else [projection_named(name)]
    except KeyError:
        names = ", ".join(p.name for p in all_projections())
        print(f"evtrack: unknown projection {name!r}; known: {names}", file=sys.stderr)
        return None


async def _projections_retry_parked(dsn: str, name: str) -> int:
    from evtrack.eventlog import upgrade
    from evtrack.projector import retry_parked

    targets = _projections_named(name)
    if targets is None:
        return 2
    conn = await asyncpg.connect(dsn)
    still_parked = 0
    try:
        await upgrade(conn)
        for projection in targets:
            try:
                outcome = await retry_parked(conn, projection)
            except LookupError as exc:
                print(f"evtrack: {exc}", file=sys.stderr)
                return 1
            print(
                f"{projection.name}: applied {len(outcome.applied)}, "
                f"still parked {len(outcome.still_parked)}"
            )
            for p in outcome.still_parked:
                print(
                    f"    position {p.position.global_position} {p.event_type} "
                    f"{p.stream_id} (attempts {p.attempts}): {p.error}"
                )
            still_parked += len(outcome.still_parked)
    finally:
        await conn.close()
    return 1 if still_parked else 0


async def _projections_rebuild(dsn: str, name: str) -> int:
    from tqdm import tqdm

    from evtrack.eventlog import last_global_position, upgrade
    from evtrack.projector import RebuildRunning, rebuild

    targets = _projections_named(name)
    if targets is None:
        return 2
    conn = await asyncpg.connect(dsn)
    try:
        await upgrade(conn)
        total = await last_global_position(conn)
        for projection in targets:
            with tqdm(
                total=total, unit="ev", desc=f"rebuild {projection.name}", file=sys.stderr
            ) as bar:
                seen = 0

                def progress(position: object, bar: tqdm[Any] = bar) -> None:
                    nonlocal seen
                    done = getattr(position, "global_position", 0)
                    bar.update(max(0, done - seen))
                    seen = max(seen, done)

                try:
                    await rebuild(conn, projection, on_progress=progress)
                except RebuildRunning as exc:
                    bar.close()
                    print(f"evtrack: {exc}; try again once it has finished", file=sys.stderr)
                    return 1
                bar.update(max(0, total - seen))
            print(f"rebuilt {projection.name}")
    finally:
        await conn.close()
    return 0


async def _projections_run(dsn: str) -> int:
    from evtrack._logging import configure_logging
    from evtrack.eventlog import upgrade
    from evtrack.projections.registry import all_projections
    from evtrack.projector import ProjectorRuntime

    configure_logging("info")
    conn = await asyncpg.connect(dsn)
    try:
        await upgrade(conn)
    finally:
        await conn.close()
    runtime = ProjectorRuntime(dsn, all_projections())
    await runtime.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runtime.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
