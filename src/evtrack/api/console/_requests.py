"""The approval queue: pending transition requests across every model the caller may read.

Approve and reject buttons appear where the caller holds MANAGE on the model (cancel where
they made the request). The buttons call the registry's own routes
(``/api/2.0/evtrack/registry/transition-requests/approve`` and friends), which check the
permission again and run the domain's rules: hiding a button is a courtesy, the route's 403
is the guard. Those routes take JSON only, so a form on another site cannot post to them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from evtrack.access import Principal
from evtrack.api._access import access, principal, visible
from evtrack.api._common import services
from evtrack.api.console._html import Markup, el, join, page, when
from evtrack.api.console._models import model_url
from evtrack.permissions import REGISTERED_MODEL
from evtrack.queries import console as queries


async def _may_manage(request: web.Request, caller: Principal, name: str) -> bool:
    level = await access(request).level(caller, REGISTERED_MODEL, name)
    return level.can_manage


def _actions(item: dict[str, Any], caller: Principal, manage: bool, distinct: bool) -> Markup:
    own = item["requested_by"] == caller.name
    buttons: list[Markup] = []
    data = {"data-name": item["name"], "data-request": item["request_id"]}
    label = f"{item['name']} v{item['version']} to {item['to_stage']}"
    if manage:
        if not (own and distinct):
            buttons.append(
                el(
                    "button",
                    {
                        "type": "button",
                        "class": "approve",
                        "data-action": "approve",
                        "aria-label": f"Approve {label}",
                        **data,
                    },
                    "Approve",
                )
            )
        buttons.append(
            el(
                "button",
                {
                    "type": "button",
                    "class": "reject",
                    "data-action": "reject",
                    "aria-label": f"Reject {label}",
                    **data,
                },
                "Reject",
            )
        )
    if own:
        buttons.append(
            el(
                "button",
                {
                    "type": "button",
                    "class": "cancel",
                    "data-action": "cancel",
                    "aria-label": f"Cancel {label}",
                    **data,
                },
                "Cancel",
            )
        )
    if not buttons:
        return el("span", {"class": "muted"}, "needs MANAGE on the model")
    comment_id = f"comment-{item['request_id']}"
    return join(
        [
            el("label", {"for": comment_id, "class": "visually-hidden"}, f"Comment on {label}"),
            el(
                "input",
                {
                    "id": comment_id,
                    "type": "text",
                    "class": "comment",
                    "placeholder": "comment (optional)",
                    "maxlength": 5000,
                },
            ),
            el("span", {"class": "buttons"}, buttons),
            Markup(" ") if own and distinct and manage else None,
            el("span", {"class": "muted"}, "your request: someone else approves")
            if own and distinct and manage
            else None,
        ]
    )


async def queue(request: web.Request) -> web.Response:
    caller = await principal(request)
    svc = services(request)
    pending = await queries.pending_requests(svc.pool, await visible(request, REGISTERED_MODEL))
    distinct = svc.policy.distinct_approver
    manage: dict[str, bool] = {}
    for item in pending:
        if item["name"] not in manage:
            manage[item["name"]] = await _may_manage(request, caller, item["name"])
    rows = [
        el(
            "tr",
            {"data-request": item["request_id"], "data-model": item["name"]},
            el("th", {"scope": "row"}, el("a", {"href": model_url(item["name"])}, item["name"])),
            el("td", {"class": "num"}, f"v{item['version']}"),
            el(
                "td",
                None,
                f"{item['current_stage'] or '?'} → ",
                el("strong", None, item["to_stage"]),
            ),
            el("td", None, item["requested_by"]),
            el("td", None, when(item["requested_at"])),
            el("td", {"class": "comment-text"}, item["comment"] or ""),
            el("td", {"class": "actions"}, _actions(item, caller, manage[item["name"]], distinct)),
        )
        for item in pending
    ]
    table = el(
        "table",
        {"class": "data", "id": "queue"},
        el("caption", None, f"{len(pending)} pending transition requests"),
        el(
            "thead",
            None,
            el(
                "tr",
                None,
                [
                    el("th", {"scope": "col", "class": "num" if h == "Version" else None}, h)
                    for h in (
                        "Model",
                        "Version",
                        "Transition",
                        "Requested by",
                        "When",
                        "Comment",
                        "Decision",
                    )
                ],
            ),
        ),
        el("tbody", None, rows),
    )
    body = join(
        [
            el("h1", None, "Transition requests"),
            el(
                "p",
                {"class": "muted"},
                "Approving applies the transition at once; every "
                "decision is an event in the model's timeline, with your comment.",
            ),
            el("p", {"id": "queue-status", "role": "status", "aria-live": "polite"}),
            table if pending else el("p", {"class": "empty"}, "Nothing is waiting for a decision."),
        ]
    )
    return page(
        "Transition requests", body, active="requests", caller=caller, scripts=["requests.js"]
    )
