"""``/graphql``: the GraphQL endpoint MLflow's web UI needs for its experiment and run pages.

Compat doc section 1.9. The schema mirrors the one ``mlflow server`` 3.17.2 serves (type, field
and argument names; every root field takes one ``input: MlflowXxxInput``) for the operations the
UI sends, plus the registry and artifact lookups of that schema:

* ``mlflowGetExperiment``, ``mlflowGetRun``, ``mlflowSearchRuns`` (a query and a mutation),
  ``mlflowGetMetricHistoryBulkInterval``, ``mlflowListArtifacts``, ``mlflowSearchModelVersions``;
* a run also resolves its ``experiment`` and its ``modelVersions`` (batched per request);
* ``test`` / ``testMutation`` echo their input.

Encoding, as the reference: camelCase fields; int64 values as strings (the ``LongString``
scalar); a field the data does not carry reads as its protobuf default (``""``, ``"0"``,
``false``, ``[]``, an empty object), except ``apiError`` and enums, which stay null; NaN metric
values are null and infinities the largest finite double.

Errors, as the reference: HTTP 200 with ``{"data": ..., "errors": [message, ...]}``; a failing
resolver nulls its field and adds the error's message (``apiError`` is never filled). Where the
reference answers with an HTML 500 (a syntax error, a GET, a body that is not a GraphQL
request), evtrack answers properly: a syntax error is a GraphQL error like any other, GET works
(queries only), and a malformed request gets a 400 in the same ``errors`` shape.

Deliberate differences from the reference, which has bugs here:

* ``mlflowGetMetricHistoryBulkInterval`` honours ``maxResults``, ``startStep`` and ``endStep``
  (the reference reads them from the URL's query string and so ignores them), and reports a NaN
  value as null without also raising "Float cannot represent non numeric value";
* ``runViewType`` works (the reference fails on any value); unset deployment-job enums are null
  instead of errors; a missing ``input`` is an empty one, not a Python ``TypeError``; an
  experiment lookup without an id is an invalid-id error (the reference answers experiment 0);
* ``mlflowSearchDatasets`` is not offered: evtrack has no dataset-summary read yet.
"""

from __future__ import annotations

import asyncio
import math
import posixpath
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import asyncpg
import msgspec
import structlog
from aiohttp import web
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLFloat,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    build_schema,
    execute,
    get_operation_ast,
    parse,
    validate,
)

from evtrack.api._access import (
    FILTERED,
    access,
    auth_enabled,
    readable_experiment_ids,
    require,
    visible,
)
from evtrack.api._bodies import read_body
from evtrack.api._common import json_response, services, wait_fresh
from evtrack.api._routing import Route
from evtrack.api.artifacts import ARTIFACT_STORE, list_directory
from evtrack.api.run_artifacts import store_path
from evtrack.artifacts import normalize_artifact_path
from evtrack.domain import DOUBLE_MAX, parse_experiment_id
from evtrack.errors import EvtrackError, invalid, not_found
from evtrack.permissions import REGISTERED_MODEL, Permission
from evtrack.queries import experiments as experiment_queries
from evtrack.queries import metric_samples
from evtrack.queries import registry as registry_queries
from evtrack.queries import runs as run_queries
from evtrack.search import (
    SEARCH_MAX_RESULTS_THRESHOLD,
    compile_model_version_search,
    compile_run_search,
    next_page_token,
)
from evtrack.wire import mlflow as wire

log = structlog.get_logger("evtrack.api.graphql")

READ_MODELS = ("runs", "experiments", "metrics", "registry")

# Request limits. The depth, selection, root-field and alias limits are the reference's
# (mlflow/server/graphql/graphql_no_batching.py and its two environment variables' defaults);
# the reference has no bound on the document's size, evtrack refuses more than 64 KiB (the UI's
# largest operation is under 2 KiB).
MAX_QUERY_CHARS = 64 * 1024
MAX_DEPTH = 10
MAX_SELECTIONS = 1000
MAX_ROOT_FIELDS = 10
MAX_ALIASES = 10

