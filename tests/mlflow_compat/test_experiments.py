"""Experiments through the official client (compat doc §1.1, §3 search_experiments).

Modelled on MLflow's test_rest_tracking.py experiment tests (test_create_get_search_experiment,
test_create_experiment_validation, test_delete_restore_experiment, test_rename_experiment,
test_get_experiment_by_name, test_search_experiments, test_set_experiment_tag, ...).
Tests never assume an empty store: each uses its own unique names.
"""

from __future__ import annotations

import time

import mlflow
from mlflow import MlflowClient
from mlflow.entities import ViewType

from ._support import Server, assert_error, raises_mlflow, unique


def _now_ms() -> int:
    return int(time.time() * 1000)


def test_default_experiment_exists(client: MlflowClient) -> None:
    exp = client.get_experiment("0")
    assert exp.experiment_id == "0"
    assert exp.name == "Default"
    assert exp.lifecycle_stage == "active"
    assert exp.artifact_location == "mlflow-artifacts:/0"
    by_name = client.get_experiment_by_name("Default")
    assert by_name is not None and by_name.experiment_id == "0"


def test_create_and_get_experiment(client: MlflowClient) -> None:
    name = unique("exp")
    before = _now_ms()
    exp_id = client.create_experiment(name, tags={"team": "ml", "empty": ""})
    assert isinstance(exp_id, str) and exp_id.isdigit() and exp_id != "0"

    exp = client.get_experiment(exp_id)
    assert exp.experiment_id == exp_id
    assert exp.name == name
    assert exp.lifecycle_stage == "active"
    assert exp.artifact_location == f"mlflow-artifacts:/{exp_id}"
    assert exp.tags == {"team": "ml", "empty": ""}
    assert before - 5000 <= exp.creation_time <= _now_ms() + 5000
    assert exp.last_update_time >= exp.creation_time

    by_name = client.get_experiment_by_name(name)
    assert by_name is not None
    assert (by_name.experiment_id, by_name.name, by_name.tags) == (exp_id, name, exp.tags)


def test_create_experiment_with_artifact_location(client: MlflowClient) -> None:
    exp_id = client.create_experiment(unique("exp"), artifact_location="mlflow-artifacts:/custom/x")
    assert client.get_experiment(exp_id).artifact_location == "mlflow-artifacts:/custom/x"


def test_missing_experiment(client: MlflowClient) -> None:
    assert client.get_experiment_by_name(unique("missing")) is None
    assert mlflow.get_experiment_by_name(unique("missing")) is None
    with raises_mlflow("RESOURCE_DOES_NOT_EXIST"):
        client.get_experiment("987654321")


def test_set_experiment_creates_and_activates(tracking_server: Server) -> None:
    name = unique("fluent")
    exp = mlflow.set_experiment(name)
    assert exp.name == name and exp.lifecycle_stage == "active"
    assert mlflow.set_experiment(name).experiment_id == exp.experiment_id  # no second create
    mlflow.set_experiment_tag("owner", "alice")
    with mlflow.start_run() as run:
        pass
    assert run.info.experiment_id == exp.experiment_id
    assert MlflowClient().get_experiment(exp.experiment_id).tags == {"owner": "alice"}


def test_duplicate_experiment_name(client: MlflowClient) -> None:
    name = unique("dup")
    exp_id = client.create_experiment(name)
    with raises_mlflow("RESOURCE_ALREADY_EXISTS", match="already exists"):
        client.create_experiment(name)
    # The name stays taken while the experiment is deleted.
    client.delete_experiment(exp_id)
    with raises_mlflow("RESOURCE_ALREADY_EXISTS"):
        client.create_experiment(name)


def test_invalid_experiment_names(client: MlflowClient) -> None:
    for name in ("", "x" * 501):
        with raises_mlflow("INVALID_PARAMETER_VALUE"):
            client.create_experiment(name)


