"""Registered-model and model-version searches on PostgreSQL, compared with MLflow's SQL registry
store holding the same data (``_registry_support.py``): same rows, same order, page by page,
with the same page tokens."""

from __future__ import annotations

from typing import Any

import pytest
from _registry_support import PROMPT, RegistryReference, model_key
from _search_support import SearchDb

from evtrack.search import (
    compile_model_version_search,
    compile_registered_model_search,
    next_page_token,
)

# --------------------------------------------------------------------------- helpers


def _names_by_key(ref: RegistryReference) -> dict[str, str]:
    from _registry_support import REGISTERED_MODEL_SPECS

    return {model_key(name): name for name in REGISTERED_MODEL_SPECS}


async def _our_models(
    db: SearchDb,
    ref: RegistryReference,
    filter_string: str | None,
    order_by: list[str],
    max_results: int = 1000,
    page_token: str | None = None,
) -> tuple[list[str], str | None]:
    query = compile_registered_model_search(filter_string, order_by, max_results, page_token)
    rows = await db.conn.fetch(query.sql, *query.args)
    names = _names_by_key(ref)
    return [names[r["model_key"]] for r in rows[: query.limit]], next_page_token(query, len(rows))


def _token(page: Any) -> str | None:
    token = page.token.decode() if isinstance(page.token, bytes) else page.token
    return token or None


def _ref_models(
    ref: RegistryReference,
    filter_string: str | None,
    order_by: list[str],
    max_results: int = 1000,
    page_token: str | None = None,
) -> tuple[list[str], str | None]:
    page = ref.registry.search_registered_models(filter_string, max_results, order_by, page_token)
    return [m.name for m in page], _token(page)


async def _our_versions(
    db: SearchDb,
    ref: RegistryReference,
    filter_string: str | None,
    order_by: list[str],
    max_results: int = 1000,
    page_token: str | None = None,
) -> tuple[list[tuple[str, int]], str | None]:
    query = compile_model_version_search(filter_string, order_by, max_results, page_token)
    rows = await db.conn.fetch(query.sql, *query.args)
    names = _names_by_key(ref)
    found = [(names[r["model_key"]], r["version"]) for r in rows[: query.limit]]
    return found, next_page_token(query, len(rows))


def _ref_versions(
    ref: RegistryReference,
    filter_string: str | None,
    order_by: list[str],
    max_results: int = 1000,
    page_token: str | None = None,
) -> tuple[list[tuple[str, int]], str | None]:
    page = ref.registry.search_model_versions(filter_string, max_results, order_by, page_token)
    return [(v.name, int(v.version)) for v in page], _token(page)


# --------------------------------------------------------------------------- registered models

_CLIENT_CLAUSE = f"tag.`{PROMPT}` != 'true'"

REGISTERED_MODEL_FILTERS: list[str | None] = [
    None,
    "name = 'alpha'",
    "name = 'Alpha'",
    "name != 'alpha'",
    "name LIKE 'a%'",
    "name LIKE 'A%'",
    "name ILIKE 'a%'",
    "name LIKE 'a_c'",
    "name LIKE 'eps%'",
    "name ILIKE '%ETA'",
    "name IN ('alpha', 'Beta', 'nope')",
    "name NOT IN ('alpha')",
    "name in ('prompt-1')",
    "attribute.name = 'gamma'",
    "tags.team = 'vision'",
    "tag.team != 'vision'",
    "tags.team LIKE 'v%'",
    "tags.team ILIKE 'V%'",
    "tags.team = ''",
    "tags.stage = 'prod' AND tags.team = 'vision'",
    "tags.`team` = 'nlp'",
    "tags.'team' = 'nlp'",
    "tags.missing != 'x'",
    # The prompt tag, every way MLflow distinguishes it.
    _CLIENT_CLAUSE,
    f"name LIKE '%' AND {_CLIENT_CLAUSE}",
    f"tags.`{PROMPT}` = 'true'",
    f"tags.`{PROMPT}` = 'TRUE'",
    f"tags.`{PROMPT}` = 'false'",
    f"tags.`{PROMPT}` != 'false'",
    f"tags.`{PROMPT}` LIKE '%'",
    f"tags.`{PROMPT}` ILIKE 'true'",
    f"tags.{PROMPT} = 'false' AND tags.{PROMPT} = 'true'",
    f"tags.{PROMPT} = 'true' AND tags.{PROMPT} = 'false'",
    f"tags.{PROMPT} = 'true' AND tags.team = 'vision'",
    f"tags.team = 'vision' AND {_CLIENT_CLAUSE}",
]

REGISTERED_MODEL_ORDERS: list[list[str]] = [
    [],
    ["name"],
    ["name DESC"],
    ["timestamp"],
    ["timestamp DESC"],
    ["last_updated_timestamp"],
    ["last_updated_timestamp DESC"],
    ["timestamp DESC", "name DESC"],
    ["name ASC", "timestamp"],
    ["timestamp desc"],
]


