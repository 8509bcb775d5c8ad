"""MLflow model registry routes (compat section 1.6) and evtrack's promotion approval routes."""

from __future__ import annotations

import posixpath
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from evtrack.api._common import (
    actor,
    empty,
    json_response,
    run_command,
    search_response,
    services,
    wait_fresh,
)
from evtrack.api._requests import Args, read_args
from evtrack.api._routing import Route
from evtrack.api.run_artifacts import store_path, stream_artifact
from evtrack.artifacts import normalize_artifact_path
from evtrack.domain import registry
from evtrack.domain._registry_state import STAGES
from evtrack.errors import invalid, not_found
from evtrack.eventlog import UnitOfWork
from evtrack.permissions import Permission
from evtrack.queries import registry as queries
from evtrack.search import (
    compile_model_version_search,
    compile_registered_model_search,
)

REGISTRY = ("registry",)
_SEE_DOCS = " See the API docs for more information about request parameters."


def _tags(args: Args) -> list[tuple[str, str]]:
    pairs = []
    for index, tag in enumerate(args.array("tags")):
        if not isinstance(tag, dict) or tag.get("key") in (None, ""):
            raise invalid(f"Missing value for required parameter 'tags[{index}].key'.{_SEE_DOCS}")
        value = tag.get("value")
        pairs.append((tag["key"], "" if value is None else str(value)))  # the domain checks the key
    return pairs


def _version(args: Args) -> int:
    raw = args.fields.get("version")
    if raw is None or raw == "":
        raise invalid(f"Missing value for required parameter 'version'.{_SEE_DOCS}")
    return registry.parse_version(raw)


async def _write(
    request: web.Request, args: Args, command: Callable[[UnitOfWork], Awaitable[Any]]
) -> None:
    await run_command(request, command, result_type=type(None), raw=args.raw, derive_key=False)


async def _fresh(request: web.Request) -> Any:
    await wait_fresh(request, *REGISTRY)
    return services(request).pool


# --- registered models ---------------------------------------------------------------------


