"""Logged-model searches on PostgreSQL, compared with MLflow's SQL tracking store holding the same
models (``_registry_support.py``): same models, same order, page by page, and byte-identical
page tokens. The evtrack-only tests at the end cover the deliberate differences (NaN metrics,
statuses, double-quoted values, page-size cap)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from _registry_support import RegistryReference
from _search_support import SearchDb

from evtrack.errors import EvtrackError
from evtrack.search import (
    SEARCH_LOGGED_MODEL_MAX_PAGE_SIZE,
    compile_logged_model_search,
    next_page_token,
)

Order = list[dict[str, Any]]

# --------------------------------------------------------------------------- helpers


async def _ours(
    db: SearchDb,
    experiment_ids: Sequence[str | int],
    filter_string: str | None = None,
    datasets: Sequence[Mapping[str, object]] | None = None,
    order_by: Sequence[Mapping[str, object]] | None = None,
    max_results: int | None = 1000,
    page_token: str | None = None,
) -> tuple[list[str], str | None]:
    query = compile_logged_model_search(
        experiment_ids, filter_string, datasets, order_by, max_results, page_token
    )
    rows = await db.conn.fetch(query.sql, *query.args)
    return [r["model_id"] for r in rows[: query.limit]], next_page_token(query, len(rows))


def _handler_form(order_by: Sequence[Mapping[str, Any]] | None) -> Order | None:
    """``order_by`` as MLflow's REST handler passes it to the store (and into its tokens)."""
    if not order_by:
        return None
    return [
        {
            "field_name": o.get("field_name"),
            "ascending": o.get("ascending", True),
            "dataset_name": o.get("dataset_name") or None,
            "dataset_digest": o.get("dataset_digest") or None,
        }
        for o in order_by
    ]


def _theirs(
    ref: RegistryReference,
    experiment_ids: list[str],
    filter_string: str | None = None,
    datasets: list[dict[str, Any]] | None = None,
    order_by: Sequence[Mapping[str, Any]] | None = None,
    max_results: int = 1000,
    page_token: str | None = None,
) -> tuple[list[str], str | None]:
    page = ref.tracking.search_logged_models(
        experiment_ids,
        filter_string or None,
        datasets,
        max_results,
        _handler_form(order_by),
        page_token,
    )
    return [m.model_id for m in page], page.token or None


def _e1(ref: RegistryReference) -> list[str]:
    return [ref.experiment_ids["E1"]]


# --------------------------------------------------------------------------- filters vs MLflow

FILTERS: list[str | None] = [
    None,
    "name = 'model'",
    "name = 'MODEL'",
    "name != 'model'",
    "name LIKE 'mod%'",
    "name LIKE 'Mod%'",
    "name ILIKE 'MOD%'",
    "name LIKE 'a_c'",
    "name IN ('model', 'clf')",
    "name in ('Model')",
    "name NOT IN ('model')",
    "`name` = 'clf'",
    "name = clf",  # MLflow takes an unquoted word as the value
    "attributes.name = 'clf'",
    "attributes.model_id IN ('{m_a}', '{m_c}', 'm-nope')",
    "model_id = '{m_b}'",
    "model_id NOT IN ('{m_b}')",
    "model_type = 'sklearn'",
    "model_type != 'sklearn'",
    "model_type ILIKE 'SKLEARN'",
    "model_type LIKE 's%'",
    "source_run_id = '{r1}'",
    "source_run_id != '{r1}'",
    "source_run_id IN ('{r2}')",
    "creation_time > 1000",
    "creation_timestamp >= 1000",
    "creation_time = 2000",
    "creation_time != 1000",
    "creation_time <= 1e3",
    "creation_time > 999.5",
    "last_updated_timestamp < 2000",
    "last_updated_timestamp >= 3000",
    "metrics.acc > 0.8",
    "metrics.acc >= 0.8",
    "metrics.acc < 0",
    "metrics.acc = 0.5",
    "metrics.acc != 0.5",
    "metrics.acc > -2",
    "metrics.loss <= 0.3",
    "metrics.`loss` > 1",
    "metrics.missing > 0",
    "params.lr = '0.1'",
    "params.lr != '0.1'",
    "params.lr LIKE 'a%'",
    "params.lr ILIKE 'a%'",
    "params.lr LIKE 'a_c'",
    "params.lr IN ('0.1', 'abc')",
    "params.lr NOT IN ('0.1')",
    "params.depth = '3'",
    "params.missing != 'x'",
    "tags.team = 'vision'",
    "tags.team != 'vision'",
    "tags.team ILIKE 'VISION'",
    "tags.team NOT IN ('vision', 'nlp')",
    "tags.flag = ''",
    "name = 'model' AND metrics.acc > 0.6",
    "metrics.acc > 0 AND params.lr LIKE '0%' AND tags.team = 'vision'",
    "metrics.acc > 0.55 AND metrics.acc < 0.65",
    "name = 'model' and creation_time >= 1000 and model_type = 'sklearn'",
]


