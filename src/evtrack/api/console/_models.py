"""The console's home, the model list, and each model's promotion timeline with its as-of view.

The timeline is the model's audit history (every event of every registered-model stream that
carried the name), read from the log; the as-of view folds those events up to an instant,
with the fold the domain decides on, so "what was in Production at T" is exact.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from yarl import URL

from evtrack.api._access import principal, visible
from evtrack.api._common import services
from evtrack.api._requests import read_args
from evtrack.api.console._html import Markup, el, join, page, when
from evtrack.application import audit
from evtrack.errors import EvtrackError
from evtrack.permissions import REGISTERED_MODEL
from evtrack.queries import console as queries

SHOWN_STAGES = ("Staging", "Production", "Archived")
PROMOTION_EVENTS = frozenset(
    {
        "RegisteredModelCreated",
        "RegisteredModelRenamed",
        "RegisteredModelDeleted",
        "ModelVersionCreated",
        "ModelVersionDeleted",
        "ModelVersionStageChanged",
        "ModelAliasSet",
        "ModelAliasDeleted",
        "TransitionRequested",
        "TransitionApproved",
        "TransitionRejected",
        "TransitionCancelled",
    }
)


def model_url(name: str, **query: str) -> str:
    return str(URL("/console/model").with_query({"name": name, **query}))


def _who(request: web.Request) -> str | None:
    found = request.get("access_principal")
    return getattr(found, "name", None)


# --- home ----------------------------------------------------------------------------------


async def home(request: web.Request) -> web.Response:
    caller = await principal(request)
    cards = [
        (
            "/console/models",
            "Models",
            "Each registered model's promotion timeline, and what "
            "each stage and alias pointed to at any instant.",
        ),
        (
            "/console/requests",
            "Transition requests",
            "Pending promotions across models, to approve or reject.",
        ),
        (
            "/console/status",
            "Status",
            "Ingest rates, read-model lag, parked events, database "
            "and artifact store health, live.",
        ),
        (
            "/console/feed",
            "Live feed",
            "The event log as it grows, filtered by type, experiment or model.",
        ),
        (
            "/console/explorer",
            "Series explorer",
            "Long metric series drawn from min/max "
            "buckets, so no spike is lost; zoom to the raw points.",
        ),
    ]
    body = join(
        [
            el("h1", None, "evtrack console"),
            el(
                "p",
                {"class": "lead"},
                "What only an event log knows: who promoted what and when, what is waiting "
                "for approval, and whether ingestion and the read models keep up.",
            ),
            el(
                "ul",
                {"class": "cards"},
                [
                    el(
                        "li",
                        None,
                        el("a", {"href": href}, el("h2", None, title), el("p", None, text)),
                    )
                    for href, title, text in cards
                    if caller.is_admin or href != "/console/status"  # for admins only
                ],
            ),
        ]
    )
    return page("Home", body, active="home", caller=caller)


# --- model list ----------------------------------------------------------------------------


def _stage_chips(stages: dict[str, list[int]]) -> Markup:
    return join(
        el(
            "span",
            {"class": f"chip stage-{stage.lower()}"},
            f"{stage}: ",
            ", ".join(f"v{v}" for v in versions),
        )
        for stage, versions in sorted(stages.items())
    )


def _alias_chips(aliases: dict[str, int]) -> Markup:
    return join(
        el("span", {"class": "chip alias"}, f"@{alias} → v{version}")
        for alias, version in sorted(aliases.items())
    )


async def models(request: web.Request) -> web.Response:
    caller = await principal(request)
    contains = (await read_args(request)).string("q") or None
    found = await queries.model_summaries(
        services(request).pool, await visible(request, REGISTERED_MODEL), contains
    )
    search = el(
        "form",
        {"method": "get", "action": "/console/models", "class": "inline", "role": "search"},
        el("label", {"for": "q"}, "Name contains"),
        el("input", {"id": "q", "name": "q", "type": "search", "value": contains or ""}),
        el("button", {"type": "submit"}, "Filter"),
    )
    rows = [
        el(
            "tr",
            {"data-model": m["name"]},
            el("th", {"scope": "row"}, el("a", {"href": model_url(m["name"])}, m["name"])),
            el("td", {"class": "num"}, m["versions"]),
            el("td", None, _stage_chips(m["stages"])),
            el("td", None, _alias_chips(m["aliases"])),
            el(
                "td",
                {"class": "num"},
                el("a", {"href": "/console/requests"}, m["pending"]) if m["pending"] else "0",
            ),
            el("td", None, when(m["last_updated_timestamp"])),
        )
        for m in found
    ]
    table = el(
        "table",
        {"class": "data"},
        el("caption", None, f"{len(found)} registered models"),
        el(
            "thead",
            None,
            el(
                "tr",
                None,
                [
                    el(
                        "th",
                        {"scope": "col", "class": "num" if h in ("Versions", "Pending") else None},
                        h,
                    )
                    for h in ("Name", "Versions", "Stages", "Aliases", "Pending", "Updated")
                ],
            ),
        ),
        el("tbody", None, rows),
    )
    body = join(
        [
            el("h1", None, "Registered models"),
            search,
            table if found else el("p", {"class": "empty"}, "No registered model to show."),
        ]
    )
    return page("Models", body, active="models", caller=caller)


# --- one model -----------------------------------------------------------------------------


def _v(change: dict[str, Any]) -> str:
    return f"v{change.get('version')}"


def describe(entry: dict[str, Any]) -> tuple[str, str, str | None]:
    """(kind, what happened, comment) of one history entry, for the timeline."""
    c: dict[str, Any] = entry["change"]
    kind = entry["type"]
    match kind:
        case "RegisteredModelCreated":
            return "model", f"Model created as {c.get('name')}", c.get("description")
        case "RegisteredModelRenamed":
            return "model", f"Renamed {c.get('old_name')} → {c.get('name')}", None
        case "RegisteredModelDeleted":
            return "model", "Model deleted", None
        case "ModelVersionCreated":
            source = f" from run {c['run_id']}" if c.get("run_id") else ""
            return "version", f"{_v(c)} created{source}", c.get("description")
        case "ModelVersionDeleted":
            return "version", f"{_v(c)} deleted", None
        case "ModelVersionStageChanged":
            reason = c.get("reason") or "transition"
            how = {"approved": " (approved request)", "archived": " (archived on promotion)"}
            return (
                "stage",
                f"{_v(c)}: {c.get('from_stage')} → {c.get('to_stage')}{how.get(reason, '')}",
                None,
            )
        case "ModelAliasSet":
            was = c.get("previous_version")
            moved = f" (was v{was})" if was is not None else ""
            return "alias", f"@{c.get('alias')} → {_v(c)}{moved}", None
        case "ModelAliasDeleted":
            return "alias", f"@{c.get('alias')} removed (was {_v(c)})", None
        case "TransitionRequested":
            archive = ", archiving the versions there" if c.get("archive_existing_versions") else ""
            return (
                "request",
                f"Requested {_v(c)} → {c.get('to_stage')}{archive}",
                c.get("comment"),
            )
        case "TransitionApproved":
            return "approve", f"Approved the request for {_v(c)}", c.get("comment")
        case "TransitionRejected":
            return "reject", f"Rejected the request for {_v(c)}", c.get("comment")
        case "TransitionCancelled":
            return "cancel", f"Cancelled the request for {_v(c)}", None
    detail = ", ".join(f"{k}={v}" for k, v in c.items() if k != "model_key")
    return "other", f"{kind}: {detail}", None


def _timeline_item(name: str, entry: dict[str, Any], at: datetime | None) -> Markup:
    kind, text, comment = describe(entry)
    later = at is not None and datetime.fromisoformat(entry["recorded_at"]) > at
    request_id = entry["change"].get("request_id")
    actor = entry["actor"]
    claimed = entry.get("claimed_actor")
    return el(
        "li",
        {
            "class": f"event kind-{kind}" + (" later" if later else ""),
            "data-type": entry["type"],
            "data-position": entry["position"],
        },
        el("div", {"class": "when"}, when(entry["timestamp"], precise=True)),
        el(
            "div",
            {"class": "what"},
            el("strong", None, text),
            el("span", {"class": "actor"}, f" by {actor}"),
            el("span", {"class": "claimed"}, f" (claimed: {claimed})") if claimed else None,
            el("blockquote", {"class": "comment"}, comment) if comment else None,
            el("span", {"class": "request-id"}, f"request {request_id}") if request_id else None,
        ),
        el(
            "a",
            {
                "class": "as-of-link",
                "href": model_url(name, at=entry["recorded_at"]) + "#instant",
                "aria-label": f"state after this: {text}",
            },
            "state after this",
        ),
    )


def _timeline(
    name: str, shown: list[dict[str, Any]], at_text: str | None, at: datetime
) -> list[Markup]:
    """Newest first; with an instant picked, a marker where it falls and the later events
    set apart (they are not part of the state shown)."""
    items: list[Markup] = []
    marked = at_text is None
    for entry in reversed(shown):
        if not marked and datetime.fromisoformat(entry["recorded_at"]) <= at:
            items.append(_instant_marker(at))
            marked = True
        items.append(_timeline_item(name, entry, None if at_text is None else at))
    if not marked:
        items.append(_instant_marker(at))
    return items


def _instant_marker(at: datetime) -> Markup:
    moment = at.astimezone(UTC)
    return el(
        "li",
        {"class": "instant", "id": "instant"},
        f"As of {moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d} UTC: "
        "the state shown. Events above came later.",
    )


def _state_tables(state: dict[str, Any]) -> Markup:
    stages: dict[str, list[str]] = state["stages"]
    aliases: dict[str, str] = state["aliases"]
    stage_rows = [
        el(
            "tr",
            {"data-stage": stage},
            el("th", {"scope": "row"}, stage),
            el(
                "td",
                {"class": "versions"},
                ", ".join(f"v{v}" for v in stages.get(stage, [])) or "—",
            ),
        )
        for stage in SHOWN_STAGES
    ]
    alias_rows = [
        el(
            "tr",
            {"data-alias": alias},
            el("th", {"scope": "row"}, f"@{alias}"),
            el("td", {"class": "versions"}, f"v{version}"),
        )
        for alias, version in aliases.items()
    ] or [el("tr", None, el("td", {"colspan": 2, "class": "empty"}, "no aliases"))]
    return join(
        [
            el(
                "table",
                {"class": "data state", "id": "stages"},
                el("caption", None, "Stages"),
                el("tbody", None, stage_rows),
            ),
            el(
                "table",
                {"class": "data state", "id": "aliases"},
                el("caption", None, "Aliases"),
                el("tbody", None, alias_rows),
            ),
            el("p", {"class": "muted"}, f"{len(state['versions'])} live versions."),
        ]
    )


def _input_value(at: datetime) -> str:
    """A ``datetime-local`` value (UTC, milliseconds)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")


