"""What the import decisions share: key-value pairs with unique keys, and tag syncing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from evtrack.events import Event, KeyValue


def unique_pairs(items: Sequence[KeyValue]) -> list[KeyValue]:
    """Key-value pairs with each key once (the last value wins, as a series of sets would)."""
    return [KeyValue(k, v) for k, v in {kv.key: kv.value for kv in items}.items()]


def tag_changes(
    current_keys: set[str],
    tags: Sequence[KeyValue],
    set_tag: Callable[[KeyValue], Event],
    delete_tag: Callable[[str], Event],
) -> list[Event]:
    """Set every source tag (values are not kept in state) and delete tags it no longer has."""
    wanted = unique_pairs(tags)
    keys = {t.key for t in wanted}
    events: list[Event] = [set_tag(t) for t in wanted]
    events += [delete_tag(k) for k in sorted(current_keys - keys)]
    return events