def _fill(template: str | None, ref: RegistryReference) -> str | None:
    if template is None:
        return None
    return template.format(**ref.model_ids, **ref.run_ids)


@pytest.mark.parametrize("filter_template", FILTERS)
async def test_filters_match_mlflow(
    search_db: SearchDb, registry_mirrored: RegistryReference, filter_template: str | None
) -> None:
    ref = registry_mirrored
    filter_string = _fill(filter_template, ref)
    both = [ref.experiment_ids["E1"], ref.experiment_ids["E2"]]
    ours, _ = await _ours(search_db, both, filter_string)
    theirs, _ = _theirs(ref, both, filter_string)
    assert ref.spec_names(ours) == ref.spec_names(theirs)


DATASETS: list[list[dict[str, Any]]] = [
    [{"dataset_name": "train"}],
    [{"dataset_name": "train", "dataset_digest": "d1"}],
    [{"dataset_name": "train", "dataset_digest": "d2"}],
    [{"dataset_name": "eval"}, {"dataset_name": "train", "dataset_digest": "d2"}],
    [{"dataset_name": "nope"}],
]


@pytest.mark.parametrize(
    ("datasets", "filter_string"),
    list(
        itertools.product(
            DATASETS,
            [None, "metrics.acc > 0.6", "metrics.acc < 0.6", "name = 'model'", "metrics.loss > 0"],
        )
    ),
)
async def test_datasets_match_mlflow(
    search_db: SearchDb,
    registry_mirrored: RegistryReference,
    datasets: list[dict[str, Any]],
    filter_string: str | None,
) -> None:
    ref = registry_mirrored
    ours, _ = await _ours(search_db, _e1(ref), filter_string, datasets)
    theirs, _ = _theirs(ref, _e1(ref), filter_string, datasets)
    assert ref.spec_names(ours) == ref.spec_names(theirs)


# --------------------------------------------------------------------------- orders vs MLflow

ORDERS: list[Order] = [
    [],
    [{"field_name": "name"}],
    [{"field_name": "name", "ascending": False}],
    [{"field_name": "creation_time", "ascending": False}],  # what the UI sends
    [{"field_name": "creation_time", "ascending": True}],
    [{"field_name": "creation_timestamp"}],
    [{"field_name": "last_updated_timestamp", "ascending": False}],
    [{"field_name": "model_id", "ascending": False}],
    [{"field_name": "model_type"}],
    [{"field_name": "model_type", "ascending": False}],
    [{"field_name": "status"}],
    [{"field_name": "status", "ascending": False}],
    [{"field_name": "source_run_id"}],
    [{"field_name": "metrics.acc"}],
    [{"field_name": "metrics.acc", "ascending": False}],
    [{"field_name": "metrics.acc", "dataset_name": "train"}],
    [{"field_name": "metrics.acc", "ascending": False, "dataset_name": "train"}],
    [{"field_name": "metrics.acc", "dataset_name": "train", "dataset_digest": "d2"}],
    [{"field_name": "metrics.acc", "dataset_name": "eval", "ascending": False}],
    [{"field_name": "metrics.loss", "ascending": False}, {"field_name": "name"}],
    [{"field_name": "metrics.missing"}],
    [{"field_name": "name"}, {"field_name": "metrics.acc", "ascending": False}],
    [{"field_name": "name", "dataset_name": "train"}],  # dataset ignored for attributes
]


@pytest.mark.parametrize("order_by", ORDERS)
async def test_orders_match_mlflow(
    search_db: SearchDb, registry_mirrored: RegistryReference, order_by: Order
) -> None:
    ref = registry_mirrored
    both = [ref.experiment_ids["E1"], ref.experiment_ids["E2"]]
    ours, _ = await _ours(search_db, both, None, None, order_by)
    theirs, _ = _theirs(ref, both, None, None, order_by)
    assert ref.spec_names(ours) == ref.spec_names(theirs)