async def model(request: web.Request) -> web.Response:
    caller = await principal(request)
    args = await read_args(request)
    name = args.required_string("name")
    show_all = args.boolean("all")
    at_text = args.string("at") or None
    pool = services(request).pool
    history = await audit.model_history(pool, name)  # 404 for a name never used
    problem: str | None = None
    at = datetime.now(tz=UTC)
    if at_text:
        try:
            at = audit.parse_instant(at_text)
        except EvtrackError as exc:
            problem = exc.message
    state: dict[str, Any] | None = None
    if problem is None:
        try:
            state = await audit.model_as_of(pool, name, at)
        except EvtrackError as exc:
            problem = exc.message
    shown = history if show_all else [e for e in history if e["type"] in PROMOTION_EVENTS]
    picker = el(
        "form",
        {
            "method": "get",
            "action": "/console/model#instant",
            "class": "inline",
            "id": "as-of-form",
        },
        el("input", {"type": "hidden", "name": "name", "value": name}),
        el("input", {"type": "hidden", "name": "all", "value": "true"}) if show_all else None,
        el("label", {"for": "at"}, "As of (UTC)"),
        el(
            "input",
            {
                "id": "at",
                "name": "at",
                "type": "datetime-local",
                "step": "0.001",
                "value": _input_value(at),
            },
        ),
        el("button", {"type": "submit"}, "Show"),
        el("a", {"href": model_url(name, **({"all": "true"} if show_all else {}))}, "Now"),
    )
    shown_at = at.astimezone(UTC)
    heading = (
        "Now"
        if not at_text
        else f"As of {shown_at:%Y-%m-%d %H:%M:%S}.{shown_at.microsecond // 1000:03d} UTC"
    )
    as_of = el(
        "section",
        {
            "aria-labelledby": "as-of-heading",
            "class": "as-of",
            "data-as-of": at.astimezone(UTC).isoformat(),
        },
        el("h2", {"id": "as-of-heading"}, heading),
        picker,
        el("p", {"class": "error", "role": "alert"}, problem) if problem else None,
        _state_tables(state) if state is not None else None,
    )
    toggle = el(
        "a",
        {"href": model_url(name, **({} if show_all else {"all": "true"}))},
        "Promotions only" if show_all else "Show every event",
    )
    timeline = el(
        "section",
        {"aria-labelledby": "timeline-heading"},
        el("h2", {"id": "timeline-heading"}, "Promotion timeline"),
        el(
            "p",
            {"class": "muted"},
            f"{len(shown)} of {len(history)} events, newest first. ",
            toggle,
        ),
        el("ol", {"class": "timeline", "id": "timeline"}, _timeline(name, shown, at_text, at)),
    )
    body = join(
        [
            el("p", {"class": "crumbs"}, el("a", {"href": "/console/models"}, "Models"), " / "),
            el("h1", None, name),
            el("div", {"class": "columns"}, as_of, timeline),
        ]
    )
    return page(name, body, active="models", caller=caller)
