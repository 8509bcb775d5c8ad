"""Positions in the log: the (transaction id, global position) pairs projectors order by."""

from __future__ import annotations

from typing import NamedTuple


class LogPosition(NamedTuple):
    """Where an event sits in the projectors' total order. Tuples compare in that order."""

    transaction_id: int
    global_position: int


LOG_START = LogPosition(0, 0)