@pytest.mark.parametrize(
    ("filter_string", "datasets", "order_by"),
    [
        (None, None, []),
        ("name = 'model'", None, [{"field_name": "creation_time", "ascending": False}]),
        (None, [{"dataset_name": "train"}], [{"field_name": "metrics.acc"}]),
        ("metrics.acc > 0", None, [{"field_name": "metrics.acc", "ascending": False}]),
        (None, None, [{"field_name": "model_type", "dataset_name": "", "ascending": True}]),
    ],
)
@pytest.mark.parametrize("page_size", [1, 2, 3])
async def test_pages_and_tokens_match_mlflow(
    search_db: SearchDb,
    registry_mirrored: RegistryReference,
    filter_string: str | None,
    datasets: list[dict[str, Any]] | None,
    order_by: Order,
    page_size: int,
) -> None:
    ref = registry_mirrored
    token: str | None = None
    ref_token: str | None = None
    seen: list[str] = []
    while True:
        ours, token = await _ours(
            search_db, _e1(ref), filter_string, datasets, order_by, page_size, token
        )
        theirs, ref_token = _theirs(
            ref, _e1(ref), filter_string, datasets, order_by, page_size, ref_token
        )
        assert ours == theirs
        assert token == ref_token  # byte-identical, scope included
        seen += ours
        if token is None:
            break
    everything, _ = await _ours(search_db, _e1(ref), filter_string, datasets, order_by)
    assert seen == everything


async def test_tokens_are_bound_to_their_request(
    search_db: SearchDb, registry_mirrored: RegistryReference
) -> None:
    """A token reused with another request is rejected with MLflow's message."""
    from mlflow.exceptions import MlflowException

    ref = registry_mirrored
    order = [{"field_name": "name"}]
    _, token = await _ours(search_db, _e1(ref), "name = 'model'", None, order, 1)
    assert token is not None
    both = [ref.experiment_ids["E1"], ref.experiment_ids["E2"]]
    for args in [
        (both, "name = 'model'", order),
        (_e1(ref), None, order),
        (_e1(ref), "name = 'model'", None),
        (_e1(ref), "name = 'model'", [{"field_name": "name", "ascending": False}]),
    ]:
        with pytest.raises(EvtrackError) as ours:
            await _ours(search_db, args[0], args[1], None, args[2], 1, token)
        with pytest.raises(MlflowException) as theirs:
            _theirs(ref, args[0], args[1], None, args[2], 1, token)
        assert ours.value.message == theirs.value.message
    # The same request with other datasets or page size is fine (MLflow does not check them).
    page, _ = await _ours(
        search_db, _e1(ref), "name = 'model'", [{"dataset_name": "x"}], order, 5, token
    )
    assert page == []


async def test_semantics_spelled_out(
    search_db: SearchDb, registry_mirrored: RegistryReference
) -> None:
    ref = registry_mirrored

    async def names(
        filter_string: str | None = None,
        datasets: list[dict[str, Any]] | None = None,
        order_by: Order | None = None,
    ) -> list[str]:
        found, _ = await _ours(search_db, _e1(ref), filter_string, datasets, order_by)
        return ref.spec_names(found)

    # Default: newest first, model_id breaking ties; deleted models never appear.
    by_id = sorted(["m_a", "m_b", "m_c"], key=lambda n: ref.model_ids[n])
    assert (await names())[:2] == sorted(["m_d", "m_e"], key=lambda n: ref.model_ids[n])
    assert (await names())[2:] == [*by_id, "m_f"]
    # Metric filters look at every point: m_a's latest acc is 0.5, an earlier one 0.9.
    assert "m_a" in await names("metrics.acc > 0.8")
    # Metric ordering uses the latest point (timestamp, then step): m_a 0.5 < m_b 0.8.
    assert await names(order_by=[{"field_name": "metrics.acc"}]) == [
        "m_c",  # -1.0, its latest point (ts 50), although it also logged 0.95
        "m_a",  # 0.5, latest (ts 20) of 0.9 / 0.5 / 0.7
        "m_b",  # 0.8: ts 30 step 2 beats ts 30 step 0
        "m_f",  # 100
        *sorted(["m_d", "m_e"], key=lambda n: ref.model_ids[n]),  # no acc: last
    ]
    # Datasets narrow metric clauses to points on them; alone they require such a point.
    assert set(await names("metrics.acc > 0.8", [{"dataset_name": "eval"}])) == {"m_c"}
    assert set(await names(None, [{"dataset_name": "eval"}])) == {"m_a", "m_b", "m_c"}


