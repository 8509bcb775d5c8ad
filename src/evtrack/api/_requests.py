"""Reading MLflow request parameters, with the reference server's rules and messages.

GET requests carry fields in the query string (repeated keys for lists, booleans spelled
any case); other methods carry a JSON body that must be declared ``application/json`` (the
route table checks the declared type of every write before its handler runs, see
:func:`evtrack.api._cross_site.check_body_type`).
Fields may be spelled in snake_case or camelCase, but not both ways at once.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
from aiohttp import web

from evtrack.api._bodies import Body, read_body
from evtrack.domain import invalid_value, missing_value
from evtrack.errors import invalid

_SEE_DOCS = " See the API docs for more information about request parameters."
_CAMEL = re.compile(r"([A-Z])")


def _snake(name: str) -> str:
    return _CAMEL.sub(lambda m: "_" + m.group(1).lower(), name)


def _missing(name: str) -> Exception:
    return invalid(missing_value(name) + _SEE_DOCS)


def _wrong_type(name: str, value: Any) -> Exception:
    return invalid(
        invalid_value(name, value, f" Hint: Value was of type '{type(value).__name__}'.")
        + _SEE_DOCS
    )


class Args:
    """The fields of one request, with typed accessors that fail like MLflow does."""

    def __init__(self, fields: dict[str, Any], *, from_query: bool, raw: Body = b"") -> None:
        self.fields = fields
        self.from_query = from_query
        self.raw = raw

    def has(self, name: str) -> bool:
        return self.fields.get(name) is not None

    def string(self, name: str, *, required: bool = False, allow_empty: bool = True) -> str | None:
        value = self.fields.get(name)
        if value is None or (required and value == ""):
            if required:
                raise _missing(name)
            return None
        if isinstance(value, list) and self.from_query and value:
            value = value[-1]
        if not isinstance(value, str):
            raise _wrong_type(name, value)
        if not allow_empty and value == "":
            return None
        return value

    def required_string(self, name: str) -> str:
        value = self.string(name, required=True)
        assert value is not None
        return value

    def integer(self, name: str, *, required: bool = False) -> int | None:
        value = self.fields.get(name)
        if value is None or value == "":
            if required:
                raise _missing(name)
            return None
        if isinstance(value, bool):
            raise _wrong_type(name, value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise _wrong_type(name, value)

    def boolean(self, name: str, *, default: bool = False) -> bool:
        value = self.fields.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if self.from_query:
            raise invalid(f"Invalid boolean value: {value}, must be 'true' or 'false'.")
        raise _wrong_type(name, value)

    def array(self, name: str) -> list[Any]:
        value = self.fields.get(name)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        if self.from_query:
            return [value]
        raise _wrong_type(name, value)

    def string_list(self, name: str) -> list[str]:
        items = self.array(name)
        for item in items:
            if not isinstance(item, str):
                raise _wrong_type(name, items)
        return items

    def run_id(self) -> str:
        """Run-scoped calls send ``run_id`` and/or the legacy ``run_uuid``."""
        value = self.string("run_id") or self.string("run_uuid")
        if not value:
            raise _missing("run_id")
        return value


def _normalise(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        snake = _snake(key)
        if snake in out and snake != key:
            raise invalid(f"Field '{snake}' is specified more than once (as '{key}').")
        if snake != key and snake in fields:
            raise invalid(f"Field '{snake}' is specified more than once (as '{key}').")
        out[snake] = value
    return out


_ARGS_KEY = web.RequestKey("args", Args)


async def read_args(request: web.Request, *, max_body: int | None = None) -> Args:
    """Parse the request's fields; raise MLflow's INVALID_PARAMETER_VALUE errors on bad input.

    Parsed once per request: the access guard reads the fields that name a resource, and
    the handler then gets the same ``Args``.
    """
    cached: Args | None = request.get(_ARGS_KEY)
    if cached is not None:
        if max_body is not None and len(cached.raw) > max_body:
            raise _too_large(max_body, len(cached.raw))
        return cached
    args = await _parse_args(request, max_body)
    request[_ARGS_KEY] = args
    return args


def _too_large(max_body: int, size: int) -> Exception:
    return invalid(
        f"Batched logging API requests must be at most {max_body} bytes, got a "
        f"request of size {size}."
    )


async def _parse_args(request: web.Request, max_body: int | None) -> Args:
    if request.method == "GET" and request.query:
        fields: dict[str, Any] = {}
        for key in request.query:
            values = request.query.getall(key)
            fields[key] = values if len(values) > 1 else values[0]
        # Repeated fields may arrive once; accessors accept a scalar where a list is due.
        return Args(_normalise(fields), from_query=True)
    body = await read_body(request)
    if max_body is not None and len(body) > max_body:
        raise _too_large(max_body, len(body))
    if not body.strip():
        return Args({}, from_query=False, raw=body)
    try:
        parsed = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        # The reference silently reads malformed JSON as an empty body and fails later (or
        # not at all); a clear error is kinder.
        raise invalid(f"Malformed JSON in request body: {exc}") from None
    if isinstance(parsed, str):
        # Old clients double-encode the body as a JSON string.
        try:
            parsed = json.loads(parsed)
        except ValueError:
            parsed = None
    if not isinstance(parsed, dict):
        raise invalid("Invalid request body: expected a JSON object.")
    return Args(_normalise(parsed), from_query=False, raw=body)
