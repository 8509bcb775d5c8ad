"""The series explorer: pick a run's metric; ``explorer.js`` draws it on a canvas from min/max
buckets (``/api/2.0/evtrack/metrics/buckets``) and fetches each zoomed window again, until
the window's raw points fit the canvas."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from evtrack.api._access import principal, run
from evtrack.api._common import services, wait_fresh
from evtrack.api._requests import read_args
from evtrack.api.console._html import el, join, page
from evtrack.queries.metric_buckets import run_series


async def run_if_named(request: web.Request) -> Sequence[str]:
    """The experiment of ``run_id`` when the request names a run; nothing otherwise (the
    bare page is a form that shows no data)."""
    args = await read_args(request)
    if not (args.string("run_id") or args.string("run_uuid")):
        return ()
    return await run(request)


async def explorer(request: web.Request) -> web.Response:
    caller = await principal(request)
    args = await read_args(request)
    run_id = args.string("run_id") or ""
    key = args.string("key") or ""
    found = []
    if run_id:
        await wait_fresh(request, "metrics")
        found = await run_series(services(request).pool, run_id)
        if not key and found:
            key = found[0]["key"]
    picker = el(
        "form",
        {"method": "get", "action": "/console/explorer", "class": "inline", "id": "pick"},
        el("label", {"for": "run_id"}, "Run id"),
        el(
            "input",
            {
                "id": "run_id",
                "name": "run_id",
                "value": run_id,
                "size": 34,
                "required": True,
                "pattern": "[A-Za-z0-9_\\-]+",
            },
        ),
        el("label", {"for": "key"}, "Metric"),
        el(
            "select",
            {"id": "key", "name": "key"},
            [
                el(
                    "option",
                    {"value": s["key"], "selected": s["key"] == key},
                    f"{s['key']} ({s['points']:,} points)",
                )
                for s in found
            ],
        )
        if found
        else el("input", {"id": "key", "name": "key", "value": key}),
        el("button", {"type": "submit"}, "Open"),
    )
    chosen = next((s for s in found if s["key"] == key), None)
    if chosen is None:
        note = (
            "Enter a run id to list its metrics."
            if not run_id
            else f"Run {run_id} has no metric {key!r}."
            if key
            else f"Run {run_id} has no metrics."
        )
        chart = el("p", {"class": "empty"}, note)
    else:
        chart = el(
            "figure",
            {"class": "chart"},
            el(
                "div",
                {"class": "toolbar", "role": "toolbar", "aria-label": "Zoom"},
                el("button", {"type": "button", "data-zoom": "in"}, "Zoom in (+)"),
                el("button", {"type": "button", "data-zoom": "out"}, "Zoom out (-)"),
                el("button", {"type": "button", "data-zoom": "left"}, "← Pan"),
                el("button", {"type": "button", "data-zoom": "right"}, "Pan →"),
                el("button", {"type": "button", "data-zoom": "reset"}, "Whole series (0)"),
                el(
                    "form",
                    {"class": "inline window", "id": "window"},
                    el("label", {"for": "start"}, "Steps"),
                    el("input", {"id": "start", "type": "number", "step": 1, "size": 10}),
                    el("label", {"for": "end"}, "to"),
                    el("input", {"id": "end", "type": "number", "step": 1, "size": 10}),
                    el("button", {"type": "submit"}, "Go"),
                ),
            ),
            el(
                "canvas",
                {
                    "id": "chart",
                    "tabindex": 0,
                    "role": "img",
                    "aria-label": f"{key} of run {run_id}",
                    "aria-describedby": "readout",
                    "data-run": run_id,
                    "data-key": key,
                    "data-first-step": chosen["first_step"],
                    "data-last-step": chosen["last_step"],
                    "data-state": "loading",
                },
                "The series explorer needs JavaScript.",
            ),
            el(
                "figcaption",
                None,
                el("p", {"id": "readout", "role": "status", "aria-live": "polite"}, "Loading…"),
                el(
                    "p",
                    {"class": "muted"},
                    "Each pixel column shows the lowest and highest value of its steps, so a "
                    "single-point spike stays visible. Drag to select a window, scroll or "
                    "press + and - to zoom, arrows to pan, 0 for the whole series. Once a "
                    "window holds no more points than the canvas is wide, the raw points are "
                    "drawn.",
                ),
            ),
        )
    body = join([el("h1", None, "Series explorer"), picker, chart])
    return page(
        "Series explorer",
        body,
        active="explorer",
        caller=caller,
        scripts=["explorer.js"] if chosen else [],
    )