def test_invalid_experiment_names_raw(tracking_server: Server) -> None:
    s = tracking_server
    assert_error(
        s.post("experiments/create", {}),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'name'",
    )
    assert_error(s.post("experiments/create", {"name": 123}), 400, "INVALID_PARAMETER_VALUE")
    assert_error(s.post("experiments/create", {"name": ["a"]}), 400, "INVALID_PARAMETER_VALUE")
    assert_error(
        s.post("experiments/create", {"name": "x" * 501}),
        400,
        "INVALID_PARAMETER_VALUE",
        "'name' exceeds the maximum length of 500 characters",
    )
    # 500 characters is still fine.
    name = unique("n")
    r = s.post("experiments/create", {"name": name + "x" * (500 - len(name))})
    assert r.status == 200, r.body


def test_experiment_tags(client: MlflowClient) -> None:
    exp_id = client.create_experiment(unique("tags"))
    client.set_experiment_tag(exp_id, "k", "v1")
    client.set_experiment_tag(exp_id, "k", "v2")  # upsert
    client.set_experiment_tag(exp_id, "empty", "")
    client.set_experiment_tag(exp_id, "x" * 250, "y" * 20000)  # at the limits
    tags = client.get_experiment(exp_id).tags
    assert tags == {"k": "v2", "empty": "", "x" * 250: "y" * 20000}

    client.delete_experiment_tag(exp_id, "k")
    assert "k" not in client.get_experiment(exp_id).tags

    with raises_mlflow("INVALID_PARAMETER_VALUE"):
        client.set_experiment_tag(exp_id, "x" * 251, "v")
    with raises_mlflow("INVALID_PARAMETER_VALUE"):
        client.set_experiment_tag(exp_id, "k", "y" * 20001)
    with raises_mlflow("RESOURCE_DOES_NOT_EXIST"):
        client.set_experiment_tag("987654321", "k", "v")


def test_rename_experiment(client: MlflowClient) -> None:
    old, new = unique("old"), unique("new")
    exp_id = client.create_experiment(old)
    client.rename_experiment(exp_id, new)
    assert client.get_experiment(exp_id).name == new
    assert client.get_experiment_by_name(old) is None
    assert client.get_experiment_by_name(new).experiment_id == exp_id

    other = client.create_experiment(unique("other"))
    # The reference leaks sqlite's IntegrityError as 400 BAD_REQUEST here; the code clients
    # expect for a taken name is RESOURCE_ALREADY_EXISTS (also 400). Accept either.
    with raises_mlflow(("BAD_REQUEST", "RESOURCE_ALREADY_EXISTS")):
        client.rename_experiment(other, new)
    assert client.get_experiment(other).name != new
    with raises_mlflow("INVALID_PARAMETER_VALUE"):
        client.rename_experiment(other, "")
    with raises_mlflow("RESOURCE_DOES_NOT_EXIST"):
        client.rename_experiment("987654321", unique("x"))


def test_rename_deleted_experiment(tracking_server: Server) -> None:
    s = tracking_server
    exp_id = s.ok_post("experiments/create", {"name": unique("old")})["experiment_id"]
    s.ok_post("experiments/delete", {"experiment_id": exp_id})
    new_name = unique("again")
    r = s.post("experiments/update", {"experiment_id": exp_id, "new_name": new_name})
    if s.kind == "reference":
        # Reference quirk: 500 INVALID_STATE "Cannot rename a non-active experiment." (the
        # client even retries it). evtrack must not answer a bad request with a 5xx (DESIGN
        # invariant 8): a 400 with an MLflow error code is demanded instead.
        assert_error(r, 500, "INVALID_STATE", "Cannot rename a non-active experiment")
    else:
        assert r.status == 400, r.body
        assert r.error_code in ("INVALID_PARAMETER_VALUE", "INVALID_STATE", "BAD_REQUEST"), r.body
    assert s.ok_get("experiments/get", {"experiment_id": exp_id})["experiment"]["name"] != new_name


