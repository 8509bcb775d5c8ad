"""MLflow experiment routes (compat section 1.1)."""

from __future__ import annotations

from aiohttp import web

from evtrack.api._access import (
    FILTERED,
    arg,
    everything,
    experiment_by_name,
    readable_experiment_ids,
    visible,
)
from evtrack.api._common import empty, execute, json_response, search_response, services
from evtrack.api._requests import Args, read_args
from evtrack.api._routing import Handler, Route
from evtrack.domain import parse_experiment_id
from evtrack.domain.commands import (
    CreateExperiment,
    DeleteExperiment,
    DeleteExperimentTag,
    RenameExperiment,
    RestoreExperiment,
    SetExperimentTag,
)
from evtrack.errors import invalid, not_found
from evtrack.events import KeyValue
from evtrack.permissions import EXPERIMENT, Permission
from evtrack.queries import experiments as queries
from evtrack.queries.datasets import dataset_summaries
from evtrack.search import compile_experiment_search


def _tags(args: Args) -> list[tuple[str, str]]:
    pairs = []
    for index, tag in enumerate(args.array("tags")):
        if not isinstance(tag, dict) or tag.get("key") in (None, ""):
            raise invalid(
                f"Missing value for required parameter 'tags[{index}].key'. "
                "See the API docs for more information about request parameters."
            )
        value = tag.get("value")
        pairs.append((tag["key"], "" if value is None else str(value)))  # the domain checks the key
    return pairs


async def create(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    location = args.string("artifact_location", allow_empty=False)
    tags = _tags(args)
    command = CreateExperiment(
        name=name, artifact_location=location, tags=[KeyValue(k, v) for k, v in tags]
    )
    experiment_id = await execute(request, command)
    return json_response({"experiment_id": str(experiment_id)})


async def get(request: web.Request) -> web.Response:
    args = await read_args(request)
    experiment_id = parse_experiment_id(args.required_string("experiment_id"))
    found = await queries.get_experiments(services(request).pool, [experiment_id])
    if not found:
        raise not_found(f"No Experiment with id={experiment_id} exists")
    return json_response({"experiment": found[0]})


async def get_by_name(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("experiment_name")
    pool = services(request).pool
    experiment_id = await queries.get_experiment_id_by_name(pool, name)
    if experiment_id is None:
        raise not_found(f"Could not find experiment with name '{name}'")
    found = await queries.get_experiments(pool, [experiment_id])
    return json_response({"experiment": found[0]})


async def search(request: web.Request) -> web.Response:
    args = await read_args(request)
    max_results = args.integer("max_results")
    query = compile_experiment_search(
        view_type=args.string("view_type") or "ACTIVE_ONLY",
        filter_string=args.string("filter"),
        order_by=args.string_list("order_by"),
        max_results=1000 if max_results is None else max_results,
        page_token=args.string("page_token"),
        visible=await visible(request, EXPERIMENT),
    )
    return await search_response(request, query, queries.get_experiments, "experiments")


async def set_tag(request: web.Request) -> web.Response:
    args = await read_args(request)
    experiment_id = parse_experiment_id(args.required_string("experiment_id"))
    key = args.required_string("key")
    value = args.string("value")
    if value is None:
        raise invalid(
            "Missing value for required parameter 'value'. "
            "See the API docs for more information about request parameters."
        )
    await execute(request, SetExperimentTag(experiment_id=experiment_id, key=key, value=value))
    return empty()


async def delete_tag(request: web.Request) -> web.Response:
    args = await read_args(request)
    experiment_id = parse_experiment_id(args.required_string("experiment_id"))
    key = args.required_string("key")
    await execute(request, DeleteExperimentTag(experiment_id=experiment_id, key=key))
    return empty()


async def update(request: web.Request) -> web.Response:
    args = await read_args(request)
    experiment_id = parse_experiment_id(args.required_string("experiment_id"))
    new_name = args.string("new_name")
    if new_name is None:
        raise invalid(
            "Missing value for required parameter 'new_name'. "
            "See the API docs for more information about request parameters."
        )
    await execute(request, RenameExperiment(experiment_id=experiment_id, new_name=new_name))
    return empty()


MAX_DATASET_SEARCH_EXPERIMENTS = 20


async def search_datasets(request: web.Request) -> web.Response:
    """The datasets the runs of some experiments used (the UI's runs-table Datasets filter)."""
    args = await read_args(request)
    raw_ids = args.string_list("experiment_ids")
    if not raw_ids:
        raise invalid("SearchDatasets request must specify at least one experiment_id.")
    if len(raw_ids) > MAX_DATASET_SEARCH_EXPERIMENTS:
        raise invalid(
            "SearchDatasets request cannot specify more than "
            f"{MAX_DATASET_SEARCH_EXPERIMENTS} experiment_ids. "
            f"Received {len(raw_ids)} experiment_ids."
        )
    readable = await readable_experiment_ids(
        request, [str(parse_experiment_id(i)) for i in raw_ids]
    )
    ids = [int(i) for i in readable]
    found = await dataset_summaries(services(request).pool, ids) if ids else []
    return json_response({"dataset_summaries": found} if found else {})


def _lifecycle(delete: bool) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        args = await read_args(request)
        experiment_id = parse_experiment_id(args.required_string("experiment_id"))
        command = (DeleteExperiment if delete else RestoreExperiment)(experiment_id=experiment_id)
        await execute(request, command)
        return empty()

    return handler


EXPERIMENTS = ("experiments",)
RUNS = ("runs",)


def experiment_routes() -> list[Route]:
    read, edit, manage = (
        Permission.EXPERIMENT_READ,
        Permission.EXPERIMENT_EDIT,
        Permission.EXPERIMENT_MANAGE,
    )
    base = "/mlflow/experiments"
    experiment = arg("experiment_id")
    return [
        Route("POST", f"{base}/create", create, Permission.EXPERIMENT_CREATE, resource=everything),
        Route("GET", f"{base}/get", get, read, reads=EXPERIMENTS, resource=experiment),
        Route(
            "GET",
            f"{base}/get-by-name",
            get_by_name,
            read,
            reads=EXPERIMENTS,
            resource=experiment_by_name,
        ),
        Route("POST", f"{base}/search", search, read, reads=EXPERIMENTS, resource=FILTERED),
        Route("GET", f"{base}/search", search, read, reads=EXPERIMENTS, resource=FILTERED),
        # Only the UI calls it, and MLflow serves it under /ajax-api/2.0 alone.
        Route(
            "POST",
            f"{base}/search-datasets",
            search_datasets,
            read,
            reads=RUNS,
            prefixes=("/ajax-api/2.0",),
            resource=FILTERED,
        ),
        Route("POST", f"{base}/set-experiment-tag", set_tag, edit, resource=experiment),
        Route("POST", f"{base}/delete-experiment-tag", delete_tag, edit, resource=experiment),
        Route("POST", f"{base}/update", update, edit, resource=experiment),
        Route("POST", f"{base}/delete", _lifecycle(True), manage, resource=experiment),
        Route("POST", f"{base}/restore", _lifecycle(False), manage, resource=experiment),
    ]
