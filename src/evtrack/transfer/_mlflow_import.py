"""``evtrack import mlflow``: copy a live MLflow server into evtrack, through the domain.

The order makes every step's preconditions true and lets an interrupted import resume:

1. each experiment is created under its source id (``ImportExperiment``);
2. its runs are created in batches (``ImportRuns``), which answers the runs not yet
   imported in their current source state; each of those gets its metric points (packed
   chunks, ``ImportRunPoints``, each with an idempotency key naming its content) and its
   artifacts (copied byte for byte, files already present with their size skipped), and is
   then marked imported with its fingerprint;
3. the experiment gets its lifecycle and source times (``FinishExperimentImport``);
4. registered models follow, one command each, versions numbered as at the source.

Every command runs with the import as principal (``import:<source URL>``) and the source
URL in the events' metadata. Runs are copied several at a time, each run's series fetched
concurrently: the source's REST API is the bottleneck, so it is kept busy.
"""

from __future__ import annotations

import asyncio
import hashlib
import posixpath
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from evtrack.application import CommandExecutor, Context
from evtrack.artifacts import ArtifactStore
from evtrack.domain.commands import Command
from evtrack.domain.import_commands import (
    FinishExperimentImport,
    ImportedExperiment,
    ImportedModelVersion,
    ImportedRun,
    ImportExperiment,
    ImportRegisteredModel,
    ImportRunPoints,
    ImportRuns,
)
from evtrack.errors import EvtrackError
from evtrack.events import KeyValue
from evtrack.transfer._mlflow_source import (
    PROXY_SCHEME,
    Experiment,
    MlflowSource,
    RegisteredModel,
    Run,
    SourceError,
    Tag,
)
from evtrack.transfer._progress import Progress
from evtrack.transfer._series import chunks, digest
from evtrack.transfer._source_db import PointSource

RUNS_PER_COMMAND = 100


@dataclass
class ImportOptions:
    parallel_runs: int = 4  # runs copied at once
    source_concurrency: int = 8  # requests in flight to the source
    artifacts: bool = True
    registry: bool = True
    progress: bool = True


@dataclass
class ImportReport:
    experiments: int = 0
    runs: int = 0  # runs whose data was copied in this import
    runs_unchanged: int = 0  # runs already imported in the same state
    points: int = 0
    artifact_files: int = 0
    artifact_bytes: int = 0
    models: int = 0
    errors: list[str] = field(default_factory=list)


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(msgspec.msgpack.encode(value)).hexdigest()[:32]


def _pairs(tags: list[Tag]) -> list[KeyValue]:
    return [KeyValue(t.key, t.value) for t in sorted(tags, key=lambda t: t.key)]


def _store_path(artifact_uri: str) -> str | None:
    if not artifact_uri.startswith(PROXY_SCHEME):
        return None
    rest = artifact_uri[len(PROXY_SCHEME) :]
    if rest.startswith("//"):
        rest = rest[2:].partition("/")[2]
    return rest.strip("/")


def _experiment(e: Experiment) -> ImportedExperiment:
    experiment_id = int(e.experiment_id)
    location = e.artifact_location
    if not location.startswith(PROXY_SCHEME):
        # The source keeps these artifacts outside its proxy; here they live in evtrack's
        # store, behind its proxy, like those of experiments created here.
        location = f"{PROXY_SCHEME}/{experiment_id}"
    return ImportedExperiment(
        experiment_id=experiment_id,
        name=e.name,
        artifact_location=location,
        lifecycle_stage=e.lifecycle_stage,
        creation_time=e.creation_time,
        last_update_time=e.last_update_time or e.creation_time,
        tags=_pairs(e.tags),
    )