def test_delete_restore_experiment_cascades_to_runs(client: MlflowClient) -> None:
    name = unique("lifecycle")
    exp_id = client.create_experiment(name)
    run_ids = [client.create_run(exp_id).info.run_id for _ in range(2)]

    client.delete_experiment(exp_id)
    exp = client.get_experiment(exp_id)
    assert exp.lifecycle_stage == "deleted"
    assert client.get_experiment_by_name(name).lifecycle_stage == "deleted"  # still found
    for rid in run_ids:
        assert client.get_run(rid).info.lifecycle_stage == "deleted"
    assert client.search_runs([exp_id], run_view_type=ViewType.ACTIVE_ONLY) == []
    deleted = client.search_runs([exp_id], run_view_type=ViewType.DELETED_ONLY)
    assert sorted(r.info.run_id for r in deleted) == sorted(run_ids)
    with raises_mlflow("INVALID_PARAMETER_VALUE"):  # no new runs in a deleted experiment
        client.create_run(exp_id)

    client.restore_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "active"
    for rid in run_ids:
        assert client.get_run(rid).info.lifecycle_stage == "active"
    active = client.search_runs([exp_id], run_view_type=ViewType.ACTIVE_ONLY)
    assert sorted(r.info.run_id for r in active) == sorted(run_ids)

    with raises_mlflow("RESOURCE_DOES_NOT_EXIST"):  # restoring an active experiment
        client.restore_experiment(exp_id)
    client.delete_experiment(exp_id)
    with raises_mlflow("RESOURCE_DOES_NOT_EXIST"):  # deleting a deleted experiment
        client.delete_experiment(exp_id)
    with raises_mlflow("RESOURCE_DOES_NOT_EXIST"):
        client.delete_experiment("987654321")
    with raises_mlflow("RESOURCE_DOES_NOT_EXIST"):
        client.restore_experiment("987654321")


def test_restore_experiment_restores_all_its_runs(client: MlflowClient) -> None:
    exp_id = client.create_experiment(unique("lifecycle"))
    kept = client.create_run(exp_id).info.run_id
    own = client.create_run(exp_id).info.run_id
    client.delete_run(own)
    client.delete_experiment(exp_id)
    client.restore_experiment(exp_id)
    assert client.get_run(kept).info.lifecycle_stage == "active"
    # The reference restores every run of the experiment, including ones deleted before.
    assert client.get_run(own).info.lifecycle_stage == "active"


def _make_experiments(client: MlflowClient, prefix: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        ids.append(
            client.create_experiment(
                f"{prefix}-{i}", tags={"idx": str(i), "parity": "even" if i % 2 == 0 else "odd"}
            )
        )
        time.sleep(0.005)  # distinct creation_time, so the default order is well defined
    return ids


def _names(exps) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.name for e in exps]


def test_search_experiments_filters_and_order(client: MlflowClient) -> None:
    prefix = unique("srch")
    ids = _make_experiments(client, prefix, 5)
    like = f"name LIKE '{prefix}-%'"

    # Default order: creation_time DESC.
    assert _names(client.search_experiments(filter_string=like)) == [
        f"{prefix}-{i}" for i in (4, 3, 2, 1, 0)
    ]
    assert _names(client.search_experiments(filter_string=like, order_by=["name ASC"])) == [
        f"{prefix}-{i}" for i in range(5)
    ]
    assert _names(client.search_experiments(filter_string=like, order_by=["name DESC"])) == [
        f"{prefix}-{i}" for i in (4, 3, 2, 1, 0)
    ]
    assert _names(
        client.search_experiments(filter_string=like, order_by=["experiment_id DESC"])
    ) == [f"{prefix}-{i}" for i in (4, 3, 2, 1, 0)]
    assert _names(
        client.search_experiments(filter_string=like, order_by=["creation_time ASC"])
    ) == [f"{prefix}-{i}" for i in range(5)]

    def names(f: str) -> list[str]:
        return sorted(_names(client.search_experiments(filter_string=f)))

    assert names(f"name = '{prefix}-3'") == [f"{prefix}-3"]
    assert names(f"{like} AND name != '{prefix}-3'") == [f"{prefix}-{i}" for i in (0, 1, 2, 4)]
    assert names(f"name ILIKE '{prefix.upper()}-%'") == [f"{prefix}-{i}" for i in range(5)]
    assert names(f"name LIKE '{prefix.upper()}-%'") == []  # LIKE is case-sensitive
    assert names(f"{like} AND tags.parity = 'even'") == [f"{prefix}-{i}" for i in (0, 2, 4)]
    assert names(f"{like} AND tags.parity != 'even'") == [f"{prefix}-{i}" for i in (1, 3)]
    assert names(f"{like} AND tags.idx LIKE '1%'") == [f"{prefix}-1"]
    assert names(f"{like} AND tags.`parity` ILIKE 'ODD'") == [f"{prefix}-{i}" for i in (1, 3)]
    assert names(f"{like} AND tags.nope IS NULL") == [f"{prefix}-{i}" for i in range(5)]
    assert names(f"{like} AND tags.idx IS NOT NULL") == [f"{prefix}-{i}" for i in range(5)]
    in_list = ", ".join(f"'{i}'" for i in ids[:2])
    assert names(f"experiment_id IN ({in_list})") == [f"{prefix}-0", f"{prefix}-1"]
    assert names(f"{like} AND creation_time > 0") == [f"{prefix}-{i}" for i in range(5)]