# --------------------------------------------------------------------------- evtrack only

_EXTRA = 9101


@pytest.fixture(scope="module")
async def extra_models(search_db: SearchDb) -> list[str]:
    """Models MLflow cannot represent faithfully: NaN metrics (it stores 0), and many ties."""
    conn = search_db.conn

    async def model(
        model_id: str, created: int, status: str = "LOGGED_MODEL_READY", experiment: int = _EXTRA
    ) -> None:
        await conn.execute(
            "INSERT INTO rm_logged_models.logged_models (model_id, experiment_id, name, "
            "artifact_location, creation_timestamp_ms, last_updated_timestamp_ms, status) "
            "VALUES ($1, $2, 'x', 'a', $3, $3, $4)",
            model_id,
            experiment,
            created,
            status,
        )

    async def metric(model_id: str, value: float, is_nan: bool, ts: int = 1) -> None:
        await conn.execute(
            "INSERT INTO rm_logged_models.logged_model_metrics VALUES "
            "($1, 'm', $2, $3, $4, 0, 'r', NULL, NULL)",
            model_id,
            value,
            is_nan,
            ts,
        )

    await model("x-nan", 1, "LOGGED_MODEL_PENDING")
    await metric("x-nan", 0.0, True)
    await model("x-zero", 2)
    await metric("x-zero", 0.0, False)
    await model("x-one", 3)
    await metric("x-one", 1.0, False)
    await model("x-none", 4)
    tied = [f"t-{i:02d}" for i in range(23)]
    for model_id in reversed(tied):
        await model(model_id, 777, experiment=9102)
    return tied


async def test_nan_metrics(search_db: SearchDb, extra_models: list[str]) -> None:
    exp = [_EXTRA]

    async def ids(filter_string: str | None, order_by: Order | None = None) -> list[str]:
        return (await _ours(search_db, exp, filter_string, None, order_by))[0]

    # NaN is stored as 0 but never equals it; only != matches NaN.
    assert await ids("metrics.m = 0") == ["x-zero"]
    assert await ids("metrics.m < 0.5") == ["x-zero"]
    assert await ids("metrics.m != 1") == ["x-zero", "x-nan"]
    # Ascending and descending: numbers, then NaN, then models without the metric.
    assert await ids(None, [{"field_name": "metrics.m"}]) == ["x-zero", "x-one", "x-nan", "x-none"]
    assert await ids(None, [{"field_name": "metrics.m", "ascending": False}]) == [
        "x-one",
        "x-zero",
        "x-nan",
        "x-none",
    ]


async def test_status_and_quoting(search_db: SearchDb, extra_models: list[str]) -> None:
    exp = [_EXTRA]
    assert (await _ours(search_db, exp, "status = 'LOGGED_MODEL_PENDING'"))[0] == ["x-nan"]
    assert (await _ours(search_db, exp, "status LIKE '%READY'"))[0] == [
        "x-none",
        "x-one",
        "x-zero",
    ]
    # Double quotes quote (MLflow would compare with the quotes included and find nothing).
    assert (await _ours(search_db, exp, 'model_id = "x-one"'))[0] == ["x-one"]


async def test_ties_paginate_stably_and_pages_are_capped(
    search_db: SearchDb, extra_models: list[str]
) -> None:
    token: str | None = None
    pages: list[list[str]] = []
    while True:
        page, token = await _ours(search_db, ["9102"], None, None, None, 5, token)
        pages.append(page)
        if token is None:
            break
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [m for p in pages for m in p] == extra_models
    query = compile_logged_model_search(["1"], None, None, None, 10**9, None)
    assert query.limit == SEARCH_LOGGED_MODEL_MAX_PAGE_SIZE
    assert (await _ours(search_db, ["9102"], max_results=None))[0] == extra_models


async def test_logged_model_hostile_values_are_just_data(
    search_db: SearchDb, registry_mirrored: RegistryReference
) -> None:
    hostile = "x'); DROP TABLE rm_logged_models.logged_models; --"
    filter_string = f'tags.`{hostile}` = "{hostile}" AND params.`{hostile}` IN ("{hostile}")'
    order = [{"field_name": f"metrics.{hostile}", "dataset_name": hostile}]
    assert (await _ours(search_db, _e1(registry_mirrored), filter_string, None, order))[0] == []
    count = await search_db.conn.fetchval("SELECT count(*) FROM rm_logged_models.logged_models")
    assert count > 0
