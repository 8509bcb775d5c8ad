"""Response shapes of the MLflow REST API as msgspec Structs.

Field names are MLflow's snake_case proto names. Unset fields and empty lists are omitted, as
the reference server's proto-to-JSON does. Doubles that JSON cannot carry (NaN, infinities)
travel as the strings proto JSON uses, which the client's parser accepts.
"""

from __future__ import annotations

import math

import msgspec


def json_double(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


class Struct(msgspec.Struct, omit_defaults=True):
    pass


class KeyValue(Struct):
    key: str
    value: str


class Experiment(Struct):
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    last_update_time: int
    creation_time: int
    tags: list[KeyValue] = []


class Metric(Struct):
    key: str
    value: float | str
    timestamp: int
    step: int
    run_id: str | None = None
    model_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None


class RunInfo(Struct):
    run_id: str
    run_uuid: str
    run_name: str
    experiment_id: str
    user_id: str
    status: str
    artifact_uri: str
    lifecycle_stage: str
    start_time: int | None = None
    end_time: int | None = None


class RunData(Struct):
    metrics: list[Metric] = []
    params: list[KeyValue] = []
    tags: list[KeyValue] = []


class Dataset(Struct):
    name: str
    digest: str
    source_type: str
    source: str
    schema: str | None = None
    profile: str | None = None


class DatasetInput(Struct):
    dataset: Dataset
    tags: list[KeyValue] = []


class ModelInput(Struct):
    model_id: str


class ModelOutput(Struct):
    model_id: str
    step: int


class RunInputs(Struct):
    dataset_inputs: list[DatasetInput] = []
    model_inputs: list[ModelInput] = []


class RunOutputs(Struct):
    model_outputs: list[ModelOutput] = []


class Run(Struct):
    info: RunInfo
    data: RunData
    inputs: RunInputs
    outputs: RunOutputs


class FileInfo(Struct):
    path: str
    is_dir: bool
    file_size: int | None = None


class ModelVersion(Struct):
    name: str
    version: str
    creation_timestamp: int
    last_updated_timestamp: int
    current_stage: str
    source: str
    status: str
    user_id: str | None = None
    description: str | None = None
    run_id: str | None = None
    status_message: str | None = None
    tags: list[KeyValue] = []
    run_link: str | None = None
    aliases: list[str] = []


class Alias(Struct):
    alias: str
    version: str


class RegisteredModel(Struct):
    name: str
    creation_timestamp: int
    last_updated_timestamp: int
    user_id: str | None = None
    description: str | None = None
    latest_versions: list[ModelVersion] = []
    tags: list[KeyValue] = []
    aliases: list[Alias] = []


class LoggedModelInfo(Struct):
    """``model_type`` and ``source_run_id`` are always present, ``""`` when never given:
    the reference stores the request's empty strings and so always emits both."""

    model_id: str
    experiment_id: str
    name: str
    creation_timestamp_ms: int
    last_updated_timestamp_ms: int
    artifact_uri: str
    status: str
    model_type: str
    source_run_id: str
    status_message: str | None = None
    tags: list[KeyValue] = []


class LoggedModelData(Struct):
    params: list[KeyValue] = []
    metrics: list[Metric] = []


class LoggedModel(Struct):
    info: LoggedModelInfo
    data: LoggedModelData
