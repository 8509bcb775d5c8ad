"""Reads for the console's registry pages: models at a glance, and the approval queue.

Both take the caller's :class:`~evtrack.permissions.Visibility` of registered models (None:
everything), so a user sees only the models they may read, as searches do.
"""

from __future__ import annotations

from typing import Any

from evtrack.permissions import Visibility
from evtrack.queries.metrics import Executor

MAX_MODELS = 1000


def _visible(column: str, visible: Visibility | None, args: list[Any]) -> str:
    if visible is None or visible.everything:
        return "TRUE"
    if visible.include is not None:
        args.append(sorted(visible.include))
        return f"{column} = ANY(${len(args)}::text[])"
    args.append(sorted(visible.exclude))
    return f"{column} <> ALL(${len(args)}::text[])"


async def model_summaries(
    db: Executor, visible: Visibility | None, contains: str | None = None
) -> list[dict[str, Any]]:
    """Registered models by name: live versions, what each stage and alias holds now, and
    pending transition requests. At most ``MAX_MODELS``; ``contains`` filters names."""
    args: list[Any] = []
    where = _visible("m.name", visible, args)
    if contains:
        literal = contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        args.append(f"%{literal}%")
        where += f" AND m.name ILIKE ${len(args)}"
    args.append(MAX_MODELS)
    rows = await db.fetch(
        f"""SELECT m.model_key, m.name, m.last_updated_timestamp,
                   (SELECT count(*) FROM rm_registry.model_versions v
                     WHERE v.model_key = m.model_key AND NOT v.deleted) AS versions,
                   (SELECT COALESCE(jsonb_object_agg(s.current_stage, s.versions), '{{}}')
                      FROM (SELECT current_stage, array_agg(version ORDER BY version) AS versions
                              FROM rm_registry.model_versions v
                             WHERE v.model_key = m.model_key AND NOT v.deleted
                               AND current_stage <> 'None'
                             GROUP BY current_stage) AS s) AS stages,
                   (SELECT COALESCE(jsonb_object_agg(a.alias, a.version), '{{}}')
                      FROM rm_registry.aliases a WHERE a.model_key = m.model_key) AS aliases,
                   (SELECT count(*) FROM rm_registry.transition_requests t
                     WHERE t.model_key = m.model_key AND t.status = 'PENDING') AS pending
            FROM rm_registry.registered_models m
            WHERE {where}
            ORDER BY m.name
            LIMIT ${len(args)}""",
        *args,
    )
    return [
        {
            "name": r["name"],
            "last_updated_timestamp": r["last_updated_timestamp"],
            "versions": r["versions"],
            "stages": r["stages"],
            "aliases": r["aliases"],
            "pending": r["pending"],
        }
        for r in rows
    ]


async def pending_requests(db: Executor, visible: Visibility | None) -> list[dict[str, Any]]:
    """Every pending transition request across models, oldest first, with the version's
    current stage (what approving it would change)."""
    args: list[Any] = []
    where = _visible("m.name", visible, args)
    rows = await db.fetch(
        f"""SELECT t.request_id, m.name, t.version, t.to_stage, t.requested_by,
                   t.requested_at, t.comment, t.archive_existing_versions,
                   v.current_stage
            FROM rm_registry.transition_requests t
            JOIN rm_registry.registered_models m ON m.model_key = t.model_key
            LEFT JOIN rm_registry.model_versions v
                   ON v.model_key = t.model_key AND v.version = t.version
            WHERE t.status = 'PENDING' AND {where}
            ORDER BY t.requested_at, t.request_id""",
        *args,
    )
    return [
        {
            "request_id": r["request_id"],
            "name": r["name"],
            "version": str(r["version"]),
            "to_stage": r["to_stage"],
            "current_stage": r["current_stage"],
            "requested_by": r["requested_by"],
            "requested_at": r["requested_at"],
            "comment": r["comment"],
            "archive_existing_versions": r["archive_existing_versions"],
        }
        for r in rows
    ]
