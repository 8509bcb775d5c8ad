"""What a value must be for every read model to hold it, written on the event fields.

Read models store integers as PostgreSQL ``bigint`` and numpy ``int64``, text as PostgreSQL
``text`` (which cannot hold NUL), and doubles as MLflow stores them (infinities clamped to the
largest double, NaN kept). An event that breaks one of these would be appended and then fail
in every projector for ever, so :func:`evtrack.events.encode_event` checks each event against
its type's constraints before it can be appended, and a stored event that breaks them fails
to decode, which the projector runtime parks instead of stopping on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Annotated

from msgspec import Meta

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
DOUBLE_MAX = 1.7976931348623157e308
"""MLflow stores +-infinity as +-DOUBLE_MAX; NaN is kept as NaN."""

MAX_KEY_LENGTH = 250
"""MLflow's limit for metric, param and tag keys."""

_NO_NUL = "^[^\x00]*$"

Int64 = Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)]
"""An integer a ``bigint`` column holds: steps, versions, ids."""

Millis = Annotated[int, Meta(ge=0, le=INT64_MAX)]
"""A timestamp in milliseconds since the epoch: non-negative, within int64."""

Text = Annotated[str, Meta(pattern=_NO_NUL)]
"""Text PostgreSQL can store: anything but NUL."""

ColumnKey = Annotated[str, Meta(min_length=1, max_length=MAX_KEY_LENGTH)]
"""A key in a column of a thousand: checked for NUL by :func:`check_text_column` instead of a
regex per item, which would cost a sixth of a millisecond per thousand points."""


class ConstraintViolation(ValueError):
    """An event field holds a value that a read model could not store."""


def check_clamped(values: Sequence[float], field: str) -> None:
    """Doubles must already be clamped the way MLflow stores them: no infinities.

    A finite sum proves there is no infinity in one pass in C; only a sum that is not finite
    (an infinity, a NaN, or an overflow of large values) needs the look at each value.
    """
    if not math.isfinite(sum(values)) and any(math.isinf(v) for v in values):
        raise ConstraintViolation(f"{field}: infinities must be clamped to +-{DOUBLE_MAX!r}")


def check_text_column(texts: Iterable[str | None], field: str) -> None:
    """No NUL in any text of a column (PostgreSQL ``text`` cannot hold it)."""
    if "\x00" in "".join(t for t in texts if t is not None):
        raise ConstraintViolation(f"{field}: text must not contain NUL")
