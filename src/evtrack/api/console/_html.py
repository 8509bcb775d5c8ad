"""HTML for the console, built from escaped parts so no request value can become markup.

Every string given to :func:`el` is escaped unless it is :class:`Markup` (which only this
module and its callers' own literals produce). Pages carry a strict Content Security Policy:
scripts and styles from this origin only, nothing inline, no ``eval``; the small JavaScript
modules under ``static/`` add the live parts.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from aiohttp import web

from evtrack.access import Principal
from evtrack.api.console._assets import asset_url

CONSOLE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""The console's pages: own scripts and styles only, no inline code, no eval, no framing."""

_VOID = frozenset({"br", "col", "hr", "img", "input", "link", "meta"})


class Markup(str):
    """Text that is already HTML (escaped or built by :func:`el`)."""

    __slots__ = ()


AttrValue = str | int | float | bool | None


_SPECIAL = re.compile(r"[&<>\"']")


def escape(value: object) -> Markup:
    if isinstance(value, Markup):
        return value
    text = str(value)
    # Most text on a page has nothing to escape: skip the five replacements then.
    return Markup(html.escape(text, quote=True) if _SPECIAL.search(text) else text)


def _children(children: Iterable[object]) -> str:
    parts: list[str] = []
    for child in children:
        if child is None or child is False:
            continue
        if isinstance(child, str | int | float):
            parts.append(escape(child))
        else:
            parts.append(_children(child))  # type: ignore[arg-type]
    return "".join(parts)


def el(tag: str, attrs: dict[str, AttrValue] | None = None, *children: object) -> Markup:
    """``<tag attrs>children</tag>``; attributes None or False are left out, True is bare."""
    rendered = []
    for name, value in (attrs or {}).items():
        if value is None or value is False:
            continue
        rendered.append(f" {name}" if value is True else f' {name}="{escape(value)}"')
    opening = f"<{tag}{''.join(rendered)}>"
    if tag in _VOID:
        return Markup(opening)
    return Markup(f"{opening}{_children(children)}</{tag}>")


def join(parts: Iterable[object]) -> Markup:
    return Markup(_children(parts))


def when(ms: int | None, *, precise: bool = False) -> Markup:
    """A ``<time>`` for epoch milliseconds, shown in UTC to the second (or millisecond)."""
    if ms is None:
        return Markup("")
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    shown = moment.strftime("%Y-%m-%d %H:%M:%S")
    if precise:
        shown += f".{moment.microsecond // 1000:03d}"
    return el("time", {"datetime": moment.isoformat()}, f"{shown} UTC")


NAV = (
    ("home", "/console/", "Console", False),
    ("models", "/console/models", "Models", False),
    ("requests", "/console/requests", "Transition requests", False),
    ("status", "/console/status", "Status", True),
    ("feed", "/console/feed", "Live feed", False),
    ("explorer", "/console/explorer", "Series explorer", False),
)
"""(key, path, label, for admins only)"""


def page(
    title: str,
    body: object,
    *,
    active: str,
    caller: Principal | None,
    scripts: Iterable[str] = (),
    status: int = 200,
    main_attrs: dict[str, AttrValue] | None = None,
) -> web.Response:
    """A whole console page with its navigation and strict security policy."""
    nav = el(
        "nav",
        {"aria-label": "Console"},
        el(
            "ul",
            None,
            [
                el(
                    "li",
                    None,
                    el(
                        "a",
                        {"href": href, "aria-current": "page" if key == active else None},
                        label,
                    ),
                )
                for key, href, label, admins in NAV
                if not admins or caller is None or caller.is_admin
            ],
        ),
    )
    head = join(
        [
            Markup('<meta charset="utf-8">'),
            el("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}),
            el("meta", {"name": "color-scheme", "content": "light dark"}),
            el("title", None, f"{title} · evtrack console"),
            el("link", {"rel": "stylesheet", "href": asset_url("console.css")}),
            el("link", {"rel": "icon", "href": asset_url("favicon.svg")}),
            [el("script", {"type": "module", "src": asset_url(s)}) for s in scripts],
        ]
    )
    header = el(
        "header",
        {"class": "top"},
        el("a", {"class": "skip", "href": "#main"}, "Skip to content"),
        nav,
        el("span", {"class": "who"}, f"Signed in as {caller.name}") if caller else None,
    )
    document = (
        "<!doctype html>"
        + el(
            "html",
            {"lang": "en"},
            el("head", None, head),
            el(
                "body",
                None,
                header,
                el("main", {"id": "main", "tabindex": "-1", **(main_attrs or {})}, body),
            ),
        )
        + "\n"
    )
    response = web.Response(text=document, content_type="text/html", status=status)
    response.headers["Content-Security-Policy"] = CONSOLE_POLICY
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(status: int, code: str, message: str) -> web.Response:
    """An error on a console page, for a person rather than a client library."""
    body = join(
        [
            el("h1", None, f"{status} · {code}"),
            el("p", {"class": "error", "role": "alert"}, message),
            el("p", None, el("a", {"href": "/console/"}, "Back to the console")),
        ]
    )
    return page(f"Error {status}", body, active="", caller=None, status=status)