def test_search_experiments_pagination(client: MlflowClient) -> None:
    prefix = unique("page")
    _make_experiments(client, prefix, 5)
    like = f"name LIKE '{prefix}-%'"
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = client.search_experiments(
            filter_string=like, order_by=["name ASC"], max_results=2, page_token=token
        )
        assert len(page) <= 2
        seen += _names(page)
        pages += 1
        token = page.token
        if not token:
            break
        assert pages < 10
    assert seen == [f"{prefix}-{i}" for i in range(5)]
    assert pages == 3


def test_search_experiments_view_types(client: MlflowClient) -> None:
    prefix = unique("view")
    ids = _make_experiments(client, prefix, 4)
    client.delete_experiment(ids[1])
    client.delete_experiment(ids[3])
    like = f"name LIKE '{prefix}-%'"

    def names(view: int) -> list[str]:
        return sorted(_names(client.search_experiments(view_type=view, filter_string=like)))

    assert names(ViewType.ACTIVE_ONLY) == [f"{prefix}-0", f"{prefix}-2"]
    assert names(ViewType.DELETED_ONLY) == [f"{prefix}-1", f"{prefix}-3"]
    assert names(ViewType.ALL) == [f"{prefix}-{i}" for i in range(4)]
    assert sorted(
        _names(mlflow.search_experiments(view_type=ViewType.DELETED_ONLY, filter_string=like))
    ) == names(ViewType.DELETED_ONLY)


def test_search_experiments_invalid(client: MlflowClient) -> None:
    with raises_mlflow("INVALID_PARAMETER_VALUE"):
        client.search_experiments(filter_string="name = 'a' OR name = 'b'")
    with raises_mlflow("INVALID_PARAMETER_VALUE"):
        client.search_experiments(filter_string="metrics.a > 1")
    with raises_mlflow("INVALID_PARAMETER_VALUE"):
        client.search_experiments(order_by=["nope ASC"])
    with raises_mlflow("INVALID_PARAMETER_VALUE"):
        client.search_experiments(max_results=50001)
    with raises_mlflow("INVALID_PARAMETER_VALUE"):
        client.search_experiments(page_token="not-a-token")


def test_search_experiments_get_route(tracking_server: Server) -> None:
    """The UI lists experiments with GET and a query string."""
    name = unique("ui")
    exp_id = tracking_server.ok_post("experiments/create", {"name": name})["experiment_id"]
    body = tracking_server.ok_get(
        "experiments/search",
        {"filter": f"name = '{name}'", "order_by": "last_update_time DESC", "max_results": 25},
    )
    assert [e["experiment_id"] for e in body["experiments"]] == [exp_id]
    assert "next_page_token" not in body or not body["next_page_token"]