async def create_registered_model(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    tags = _tags(args)
    description = args.string("description")

    async def command(uow: UnitOfWork) -> None:
        await registry.create_registered_model(uow, name, tags, description)

    await _write(request, args, command)
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
    who = actor(request)

    async def command(uow: UnitOfWork) -> None:
        await registry.rename_registered_model(uow, name, new_name, who)

    await _write(request, args, command)
    assert new_name is not None
    return json_response(
        {"registered_model": await queries.registered_model(await _fresh(request), new_name)}
    )


async def update_registered_model(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    description = args.string("description")
    who = actor(request)

    async def command(uow: UnitOfWork) -> None:
        await registry.update_registered_model(uow, name, description, who)

    await _write(request, args, command)
    return json_response(
        {"registered_model": await queries.registered_model(await _fresh(request), name)}
    )


async def delete_registered_model(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    who = actor(request)

    async def command(uow: UnitOfWork) -> None:
        await registry.delete_registered_model(uow, name, who)

    await _write(request, args, command)
    return empty()


async def search_registered_models(request: web.Request) -> web.Response:
    args = await read_args(request)
    max_results = args.integer("max_results")
    query = compile_registered_model_search(
        filter_string=args.string("filter"),
        order_by=args.string_list("order_by"),
        max_results=100 if max_results is None else max_results,
        page_token=args.string("page_token"),
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
    who = actor(request)

    async def command(uow: UnitOfWork) -> None:
        await registry.set_registered_model_tag(uow, name, key, value, who)

    await _write(request, args, command)
    return empty()


async def delete_registered_model_tag(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    key = args.required_string("key")
    who = actor(request)

    async def command(uow: UnitOfWork) -> None:
        await registry.delete_registered_model_tag(uow, name, key, who)

    await _write(request, args, command)
    return empty()


async def set_alias(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    alias = args.string("alias") or ""
    version = _version(args)
    who = actor(request)

    async def command(uow: UnitOfWork) -> None:
        await registry.set_alias(uow, name, alias, version, who)

    await _write(request, args, command)
    return empty()


async def delete_alias(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    alias = args.string("alias") or ""
    who = actor(request)

    async def command(uow: UnitOfWork) -> None:
        await registry.delete_alias(uow, name, alias, who)

    await _write(request, args, command)
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
    new = registry.NewVersion(
        source=args.required_string("source"),
        run_id=args.string("run_id"),
        model_id=args.string("model_id"),
        tags=_tags(args),
        run_link=args.string("run_link"),
        description=args.string("description"),
    )
    who = actor(request)

    async def command(uow: UnitOfWork) -> int:
        return await registry.create_model_version(uow, name, new, who)

    version = await run_command(request, command, result_type=int, raw=args.raw, derive_key=False)
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
    who = actor(request)

    async def command(uow: UnitOfWork) -> None:
        await registry.update_model_version(uow, name, version, description, who)

    await _write(request, args, command)
    return json_response(
        {"model_version": await queries.model_version(await _fresh(request), name, version)}
    )


async def delete_model_version(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    version = _version(args)
    who = actor(request)

    async def command(uow: UnitOfWork) -> None:
        await registry.delete_model_version(uow, name, version, who)

    await _write(request, args, command)
    return empty()


async def search_model_versions(request: web.Request) -> web.Response:
    args = await read_args(request)
    max_results = args.integer("max_results")
    query = compile_model_version_search(
        filter_string=args.string("filter"),
        order_by=args.string_list("order_by"),
        max_results=10000 if max_results is None else max_results,
        page_token=args.string("page_token"),
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
    archive = args.boolean("archive_existing_versions")
    who = actor(request)
    policy = services(request).policy

    async def command(uow: UnitOfWork) -> None:
        await registry.transition_stage(uow, name, version, stage, archive, who, policy)

    await _write(request, args, command)
    return json_response(
        {"model_version": await queries.model_version(await _fresh(request), name, version)}
    )


async def set_model_version_tag(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    version = _version(args)
    key = args.required_string("key")
    value = args.string("value") or ""
    who = actor(request)

    async def command(uow: UnitOfWork) -> None:
        await registry.set_model_version_tag(uow, name, version, key, value, who)

    await _write(request, args, command)
    return empty()


async def delete_model_version_tag(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    version = _version(args)
    key = args.required_string("key")
    who = actor(request)

    async def command(uow: UnitOfWork) -> None:
        await registry.delete_model_version_tag(uow, name, version, key, who)

    await _write(request, args, command)
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
    archive = args.boolean("archive_existing_versions")
    comment = args.string("comment")
    who = actor(request)

    async def command(uow: UnitOfWork) -> str:
        return await registry.request_transition(uow, name, version, stage, archive, comment, who)

    request_id = await run_command(
        request, command, result_type=str, raw=args.raw, derive_key=False
    )
    found = await queries.transition_requests(await _fresh(request), name, version, None)
    return json_response(
        {"transition_request": next(r for r in found if r["request_id"] == request_id)}
    )


def _decision(decision: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        args = await read_args(request)
        name = args.required_string("name")
        request_id = args.required_string("request_id")
        comment = args.string("comment")
        who = actor(request)
        policy = services(request).policy

        async def command(uow: UnitOfWork) -> None:
            await registry.decide_transition(uow, name, request_id, decision, comment, who, policy)

        await _write(request, args, command)
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
    return [
        Route("POST", f"{rm}/create", create_registered_model, Permission.NONE),
        Route("GET", f"{rm}/get", get_registered_model, read, reads=REGISTRY),
        Route("POST", f"{rm}/rename", rename_registered_model, manage),
        Route("PATCH", f"{rm}/update", update_registered_model, edit),
        Route("DELETE", f"{rm}/delete", delete_registered_model, manage),
        Route("GET", f"{rm}/search", search_registered_models, read, reads=REGISTRY),
        Route("POST", f"{rm}/get-latest-versions", get_latest_versions, read, reads=REGISTRY),
        Route("GET", f"{rm}/get-latest-versions", get_latest_versions, read, reads=REGISTRY),
        Route("POST", f"{rm}/set-tag", set_registered_model_tag, edit),
        Route("DELETE", f"{rm}/delete-tag", delete_registered_model_tag, edit),
        Route("POST", f"{rm}/alias", set_alias, edit),
        Route("DELETE", f"{rm}/alias", delete_alias, edit),
        Route("GET", f"{rm}/alias", get_by_alias, read, reads=REGISTRY),
        Route("POST", f"{mv}/create", create_model_version, edit),
        Route("GET", f"{mv}/get", get_model_version, read, reads=REGISTRY),
        Route("PATCH", f"{mv}/update", update_model_version, edit),
        Route("DELETE", f"{mv}/delete", delete_model_version, manage),
        Route("GET", f"{mv}/search", search_model_versions, read, reads=REGISTRY),
        Route("GET", f"{mv}/get-download-uri", get_download_uri, read, reads=REGISTRY),
        Route("POST", f"{mv}/transition-stage", transition_stage, manage),
        Route("POST", f"{mv}/set-tag", set_model_version_tag, edit),
        Route("DELETE", f"{mv}/delete-tag", delete_model_version_tag, edit),
        Route(
            "GET",
            "/model-versions/get-artifact",
            get_model_version_artifact,
            read,
            reads=REGISTRY,
            prefixes=("",),
        ),
        Route("POST", f"{approvals}/create", request_transition, edit),
        Route("POST", f"{approvals}/approve", _decision("approve"), manage),
        Route("POST", f"{approvals}/reject", _decision("reject"), manage),
        Route("POST", f"{approvals}/cancel", _decision("cancel"), edit),
        Route("GET", f"{approvals}/list", list_transition_requests, read, reads=REGISTRY),
    ]