@pytest.mark.parametrize("filter_string", REGISTERED_MODEL_FILTERS)
async def test_registered_model_filters_match_mlflow(
    search_db: SearchDb, registry_mirrored: RegistryReference, filter_string: str | None
) -> None:
    ours, _ = await _our_models(search_db, registry_mirrored, filter_string, [])
    theirs, _ = _ref_models(registry_mirrored, filter_string, [])
    assert ours == theirs


@pytest.mark.parametrize("order_by", REGISTERED_MODEL_ORDERS)
@pytest.mark.parametrize("filter_string", [None, "tags.team ILIKE 'v%'"])
async def test_registered_model_orders_match_mlflow(
    search_db: SearchDb,
    registry_mirrored: RegistryReference,
    order_by: list[str],
    filter_string: str | None,
) -> None:
    ours, _ = await _our_models(search_db, registry_mirrored, filter_string, order_by)
    theirs, _ = _ref_models(registry_mirrored, filter_string, order_by)
    assert ours == theirs


@pytest.mark.parametrize("order_by", [[], ["timestamp DESC"], ["last_updated_timestamp"]])
@pytest.mark.parametrize("page_size", [1, 2, 3])
async def test_registered_model_pages_match_mlflow(
    search_db: SearchDb, registry_mirrored: RegistryReference, order_by: list[str], page_size: int
) -> None:
    token: str | None = None
    ref_token: str | None = None
    seen: list[str] = []
    while True:
        ours, token = await _our_models(
            search_db, registry_mirrored, _CLIENT_CLAUSE, order_by, page_size, token
        )
        theirs, ref_token = _ref_models(
            registry_mirrored, _CLIENT_CLAUSE, order_by, page_size, ref_token
        )
        assert ours == theirs
        assert token == ref_token
        seen += ours
        if token is None:
            break
    everything, _ = await _our_models(search_db, registry_mirrored, _CLIENT_CLAUSE, order_by)
    assert seen == everything
    assert len(set(seen)) == len(seen)


async def test_registered_model_semantics_spelled_out(
    search_db: SearchDb, registry_mirrored: RegistryReference
) -> None:
    async def names(filter_string: str | None, order_by: list[str] | None = None) -> list[str]:
        return (await _our_models(search_db, registry_mirrored, filter_string, order_by or []))[0]

    # Default order: name ASC by code point; prompts are excluded even without any filter.
    everything = ["Beta", "a_c", "alpha", "delta", "eps%", "gamma", "not-a-prompt", "shouty"]
    assert await names(None) == everything
    # The client's clause keeps models WITHOUT the tag (anti-join), and "TRUE" is not a prompt.
    assert await names(_CLIENT_CLAUSE) == everything
    # Asking for prompts turns the clause into an ordinary, case-sensitive tag match.
    assert await names(f"tags.`{PROMPT}` = 'true'") == ["prompt-1"]
    assert await names(f"tags.`{PROMPT}` = 'TRUE'") == ["shouty"]
    # Every other tag keeps "has the tag" semantics: != skips models without it.
    assert await names("tags.team != 'vision'") == ["Beta", "a_c", "gamma"]
    # LIKE patterns use PostgreSQL's "\" escape (as MLflow on PostgreSQL; SQLite has none).
    assert await names("name LIKE '%\\%'") == ["eps%"]
    assert await names("name LIKE 'a\\_c'") == ["a_c"]
    # timestamp and last_updated_timestamp are the same key; ties fall back to name ASC.
    assert await names(None, ["timestamp DESC"]) == [
        "a_c",
        "eps%",
        "delta",
        "Beta",
        "alpha",
        "gamma",
        "shouty",
        "not-a-prompt",
    ]


# --------------------------------------------------------------------------- model versions

MODEL_VERSION_FILTERS: list[str | None] = [
    None,
    "name = 'alpha'",
    "name = 'ALPHA'",
    "name != 'alpha'",
    "name LIKE 'a%'",
    "name ILIKE 'B%'",
    "name IN ('alpha', 'gamma')",
    "name NOT IN ('alpha', 'Beta')",
    "run_id = 'r1'",
    "run_id != 'r1'",
    "run_id IN ('r1', 'r9')",
    "run_id NOT IN ('r1')",
    "run_id LIKE 'r%'",
    "source_path = 's3://bucket/Beta/1'",
    "source_path LIKE 's3://bucket/%'",
    "source_path LIKE 's3://bucket/b%'",
    "source_path ILIKE 'S3://BUCKET/B%'",
    "source_path != 'runs:/r1/model'",
    "version_number = 1",
    "version_number = '2'",
    "version_number != 1",
    "version_number > 1",
    "version_number >= 2",
    "version_number < 2",
    "version_number <= 0",
    "version_number = 3",  # only a deleted version has it
    "tags.validated = 'yes'",
    "tags.validated ILIKE 'yes'",
    "tags.validated != 'yes'",
    "tags.validated LIKE 'y%'",
    "name = 'alpha' AND version_number > 1",
    "run_id = 'r1' AND tags.validated = 'yes'",
    f"tags.`{PROMPT}` = 'true'",
    f"tags.`{PROMPT}` = 'TRUE'",
    f"tags.`{PROMPT}` != 'false'",
    f"tags.`{PROMPT}` = 'false'",
    f"tags.`{PROMPT}` != 'true'",
    f"name = 'prompt-1' AND tags.`{PROMPT}` = 'true'",
    "name = 'prompt-1'",
]

