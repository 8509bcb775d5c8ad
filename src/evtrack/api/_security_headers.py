"""Headers every answer carries, so a browser treats evtrack's answers as what they are.

They are added as each response is prepared (``on_response_prepare``), which covers streamed
answers too (artifact downloads, the event stream), whose headers are sent before the handler
returns. No CORS header is ever sent: a page on another origin cannot read evtrack's answers.
"""

from __future__ import annotations

from aiohttp import web

ALWAYS = {
    "X-Content-Type-Options": "nosniff",  # an artifact served as text is never run as script
    "X-Frame-Options": "DENY",  # no clickjacking of the registry's promote buttons
    "Referrer-Policy": "same-origin",
}
HTML_POLICY = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
"""For HTML answers: only evtrack's own scripts and styles, no inline script, no framing."""


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in ALWAYS.items():
        response.headers.setdefault(name, value)
    if response.content_type == "text/html":
        response.headers.setdefault("Content-Security-Policy", HTML_POLICY)
