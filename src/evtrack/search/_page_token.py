"""Opaque page tokens: ``base64(json({"offset": N}))``, byte-for-byte the reference format.

Using MLflow's own format costs nothing and means a token minted by either server decodes on
the other (handy when comparing the two side by side). Clients must treat tokens as opaque.

Decoding is lenient where MLflow is (non-alphabet characters are skipped by the base64 decoder,
a numeric string offset is accepted) and strict where MLflow would crash or misbehave: a token
that is not a JSON object, a non-integer offset, or an offset outside ``1 .. 2**62`` is rejected
with INVALID_PARAMETER_VALUE instead of an internal error or a negative SQL ``OFFSET``. Offset 0
is rejected like in MLflow; the first page simply has no token.

Logged-model searches use MLflow's other token format, which also names the request it belongs
to (see :class:`LoggedModelTokenScope`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
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


# --- logged models ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoggedModelTokenScope:
    """The request a logged-model page token belongs to, in the reference server's normal form.

    MLflow binds ``logged-models/search`` tokens to the query that produced them: the token
    carries the experiment ids, filter and ``order_by`` of the request, and a later request that
    differs in any of them is rejected. ``order_by`` items are stored the way MLflow's REST
    handler normalises them (all four keys, empty strings as None) and an empty filter or
    ``order_by`` as None, so the tokens are byte-identical to the reference server's.
    """

    experiment_ids: tuple[str, ...]
    filter_string: str | None
    order_by: tuple[Mapping[str, object], ...] | None

    def to_json(self) -> dict[str, object]:
        return {
            "experiment_ids": list(self.experiment_ids),
            "filter_string": self.filter_string,
            "order_by": None if self.order_by is None else [dict(o) for o in self.order_by],
        }


def encode_logged_model_page_token(scope: LoggedModelTokenScope, offset: int) -> str:
    """``base64(json({"experiment_ids", "filter_string", "order_by", "offset"}))``, as MLflow."""
    payload = {**scope.to_json(), "offset": offset}
    return base64.b64encode(json.dumps(payload).encode("utf-8")).decode("utf-8")


def decode_logged_model_page_token(token: str | None, scope: LoggedModelTokenScope) -> int:
    """Row offset in ``token``, after checking that it was minted for the same request.

    None or ``""`` is the first page. MLflow answers a token that is not base64 or not UTF-8
    with an internal error; here every malformed token is INVALID_PARAMETER_VALUE. The scope
    mismatch messages are MLflow's (``SearchLoggedModelsPaginationToken.validate``).
    """
    if not token:
        return 0
    try:
        parsed: object = json.loads(base64.b64decode(token.encode("utf-8")).decode("utf-8"))
    except (binascii.Error, UnicodeError, ValueError) as e:
        raise invalid(f"Invalid page token: {token}. {e}") from e
    if not isinstance(parsed, dict):
        raise invalid(f"Invalid page token: {token}. Expected a JSON object.")
    expected = scope.to_json()
    found_ids = parsed.get("experiment_ids")
    if found_ids != expected["experiment_ids"]:
        raise invalid(
            "Experiment IDs in the page token do not match the requested experiment IDs. "
            f"Expected: {expected['experiment_ids']}. Found: {found_ids}"
        )
    found_filter = parsed.get("filter_string") or None
    if found_filter != expected["filter_string"]:
        raise invalid(
            "Filter string in the page token does not match the requested filter string. "
            f"Expected: {expected['filter_string']}. Found: {found_filter}"
        )
    found_order = parsed.get("order_by") or None
    if found_order != expected["order_by"]:
        raise invalid(
            "Order by in the page token does not match the requested order by. "
            f"Expected: {expected['order_by']}. Found: {found_order}"
        )
    offset = parsed.get("offset") or 0
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= _MAX_OFFSET:
        raise invalid(f"Invalid page token: {token}. Invalid offset {offset!r}.")
    return offset
