"""Opaque page tokens: ``base64(json({"offset": N}))``, byte-for-byte the reference format.

Using MLflow's own format costs nothing and means a token minted by either server decodes on
the other (handy when comparing the two side by side). Clients must treat tokens as opaque.

Decoding is lenient where MLflow is (non-alphabet characters are skipped by the base64 decoder,
a numeric string offset is accepted) and strict where MLflow would crash or misbehave: a token
that is not a JSON object, a non-integer offset, or an offset outside ``1 .. 2**62`` is rejected
with INVALID_PARAMETER_VALUE instead of an internal error or a negative SQL ``OFFSET``. Offset 0
is rejected like in MLflow; the first page simply has no token.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Final

from evtrack.errors import invalid

_MAX_OFFSET: Final = 2**62


def encode_page_token(offset: int) -> str:
    """Token for the page that starts ``offset`` rows into the ordered result."""
    return base64.b64encode(json.dumps({"offset": offset}).encode("utf-8")).decode("ascii")


def decode_page_token(token: str | None) -> int:
    """Row offset encoded in ``token``; None or ``""`` is the first page (offset 0)."""
    if not token:
        return 0
    try:
        raw = base64.b64decode(token)
    except (binascii.Error, ValueError) as e:
        raise invalid("Invalid page token, could not base64-decode") from e
    try:
        parsed: object = json.loads(raw)
    except ValueError as e:
        raise invalid(f"Invalid page token, decoded value={raw!r}") from e
    offset = parsed.get("offset") if isinstance(parsed, dict) else None
    if not offset or isinstance(offset, bool | float):
        raise invalid(f"Invalid page token, parsed value={parsed}")
    if isinstance(offset, str):
        try:
            offset = int(offset)
        except ValueError as e:
            raise invalid(f"Invalid page token, not stringable {offset}") from e
    if not isinstance(offset, int) or not 0 < offset <= _MAX_OFFSET:
        raise invalid(f"Invalid page token, parsed value={parsed}")
    return offset