# Bounds for mlflowGetMetricHistoryBulkInterval, as its REST twin (api/metrics.py).
MAX_RESULTS_PER_RUN = 2500
DEFAULT_SEARCH_RUNS_MAX_RESULTS = 1000  # the proto default of SearchRuns.max_results
_RUN_ID = re.compile(r"^[\w\-]+$")

SDL = '''
"""Tags an operation with the UI component that sends it; accepted and ignored."""
directive @component(name: String!) on QUERY | MUTATION

"""A 64-bit integer, sent as a string so JavaScript does not round it."""
scalar LongString

type Query {
  mlflowGetExperiment(input: MlflowGetExperimentInput): MlflowGetExperimentResponse
  mlflowGetMetricHistoryBulkInterval(
    input: MlflowGetMetricHistoryBulkIntervalInput
  ): MlflowGetMetricHistoryBulkIntervalResponse
  mlflowGetRun(input: MlflowGetRunInput): MlflowGetRunResponse
  mlflowListArtifacts(input: MlflowListArtifactsInput): MlflowListArtifactsResponse
  mlflowSearchModelVersions(
    input: MlflowSearchModelVersionsInput
  ): MlflowSearchModelVersionsResponse
  mlflowSearchRuns(input: MlflowSearchRunsInput): MlflowSearchRunsResponse
  """Echoes the input string."""
  test(inputString: String): Test
}

type Mutation {
  mlflowSearchRuns(input: MlflowSearchRunsInput): MlflowSearchRunsResponse
  """Echoes the input string."""
  testMutation(inputString: String): TestMutation
}

type Test {
  output: String
}

type TestMutation {
  output: String
}

"""Never filled: failures are reported in the response's top-level errors."""
type ApiError {
  code: String
  message: String
  helpUrl: String
  traceId: String
  errorDetails: [ErrorDetail]
}

type ErrorDetail {
  field: String
  message: String
}

enum MlflowViewType {
  ACTIVE_ONLY
  DELETED_ONLY
  ALL
}

enum MlflowRunStatus {
  RUNNING
  SCHEDULED
  FINISHED
  FAILED
  KILLED
}

enum MlflowModelVersionStatus {
  PENDING_REGISTRATION
  FAILED_REGISTRATION
  READY
}

enum MlflowDeploymentJobConnectionState {
  DEPLOYMENT_JOB_CONNECTION_STATE_UNSPECIFIED
  NOT_SET_UP
  CONNECTED
  NOT_FOUND
  REQUIRED_PARAMETERS_CHANGED
}

enum MlflowModelVersionDeploymentJobStateDeploymentJobRunState {
  DEPLOYMENT_JOB_RUN_STATE_UNSPECIFIED
  NO_VALID_DEPLOYMENT_JOB_FOUND
  RUNNING
  SUCCEEDED
  FAILED
  PENDING
  APPROVAL
}

# --- experiments -------------------------------------------------------------------------

input MlflowGetExperimentInput {
  experimentId: String
}

type MlflowGetExperimentResponse {
  experiment: MlflowExperiment
  apiError: ApiError
}

type MlflowExperiment {
  experimentId: String
  name: String
  artifactLocation: String
  lifecycleStage: String
  lastUpdateTime: LongString
  creationTime: LongString
  tags: [MlflowExperimentTag!]
  effectiveTraceArchivalRetention: String
  workspace: String
}

type MlflowExperimentTag {
  key: String
  value: String
}

# --- runs --------------------------------------------------------------------------------

input MlflowGetRunInput {
  runId: String
  runUuid: String
}

type MlflowGetRunResponse {
  run: MlflowRunExtension
  apiError: ApiError
}

input MlflowSearchRunsInput {
  experimentIds: [String]
  filter: String
  runViewType: MlflowViewType = null
  maxResults: Int
  orderBy: [String]
  pageToken: String
}

type MlflowSearchRunsResponse {
  runs: [MlflowRunExtension!]
  nextPageToken: String
  apiError: ApiError
}

type MlflowRunExtension {
  info: MlflowRunInfo
  data: MlflowRunData
  inputs: MlflowRunInputs
  outputs: MlflowRunOutputs
  experiment: MlflowExperiment
  modelVersions: [MlflowModelVersion!]
}

type MlflowRunInfo {
  runId: String
  runUuid: String
  runName: String
  experimentId: String
  userId: String
  status: MlflowRunStatus
  startTime: LongString
  endTime: LongString
  artifactUri: String
  lifecycleStage: String
}

type MlflowRunData {
  metrics: [MlflowMetricExtension!]
  params: [MlflowParam!]
  tags: [MlflowRunTag!]
}

type MlflowMetricExtension {
  key: String
  value: Float
  timestamp: LongString
  step: LongString
  datasetName: String
  datasetDigest: String
  modelId: String
  runId: String
}

type MlflowParam {
  key: String
  value: String
}

type MlflowRunTag {
  key: String
  value: String
}

type MlflowRunInputs {
  datasetInputs: [MlflowDatasetInput!]
  modelInputs: [MlflowModelInput!]
}

type MlflowDatasetInput {
  tags: [MlflowInputTag!]
  dataset: MlflowDataset
}

type MlflowInputTag {
  key: String
  value: String
}

type MlflowDataset {
  name: String
  digest: String
  sourceType: String
  source: String
  schema: String
  profile: String
}

type MlflowModelInput {
  modelId: String
}

type MlflowRunOutputs {
  modelOutputs: [MlflowModelOutput!]
}

type MlflowModelOutput {
  modelId: String
  step: LongString
}

# --- metrics -----------------------------------------------------------------------------

input MlflowGetMetricHistoryBulkIntervalInput {
  runIds: [String]
  metricKey: String
  startStep: Int
  endStep: Int
  maxResults: Int
}

type MlflowGetMetricHistoryBulkIntervalResponse {
  metrics: [MlflowMetricWithRunId!]
  apiError: ApiError
}

type MlflowMetricWithRunId {
  key: String
  value: Float
  timestamp: LongString
  step: LongString
  runId: String
}

# --- artifacts ---------------------------------------------------------------------------

input MlflowListArtifactsInput {
  runId: String
  runUuid: String
  path: String
  pageToken: String
}

type MlflowListArtifactsResponse {
  rootUri: String
  files: [MlflowFileInfo!]
  nextPageToken: String
  apiError: ApiError
}

type MlflowFileInfo {
  path: String
  isDir: Boolean
  fileSize: LongString
}

# --- model registry ----------------------------------------------------------------------

input MlflowSearchModelVersionsInput {
  filter: String
  maxResults: LongString
  orderBy: [String]
  pageToken: String
}

type MlflowSearchModelVersionsResponse {
  modelVersions: [MlflowModelVersion!]
  nextPageToken: String
  apiError: ApiError
}

type MlflowModelVersion {
  name: String
  version: String
  creationTimestamp: LongString
  lastUpdatedTimestamp: LongString
  userId: String
  currentStage: String
  description: String
  source: String
  runId: String
  status: MlflowModelVersionStatus
  statusMessage: String
  tags: [MlflowModelVersionTag!]
  runLink: String
  aliases: [String]
  modelId: String
  modelParams: [MlflowModelParam!]
  modelMetrics: [MlflowModelMetric!]
  deploymentJobState: MlflowModelVersionDeploymentJobState
}

type MlflowModelVersionTag {
  key: String
  value: String
}

type MlflowModelParam {
  name: String
  value: String
}

type MlflowModelMetric {
  key: String
  value: Float
  timestamp: LongString
  step: LongString
  datasetName: String
  datasetDigest: String
  modelId: String
  runId: String
}

type MlflowModelVersionDeploymentJobState {
  jobId: String
  runId: String
  jobState: MlflowDeploymentJobConnectionState
  runState: MlflowModelVersionDeploymentJobStateDeploymentJobRunState
  currentTaskName: String
}
'''


