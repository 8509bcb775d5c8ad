"""Execute the compiled SQL on PostgreSQL and compare with MLflow on the same data.

Most tests are differential: the sample runs and experiments live both in MLflow's own SQLite
store (in process) and in the read-model tables (see ``conftest.py``), and every search must
return the same ids in the same order, page by page, with the same page tokens. The remaining
tests cover what MLflow cannot express (runs without a start time) or what only matters for
SQL (bound parameters, large numbers, long tie runs).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from _search_support import Reference, SearchDb

from evtrack.search import (
    compile_experiment_search,
    compile_run_search,
    next_page_token,
)

# --------------------------------------------------------------------------- helpers


async def _our_runs(
    db: SearchDb,
    experiment_ids: list[int],
    filter_string: str | None,
    order_by: list[str],
    view_type: str = "ACTIVE_ONLY",
    max_results: int = 1000,
    page_token: str | None = None,
) -> tuple[list[str], str | None]:
    query = compile_run_search(
        experiment_ids, view_type, filter_string, order_by, max_results, page_token
    )
    rows = await db.conn.fetch(query.sql, *query.args)
    return [r["run_id"] for r in rows[: query.limit]], next_page_token(query, len(rows))


async def _our_experiments(
    db: SearchDb,
    filter_string: str | None,
    order_by: list[str],
    view_type: str = "ACTIVE_ONLY",
    max_results: int = 1000,
    page_token: str | None = None,
) -> tuple[list[int], str | None]:
    query = compile_experiment_search(view_type, filter_string, order_by, max_results, page_token)
    rows = await db.conn.fetch(query.sql, *query.args)
    return [r["experiment_id"] for r in rows[: query.limit]], next_page_token(query, len(rows))


def _view(view_type: str) -> int:
    from mlflow.entities import ViewType

    return int(getattr(ViewType, view_type))


def _ref_runs(
    ref: Reference,
    experiment_ids: list[int],
    filter_string: str,
    order_by: list[str],
    view_type: str = "ACTIVE_ONLY",
    max_results: int = 1000,
    page_token: str | None = None,
) -> tuple[list[str], str | None]:
    page = ref.client.search_runs(
        [str(i) for i in experiment_ids],
        filter_string,
        _view(view_type),
        max_results,
        order_by,
        page_token,
    )
    token = page.token.decode() if isinstance(page.token, bytes) else page.token
    return [r.info.run_id for r in page], token or None


def _ref_experiments(
    ref: Reference,
    filter_string: str | None,
    order_by: list[str],
    view_type: str = "ACTIVE_ONLY",
    max_results: int = 1000,
    page_token: str | None = None,
) -> tuple[list[int], str | None]:
    page = ref.client.search_experiments(
        _view(view_type), max_results, filter_string, order_by, page_token
    )
    token = page.token.decode() if isinstance(page.token, bytes) else page.token
    return [int(e.experiment_id) for e in page], token or None


def _names(ref: Reference, run_ids: list[str]) -> list[str]:
    by_id = {v: k for k, v in ref.run_ids.items()}
    return [by_id.get(r, r) for r in run_ids]


def _exp_names(ref: Reference, ids: list[int]) -> list[str]:
    by_id = {v: k for k, v in ref.experiment_ids.items()}
    return [by_id.get(i, str(i)) for i in ids]


# --------------------------------------------------------------------------- runs vs MLflow

RUN_FILTERS = [
    "",
    "metrics.acc > 0.5",
    "metrics.acc >= 0.9",
    "metrics.acc = 0",
    "metrics.acc != 0.9",
    "metrics.acc < 1",
    "metrics.acc <= -1.5",
    "metrics.loss <= 0.1",
    "metrics.loss != 12345",
    "metrics.missing >= 0",
    "params.lr = 'abc'",
    "params.lr != 'abc'",
    "params.lr LIKE 'a%'",
    "params.lr ILIKE 'a%'",
    "params.lr LIKE 'a_c'",
    "params.lr LIKE '%C'",
    "params.lr IS NULL",
    "params.lr IS NOT NULL",
    "tags.team = 'Vision'",
    "tags.team ILIKE 'VISION'",
    "tags.team != 'nlp'",
    "tags.team = ''",
    "tags.team IS NULL",
    "tags.`mlflow.runName` = 'alpha'",
    "tags.mlflow.runName LIKE '%eta'",
    "attributes.run_name = 'Beta'",
    "run_name ILIKE 'beta'",
    "`Run Name` LIKE '%a'",
    "run_name != 'alpha'",
    "status = 'FINISHED'",
    "status != 'RUNNING'",
    "attributes.status LIKE 'F%'",
    "user_id = 'alice'",
    "user_id ILIKE 'CAROL'",
    "artifact_uri LIKE '%artifacts'",
    "start_time > 1000",
    "created >= 3000",
    "start_time = 1000",
    "start_time != 1000.0",
    "end_time < 3150",
    "end_time != 1500",
    "run_id IN ('{alpha}', '{gamma}', 'nope')",
    "run_id NOT IN ('{alpha}')",
    "attributes.run_id = '{Beta}'",
    "datasets.name = 'train_ds'",
    "datasets.name != 'train_ds'",
    "datasets.name ILIKE 'eval%'",
    "datasets.name LIKE 'eval%'",
    "datasets.digest IN ('d2', 'd3')",
    "datasets.context = 'training'",
    "datasets.context != 'eval'",
    "datasets.context NOT IN ('eval')",
    "datasets.name NOT IN ('train_ds')",
    "datasets.context LIKE 'e%'",
    "metrics.acc > 0 AND params.lr LIKE 'a%'",
    "tags.team ILIKE 'vision' and status = 'FINISHED' AND metrics.loss < 1",
    "metrics.acc > 0 AND metrics.acc < 1 AND datasets.context = 'training'",
]

RUN_ORDERS: list[list[str]] = [
    [],
    ["metrics.acc"],
    ["metrics.acc DESC"],
    ["metrics.loss ASC", "params.lr DESC"],
    ["params.lr"],
    ["tags.team DESC"],
    ["start_time"],
    ["start_time DESC"],
    ["created ASC"],
    ["end_time"],
    ["end_time DESC"],
    ["run_name"],
    ["attributes.run_name DESC"],
    ["status", "user_id DESC"],
    ["run_id DESC"],
    ["artifact_uri"],
    ["metrics.`acc` desc", "tags.team"],
    ["tags.mlflow.runName DESC"],
]

_CASES = [(f, []) for f in RUN_FILTERS] + [("", o) for o in RUN_ORDERS[1:]]
_CASES += [
    (f, o)
    for f, o in itertools.product(
        ["metrics.acc > 0", "params.lr ILIKE 'a%'", "datasets.context = 'training'"],
        [["metrics.acc DESC"], ["params.lr"], ["end_time"], ["run_name DESC"]],
    )
]
# A filter on the first sort key itself is read off that key's joined row (search/_runs.py):
# it can leave only NaN after the numbers (!=), nothing after them, or nothing at all.
_CASES += [
    ("metrics.acc != 0.9", ["metrics.acc DESC"]),
    ("metrics.acc != 0.9", ["metrics.acc"]),
    ("metrics.acc > 0.5", ["metrics.acc"]),
    ("metrics.acc <= 0.9 AND metrics.acc > 0", ["metrics.acc DESC", "params.lr"]),
    ("metrics.loss < 1 AND metrics.acc >= 0", ["metrics.acc DESC", "metrics.loss"]),
    ("params.lr IS NULL", ["params.lr DESC"]),
    ("params.lr IS NOT NULL", ["params.lr"]),
    ("params.lr != 'abc'", ["params.lr DESC", "metrics.acc"]),
    ("params.lr LIKE 'a%' AND params.lr != 'abc'", ["params.lr"]),
    ("tags.team = 'vision' AND metrics.acc > 0", ["tags.team DESC"]),
    ("tags.team IS NULL", ["tags.team"]),
]


@pytest.mark.parametrize(("filter_template", "order_by"), _CASES)
async def test_runs_match_mlflow(
    search_db: SearchDb, mirrored: Reference, filter_template: str, order_by: list[str]
) -> None:
    filter_string = filter_template.format(**mirrored.run_ids)
    exp = [mirrored.experiment_ids["A"], mirrored.experiment_ids["B"]]
    ours, _ = await _our_runs(search_db, exp, filter_string, order_by)
    theirs, _ = _ref_runs(mirrored, exp, filter_string, order_by)
    assert _names(mirrored, ours) == _names(mirrored, theirs)


@pytest.mark.parametrize("view_type", ["ACTIVE_ONLY", "DELETED_ONLY", "ALL"])
@pytest.mark.parametrize("filter_string", ["", "metrics.acc > 0.5", "params.lr = 'abc'"])
async def test_run_view_types_match_mlflow(
    search_db: SearchDb, mirrored: Reference, view_type: str, filter_string: str
) -> None:
    exp = [mirrored.experiment_ids["A"]]
    ours, _ = await _our_runs(search_db, exp, filter_string, ["metrics.acc DESC"], view_type)
    theirs, _ = _ref_runs(mirrored, exp, filter_string, ["metrics.acc DESC"], view_type)
    assert _names(mirrored, ours) == _names(mirrored, theirs)


@pytest.mark.parametrize(
    ("filter_string", "order_by"),
    [
        ("", []),
        ("", ["metrics.acc"]),
        ("", ["metrics.acc DESC"]),
        ("metrics.acc != 0.9", ["metrics.acc DESC"]),
        ("metrics.acc > 0", ["metrics.acc DESC"]),
        ("", ["params.lr DESC"]),
        ("status != 'x'", ["end_time"]),
    ],
)
@pytest.mark.parametrize("page_size", [1, 2, 3])
async def test_run_pages_match_mlflow(
    search_db: SearchDb,
    mirrored: Reference,
    filter_string: str,
    order_by: list[str],
    page_size: int,
) -> None:
    exp = [mirrored.experiment_ids["A"], mirrored.experiment_ids["B"]]
    ours_all: list[str] = []
    token: str | None = None
    ref_token: str | None = None
    while True:
        ours, token = await _our_runs(
            search_db, exp, filter_string, order_by, "ALL", page_size, token
        )
        theirs, ref_token = _ref_runs(
            mirrored, exp, filter_string, order_by, "ALL", page_size, ref_token
        )
        assert ours == theirs
        assert token == ref_token  # same token format, same offsets
        ours_all += ours
        if token is None:
            break
    full, _ = await _our_runs(search_db, exp, filter_string, order_by, "ALL")
    assert ours_all == full
    assert len(set(ours_all)) == len(ours_all)


async def test_expected_orders_spelled_out(search_db: SearchDb, mirrored: Reference) -> None:
    """A few orders written by hand, so the semantics are readable without running MLflow."""
    exp = [mirrored.experiment_ids["A"]]

    async def names(filter_string: str, order_by: list[str]) -> list[str]:
        return _names(mirrored, (await _our_runs(search_db, exp, filter_string, order_by))[0])

    ids = mirrored.run_ids
    tie_1000 = sorted(["alpha", "Beta", "eta"], key=lambda n: ids[n])  # run_id tiebreak
    tie_3000 = sorted(["delta", "eps"], key=lambda n: ids[n])
    # Default: start_time DESC, then run_id ASC.
    assert await names("", []) == ["theta", *tie_3000, "gamma", *tie_1000, "zeta"]
    # Metric ASC: numbers, then NaN (gamma), then runs without the metric (eps).
    by_acc = ["zeta", "theta", "delta", *sorted(["alpha", "Beta"], key=lambda n: ids[n]), "eta"]
    assert await names("", ["metrics.acc"]) == [*by_acc, "gamma", "eps"]
    # DESC reverses the numbers only; NaN and missing stay last.
    by_acc_desc = ["eta", *sorted(["alpha", "Beta"], key=lambda n: ids[n]), "delta", "theta"]
    assert await names("", ["metrics.acc DESC"]) == [*by_acc_desc, "zeta", "gamma", "eps"]
    # NaN is stored as 0 but never equals 0; only != matches it.
    assert await names("metrics.acc = 0", []) == ["theta"]
    assert "gamma" in await names("metrics.acc != 0", [])
    assert "gamma" not in await names("metrics.acc < 1", [])
    # Case: LIKE and = are case-sensitive, ILIKE is not; params sort by code point.
    assert set(await names("params.lr LIKE 'a%'", [])) == {"Beta", "eta"}
    assert set(await names("params.lr ILIKE 'a%'", [])) == {"alpha", "Beta", "eta", "theta"}
    assert await names("params.lr = 'ABC'", []) == ["theta"]
    assert (await names("params.lr IS NOT NULL", ["params.lr"]))[:4] == [
        "gamma",  # '0.1'
        "zeta",  # '10'
        "theta",  # 'ABC'
        "alpha",  # 'Abc'
    ]
    # != does not match runs lacking the param (delta has no lr).
    assert "delta" not in await names("params.lr != 'abc'", [])
    # Datasets: any input matching; context NULL never matches != or NOT IN.
    assert set(await names("datasets.name != 'train_ds'", [])) == {"Beta", "gamma"}
    assert set(await names("datasets.context NOT IN ('eval')", [])) == {"alpha", "Beta", "zeta"}


async def test_database_collation_would_reorder_text(search_db: SearchDb) -> None:
    """The test database sorts linguistically, so the code-point order above is ours."""
    if not search_db.icu_collation:
        pytest.skip("server without ICU; test database uses the C collation")
    assert await search_db.conn.fetchval("SELECT 'alpha' < 'Beta'") is True


# --------------------------------------------------------------------------- experiments vs MLflow

EXPERIMENT_FILTERS = [
    None,
    "name = 'alpha'",
    "name != 'alpha'",
    "name LIKE '%a'",
    "name ILIKE '%A'",
    "attribute.name LIKE 'B%'",
    "tags.k = 'v'",
    "tags.k ILIKE 'V'",
    "tags.k LIKE 'v'",
    "tags.k != 'v'",
    "tags.k IS NULL",
    "tags.k IS NOT NULL",
    "tags.`mlflow.experiment.isGateway` IS NULL",
    "experiment_id IN ('1', '3')",
    "experiment_id NOT IN ('0')",
    "experiment_id = '2'",
    "experiment_id != '2'",
    "creation_time > 600",
    "creation_time >= 1000 AND last_update_time < 5000",
    "last_update_time = 1000",
]
EXPERIMENT_ORDERS: list[list[str]] = [
    [],
    ["name"],
    ["name DESC"],
    ["creation_time"],
    ["creation_time DESC"],
    ["last_update_time DESC"],
    ["experiment_id"],
    ["experiment_id DESC"],
    ["attribute.name DESC", "creation_time"],
]


@pytest.mark.parametrize("view_type", ["ACTIVE_ONLY", "DELETED_ONLY", "ALL"])
@pytest.mark.parametrize("filter_string", EXPERIMENT_FILTERS)
async def test_experiment_filters_match_mlflow(
    search_db: SearchDb, mirrored: Reference, filter_string: str | None, view_type: str
) -> None:
    ours, _ = await _our_experiments(search_db, filter_string, [], view_type)
    theirs, _ = _ref_experiments(mirrored, filter_string, [], view_type)
    assert _exp_names(mirrored, ours) == _exp_names(mirrored, theirs)


@pytest.mark.parametrize("order_by", EXPERIMENT_ORDERS)
async def test_experiment_orders_match_mlflow(
    search_db: SearchDb, mirrored: Reference, order_by: list[str]
) -> None:
    ours, _ = await _our_experiments(search_db, None, order_by, "ALL")
    theirs, _ = _ref_experiments(mirrored, None, order_by, "ALL")
    assert _exp_names(mirrored, ours) == _exp_names(mirrored, theirs)


@pytest.mark.parametrize("order_by", [[], ["name"], ["creation_time"], ["last_update_time DESC"]])
async def test_experiment_pages_match_mlflow(
    search_db: SearchDb, mirrored: Reference, order_by: list[str]
) -> None:
    token: str | None = None
    ref_token: str | None = None
    seen: list[int] = []
    while True:
        ours, token = await _our_experiments(search_db, None, order_by, "ALL", 2, token)
        theirs, ref_token = _ref_experiments(mirrored, None, order_by, "ALL", 2, ref_token)
        assert ours == theirs
        assert token == ref_token
        seen += ours
        if token is None:
            break
    assert sorted(seen) == sorted(mirrored.experiment_ids.values())


async def test_experiment_orders_spelled_out(search_db: SearchDb, mirrored: Reference) -> None:
    async def names(filter_string: str | None, order_by: list[str]) -> list[str]:
        return _exp_names(mirrored, (await _our_experiments(search_db, filter_string, order_by))[0])

    # Default: creation_time DESC, experiment_id ASC (Default=0, A, Beta, alpha all at 1000).
    assert await names(None, []) == ["B", "Default", "A", "Beta", "alpha", "Gamma"]
    # With an explicit order the tiebreaker is experiment_id DESC, as in MLflow.
    assert await names(None, ["creation_time DESC"]) == [
        "B",
        "alpha",
        "Beta",
        "A",
        "Default",
        "Gamma",
    ]
    # Names sort by code point: upper case before lower case.
    assert await names(None, ["name"]) == ["A", "B", "Beta", "Default", "Gamma", "alpha"]
    # The MLflow UI's own filter.
    assert "Gamma" not in await names("tags.`mlflow.experiment.isGateway` IS NULL", [])


# --------------------------------------------------------------------------- evtrack only

_EXTRA_EXPERIMENT = 9001


async def _insert_run(
    db: SearchDb, run_id: str, start_time: int | None, experiment_id: int = _EXTRA_EXPERIMENT
) -> None:
    await db.conn.execute(
        "INSERT INTO rm_runs.runs VALUES ($1, $2, $1, 'u', 'FINISHED', $3, NULL, 'a', "
        "'active', NULL)",
        run_id,
        experiment_id,
        start_time,
    )


@pytest.fixture(scope="module")
async def extra_runs(search_db: SearchDb) -> dict[str, Any]:
    """Runs MLflow cannot create: no start time; plus a long run of identical start times."""
    await _insert_run(search_db, "x-null-1", None)
    await _insert_run(search_db, "x-null-0", None)
    await _insert_run(search_db, "x-early", 10)
    await _insert_run(search_db, "x-late", 20)
    tied = [f"t-{i:02d}" for i in range(23)]
    for run_id in reversed(tied):
        await _insert_run(search_db, run_id, 777, experiment_id=9002)
    return {"tied": tied}


async def test_null_start_time_sorts_last_both_ways(
    search_db: SearchDb, extra_runs: dict[str, Any]
) -> None:
    exp = [_EXTRA_EXPERIMENT]
    nulls = ["x-null-0", "x-null-1"]  # by run_id
    assert (await _our_runs(search_db, exp, None, []))[0] == ["x-late", "x-early", *nulls]
    assert (await _our_runs(search_db, exp, None, ["start_time"]))[0] == [
        "x-early",
        "x-late",
        *nulls,
    ]
    assert (await _our_runs(search_db, exp, None, ["created DESC"]))[0] == [
        "x-late",
        "x-early",
        *nulls,
    ]
    # A null start time never satisfies a comparison.
    assert (await _our_runs(search_db, exp, "start_time != 10", []))[0] == ["x-late"]


async def test_pagination_is_stable_across_ties(
    search_db: SearchDb, extra_runs: dict[str, Any]
) -> None:
    token: str | None = None
    pages: list[list[str]] = []
    while True:
        page, token = await _our_runs(search_db, [9002], None, [], max_results=4, page_token=token)
        pages.append(page)
        if token is None:
            break
    assert [len(p) for p in pages] == [4, 4, 4, 4, 4, 3]
    assert [r for p in pages for r in p] == extra_runs["tied"]


async def test_numbers_beyond_bigint_and_double(
    search_db: SearchDb, extra_runs: dict[str, Any]
) -> None:
    exp = [_EXTRA_EXPERIMENT]
    huge = "99999999999999999999999"
    assert (await _our_runs(search_db, exp, f"start_time < {huge}", []))[0] == ["x-late", "x-early"]
    assert (await _our_runs(search_db, exp, "start_time > 1e400", []))[0] == []
    assert (await _our_runs(search_db, exp, f"metrics.m < {huge}", []))[0] == []
    ids, _ = await _our_experiments(search_db, f"creation_time < {huge}", [])
    assert ids


async def test_no_experiments_means_no_runs(search_db: SearchDb, mirrored: Reference) -> None:
    assert (await _our_runs(search_db, [], None, []))[0] == []


async def test_hostile_keys_and_values_are_just_data(
    search_db: SearchDb, mirrored: Reference
) -> None:
    hostile = "x'); DROP TABLE rm_runs.runs; --"
    exp = [mirrored.experiment_ids["A"]]
    filter_string = f'tags.`{hostile}` = "{hostile}"'
    assert (await _our_runs(search_db, exp, filter_string, [f"params.`{hostile}`"]))[0] == []
    assert (await _our_runs(search_db, exp, 'params.lr LIKE "%\\\\%"', []))[0] == []
    assert await search_db.conn.fetchval("SELECT count(*) FROM rm_runs.runs") > 0
