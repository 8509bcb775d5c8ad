"""The event base class, the registry of event types, and upcasting of old versions.

Events are immutable msgspec Structs in a tagged union (the tag is the class name). Each
type carries a schema version; when a type changes shape, its version goes up and an
upcaster turns stored payloads of the old version into the new shape as they are read.
Stored events are never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import msgspec

from evtrack.events._constraints import ConstraintViolation

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Event(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag=True, tag_field="type"
):
    """Base of every domain event. Subclasses register themselves by class name."""

    schema_version: ClassVar[int] = 1
    stream_kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__name__
        if name in EVENT_TYPES:
            raise TypeError(f"duplicate event type {name}")
        EVENT_TYPES[name] = cls

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__


EVENT_TYPES: dict[str, type[Event]] = {}
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class Metadata(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who caused an event and through which request (invariant 11)."""

    actor: str
    request_id: str | None = None
    client: str | None = None
    # With authentication off, the name a request claims (a Basic user or X-Evtrack-User
    # header): kept as an unverified note, never as the actor.
    claimed_actor: str | None = None
    # Where the facts came from when they were copied from another server (an import).
    source: str | None = None


def upcaster(type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that lifts a payload of ``type_name`` from one version to the next."""

    def register(fn: Upcaster) -> Upcaster:
        _UPCASTERS[(type_name, from_version)] = fn
        return fn

    return register


_encoder = msgspec.msgpack.Encoder()
_decoders: dict[type[Event], msgspec.msgpack.Decoder[Any]] = {}


def _decoder(cls: type[Event]) -> msgspec.msgpack.Decoder[Any]:
    decoder = _decoders.get(cls)
    if decoder is None:
        decoder = _decoders[cls] = msgspec.msgpack.Decoder(cls)
    return decoder


def encode_event(event: Event) -> bytes:
    """The stored form of ``event``, once it is known that every read model can hold it.

    msgspec checks field constraints when it decodes, not when a Struct is built, so the
    encoded bytes are decoded once against the type: an event that breaks a constraint
    raises :class:`ConstraintViolation` here, before it can reach the log.
    """
    try:
        payload = _encoder.encode(event)
        _decoder(type(event)).decode(payload)
    except (OverflowError, UnicodeEncodeError, msgspec.ValidationError, ConstraintViolation) as exc:
        raise ConstraintViolation(f"{event.type_name()}: {exc}") from None
    return payload


def decode_event(type_name: str, version: int, payload: bytes) -> Event:
    """Decode a stored payload, upcasting it first if it was written by an older version."""
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise LookupError(f"unknown event type {type_name!r}")
    if version == cls.schema_version:
        event: Event = _decoder(cls).decode(payload)
        return event
    raw: dict[str, Any] = msgspec.msgpack.decode(payload)
    while version < cls.schema_version:
        step = _UPCASTERS.get((type_name, version))
        if step is None:
            raise LookupError(f"no upcaster for {type_name} v{version}")
        raw = step(raw)
        version += 1
    raw["type"] = type_name
    return msgspec.convert(raw, cls)
