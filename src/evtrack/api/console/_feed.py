"""The live event feed: the newest events that pass the filter, then ``feed.js`` follows the
log over the event stream (``/api/2.0/evtrack/events/stream``) from where the page ended.

Like the stream, it shows each user the events of what they may read (admins: everything),
and refuses a user who may read nothing at all."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from yarl import URL

from evtrack.api._access import principal
from evtrack.api._common import services
from evtrack.api._event_access import EventAccess
from evtrack.api.audit import feed_filter, may_read_something
from evtrack.api.console._html import Markup, el, join, page
from evtrack.application import audit
from evtrack.events import EVENT_TYPES

BACKLOG_SCAN = 2000
"""How far back the page looks for events that pass the filter."""
BACKLOG_SHOWN = 100
SUMMARY_CHARS = 240
HIDDEN = frozenset({"model_key"})
"""Facts left out of the one-line summary: internal keys the stream id already names."""


def summary(change: dict[str, Any]) -> str:
    """One line for an event's facts (``feed.js`` writes the same for live events)."""
    parts = []
    for key, value in change.items():
        if key in HIDDEN or value is None or value is False or value in ([], {}, ""):
            continue
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        parts.append(f"{key}={text}")
    line = " ".join(parts)
    return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1] + "…"


def explore_links(entry: dict[str, Any]) -> Markup | None:
    metrics = entry["change"].get("metrics")
    run_id = entry["change"].get("run_id")
    if entry["type"] != "RunDataLogged" or not isinstance(metrics, dict) or not run_id:
        return None
    return join(
        el(
            "a",
            {
                "class": "explore",
                "href": str(URL("/console/explorer").with_query(run_id=run_id, key=key)),
            },
            f"explore {key}",
        )
        for key in metrics.get("keys", [])[:3]
    )


def feed_row(entry: dict[str, Any]) -> Markup:
    return el(
        "tr",
        {
            "data-type": entry["type"],
            "data-stream": entry["stream_id"],
            "data-position": entry["position"],
        },
        el("td", None, el("time", {"datetime": entry["recorded_at"]}, entry["recorded_at"][11:23])),
        el("td", None, el("code", None, entry["type"])),
        el("td", {"class": "stream"}, entry["stream_id"]),
        el("td", None, entry["actor"]),
        el("td", {"class": "summary"}, summary(entry["change"]), " ", explore_links(entry)),
    )


async def feed_page(request: web.Request) -> web.Response:
    caller = await principal(request)
    await may_read_something(request)
    readable = EventAccess(request)
    query = request.query
    wanted = feed_filter(request)
    feed = services(request).feed
    cursor = await feed.position_back(BACKLOG_SCAN)
    shown: list[dict[str, Any]] = []
    while True:
        records = await feed.read_after(cursor, 500)
        for record in records:
            cursor = record.position
            if await wanted.matches(record) and await readable.may_read(record.stream_id):
                shown.append(audit.describe(record))
        if len(records) < 500:
            break
    shown = shown[-BACKLOG_SHOWN:]
    chosen = query.get("types", "")
    form = el(
        "form",
        {"method": "get", "action": "/console/feed", "class": "inline filters", "id": "filters"},
        el("label", {"for": "types"}, "Type"),
        el(
            "select",
            {"id": "types", "name": "types"},
            el("option", {"value": ""}, "all types"),
            [el("option", {"value": t, "selected": t == chosen}, t) for t in sorted(EVENT_TYPES)],
        ),
        el("label", {"for": "experiment_id"}, "Experiment id"),
        el(
            "input",
            {
                "id": "experiment_id",
                "name": "experiment_id",
                "inputmode": "numeric",
                "size": 8,
                "value": query.get("experiment_id", ""),
            },
        ),
        el("label", {"for": "model"}, "Model"),
        el("input", {"id": "model", "name": "model", "size": 16, "value": query.get("model", "")}),
        el("button", {"type": "submit"}, "Filter"),
        el("a", {"href": "/console/feed"}, "Clear"),
    )
    stream_query = {k: query[k] for k in ("types", "experiment_id", "model") if query.get(k)}
    table = el(
        "table",
        {"class": "data feed", "id": "feed"},
        el("caption", None, "Newest first; new events appear at the top as they are recorded."),
        el(
            "thead",
            None,
            el(
                "tr",
                None,
                [
                    el("th", {"scope": "col"}, h)
                    for h in ("Time (UTC)", "Type", "Stream", "Actor", "What")
                ],
            ),
        ),
        el("tbody", None, [feed_row(e) for e in reversed(shown)]),
    )
    body = join(
        [
            el("h1", None, "Live feed"),
            form,
            el("p", {"id": "feed-status", "role": "status", "aria-live": "polite"}, "Connecting…"),
            table,
        ]
    )
    return page(
        "Live feed",
        body,
        active="feed",
        caller=caller,
        scripts=["feed.js"],
        main_attrs={
            "data-after": f"{cursor.transaction_id}-{cursor.global_position}",
            "data-stream": str(URL("/api/2.0/evtrack/events/stream").with_query(stream_query)),
        },
    )
