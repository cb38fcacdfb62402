"""The tasks of a build: scenes cut into tasks, indexed, and kept as batches in the
build's task area (what a killed build resumes from).

A build (:func:`rasteret.ingest.builder.build_collection`) runs these tasks on an
executor, in other processes or in its own (:mod:`rasteret.ingest.executor`):

1. :func:`make_tasks` cuts the scenes into tasks of about ``batch_size`` assets. A
   task's key is a digest of its scenes (:func:`task_key`).
2. :func:`staged` writes each task's scenes into the workspace's task area
   (``.<name>.tasks/`` beside a local collection, ``_rasteret/builds/<name>/`` on an
   object store; :data:`STAGED_AHEAD` writes at once) and yields its
   :class:`TaskRef`, its key and size: that is all that is submitted, so an
   executor that keeps what it was given (Dask's streams keep their last messages
   for debugging) never holds the scenes.
3. :func:`index_task` (on a worker) reads the scenes back, parses their headers
   concurrently on the process's I/O loop and writes them as one Parquet batch
   beside them, with its key, row count and failures in the footer. A task whose
   batch is already there (a re-run after a failure, a retry of a task whose worker
   died, or a build resumed by the other kind of executor) reads that footer instead
   of indexing again. It returns counts, the batch's schema and the failures, never
   the rows.

The task area's files are the one resume format: ``<key>.scenes.jsonl`` (a task's
scenes, :func:`rasteret.ingest.records.records_to_json`) and ``<key>.parquet`` (its
finished batch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rasteret.errors import (
    CollectionConflictError,
    ConfigurationError,
    ForkAfterIOError,
    RasteretError,
)
from rasteret.ingest.coverage import with_coverage
from rasteret.ingest.indexer import DEFAULT_MAX_CONCURRENT, IndexFailure, band_record, index_hrefs
from rasteret.ingest.records import (
    SceneRecord,
    records_from_json,
    records_to_json,
    records_to_table,
)
from rasteret.io.backend import Backend
from rasteret.io.fetch import FetchStats
from rasteret.io.runtime import ensure_io_allowed, run_sync
from rasteret.options import OnError, ValidCoverage
from rasteret.schema import BASE_FIELDS, COVERAGE_COLUMN
from rasteret.storage import parquet_bytes
from rasteret.workspace import TaskArea

#: Tasks whose scenes the driver writes into the task area at once.
STAGED_AHEAD = 8
#: Footer key of a batch: its task's key, counts and failures (JSON).
TASK_KEY = b"rasteret:task"
#: Changes when a batch's content would change for the same scenes (invalidates
#: batches left by an older rasteret).
TASK_FORMAT = 2


@dataclass(frozen=True)
class IndexTask:
    """One task of a build: a run of scenes and their key.

    Attributes:
        key: A digest of ``scenes``: the name of its batch.
        records: The scenes.
        scenes: The scenes as written to the task area (:func:`records_to_json`).
    """

    key: str
    records: list[SceneRecord]
    scenes: bytes

    @property
    def assets(self) -> int:
        """The number of assets (bands) of the scenes."""
        return sum(len(record.bands) for record in self.records)

    @property
    def ref(self) -> TaskRef:
        """What is submitted for this task (its scenes go to the task area)."""
        return TaskRef(self.key, self.assets)


@dataclass(frozen=True)
class TaskRef:
    """What the driver submits for one task: a few bytes, whatever its size.

    Attributes:
        key: The task's key; its scenes are ``scenes_name(key)`` in the task area.
        assets: The number of assets of its scenes.
    """

    key: str
    assets: int


def batch_name(key: str) -> str:
    """The name, in the task area, of the Parquet batch of task ``key``."""
    return f"{key}.parquet"


def scenes_name(key: str) -> str:
    """The name, in the task area, of the scenes of task ``key`` (JSON lines)."""
    return f"{key}.scenes.jsonl"


@dataclass
class TaskOutcome:
    """What a task sends back to the driver: small, whatever the number of scenes.

    Attributes:
        key: The task's key.
        scenes: Scenes written to its batch (0 when the batch was not written).
        assets: Assets the task covered.
        schema: Its batch's Arrow schema (None when no batch was written).
        failures: Its assets that could not be indexed.
        stats: Requests, bytes and retries of the indexing.
    """

    key: str
    scenes: int
    assets: int
    schema: pa.Schema | None
    failures: list[IndexFailure]
    stats: FetchStats


def task_key(scenes: bytes) -> str:
    """The key of a task whose scenes encode to ``scenes`` (:func:`records_to_json`,
    everything that goes into its rows): a batch is reused only for the very same
    scenes."""
    return hashlib.sha256(f"rasteret-task-{TASK_FORMAT}\n".encode() + scenes).hexdigest()[:32]


def make_tasks(records: Iterable[SceneRecord], batch_size: int) -> Iterator[IndexTask]:
    """Cut ``records`` into tasks of about ``batch_size`` assets (whole scenes),
    consuming them lazily.

    Raises:
        ConfigurationError: A scene id repeats within a task.
    """
    batch: list[SceneRecord] = []
    assets = 0
    for record in records:
        batch.append(record)
        assets += len(record.bands)
        if assets >= batch_size:
            yield _task(batch)
            batch, assets = [], 0
    if batch:
        yield _task(batch)


def _task(records: list[SceneRecord]) -> IndexTask:
    ids = [record.id for record in records]
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigurationError(f"scene ids are not unique in the source: {repeated[:5]}")
    scenes = records_to_json(records)
    return IndexTask(task_key(scenes), records, scenes)


def check_process() -> None:
    """Refuse to run in a process forked after its parent did I/O (it would hang)."""
    try:
        ensure_io_allowed()
    except ForkAfterIOError:
        raise ForkAfterIOError(
            f"build task in process {os.getpid()}: this worker was forked from a process "
            "that had already read data with rasteret, and obstore hangs in such a child. "
            "Give the executor spawned or forkserver workers, e.g. ProcessPoolExecutor("
            "mp_context=multiprocessing.get_context('spawn')), or use a dask.distributed "
            "Client(...).get_executor()"
        ) from None


def _nulls_untyped(table: pa.Table, bands: set[str]) -> pa.Table:
    """Property columns without a value get the null type, so merging them with the
    same column of another batch takes that batch's type (a property is typed only
    from the values the whole build sees)."""
    base = {field.name for field in BASE_FIELDS}
    for index, field in enumerate(table.schema):
        if (field.name not in base and field.name not in bands and table.num_rows
                and table.column(index).null_count == table.num_rows):
            table = table.set_column(index, pa.field(field.name, pa.null()),
                                     pa.nulls(table.num_rows))
    return table


def _outcome_of_batch(data: bytes, task: TaskRef) -> TaskOutcome | None:
    """The outcome recorded in a finished batch, or None when it is not this task's
    complete batch (then the task runs again)."""
    try:
        schema = pq.read_schema(pa.BufferReader(data))
        recorded = json.loads((schema.metadata or {})[TASK_KEY])
        failures = [IndexFailure(**row) for row in recorded["failures"]]
        if recorded["key"] != task.key:
            return None
        metadata = dict(schema.metadata or {})
        metadata.pop(TASK_KEY)
        return TaskOutcome(task.key, int(recorded["scenes"]), task.assets,
                           schema.with_metadata(metadata), failures, FetchStats())
    except (pa.ArrowException, KeyError, TypeError, ValueError):
        return None


def _hrefs(batch: list[SceneRecord]) -> list[str]:
    """The distinct assets of ``batch`` (a multi-band asset is read once)."""
    return list(dict.fromkeys(s.href for r in batch for s in r.bands.values() if s))


def _scene_failures(record: SceneRecord, parsed: dict[str, Any],
                    bands: dict[str, Any]) -> list[IndexFailure]:
    """Fill ``bands`` with the band records of ``record`` from ``parsed`` (href ->
    header or error) and return its failures."""
    failures = []
    for band, source in record.bands.items():
        if source is None:
            failures.append(IndexFailure(record.id, band, "", "MissingAsset",
                                         f"scene {record.id} has no asset for band {band!r}"))
            continue
        result = parsed[source.href]
        try:
            if isinstance(result, BaseException):
                raise result
            bands[band] = band_record(result, source.href, source.band_index)
        except RasteretError as exc:
            failures.append(
                IndexFailure(record.id, band, source.href, type(exc).__name__, str(exc)))
    return failures


def index_batch(
    batch: list[SceneRecord],
    *,
    backend: Backend,
    max_concurrent: int,
    stats: FetchStats | None,
) -> tuple[list[SceneRecord], list[dict[str, Any]], list[IndexFailure]]:
    """Index the headers of one batch of scenes (each href read once, concurrently).

    Returns:
        The scenes kept, their band records (parallel to the scenes), and the assets
        that failed (a scene with a failed band is left out).
    """
    parsed = run_sync(index_hrefs(_hrefs(batch), backend=backend,
                                  max_concurrent=max_concurrent, stats=stats))
    kept: list[SceneRecord] = []
    kept_bands: list[dict[str, Any]] = []
    failures: list[IndexFailure] = []
    for record in batch:
        bands: dict[str, Any] = {}
        scene_failures = _scene_failures(record, parsed, bands)
        if scene_failures:
            failures.extend(scene_failures)
        else:
            kept.append(record)
            kept_bands.append(bands)
    return kept, kept_bands, failures


def index_task(task: TaskRef, *, area: TaskArea, backend: Backend, on_error: OnError,
               max_concurrent: int = DEFAULT_MAX_CONCURRENT,
               valid_coverage: ValidCoverage | None = "geometry") -> TaskOutcome:
    """Index one task's scenes, read from ``area``, and store them as a batch there
    (runs on a worker).

    A batch already in ``area`` for this task is reused. With ``on_error="raise"`` a
    task with failures writes no batch, so a re-run tries its scenes again.

    ``valid_coverage`` adds each scene's valid-data coverage (see
    :mod:`rasteret.ingest.coverage`; None: none).

    Returns:
        Counts, the batch's schema and the failures (never the rows).

    Raises:
        ForkAfterIOError: The worker was forked after its parent did I/O.
        AccessDeniedError: The backend may not write the workspace.
        CollectionConflictError: The task's scenes are gone: another build of the
            same collection finished and cleared the task area.
    """
    check_process()
    found = area.get(batch_name(task.key))
    if found is not None:
        outcome = _outcome_of_batch(found, task)
        if outcome is not None:
            return outcome
    data = area.get(scenes_name(task.key))
    if data is None:
        raise CollectionConflictError(
            f"the scenes of task {task.key} are gone from the build's task area: another "
            "build of the same collection finished and removed them; load that "
            "collection, or run this build again")
    records = records_from_json(data)
    stats = FetchStats()
    kept, kept_bands, failures = index_batch(
        records, backend=backend, max_concurrent=max_concurrent, stats=stats)
    if failures and on_error == "raise":
        return TaskOutcome(task.key, 0, task.assets, None, failures, stats)
    bands = {band for record in records for band in record.bands}
    table = records_to_table(kept, kept_bands)
    if valid_coverage is not None:
        table = with_coverage(table, [r.geometry for r in kept], valid_coverage=valid_coverage,
                              backend=backend, max_concurrent=max_concurrent, stats=stats)
    # The coverage keeps its type even where no scene of the batch has one.
    table = _nulls_untyped(table, bands | {COVERAGE_COLUMN})
    recorded = {"key": task.key, "scenes": table.num_rows,
                "failures": [dataclasses.asdict(f) for f in failures]}
    schema = table.schema
    area.put(batch_name(task.key), parquet_bytes(table.replace_schema_metadata(
        {**(schema.metadata or {}), TASK_KEY: json.dumps(recorded).encode()})))
    return TaskOutcome(task.key, table.num_rows, task.assets, schema, failures, stats)


def staged(area: TaskArea, tasks: Iterable[IndexTask]) -> Iterator[TaskRef]:
    """Write each task's scenes into ``area`` and yield its reference once they are
    there, in order, with up to :data:`STAGED_AHEAD` writes at once (on an object
    store a write is a round trip: one at a time, the driver would wait on them)."""
    pending: deque[tuple[TaskRef, Future[None]]] = deque()

    def oldest() -> TaskRef:
        ref, written = pending.popleft()
        written.result()  # raises the write's error
        return ref

    with ThreadPoolExecutor(STAGED_AHEAD, thread_name_prefix="rasteret-stage") as writers:
        for task in tasks:
            pending.append((task.ref, writers.submit(area.put, scenes_name(task.key),
                                                     task.scenes)))
            # A task goes out as soon as its scenes are written; the driver waits on
            # a write only when STAGED_AHEAD of them are under way.
            while pending and (len(pending) >= STAGED_AHEAD or pending[0][1].done()):
                yield oldest()
        while pending:
            yield oldest()