MODEL_VERSION_ORDERS: list[list[str]] = [
    [],
    ["name"],
    ["name DESC"],
    ["version_number"],
    ["version_number DESC"],
    ["creation_timestamp"],
    ["creation_timestamp DESC"],
    ["last_updated_timestamp"],
    ["last_updated_timestamp DESC"],
    ["last_updated_timestamp DESC", "version_number ASC"],
    ["attribute.name DESC", "creation_timestamp"],
    ["tags.name DESC"],
    ["`version_number` desc"],
]


@pytest.mark.parametrize("filter_string", MODEL_VERSION_FILTERS)
async def test_model_version_filters_match_mlflow(
    search_db: SearchDb, registry_mirrored: RegistryReference, filter_string: str | None
) -> None:
    ours, _ = await _our_versions(search_db, registry_mirrored, filter_string, [])
    theirs, _ = _ref_versions(registry_mirrored, filter_string, [])
    assert ours == theirs


@pytest.mark.parametrize("order_by", MODEL_VERSION_ORDERS)
@pytest.mark.parametrize("filter_string", [None, "run_id = 'r1'"])
async def test_model_version_orders_match_mlflow(
    search_db: SearchDb,
    registry_mirrored: RegistryReference,
    order_by: list[str],
    filter_string: str | None,
) -> None:
    ours, _ = await _our_versions(search_db, registry_mirrored, filter_string, order_by)
    theirs, _ = _ref_versions(registry_mirrored, filter_string, order_by)
    assert ours == theirs


@pytest.mark.parametrize("order_by", [[], ["name"], ["creation_timestamp DESC"]])
@pytest.mark.parametrize("page_size", [1, 2, 4])
async def test_model_version_pages_match_mlflow(
    search_db: SearchDb, registry_mirrored: RegistryReference, order_by: list[str], page_size: int
) -> None:
    token: str | None = None
    ref_token: str | None = None
    seen: list[tuple[str, int]] = []
    while True:
        ours, token = await _our_versions(
            search_db, registry_mirrored, None, order_by, page_size, token
        )
        theirs, ref_token = _ref_versions(registry_mirrored, None, order_by, page_size, ref_token)
        assert ours == theirs
        assert token == ref_token
        seen += ours
        if token is None:
            break
    assert len(seen) == len(set(seen)) == 8


async def test_model_version_semantics_spelled_out(
    search_db: SearchDb, registry_mirrored: RegistryReference
) -> None:
    async def versions(
        filter_string: str | None, order_by: list[str] | None = None
    ) -> list[tuple[str, int]]:
        found, _ = await _our_versions(search_db, registry_mirrored, filter_string, order_by or [])
        return found

    # Default: last_updated_timestamp DESC, then name ASC, then version DESC.
    assert (await versions(None))[:4] == [("Beta", 1), ("alpha", 2), ("gamma", 1), ("Beta", 2)]
    # Deleted versions never come back, even when named.
    assert await versions("name = 'alpha' AND version_number = 3") == []
    # A prompt's versions are excluded through ANY version tag of the model (v2 has none).
    assert await versions("name = 'prompt-1'") == []
    # The version tiebreak is DESC; name ASC by code point.
    assert await versions("name IN ('alpha', 'Beta')", ["name"]) == [
        ("Beta", 2),
        ("Beta", 1),
        ("alpha", 2),
        ("alpha", 1),
    ]
    # Versions without a run id never match run_id comparisons, != included.
    assert ("Beta", 2) not in await versions("run_id != 'r1'")


async def test_registry_hostile_values_are_just_data(
    search_db: SearchDb, registry_mirrored: RegistryReference
) -> None:
    hostile = "x'); DROP TABLE rm_registry.registered_models; --"
    assert (await _our_models(search_db, registry_mirrored, f'tags.`{hostile}` = "{hostile}"', []))[
        0
    ] == []
    assert (await _our_versions(search_db, registry_mirrored, f'name IN ("{hostile}")', []))[
        0
    ] == []
    count = await search_db.conn.fetchval("SELECT count(*) FROM rm_registry.registered_models")
    assert count > 0


async def test_huge_version_number(
    search_db: SearchDb, registry_mirrored: RegistryReference
) -> None:
    # MLflow's SQLite store fails with an internal error; here it is just a number.
    big = "99999999999999999999"
    assert (await _our_versions(search_db, registry_mirrored, f"version_number < {big}", []))[0]
    assert (await _our_versions(search_db, registry_mirrored, f"version_number = {big}", []))[
        0
    ] == []
