"""The status page: rendered from the latest snapshot, then kept live by ``status.js`` over
the status stream (one snapshot a second; the page marks itself stale past two seconds)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from evtrack.api._access import principal
from evtrack.api._common import services
from evtrack.api.console._html import Markup, el, join, page, when


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def size(value: int | None) -> str:
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if amount < 1024 or unit == "TB":
            return f"{amount:,.1f} {unit}"
        amount /= 1024
    return f"{amount:,.1f} TB"


def _health(ok: bool | None) -> Markup:
    label = "unknown" if ok is None else ("ok" if ok else "failing")
    return el("span", {"class": f"health health-{label}"}, label)


def _field(name: str, text: object) -> Markup:
    return el("span", {"data-field": name}, text)


def _read_model_rows(snapshot: dict[str, Any]) -> list[Markup]:
    return [
        el(
            "tr",
            {"data-read-model": m["name"], "data-state": m["state"], "class": f"rm-{m['state']}"},
            el("th", {"scope": "row"}, m["name"]),
            el("td", {"class": "num"}, ("≥ " if m["at_least"] else "") + f"{m['behind']:,}"),
            el("td", {"class": "num"}, f"{m['stalled_s']:,.1f} s" if m["stalled_s"] else "—"),
            el("td", None, el("span", {"class": f"state state-{m['state']}"}, m["state"])),
            el("td", {"class": "num"}, f"{snapshot['parked']['by_read_model'].get(m['name'], 0)}"),
        )
        for m in snapshot["read_models"]
    ]


def _error_rows(snapshot: dict[str, Any]) -> list[Markup]:
    rows = [
        el(
            "li",
            None,
            when(e["at"]),
            " ",
            el("strong", None, e["source"]),
            ": ",
            e["message"],
            f" (request {e['request_id']})" if e.get("request_id") else "",
        )
        for e in snapshot["errors"]
    ]
    rows += [
        el(
            "li",
            None,
            when(p["parked_at"]),
            " ",
            el("strong", None, f"parked in {p['read_model']}"),
            f": {p['event_type']} at {p['position']} ({p['stream_id']}): {p['error']}",
        )
        for p in snapshot["parked"]["recent"]
    ]
    return rows or [el("li", {"class": "empty"}, "No errors recorded.")]


async def status_page(request: web.Request) -> web.Response:
    caller = await principal(request)
    # Rendered at once; the stream brings the measured rates within a second.
    snap = await services(request).status.snapshot(measured=False)
    ingest, db, art = snap["ingest"], snap["database"], snap["artifacts"]
    tiles = el(
        "div",
        {"class": "tiles"},
        el(
            "section",
            {"class": "tile"},
            el("h2", None, "Ingest"),
            el("p", {"class": "big"}, _field("ingest.points_per_s", rate(ingest["points_per_s"]))),
            el("p", None, "metric points/s"),
        ),
        el(
            "section",
            {"class": "tile"},
            el("h2", None, "Appended"),
            el("p", {"class": "big"}, _field("ingest.events_per_s", rate(ingest["events_per_s"]))),
            el(
                "p",
                None,
                "events/s, over ",
                _field("ingest.window_s", f"{ingest['window_s']:.1f}"),
                " s",
            ),
        ),
        el(
            "section",
            {"class": "tile"},
            el("h2", None, "Database"),
            el("p", {"class": "big"}, _field("database.ok", _health(db["ok"]))),
            el(
                "p",
                None,
                _field(
                    "database.latency_ms",
                    "—" if db["latency_ms"] is None else f"{db['latency_ms']:.2f}",
                ),
                " ms round trip",
            ),
        ),
        el(
            "section",
            {"class": "tile"},
            el("h2", None, "Artifact store"),
            el("p", {"class": "big"}, _field("artifacts.ok", _health(art.get("ok")))),
            el("p", None, _field("artifacts.detail", artifact_detail(art))),
        ),
        el(
            "section",
            {"class": "tile"},
            el("h2", None, "Parked events"),
            el("p", {"class": "big"}, _field("parked.total", snap["parked"]["total"] or 0)),
            el("p", None, "set aside by projectors"),
        ),
    )
    read_models = el(
        "table",
        {"class": "data", "id": "read-models"},
        el("caption", None, "Read models: lag behind the log"),
        el(
            "thead",
            None,
            el(
                "tr",
                None,
                [
                    el("th", {"scope": "col", "class": "num" if numeric else None}, h)
                    for h, numeric in (
                        ("Read model", False),
                        ("Events behind", True),
                        ("Stalled for", True),
                        ("State", False),
                        ("Parked", True),
                    )
                ],
            ),
        ),
        el("tbody", None, _read_model_rows(snap)),
    )
    body = join(
        [
            el("h1", None, "Status"),
            el(
                "p",
                {"class": "freshness", "id": "freshness", "role": "status"},
                "Snapshot ",
                _field("sequence", snap["sequence"]),
                " taken ",
                when(snap["generated_at"]),
                el("span", {"id": "age"}, ""),
                ". ",
                el(
                    "span",
                    {"id": "ready", "class": "ready" if snap["ready"] else "not-ready"},
                    "Ready" if snap["ready"] else "Not ready: a read model lags",
                ),
            ),
            tiles,
            read_models,
            el(
                "section",
                {"aria-labelledby": "errors-heading"},
                el("h2", {"id": "errors-heading"}, "Last errors"),
                el("ul", {"id": "errors", "class": "errors"}, _error_rows(snap)),
            ),
        ]
    )
    return page(
        "Status",
        body,
        active="status",
        caller=caller,
        scripts=["status.js"],
        main_attrs={"data-sequence": snap["sequence"], "data-generated-at": snap["generated_at"]},
    )


def artifact_detail(art: dict[str, Any]) -> str:
    if art.get("error"):
        return str(art["error"])
    if art.get("kind") == "local":
        return f"{size(art.get('free_bytes'))} free at {art.get('location')}"
    return f"{art.get('location', art.get('kind', ''))}, {art.get('latency_ms', 0):.0f} ms"
