"""MLflow model registry routes (compat section 1.6) and evtrack's promotion approval routes."""

from __future__ import annotations

import posixpath
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from evtrack.api._access import (
    FILTERED,
    access,
    arg,
    auth_enabled,
    everything,
    require,
    visible,
)
from evtrack.api._common import (
    empty,
    execute,
    json_response,
    search_response,
    services,
    wait_fresh,
)
from evtrack.api._requests import Args, read_args
from evtrack.api._routing import Route
from evtrack.api.run_artifacts import store_path, stream_artifact
from evtrack.artifacts import normalize_artifact_path
from evtrack.domain import STAGES, registry
from evtrack.domain.registry_commands import (
    CreateModelVersion,
    CreateRegisteredModel,
    DecideTransition,
    Decision,
    DeleteModelAlias,
    DeleteModelVersion,
    DeleteModelVersionTag,
    DeleteRegisteredModel,
    DeleteRegisteredModelTag,
    RenameRegisteredModel,
    RequestTransition,
    SetModelAlias,
    SetModelVersionTag,
    SetRegisteredModelTag,
    TransitionModelVersionStage,
    UpdateModelVersion,
    UpdateRegisteredModel,
)
from evtrack.errors import invalid, not_found
from evtrack.events import KeyValue
from evtrack.permissions import REGISTERED_MODEL, Permission
from evtrack.queries import registry as queries
from evtrack.search import (
    compile_model_version_search,
    compile_registered_model_search,
)

REGISTRY = ("registry",)
_SEE_DOCS = " See the API docs for more information about request parameters."


def _tags(args: Args) -> list[KeyValue]:
    pairs = []
    for index, tag in enumerate(args.array("tags")):
        if not isinstance(tag, dict) or tag.get("key") in (None, ""):
            raise invalid(f"Missing value for required parameter 'tags[{index}].key'.{_SEE_DOCS}")
        value = tag.get("value")
        pairs.append(KeyValue(tag["key"], "" if value is None else str(value)))  # domain checks key
    return pairs


def _version(args: Args) -> int:
    raw = args.fields.get("version")
    if raw is None or raw == "":
        raise invalid(f"Missing value for required parameter 'version'.{_SEE_DOCS}")
    return registry.parse_version(raw)


async def _fresh(request: web.Request) -> Any:
    await wait_fresh(request, *REGISTRY)
    return services(request).pool


# --- registered models ---------------------------------------------------------------------


