"""Events at the edges of their constraints, through every projector (invariant 8).

An event type's constraints promise that every read model can hold what the type admits. The
property: any event that :func:`encode_event` accepts is applied by every projection without
being parked; and a value just past a constraint is refused before it can be appended.
Hypothesis generates stories (an experiment, a run with its data and end, a registered model
with a version, a stage change and an alias) whose fields sit at the edges: int64 bounds,
timestamps 0 and 2^63-1, doubles at +-DOUBLE_MAX, NaN, -0.0 and subnormals, and text of any
Unicode but NUL.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Sequence

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evtrack.eventlog import ANY_VERSION, EventStore, UnitOfWork, upgrade
from evtrack.events import (
    DOUBLE_MAX,
    INT64_MAX,
    INT64_MIN,
    ConstraintViolation,
    Event,
    ExperimentCreated,
    ExperimentImported,
    ExperimentTagSet,
    KeyValue,
    Metadata,
    MetricColumns,
    ModelAliasSet,
    ModelVersionCreated,
    ModelVersionStageChanged,
    RegisteredModelCreated,
    RegisteredModelImported,
    RegisteredModelTagSet,
    RunCreated,
    RunDataLogged,
    RunUpdated,
    VersionTimes,
    encode_event,
)
from evtrack.projections.registry import all_projections
from evtrack.projector import ensure_current, parked_counts
from evtrack.server import create_pool

from ._helpers import drain_to_head

int64 = st.one_of(
    st.sampled_from([INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX]),
    st.integers(INT64_MIN, INT64_MAX),
)
millis = st.one_of(st.sampled_from([0, 1, INT64_MAX]), st.integers(0, INT64_MAX))
doubles = st.one_of(
    st.sampled_from([DOUBLE_MAX, -DOUBLE_MAX, math.nan, -0.0, 0.0, 5e-324, -5e-324]),
    st.floats(allow_infinity=False),
)
text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)
keys = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=250,
)
pairs = st.lists(st.builds(KeyValue, keys, text), max_size=4, unique_by=lambda kv: kv.key)


_USED_EXPERIMENT_IDS: set[int] = set()


@st.composite
def stories(draw: st.DrawFn) -> list[tuple[str, Event]]:
    """One experiment, run and registered model, each in its own fresh stream."""
    experiment_id = draw(st.one_of(st.just(INT64_MAX), st.integers(1, INT64_MAX)))
    if experiment_id in _USED_EXPERIMENT_IDS:  # examples share one database
        experiment_id = uuid.uuid4().int % INT64_MAX + 1
    _USED_EXPERIMENT_IDS.add(experiment_id)
    run_id = uuid.uuid4().hex
    model_key = uuid.uuid4().hex
    n = draw(st.integers(1, 20))
    metrics = MetricColumns(
        keys=draw(st.lists(keys, min_size=n, max_size=n)),
        values=draw(st.lists(doubles, min_size=n, max_size=n)),
        timestamps=draw(st.lists(millis, min_size=n, max_size=n)),
        steps=draw(st.lists(int64, min_size=n, max_size=n)),
    )
    version = draw(st.integers(1, INT64_MAX))
    experiment = f"experiment-{experiment_id}"
    run = f"run-{run_id}"
    model = f"registered_model-{model_key}"
    return [
        (
            experiment,
            ExperimentCreated(
                experiment_id=experiment_id,
                name=f"{draw(text)}-{uuid.uuid4().hex}",
                artifact_location=draw(text),
                tags=draw(pairs),
            ),
        ),
        (
            experiment,
            ExperimentTagSet(experiment_id=experiment_id, key=draw(keys), value=draw(text)),
        ),
        (
            run,
            RunCreated(
                run_id=run_id,
                experiment_id=experiment_id,
                user_id=draw(text),
                run_name=draw(text),
                start_time=draw(st.none() | int64),
                artifact_uri=draw(text),
                tags=draw(pairs),
            ),
        ),
        (run, RunDataLogged(run_id=run_id, metrics=metrics, params=draw(pairs), tags=draw(pairs))),
        (
            run,
            RunUpdated(
                run_id=run_id,
                status=draw(st.sampled_from(["FINISHED", "FAILED", "KILLED"])),
                end_time=draw(int64),
                run_name=draw(st.none() | text),
            ),
        ),
        (
            model,
            RegisteredModelCreated(
                model_key=model_key, name=f"{draw(text)}-{uuid.uuid4().hex}", tags=draw(pairs)
            ),
        ),
        (model, RegisteredModelTagSet(model_key=model_key, key=draw(keys), value=draw(text))),
        (
            model,
            ModelVersionCreated(
                model_key=model_key,
                version=version,
                source=draw(text),
                storage_location=draw(text),
                run_id=run_id,
                description=draw(st.none() | text),
                tags=draw(pairs),
            ),
        ),
        (
            model,
            ModelVersionStageChanged(
                model_key=model_key, version=version, from_stage="None", to_stage="Production"
            ),
        ),
        (model, ModelAliasSet(model_key=model_key, alias=draw(keys), version=version)),
        (
            experiment,
            ExperimentImported(
                experiment_id=experiment_id,
                source=draw(text),
                fingerprint=draw(text),
                creation_time=draw(millis),
                last_update_time=draw(millis),
            ),
        ),
        (
            model,
            RegisteredModelImported(
                model_key=model_key,
                source=draw(text),
                fingerprint=draw(text),
                creation_timestamp=draw(millis),
                last_updated_timestamp=draw(millis),
                versions=[VersionTimes(version, draw(millis), draw(millis))],
            ),
        ),
    ]


async def _append(pool: asyncpg.Pool, story: Sequence[tuple[str, Event]]) -> None:
    async def work(uow: UnitOfWork) -> None:
        for stream, event in story:
            uow.append(stream, [event], expected_version=ANY_VERSION)

    await EventStore(pool).transact(
        work, metadata=Metadata(actor="hypothesis"), result_type=type(None), idempotency_key=None
    )


async def _apply_everywhere(dsn: str, story: Sequence[tuple[str, Event]]) -> dict[str, int]:
    pool = await create_pool(dsn, 2)
    try:
        async with pool.acquire() as conn:
            await upgrade(conn)
            for projection in all_projections():
                await ensure_current(conn, projection)
        await _append(pool, story)
        async with pool.acquire() as conn:
            for projection in all_projections():
                await drain_to_head(conn, projection)
            return await parked_counts(conn)
    finally:
        await pool.close()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(story=stories())
def test_every_admitted_event_is_applied_by_every_projection(
    fresh_database_dsn: str, story: list[tuple[str, Event]]
) -> None:
    for _, event in story:
        encode_event(event)  # the story is admissible
    parked = asyncio.run(_apply_everywhere(fresh_database_dsn, story))
    assert parked == {}, f"parked: {parked}"


@pytest.mark.parametrize(
    "event",
    [
        RunCreated(
            run_id="r",
            experiment_id=INT64_MAX + 1,
            user_id="",
            run_name="",
            start_time=0,
            artifact_uri="",
        ),
        RunUpdated(run_id="r", end_time=INT64_MIN - 1),
        ModelVersionCreated(model_key="m", version=2**64, source="", storage_location=""),
        ExperimentTagSet(experiment_id=1, key="k", value="a\x00b"),
        ExperimentTagSet(experiment_id=1, key="k", value="\ud800"),
    ],
    ids=["int64+1", "int64-1", "uint64", "nul", "surrogate"],
)
def test_a_value_past_a_constraint_cannot_be_encoded(event: Event) -> None:
    with pytest.raises(ConstraintViolation):
        encode_event(event)


@given(
    timestamps=st.lists(
        st.integers(max_value=-1) | st.integers(min_value=INT64_MAX + 1), min_size=1, max_size=3
    ),
)
@settings(max_examples=50)
def test_metric_columns_refuse_timestamps_outside_millis(timestamps: list[int]) -> None:
    n = len(timestamps)
    event = RunDataLogged(
        run_id="r",
        metrics=MetricColumns(
            keys=["k"] * n, values=[1.0] * n, timestamps=timestamps, steps=[0] * n
        ),
    )
    with pytest.raises(ConstraintViolation):
        encode_event(event)