def _run(r: Run) -> ImportedRun:
    i = r.info
    canonical = (
        i,
        sorted((m.key, repr(m.value), m.timestamp, m.step) for m in r.data.metrics),
        _pairs(r.data.params),
        _pairs(r.data.tags),
    )
    return ImportedRun(
        run_id=i.run_id,
        experiment_id=int(i.experiment_id),
        user_id=i.user_id or "",
        run_name=i.run_name,
        status=i.status,
        start_time=i.start_time,
        end_time=i.end_time,
        lifecycle_stage=i.lifecycle_stage,
        params=_pairs(r.data.params),
        tags=_pairs(r.data.tags),
        fingerprint=_fingerprint(canonical),
    )


class MlflowImport:
    """One import from ``source`` into the database behind ``commands``."""

    def __init__(
        self,
        source: MlflowSource,
        commands: CommandExecutor,
        artifacts: ArtifactStore | None,
        options: ImportOptions,
        points: PointSource | None = None,
    ) -> None:
        self.source = source
        self.commands = commands
        self.artifacts = artifacts
        self.options = options
        self.points = points
        self.context = Context(
            principal=f"import:{source.url}",
            client="evtrack-import",
            source=source.url,
            scope="import",
        )
        self.report = ImportReport()
        self.progress = Progress(enabled=options.progress)
        self._run_slots = asyncio.Semaphore(options.parallel_runs)

    async def _execute(self, command: Command, key: str | None = None) -> Any:
        context = self.context if key is None else replace(self.context, idempotency_key=key)
        return await self.commands.execute(command, context)

    def _failed(self, what: str, exc: Exception) -> None:
        message = exc.message if isinstance(exc, EvtrackError) else str(exc)
        self.report.errors.append(f"{what}: {message}")
        self.progress.write(f"evtrack import: {what}: {message}")

    async def run(self) -> ImportReport:
        with self.progress:
            experiments = await self.source.experiments()
            experiments.sort(key=lambda e: (len(e.experiment_id), e.experiment_id))
            for e in experiments:
                await self._experiment(e)
            if self.options.registry:
                for model in await self.source.registered_models():
                    await self._model(model)
        return self.report

    # --- experiments and runs --------------------------------------------------------------

    async def _experiment(self, e: Experiment) -> None:
        try:
            imported = _experiment(e)
        except ValueError:
            self._failed(f"experiment {e.experiment_id}", ValueError("its id is not a number"))
            return
        fingerprint = _fingerprint(imported)
        try:
            await self._execute(
                ImportExperiment(
                    source=self.source.url, experiment=imported, fingerprint=fingerprint
                )
            )
        except (EvtrackError, SourceError) as exc:
            self._failed(f"experiment {e.experiment_id} ({e.name!r})", exc)
            return
        failures = len(self.report.errors)
        async for page in self.source.runs(e.experiment_id):
            self.progress.runs.total = (self.progress.runs.total or 0) + len(page)
            self.progress.runs.refresh()
            for start in range(0, len(page), RUNS_PER_COMMAND):
                await self._runs(imported, page[start : start + RUNS_PER_COMMAND])
        if len(self.report.errors) > failures:
            return  # not marked imported: the next import retries what failed
        try:
            await self._execute(
                FinishExperimentImport(
                    source=self.source.url, experiment=imported, fingerprint=fingerprint
                )
            )
        except EvtrackError as exc:
            self._failed(f"experiment {e.experiment_id} ({e.name!r})", exc)
            return
        self.report.experiments += 1

    async def _runs(self, experiment: ImportedExperiment, runs: list[Run]) -> None:
        batch = {r.info.run_id: (r, _run(r)) for r in runs}
        try:
            pending = await self._execute(
                ImportRuns(
                    source=self.source.url, runs=[imported for _, imported in batch.values()]
                )
            )
        except EvtrackError as exc:
            self._failed(f"runs of experiment {experiment.experiment_id}", exc)
            return
        done = len(batch) - len(pending)
        self.report.runs_unchanged += done
        self.progress.runs.update(done)
        await asyncio.gather(*(self._copy_run(experiment, *batch[run_id]) for run_id in pending))

    async def _copy_run(
        self, experiment: ImportedExperiment, run: Run, imported: ImportedRun
    ) -> None:
        run_id = run.info.run_id
        async with self._run_slots:
            try:
                await self._copy_points(run)
                if self.options.artifacts and self.artifacts is not None:
                    root = _store_path(
                        f"{experiment.artifact_location.rstrip('/')}/{run_id}/artifacts"
                    )
                    if root is not None:
                        await self._copy_artifacts(run, root)
                await self._execute(
                    ImportRunPoints(
                        source=self.source.url, run_id=run_id, complete=imported.fingerprint
                    )
                )
            except (EvtrackError, SourceError, OSError) as exc:
                self._failed(f"run {run_id}", exc)
                return
        self.report.runs += 1
        self.progress.runs.update(1)

    async def _copy_points(self, run: Run) -> None:
        run_id = run.info.run_id
        keys = sorted({m.key for m in run.data.metrics})
        if not keys:
            return
        if self.points is not None:
            series = await self.points.run_points(run_id)
        else:
            series = list(await asyncio.gather(*(self.source.history(run_id, k) for k in keys)))
        for chunk in chunks(series):
            key = f"import-points:{run_id}:{digest(chunk)}"
            await self._execute(
                ImportRunPoints(source=self.source.url, run_id=run_id, points=chunk), key
            )
            n = len(chunk.values) // 8
            self.report.points += n
            self.progress.points.update(n)

    async def _copy_artifacts(self, run: Run, root: str) -> None:
        assert self.artifacts is not None
        files = await self.source.artifact_files(run.info.run_id)
        present: dict[str, dict[str, int | None]] = {}
        for f in files:
            target = f"{root}/{f.path}"
            folder, name = posixpath.split(target)
            if folder not in present:
                present[folder] = {i.path: i.file_size for i in await self.artifacts.list(folder)}
            if f.file_size is not None and present[folder].get(name) == f.file_size:
                continue  # copied by an earlier import (uploads are atomic)
            written = await self.artifacts.put(
                target, self._counted(self.source.download(run.info, f.path))
            )
            self.report.artifact_files += 1
            self.report.artifact_bytes += written

    async def _counted(self, chunks_in: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks_in:
            self.progress.bytes.update(len(chunk))
            yield chunk

    # --- registry --------------------------------------------------------------------------

    async def _model(self, model: RegisteredModel) -> None:
        try:
            versions = await self.source.model_versions(model.name)
            command = ImportRegisteredModel(
                source=self.source.url,
                name=model.name,
                description=model.description or None,
                creation_timestamp=model.creation_timestamp,
                last_updated_timestamp=model.last_updated_timestamp,
                tags=_pairs(model.tags),
                versions=[
                    ImportedModelVersion(
                        version=int(v.version),
                        source=v.source,
                        run_id=v.run_id or None,
                        run_link=v.run_link or None,
                        description=v.description or None,
                        current_stage=v.current_stage or "None",
                        creation_timestamp=v.creation_timestamp,
                        last_updated_timestamp=v.last_updated_timestamp,
                        tags=_pairs(v.tags),
                    )
                    for v in sorted(versions, key=lambda v: int(v.version))
                ],
                aliases=[
                    KeyValue(a.alias, a.version)
                    for a in sorted(model.aliases, key=lambda a: a.alias)
                ],
                fingerprint="",
            )
            command = msgspec.structs.replace(command, fingerprint=_fingerprint(command))
            await self._execute(command)
        except (EvtrackError, SourceError, ValueError) as exc:
            self._failed(f"registered model {model.name!r}", exc)
            return
        self.report.models += 1


async def import_mlflow(
    source_url: str,
    commands: CommandExecutor,
    artifacts: ArtifactStore | None,
    options: ImportOptions | None = None,
    points: PointSource | None = None,
) -> ImportReport:
    """Copy the MLflow server at ``source_url`` into the database behind ``commands``."""
    options = options or ImportOptions()
    async with MlflowSource(source_url, concurrency=options.source_concurrency) as source:
        return await MlflowImport(source, commands, artifacts, options, points).run()