async def create_registered_model(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    tags = _tags(args)
    description = args.string("description")
    # Refuse before writing while the read models cannot catch up (invariant 12): a 503
    # after the write could not show what was written, and the client's retry would
    # find the name taken.
    await wait_fresh(request, *REGISTRY)
    await execute(request, CreateRegisteredModel(name=name, tags=tags, description=description))
    return json_response(
        {"registered_model": await queries.registered_model(await _fresh(request), name)}
    )


async def get_registered_model(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    registry.validate_model_name(name)
    return json_response(
        {"registered_model": await queries.registered_model(services(request).pool, name)}
    )


async def rename_registered_model(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    new_name = args.string("new_name")
    await execute(request, RenameRegisteredModel(name=name, new_name=new_name))
    assert new_name is not None
    return json_response(
        {"registered_model": await queries.registered_model(await _fresh(request), new_name)}
    )


async def update_registered_model(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    description = args.string("description")
    await execute(request, UpdateRegisteredModel(name=name, description=description))
    return json_response(
        {"registered_model": await queries.registered_model(await _fresh(request), name)}
    )


async def delete_registered_model(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    await execute(request, DeleteRegisteredModel(name=name))
    return empty()


async def search_registered_models(request: web.Request) -> web.Response:
    args = await read_args(request)
    max_results = args.integer("max_results")
    query = compile_registered_model_search(
        filter_string=args.string("filter"),
        order_by=args.string_list("order_by"),
        max_results=100 if max_results is None else max_results,
        page_token=args.string("page_token"),
        visible=await visible(request, REGISTERED_MODEL),
    )
    return await search_response(request, query, queries.registered_models, "registered_models")


async def get_latest_versions(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    stages = [registry.canonical_stage(s) for s in args.string_list("stages")]
    pool = services(request).pool
    key = await queries.model_key(pool, name)
    found = await queries.latest_versions(pool, key, stages or list(STAGES))
    return json_response({"model_versions": found} if found else {})


async def set_registered_model_tag(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    key = args.required_string("key")
    value = args.string("value") or ""
    await execute(request, SetRegisteredModelTag(name=name, key=key, value=value))
    return empty()


async def delete_registered_model_tag(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    key = args.required_string("key")
    await execute(request, DeleteRegisteredModelTag(name=name, key=key))
    return empty()


async def set_alias(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    alias = args.string("alias") or ""
    version = _version(args)
    await execute(request, SetModelAlias(name=name, alias=alias, version=version))
    return empty()


async def delete_alias(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    alias = args.string("alias") or ""
    await execute(request, DeleteModelAlias(name=name, alias=alias))
    return empty()


async def get_by_alias(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    alias = registry.validate_alias(args.string("alias"), for_write=False)
    found = await queries.version_by_alias(services(request).pool, name, alias)
    return json_response({"model_version": found})


# --- model versions ------------------------------------------------------------------------


async def create_model_version(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    command = CreateModelVersion(
        name=name,
        source=args.required_string("source"),
        run_id=args.string("run_id"),
        model_id=args.string("model_id"),
        tags=_tags(args),
        run_link=args.string("run_link"),
        description=args.string("description"),
    )
    if command.run_id and auth_enabled(request):
        # Registering a run's model exposes it through the registry: the caller must be
        # able to read that run (as MLflow's auth app asks).
        experiment = await access(request).experiment_of_run(command.run_id)
        if experiment is not None:
            await require(request, Permission.EXPERIMENT_READ, [experiment])
    # Refuse before writing while the read models cannot catch up (invariant 12): a 503
    # after the write could not show what was written, and the client's retry would
    # create a second one.
    await wait_fresh(request, *REGISTRY)
    version: int = await execute(request, command)
    found = await queries.model_version(await _fresh(request), name, version)
    return json_response({"model_version": found})


async def get_model_version(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    version = _version(args)
    return json_response(
        {"model_version": await queries.model_version(services(request).pool, name, version)}
    )


async def update_model_version(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    version = _version(args)
    description = args.string("description")
    await execute(request, UpdateModelVersion(name=name, version=version, description=description))
    return json_response(
        {"model_version": await queries.model_version(await _fresh(request), name, version)}
    )


async def delete_model_version(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    version = _version(args)
    await execute(request, DeleteModelVersion(name=name, version=version))
    return empty()


async def search_model_versions(request: web.Request) -> web.Response:
    args = await read_args(request)
    max_results = args.integer("max_results")
    query = compile_model_version_search(
        filter_string=args.string("filter"),
        order_by=args.string_list("order_by"),
        max_results=10000 if max_results is None else max_results,
        page_token=args.string("page_token"),
        visible=await visible(request, REGISTERED_MODEL),
    )
    return await search_response(
        request, query, queries.model_versions, "model_versions", row_key=lambda r: (r[0], r[1])
    )


async def get_download_uri(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    version = _version(args)
    return json_response(
        {"artifact_uri": await queries.download_uri(services(request).pool, name, version)}
    )


async def transition_stage(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    version = _version(args)
    stage = args.required_string("stage")
    command = TransitionModelVersionStage(
        name=name,
        version=version,
        stage=stage,
        archive_existing_versions=args.boolean("archive_existing_versions"),
    )
    await execute(request, command)
    return json_response(
        {"model_version": await queries.model_version(await _fresh(request), name, version)}
    )


async def set_model_version_tag(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    version = _version(args)
    key = args.required_string("key")
    value = args.string("value") or ""
    await execute(request, SetModelVersionTag(name=name, version=version, key=key, value=value))
    return empty()


async def delete_model_version_tag(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    version = _version(args)
    key = args.required_string("key")
    await execute(request, DeleteModelVersionTag(name=name, version=version, key=key))
    return empty()


async def get_model_version_artifact(request: web.Request) -> web.StreamResponse:
    """The UI reads a version's ``MLmodel`` through this root-level route.

    The path is checked before the version is looked up, as the reference does: an unsafe
    path is 400 "Invalid path" whether or not the version exists."""
    rel = normalize_artifact_path(request.query.get("path", ""))
    name = request.query.get("name", "")
    version = registry.parse_version(request.query.get("version", ""))
    location = await queries.download_uri(services(request).pool, name, version)
    root = store_path(location)
    if root is None:
        raise not_found(
            f"Artifacts of model {name} version {version} are not stored by this server"
        )
    return await stream_artifact(request, posixpath.join(root, rel))


# --- promotion approval (evtrack) ----------------------------------------------------------


async def request_transition(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    version = _version(args)
    stage = args.required_string("stage")
    command = RequestTransition(
        name=name,
        version=version,
        stage=stage,
        archive_existing_versions=args.boolean("archive_existing_versions"),
        comment=args.string("comment"),
    )
    # Refuse before writing while the read models cannot catch up (invariant 12): a 503
    # after the write could not show what was written, and the client's retry would
    # create a second one.
    await wait_fresh(request, *REGISTRY)
    request_id: str = await execute(request, command)
    found = await queries.transition_requests(await _fresh(request), name, version, None)
    return json_response(
        {"transition_request": next(r for r in found if r["request_id"] == request_id)}
    )


def _decision(decision: Decision) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        args = await read_args(request)
        name = args.required_string("name")
        request_id = args.required_string("request_id")
        command = DecideTransition(
            name=name,
            request_id=request_id,
            decision=decision,
            comment=args.string("comment"),
        )
        await execute(request, command)
        found = await queries.transition_requests(await _fresh(request), name, None, None)
        return json_response(
            {"transition_request": next(r for r in found if r["request_id"] == request_id)}
        )

    return handler


async def list_transition_requests(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    version = args.integer("version")
    status = args.string("status")
    found = await queries.transition_requests(
        services(request).pool, name, version, status.upper() if status else None
    )
    return json_response({"transition_requests": found})


def registry_routes() -> list[Route]:
    read, edit, manage = Permission.MODEL_READ, Permission.MODEL_EDIT, Permission.MODEL_MANAGE
    rm, mv = "/mlflow/registered-models", "/mlflow/model-versions"
    approvals = "/evtrack/registry/transition-requests"
    model = arg("name")
    return [
        Route(
            "POST",
            f"{rm}/create",
            create_registered_model,
            Permission.MODEL_CREATE,
            resource=everything,
        ),
        Route("GET", f"{rm}/get", get_registered_model, read, reads=REGISTRY, resource=model),
        Route("POST", f"{rm}/rename", rename_registered_model, manage, resource=model),
        Route("PATCH", f"{rm}/update", update_registered_model, edit, resource=model),
        Route("DELETE", f"{rm}/delete", delete_registered_model, manage, resource=model),
        Route(
            "GET", f"{rm}/search", search_registered_models, read, reads=REGISTRY, resource=FILTERED
        ),
        Route(
            "POST",
            f"{rm}/get-latest-versions",
            get_latest_versions,
            read,
            reads=REGISTRY,
            resource=model,
        ),
        Route(
            "GET",
            f"{rm}/get-latest-versions",
            get_latest_versions,
            read,
            reads=REGISTRY,
            resource=model,
        ),
        Route("POST", f"{rm}/set-tag", set_registered_model_tag, edit, resource=model),
        Route("DELETE", f"{rm}/delete-tag", delete_registered_model_tag, edit, resource=model),
        Route("POST", f"{rm}/alias", set_alias, edit, resource=model),
        Route("DELETE", f"{rm}/alias", delete_alias, edit, resource=model),
        Route("GET", f"{rm}/alias", get_by_alias, read, reads=REGISTRY, resource=model),
        Route("POST", f"{mv}/create", create_model_version, edit, resource=model),
        Route("GET", f"{mv}/get", get_model_version, read, reads=REGISTRY, resource=model),
        Route("PATCH", f"{mv}/update", update_model_version, edit, resource=model),
        Route("DELETE", f"{mv}/delete", delete_model_version, manage, resource=model),
        Route(
            "GET", f"{mv}/search", search_model_versions, read, reads=REGISTRY, resource=FILTERED
        ),
        Route(
            "GET", f"{mv}/get-download-uri", get_download_uri, read, reads=REGISTRY, resource=model
        ),
        Route("POST", f"{mv}/transition-stage", transition_stage, manage, resource=model),
        Route("POST", f"{mv}/set-tag", set_model_version_tag, edit, resource=model),
        Route("DELETE", f"{mv}/delete-tag", delete_model_version_tag, edit, resource=model),
        Route(
            "GET",
            "/model-versions/get-artifact",
            get_model_version_artifact,
            read,
            reads=REGISTRY,
            prefixes=("",),
            resource=model,
        ),
        Route("POST", f"{approvals}/create", request_transition, edit, resource=model),
        Route("POST", f"{approvals}/approve", _decision("approve"), manage, resource=model),
        Route("POST", f"{approvals}/reject", _decision("reject"), manage, resource=model),
        Route("POST", f"{approvals}/cancel", _decision("cancel"), edit, resource=model),
        Route(
            "GET",
            f"{approvals}/list",
            list_transition_requests,
            read,
            reads=REGISTRY,
            resource=model,
        ),
    ]