# --------------------------------------------------------------------------------------------
# LongString and protobuf defaults
# --------------------------------------------------------------------------------------------


def _serialize_long(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GraphQLError(f"LongString cannot represent value: {value!r}")
    return str(value)


def _parse_long(value: Any) -> int:
    """A variable's value: an integer, or a string or integral float holding one."""
    if isinstance(value, bool):
        raise TypeError(f"LongString cannot represent value: {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"LongString cannot represent a non-integer value: {value!r}")
    return int(value)


def _parse_long_literal(node: ValueNode, _variables: dict[str, Any] | None = None) -> int:
    if isinstance(node, IntValueNode | StringValueNode):
        return int(node.value)
    raise GraphQLError("LongString must be an integer or a string holding one")


def _json_float(value: Any) -> float | None:
    """A double as GraphQL's Float can carry it: NaN is null, infinities the largest double.

    evtrack's read models already clamp infinities when they are logged, as MLflow does; the
    wire structs spell non-finite doubles as proto JSON strings.
    """
    if isinstance(value, str):
        value = float(value)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    number = float(value)
    if math.isnan(number):
        return None
    if math.isinf(number):
        return DOUBLE_MAX if number > 0 else -DOUBLE_MAX
    return number


def _proto_default(type_: GraphQLOutputType) -> Any:
    """What the reference answers for a field its protobuf message does not set."""
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if isinstance(type_, GraphQLList):
        return []
    if isinstance(type_, GraphQLObjectType):
        # An unset message field reads as an empty message; apiError is not a proto field.
        return None if type_.name == "ApiError" else {}
    if isinstance(type_, GraphQLScalarType):
        return {"String": "", "LongString": 0, "Boolean": False, "Int": 0}.get(type_.name)
    return None  # enums (the reference fails on their unset value 0) and Float (NaN is null)


def _resolve_field(source: Any, info: GraphQLResolveInfo, **_args: Any) -> Any:
    """Default resolver: sources are camelCase dicts; absent values read as proto defaults."""
    value = source.get(info.field_name) if isinstance(source, dict) else None
    if value is None:
        return _proto_default(info.return_type)
    if info.return_type is GraphQLFloat:
        return _json_float(value)
    return value


_CAMEL_WORD = re.compile(r"_([a-z0-9])")


def _camel(value: Any) -> Any:
    """Wire structs (snake_case, as MLflow's REST JSON) to GraphQL's camelCase dicts."""
    if isinstance(value, msgspec.Struct):
        value = msgspec.to_builtins(value)
    if isinstance(value, dict):
        return {
            _CAMEL_WORD.sub(lambda m: m.group(1).upper(), k): _camel(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_camel(v) for v in value]
    return value


def _experiment(experiment: wire.Experiment) -> dict[str, Any]:
    return {**_camel(experiment), "workspace": "default"}


# --------------------------------------------------------------------------------------------
# Per-request batching (a run's experiment and model versions)
# --------------------------------------------------------------------------------------------

K = TypeVar("K")
V = TypeVar("V")


class _Batcher(Generic[K, V]):
    """Loads the keys that sibling resolvers ask for in one event-loop turn with one call.

    Searching 50 runs and selecting each run's ``experiment`` and ``modelVersions`` would
    otherwise cost 100 queries. graphql-core resolves the items of a list concurrently, so
    their ``load`` calls all land before the dispatch scheduled by the first one runs.
    """

    def __init__(self, load_many: Callable[[list[K]], Awaitable[dict[K, V]]]) -> None:
        self._load_many = load_many
        self._futures: dict[K, asyncio.Future[V | None]] = {}
        self._pending: list[K] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def load(self, key: K) -> asyncio.Future[V | None]:
        future = self._futures.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            self._futures[key] = future
            if not self._pending:
                loop.call_soon(self._dispatch)
            self._pending.append(key)
        return future

    def _dispatch(self) -> None:
        keys, self._pending = self._pending, []
        task = asyncio.ensure_future(self._run(keys))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, keys: list[K]) -> None:
        try:
            found = await self._load_many(keys)
        except Exception as exc:
            for key in keys:
                if not self._futures[key].done():
                    self._futures[key].set_exception(exc)
            return
        for key in keys:
            if not self._futures[key].done():
                self._futures[key].set_result(found.get(key))


@dataclass
class _Context:
    request: web.Request
    pool: asyncpg.Pool
    experiments: _Batcher[int, wire.Experiment] = field(init=False)
    run_versions: _Batcher[str, list[wire.ModelVersion]] = field(init=False)

    def __post_init__(self) -> None:
        self.experiments = _Batcher(self._load_experiments)
        self.run_versions = _Batcher(self._load_run_versions)

    async def _load_experiments(self, ids: list[int]) -> dict[int, wire.Experiment]:
        found = await experiment_queries.get_experiments(self.pool, ids)
        return {int(e.experiment_id): e for e in found}

    async def _load_run_versions(self, run_ids: list[str]) -> dict[str, list[wire.ModelVersion]]:
        """The model versions of several runs: the reference searches ``run_id='<id>'`` per
        run; one ``run_id IN (...)`` search gives each run the same versions in that order."""
        ids = [i for i in run_ids if _RUN_ID.match(i)]
        if not ids:
            return {}
        query = compile_model_version_search(
            filter_string="run_id IN (" + ", ".join(f"'{i}'" for i in ids) + ")",
            order_by=None,
            max_results=None,
            page_token=None,
        )
        rows = await self.pool.fetch(query.sql, *query.args)
        versions = await registry_queries.model_versions(
            self.pool, [(r[0], r[1]) for r in rows[: query.limit]]
        )
        by_run: dict[str, list[wire.ModelVersion]] = defaultdict(list)
        for version in versions:
            if version.run_id:
                by_run[version.run_id].append(version)
        return by_run


def _context(info: GraphQLResolveInfo) -> _Context:
    context: _Context = info.context
    return context


def _input(args: dict[str, Any]) -> dict[str, Any]:
    value = args.get("input")
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------------------------
# Resolvers
# --------------------------------------------------------------------------------------------


async def _require_runs(info: GraphQLResolveInfo, run_ids: list[str]) -> None:
    """READ on the experiment of every run named (a no-op with authentication off)."""
    request = _context(info).request
    if not auth_enabled(request):
        return
    control = access(request)
    experiments = set()
    for run_id in run_ids:
        found = await control.experiment_of_run(run_id)
        if found is None:
            raise not_found(f"Run with id={run_id} not found")
        experiments.add(found)
    await require(request, Permission.EXPERIMENT_READ, sorted(experiments))


async def _get_experiment(_root: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    experiment_id = parse_experiment_id(_input(args).get("experimentId") or "")
    await require(_context(info).request, Permission.EXPERIMENT_READ, [str(experiment_id)])
    found = await experiment_queries.get_experiments(_context(info).pool, [experiment_id])
    if not found:
        raise not_found(f"No Experiment with id={experiment_id} exists")
    return {"experiment": _experiment(found[0])}


async def _get_run(_root: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    data = _input(args)
    run_id = data.get("runId") or data.get("runUuid") or ""
    await _require_runs(info, [run_id])
    found = await run_queries.get_runs(_context(info).pool, [run_id])
    if not found:
        raise not_found(f"Run with id={run_id} not found")
    return {"run": _camel(found[0])}


async def _search_runs(_root: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    data = _input(args)
    max_results = data.get("maxResults")
    if max_results is not None and max_results > SEARCH_MAX_RESULTS_THRESHOLD:
        # The REST handler's check (compile_run_search's wording) is not on this path; the
        # reference's store rejects the value with its own wording.
        raise invalid(
            f"Invalid value {max_results} for parameter 'max_results' supplied. "
            f"It must be at most {SEARCH_MAX_RESULTS_THRESHOLD}"
        )
    requested = [str(parse_experiment_id(e)) for e in data.get("experimentIds") or []]
    readable = await readable_experiment_ids(_context(info).request, requested)
    if requested and not readable:
        return {"runs": [], "nextPageToken": None}
    query = compile_run_search(
        experiment_ids=[int(e) for e in readable],
        view_type=data.get("runViewType") or "ACTIVE_ONLY",
        filter_string=data.get("filter"),
        order_by=[o for o in data.get("orderBy") or [] if o is not None],
        max_results=DEFAULT_SEARCH_RUNS_MAX_RESULTS if max_results is None else max_results,
        page_token=data.get("pageToken") or None,
    )
    pool = _context(info).pool
    rows = await pool.fetch(query.sql, *query.args)
    runs = await run_queries.get_runs(pool, [r[0] for r in rows[: query.limit]])
    return {"runs": _camel(runs), "nextPageToken": next_page_token(query, len(rows))}


async def _run_experiment(root: Any, info: GraphQLResolveInfo) -> dict[str, Any] | None:
    experiment_id = int(root["info"]["experimentId"])
    found = await _context(info).experiments.load(experiment_id)
    if found is None:
        raise not_found(f"No Experiment with id={experiment_id} exists")
    return _experiment(found)


async def _run_model_versions(root: Any, info: GraphQLResolveInfo) -> list[dict[str, Any]]:
    found = await _context(info).run_versions.load(root["info"]["runId"])
    view = await visible(_context(info).request, REGISTERED_MODEL)
    if view is not None:
        found = [v for v in found or [] if view.allows(v.name)]
    versions: list[dict[str, Any]] = _camel(found or [])
    return versions


async def _metric_history_bulk_interval(
    _root: Any, info: GraphQLResolveInfo, **args: Any
) -> dict[str, Any]:
    data = _input(args)
    max_results = data.get("maxResults")
    if max_results is not None and not 1 <= max_results <= MAX_RESULTS_PER_RUN:
        raise invalid(f"max_results must be between 1 and {MAX_RESULTS_PER_RUN}.")
    start, end = data.get("startStep"), data.get("endStep")
    if (start is None) != (end is None):
        raise invalid("If either start step or end step are specified, both must be specified.")
    if start is not None and end is not None and start > end:
        raise invalid(
            f"end_step must be greater than start_step. Found start_step={start} and "
            f"end_step={end}."
        )
    run_ids = [r for r in data.get("runIds") or [] if r is not None]
    await _require_runs(info, run_ids)
    points = await metric_samples.metric_history_sampled(
        _context(info).pool,
        run_ids,
        data.get("metricKey") or "",
        max_results=max_results or MAX_RESULTS_PER_RUN,
        start_step=start,
        end_step=end,
    )
    return {"metrics": _camel(points)}


async def _list_artifacts(_root: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    data = _input(args)
    path = data.get("path")
    sub = normalize_artifact_path(path, allow_root=True) if path is not None else ""
    run_id = data.get("runId") or data.get("runUuid") or ""
    context = _context(info)
    await _require_runs(info, [run_id])
    run = await run_queries.get_run_info(context.pool, run_id)
    if run is None:
        raise not_found(f"Run with id={run_id} not found")
    files: list[dict[str, Any]] = []
    root = store_path(run.artifact_uri)
    if root is not None:
        listed = posixpath.join(root, sub) if sub else root
        for entry in await list_directory(context.request.config_dict[ARTIFACT_STORE], listed):
            files.append(
                {
                    "path": posixpath.join(sub, entry.path) if sub else entry.path,
                    "isDir": entry.is_dir,
                    "fileSize": entry.file_size,
                }
            )
    return {"rootUri": run.artifact_uri, "files": files}


async def _search_model_versions(
    _root: Any, info: GraphQLResolveInfo, **args: Any
) -> dict[str, Any]:
    data = _input(args)
    query = compile_model_version_search(
        filter_string=data.get("filter"),
        order_by=[o for o in data.get("orderBy") or [] if o is not None],
        max_results=data.get("maxResults"),
        page_token=data.get("pageToken") or None,
        visible=await visible(_context(info).request, REGISTERED_MODEL),
    )
    pool = _context(info).pool
    rows = await pool.fetch(query.sql, *query.args)
    found = await registry_queries.model_versions(pool, [(r[0], r[1]) for r in rows[: query.limit]])
    return {"modelVersions": _camel(found), "nextPageToken": next_page_token(query, len(rows))}


def _echo(_root: Any, _info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    return {"output": args.get("inputString")}


def _build_schema() -> GraphQLSchema:
    schema = build_schema(SDL)
    long_string = schema.type_map["LongString"]
    assert isinstance(long_string, GraphQLScalarType)
    # SDL cannot carry a scalar's functions; GraphQLScalarType's own constructor stores them
    # as instance attributes shadowing the default methods, which is what this does too.
    long_string.serialize = _serialize_long  # type: ignore[method-assign]
    long_string.parse_value = _parse_long  # type: ignore[method-assign]
    long_string.parse_literal = _parse_long_literal  # type: ignore[method-assign,assignment]
    resolvers: dict[str, dict[str, Callable[..., Any]]] = {
        "Query": {
            "mlflowGetExperiment": _get_experiment,
            "mlflowGetRun": _get_run,
            "mlflowSearchRuns": _search_runs,
            "mlflowGetMetricHistoryBulkInterval": _metric_history_bulk_interval,
            "mlflowListArtifacts": _list_artifacts,
            "mlflowSearchModelVersions": _search_model_versions,
            "test": _echo,
        },
        "Mutation": {"mlflowSearchRuns": _search_runs, "testMutation": _echo},
        "MlflowRunExtension": {
            "experiment": _run_experiment,
            "modelVersions": _run_model_versions,
        },
    }
    for type_name, fields in resolvers.items():
        type_ = schema.type_map[type_name]
        assert isinstance(type_, GraphQLObjectType)
        for field_name, resolver in fields.items():
            type_.fields[field_name].resolve = resolver
    return schema


SCHEMA = _build_schema()


# --------------------------------------------------------------------------------------------
# Query limits
# --------------------------------------------------------------------------------------------


def _fields(
    selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode]
) -> list[FieldNode]:
    """The fields selected at one level, with inline fragments and spreads flattened in."""
    out: list[FieldNode] = []
    todo = list(selection_set.selections)
    seen: set[str] = set()
    while todo:
        selection = todo.pop()
        if isinstance(selection, FieldNode):
            out.append(selection)
        elif isinstance(selection, InlineFragmentNode):
            todo.extend(selection.selection_set.selections)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:
                seen.add(name)
                todo.extend(fragment.selection_set.selections)
    return out


def _limits_error(document: DocumentNode) -> str | None:
    """Why the document is too costly to run, if it is (checked before validation).

    Depth and total selections stop the scan; the root-field count (over all operations) and
    the most aliases on one level are judged after it, in that order, as the reference does.
    """
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    root_fields = selections = max_aliases = 0
    for operation in document.definitions:
        if not isinstance(operation, OperationDefinitionNode):
            continue
        stack = [(operation.selection_set, 1)]
        while stack:
            selection_set, depth = stack.pop()
            if depth > MAX_DEPTH:
                return f"Query exceeds maximum depth of {MAX_DEPTH}"
            level = _fields(selection_set, fragments)
            max_aliases = max(max_aliases, sum(1 for f in level if f.alias is not None))
            if depth == 1:
                root_fields += len(level)
            selections += len(level)
            if selections > MAX_SELECTIONS:
                return f"Query exceeds maximum total selections of {MAX_SELECTIONS}"
            stack.extend((f.selection_set, depth + 1) for f in level if f.selection_set)
    if root_fields > MAX_ROOT_FIELDS:
        return (
            f"GraphQL queries should have at most {MAX_ROOT_FIELDS} root fields, "
            f"got {root_fields} root fields."
        )
    if max_aliases > MAX_ALIASES:
        return (
            f"GraphQL queries should have at most {MAX_ALIASES} aliases, got {max_aliases} aliases."
        )
    return None


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


class _BadRequest(Exception):
    pass


@dataclass(frozen=True)
class _Operation:
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None


async def _read_operation(request: web.Request) -> _Operation:
    """The GraphQL request: a JSON body ``{query, variables?, operationName?}`` for POST, the
    same three as query-string parameters (``variables`` JSON-encoded) for GET."""
    if request.method == "GET":
        raw_variables = request.query.get("variables")
        try:
            variables = msgspec.json.decode(raw_variables) if raw_variables else None
        except msgspec.DecodeError as exc:
            raise _BadRequest("Variables are invalid JSON.") from exc
        fields: dict[str, Any] = {
            "query": request.query.get("query"),
            "variables": variables,
            "operationName": request.query.get("operationName"),
        }
    else:
        try:
            body = msgspec.json.decode(await read_body(request))
        except msgspec.DecodeError as exc:
            raise _BadRequest("The request body is not valid JSON.") from exc
        if not isinstance(body, dict):
            raise _BadRequest("The request body must be a JSON object.")
        fields = body
    query, variables, name = (
        fields.get("query"),
        fields.get("variables"),
        fields.get("operationName"),
    )
    if not isinstance(query, str) or not query:
        raise _BadRequest("Must provide query string.")
    if len(query) > MAX_QUERY_CHARS:
        raise _BadRequest(f"The query is longer than {MAX_QUERY_CHARS} characters.")
    if variables is not None and not isinstance(variables, dict):
        raise _BadRequest("Variables must be a JSON object.")
    if name is not None and not isinstance(name, str):
        raise _BadRequest("operationName must be a string.")
    return _Operation(query, variables, name or None)


def _answer(result: ExecutionResult | None, errors: list[str], status: int = 200) -> web.Response:
    return json_response(
        {"data": result.data if result else None, "errors": errors or None}, status=status
    )


def _messages(request: web.Request, errors: list[GraphQLError] | None) -> list[str]:
    """Error messages as the reference sends them; internal failures are logged, not shown."""
    out = []
    for error in errors or []:
        original = error.original_error
        if error.path is None or original is None or isinstance(original, EvtrackError):
            out.append(error.message)
            continue
        log.error(
            "graphql.resolver_failed",
            request_id=request.get("request_id"),
            path=error.path,
            exc_info=original,
        )
        out.append(f"Internal error (request id {request.get('request_id')})")
    return out


async def graphql_handler(request: web.Request) -> web.Response:
    try:
        operation = await _read_operation(request)
    except _BadRequest as exc:
        return _answer(None, [str(exc)], status=400)
    try:
        document = parse(operation.query)
    except GraphQLError as exc:
        return _answer(None, [exc.message])
    if too_costly := _limits_error(document):
        return _answer(None, [too_costly])
    if errors := validate(SCHEMA, document):
        return _answer(None, [e.message for e in errors])
    chosen = get_operation_ast(document, operation.operation_name)
    if (
        request.method == "GET"
        and chosen is not None
        and chosen.operation is not OperationType.QUERY
    ):
        response = _answer(None, ["Can only perform a query operation from a GET request."], 405)
        response.headers["Allow"] = "POST"
        return response
    await wait_fresh(request, *READ_MODELS)
    result = execute(
        SCHEMA,
        document,
        context_value=_Context(request, services(request).pool),
        variable_values=operation.variables,
        operation_name=operation.operation_name,
        field_resolver=_resolve_field,
    )
    if not isinstance(result, ExecutionResult):
        result = await result
    return _answer(result, _messages(request, result.errors))


def graphql_routes() -> list[Route]:
    read = Permission.EXPERIMENT_READ
    return [
        Route("POST", "/graphql", graphql_handler, read, prefixes=("",), resource=FILTERED),
        Route("GET", "/graphql", graphql_handler, read, prefixes=("",), resource=FILTERED),
    ]


__all__ = ["SCHEMA", "graphql_handler", "graphql_routes"]
