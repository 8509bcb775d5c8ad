"""Reads of the registry read model, rendered as MLflow's RegisteredModel and ModelVersion."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg

from evtrack.errors import invalid, not_found
from evtrack.eventlog import Conn
from evtrack.wire import mlflow as wire

Executor: TypeAlias = "Conn | asyncpg.Pool[Any]"
VersionKey = tuple[str, int]


async def model_key(db: Executor, name: str) -> str:
    key: str | None = await db.fetchval(
        "SELECT model_key FROM rm_registry.registered_models WHERE name = $1", name
    )
    if key is None:
        raise not_found(f"Registered Model with name={name} not found")
    return key


async def model_versions(db: Executor, keys: Sequence[VersionKey]) -> list[wire.ModelVersion]:
    """Live versions in the order of ``keys``; deleted or missing ones are skipped."""
    if not keys:
        return []
    model_keys = [k for k, _ in keys]
    versions = [v for _, v in keys]
    rows = await db.fetch(
        """SELECT mv.* FROM rm_registry.model_versions mv
           JOIN unnest($1::text[], $2::bigint[]) AS k(model_key, version)
             ON mv.model_key = k.model_key AND mv.version = k.version
           WHERE NOT mv.deleted""",
        model_keys,
        versions,
    )
    tags: dict[VersionKey, list[wire.KeyValue]] = defaultdict(list)
    for t in await db.fetch(
        """SELECT model_key, version, key, value FROM rm_registry.model_version_tags
           WHERE model_key = ANY($1::text[]) ORDER BY key""",
        list(set(model_keys)),
    ):
        tags[(t["model_key"], t["version"])].append(wire.KeyValue(t["key"], t["value"]))
    aliases: dict[VersionKey, list[str]] = defaultdict(list)
    for a in await db.fetch(
        """SELECT model_key, version, alias FROM rm_registry.aliases
           WHERE model_key = ANY($1::text[]) ORDER BY alias""",
        list(set(model_keys)),
    ):
        aliases[(a["model_key"], a["version"])].append(a["alias"])
    found = {(r["model_key"], r["version"]): _version(r, tags, aliases) for r in rows}
    return [found[k] for k in keys if k in found]


def _version(
    row: Any, tags: dict[VersionKey, list[wire.KeyValue]], aliases: dict[VersionKey, list[str]]
) -> wire.ModelVersion:
    key = (row["model_key"], row["version"])
    return wire.ModelVersion(
        name=row["name"],
        version=str(row["version"]),
        creation_timestamp=row["creation_timestamp"],
        last_updated_timestamp=row["last_updated_timestamp"],
        current_stage=row["current_stage"],
        source=row["source"],
        status=row["status"],
        user_id=row["user_id"],
        description=row["description"],
        run_id=row["run_id"],
        status_message=row["status_message"],
        tags=tags.get(key, []),
        run_link=row["run_link"],
        aliases=aliases.get(key, []),
    )


async def model_version(db: Executor, name: str, version: int) -> wire.ModelVersion:
    key = await model_key(db, name)
    found = await model_versions(db, [(key, version)])
    if not found:
        raise not_found(f"Model Version (name={name}, version={version}) not found")
    return found[0]


async def latest_versions(
    db: Executor, key: str, stages: Sequence[str] | None
) -> list[wire.ModelVersion]:
    """The newest live version in each stage, in the order stages first appear by version."""
    rows = await db.fetch(
        """SELECT version, current_stage FROM rm_registry.model_versions
           WHERE model_key = $1 AND NOT deleted ORDER BY version""",
        key,
    )
    latest: dict[str, int] = {}
    for row in rows:
        latest[row["current_stage"]] = row["version"]
    wanted = [v for stage, v in latest.items() if not stages or stage in stages]
    return await model_versions(db, [(key, v) for v in wanted])


async def registered_models(db: Executor, keys: Sequence[str]) -> list[wire.RegisteredModel]:
    if not keys:
        return []
    rows = await db.fetch(
        "SELECT * FROM rm_registry.registered_models WHERE model_key = ANY($1::text[])", list(keys)
    )
    tags: dict[str, list[wire.KeyValue]] = defaultdict(list)
    for t in await db.fetch(
        """SELECT model_key, key, value FROM rm_registry.registered_model_tags
           WHERE model_key = ANY($1::text[]) ORDER BY key""",
        list(keys),
    ):
        tags[t["model_key"]].append(wire.KeyValue(t["key"], t["value"]))
    aliases: dict[str, list[wire.Alias]] = defaultdict(list)
    for a in await db.fetch(
        """SELECT model_key, alias, version FROM rm_registry.aliases
           WHERE model_key = ANY($1::text[]) ORDER BY alias""",
        list(keys),
    ):
        aliases[a["model_key"]].append(wire.Alias(a["alias"], str(a["version"])))
    out = {}
    for r in rows:
        out[r["model_key"]] = wire.RegisteredModel(
            name=r["name"],
            creation_timestamp=r["creation_timestamp"],
            last_updated_timestamp=r["last_updated_timestamp"],
            user_id=r["user_id"],
            description=r["description"],
            latest_versions=await latest_versions(db, r["model_key"], None),
            tags=tags.get(r["model_key"], []),
            aliases=aliases.get(r["model_key"], []),
        )
    return [out[k] for k in keys if k in out]


async def registered_model(db: Executor, name: str) -> wire.RegisteredModel:
    found = await registered_models(db, [await model_key(db, name)])
    if not found:
        raise not_found(f"Registered Model with name={name} not found")
    return found[0]


async def version_by_alias(db: Executor, name: str, alias: str) -> wire.ModelVersion:
    key = await model_key(db, name)
    if alias.lower() == "latest":
        versions = await latest_versions(db, key, None)
        if not versions:
            raise not_found(f"Latest version not found for model {name}.")
        return max(versions, key=lambda v: int(v.version))
    version: int | None = await db.fetchval(
        "SELECT version FROM rm_registry.aliases WHERE model_key = $1 AND alias = $2", key, alias
    )
    if version is None:
        raise invalid(f"Registered model alias {alias} not found.")
    found = await model_versions(db, [(key, version)])
    if not found:
        raise not_found(f"Model Version (name={name}, version={version}) not found")
    return found[0]


async def download_uri(db: Executor, name: str, version: int) -> str:
    key = await model_key(db, name)
    row = await db.fetchrow(
        """SELECT storage_location, source FROM rm_registry.model_versions
           WHERE model_key = $1 AND version = $2 AND NOT deleted""",
        key,
        version,
    )
    if row is None:
        raise not_found(f"Model Version (name={name}, version={version}) not found")
    location: str = row["storage_location"] or row["source"]
    return location


async def transition_requests(
    db: Executor, name: str, version: int | None, status: str | None
) -> list[dict[str, Any]]:
    key = await model_key(db, name)
    rows = await db.fetch(
        """SELECT * FROM rm_registry.transition_requests
           WHERE model_key = $1 AND ($2::bigint IS NULL OR version = $2)
             AND ($3::text IS NULL OR status = $3)
           ORDER BY requested_at, request_id""",
        key,
        version,
        status,
    )
    out = []
    for r in rows:
        item = {k: v for k, v in r.items() if k != "model_key" and v is not None}
        item["name"] = name
        item["version"] = str(r["version"])
        out.append(item)
    return out
