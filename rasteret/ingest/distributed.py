"""Builds on an executor: the driver streams the scenes into tasks, the workers index
and write, the driver commits.

Any :class:`concurrent.futures.Executor` runs the tasks: a Dask cluster's
``Client.get_executor()``, a ``ProcessPoolExecutor`` (with a ``spawn`` or
``forkserver`` context: obstore hangs in a child forked after its parent did I/O),
or a ``ThreadPoolExecutor``. rasteret never imports dask.

1. The driver consumes the scenes (a STAC search page by page, or a table) and cuts
   them into tasks of about ``batch_size`` assets, keeping at most
   :data:`TASKS_IN_FLIGHT` tasks submitted at once. It writes each task's scenes into
   the workspace's task area (``.<name>.tasks/`` beside a local collection,
   ``_rasteret/builds/<name>/`` on an object store; :data:`STAGED_AHEAD` writes at
   once, see :func:`staged`) and submits only a
   :class:`TaskRef`, its key and size: Dask's streams keep their last messages for
   debugging (in the client and, on a ``LocalCluster``, in the scheduler within this
   process), so scenes sent inline would stay in the driver. Its memory does not grow
   with the number of assets (it keeps, per task, its key and row count, and the
   failures).
2. Each task (:func:`index_task`) rebuilds the backend from its pickled description
   (credential providers included), reads its scenes from the task area, parses
   their headers, and writes its scenes as one Parquet batch beside them. A task's key is a
   digest of its scenes: a task whose batch is already there (a re-run after a
   failure, or a retry of a task whose worker died) reads that batch's footer
   instead of indexing again. It returns counts, the batch's schema and the
   failures, never the rows.
3. The driver merges the schemas (properties may differ between pages) and sends
   out part tasks (:func:`write_part`): each reads a few consecutive batches,
   conforms them to the merged schema, sorts them by time and id, attaches the
   collection's metadata and writes one part of a workspace draft
   (:meth:`rasteret.workspace.LocalWorkspace.draft`,
   :meth:`rasteret.workspace.ObjectWorkspace.draft`), the same parts and publication
   protocol as a build in one process.
4. The driver commits the draft (a rename of the staging folder, or the manifest
   written last on an object store) and removes the batches.

The collection holds the same rows and columns as a build in one process; rows are
sorted by time and id within each part, parts follow the search's order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rasteret.collection import Collection
from rasteret.errors import (
    CollectionConflictError,
    ConfigurationError,
    ForkAfterIOError,
    IndexingError,
    NoScenesError,
)
from rasteret.ingest.build_options import BuildOptions
from rasteret.ingest.builder import index_batch, open_build
from rasteret.ingest.indexer import DEFAULT_MAX_CONCURRENT, IndexFailure
from rasteret.ingest.records import (
    SceneRecord,
    records_from_json,
    records_to_json,
    records_to_table,
)
from rasteret.io.backend import Backend
from rasteret.io.fetch import FetchStats
from rasteret.io.runtime import ensure_io_allowed
from rasteret.loading import load
from rasteret.options import OnError
from rasteret.progress import progress_bar
from rasteret.schema import BASE_FIELDS
from rasteret.storage import FAILURE_SCHEMA, ROWS_PER_PART, parquet_bytes, with_metadata
from rasteret.workspace import Draft, TaskArea

log = logging.getLogger("rasteret")

#: Tasks submitted and not yet finished, at most.
TASKS_IN_FLIGHT = 64
#: Tasks whose scenes the driver writes into the task area at once.
STAGED_AHEAD = 8
#: Footer key of a batch: its task's key, counts and failures (JSON).
TASK_KEY = b"rasteret:task"
#: Changes when a batch's content would change for the same scenes (invalidates
#: batches left by an older rasteret).
TASK_FORMAT = 2

A = TypeVar("A")
T = TypeVar("T")


@dataclass(frozen=True)
class IndexTask:
    """One task of a distributed build: a run of scenes and their key.

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
        resumed: The batch was found finished and not indexed again.
        stats: Requests, bytes and retries of the indexing.
    """

    key: str
    scenes: int
    assets: int
    schema: pa.Schema | None
    failures: list[IndexFailure]
    resumed: bool
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


def _check_process() -> None:
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
    same column of another batch takes that batch's type (a build in one process
    types a property only from the values it sees)."""
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
                           schema.with_metadata(metadata), failures, True, FetchStats())
    except (pa.ArrowException, KeyError, TypeError, ValueError):
        return None


def index_task(task: TaskRef, *, area: TaskArea, backend: Backend, on_error: OnError,
               max_concurrent: int = DEFAULT_MAX_CONCURRENT) -> TaskOutcome:
    """Index one task's scenes, read from ``area``, and store them as a batch there
    (runs on a worker).

    A batch already in ``area`` for this task is reused. With ``on_error="raise"`` a
    task with failures writes no batch, so a re-run tries its scenes again.

    Returns:
        Counts, the batch's schema and the failures (never the rows).

    Raises:
        ForkAfterIOError: The worker was forked after its parent did I/O.
        AccessDeniedError: The backend may not write the workspace.
        CollectionConflictError: The task's scenes are gone: another build of the
            same collection finished and cleared the task area.
    """
    _check_process()
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
        return TaskOutcome(task.key, 0, task.assets, None, failures, False, stats)
    bands = {band for record in records for band in record.bands}
    table = _nulls_untyped(records_to_table(kept, kept_bands), bands)
    recorded = {"key": task.key, "scenes": table.num_rows,
                "failures": [dataclasses.asdict(f) for f in failures]}
    schema = table.schema
    area.put(batch_name(task.key), parquet_bytes(table.replace_schema_metadata(
        {**(schema.metadata or {}), TASK_KEY: json.dumps(recorded).encode()})))
    return TaskOutcome(task.key, table.num_rows, task.assets, schema, failures, False, stats)


_NUMBERS = {pa.int64(), pa.float64()}
_SCALARS = {pa.bool_(), pa.int64(), pa.float64(), pa.string()}


def _merged_type(name: str, current: pa.DataType, other: pa.DataType) -> pa.DataType:
    """The type of column ``name`` over two batches, as one process would have typed
    the values of both (ints and floats: float; other mixed scalars: text)."""
    if current == other or pa.types.is_null(other):
        return current
    if pa.types.is_null(current):
        return other
    if {current, other} <= _NUMBERS:
        return pa.float64()
    if {current, other} <= _SCALARS:
        return pa.string()
    raise ConfigurationError(
        f"column {name!r} has type {current} in some scenes and {other} in others")


def merge_schemas(current: pa.Schema | None, other: pa.Schema) -> pa.Schema:
    """``current`` widened by the columns and types of ``other`` (columns in order of
    first appearance, as concatenating the batches in one process gives)."""
    if current is None:
        return other
    fields = {field.name: field for field in current}
    for field in other:
        if field.name in fields:
            merged = _merged_type(field.name, fields[field.name].type, field.type)
            fields[field.name] = fields[field.name].with_type(merged)
        else:
            fields[field.name] = field
    return pa.schema(list(fields.values()))


def _final_schema(schema: pa.Schema) -> pa.Schema:
    """Columns without a value in any batch are booleans, as in one process."""
    return pa.schema([field.with_type(pa.bool_()) if pa.types.is_null(field.type) else field
                      for field in schema])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly the columns and types of ``schema`` (absent: nulls)."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            if column.type != field.type:
                column = (pa.nulls(len(column), field.type) if pa.types.is_null(column.type)
                          else pc.cast(column, field.type))
            columns.append(column)
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.table(columns, schema=schema.remove_metadata())


def write_part(draft: Draft, part: tuple[int, list[str]], *, area: TaskArea,
               schema: pa.Schema, manifest: dict[str, Any],
               failures: pa.Table) -> list[dict[str, Any]]:
    """Write part ``index`` of ``draft`` from the batches ``keys`` (``part`` is
    ``(index, keys)``; runs on a worker): conformed to ``schema``, sorted by time and
    id, with the collection's metadata (part 0 also with ``failures``).

    Returns:
        The part's entry (path, rows, size), in a list.

    Raises:
        ForkAfterIOError: The worker was forked after its parent did I/O.
        CollectionConflictError: A batch is gone: another build of the same
            collection finished and removed it.
    """
    _check_process()
    index, keys = part
    tables = []
    for key in keys:
        data = area.get(batch_name(key))
        if data is None:
            raise CollectionConflictError(
                f"batch {key} of this build is gone from its task area: another build of "
                f"collection {manifest.get('name')!r} finished and removed it; load that "
                "collection, or run this build again")
        tables.append(_conform(pq.read_table(pa.BufferReader(data)), schema))
    table = pa.concat_tables(tables).sort_by([("datetime", "ascending"), ("id", "ascending")])
    return draft.write_parts({index: with_metadata(table, manifest,
                                                   failures if index == 0 else None)})


def _run(executor: Executor, task: Callable[[A], T], arguments: Iterable[A],
         collect: Callable[[int, T], None]) -> int:
    """Run ``task`` on each of ``arguments`` (consumed lazily) with at most
    TASKS_IN_FLIGHT tasks pending, passing each result with its argument's number to
    ``collect`` as it arrives.

    On the first error, the pending tasks are cancelled and the error is raised.

    Returns:
        The number of tasks run.
    """
    pending: dict[Future[T], int] = {}

    def drain(until: int) -> None:
        while len(pending) > until:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                collect(pending.pop(future), future.result())

    count = 0
    try:
        for number, argument in enumerate(arguments):
            drain(TASKS_IN_FLIGHT - 1)
            # One positional argument: executors that take keywords of their own
            # (Dask's submit has workers=, retries=...) never see ours.
            pending[executor.submit(task, argument)] = number
            count = number + 1
        drain(0)
    except BaseException:
        for future in pending:
            future.cancel()
        raise
    return count


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


def _group(rows: list[tuple[str, int]]) -> list[list[str]]:
    """Consecutive batches (key, rows) in parts of at most ROWS_PER_PART rows (a
    larger batch makes a part of its own); empty batches are left out."""
    groups: list[list[str]] = []
    size = ROWS_PER_PART
    for key, count in rows:
        if not count:
            continue
        if size + count > ROWS_PER_PART:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += count
    return groups


def build_collection_on(
    records: Iterable[SceneRecord],
    *,
    manifest: dict[str, Any],
    options: BuildOptions,
) -> Collection:
    """Index ``records`` on ``options.executor`` and save them as the collection
    ``options.name``.

    The driver (this process) streams ``records`` into tasks and commits; the tasks
    index and write (see the module's docstring). A re-run after a failure skips the
    tasks whose batches are finished.

    Args:
        records: The scenes, consumed lazily (a generator is fine).
        manifest: Build information stored with the collection (no secrets).
        options: The build's name, workspace and indexing options; ``executor`` runs
            the tasks (any :class:`concurrent.futures.Executor`), ``batch_size``
            assets each, ``max_concurrent`` headers at once in each.

    Returns:
        The saved collection.

    Raises:
        NoScenesError: ``records`` is empty, or no scene could be indexed.
        IndexingError: Some assets failed and ``on_error="raise"``.
        ConfigurationError: No ``executor``, ``batch_size`` is not positive, or scene
            ids repeat.
        ForkAfterIOError: The executor's workers were forked after this process did
            I/O (use spawn or forkserver workers).
        CollectionConflictError: With ``force=True`` on an object store, another
            build replaced the collection while this one was writing.
        AccessDeniedError: The backend may not write the workspace.
    """
    name, force, on_error = options.name, options.force, options.on_error
    max_concurrent, progress, stats = options.max_concurrent, options.progress, options.stats
    executor, batch_size = options.executor, options.batch_size
    if executor is None:
        raise ConfigurationError(f"build_collection_on({name!r}) needs options.executor; "
                                 "build_collection indexes in this process")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive number of assets, "
                                 f"not {batch_size!r}")
    backend, workspace, existing = open_build(options)
    if existing is not None:
        return existing
    area = workspace.task_area(name)

    # Per task only its key and row count stay on the driver, plus the failures.
    rows: list[tuple[str, int]] = []
    failures: list[IndexFailure] = []
    bands: dict[str, None] = {}
    merged: pa.Schema | None = None
    bar = progress_bar(desc=f"Indexing {name}", unit="asset", progress=progress)

    def tasks() -> Iterator[IndexTask]:
        for task in make_tasks(records, batch_size):
            rows.append((task.key, 0))
            bands.update((band, None) for record in task.records for band in record.bands)
            yield task

    def collect(number: int, outcome: TaskOutcome) -> None:
        nonlocal merged
        rows[number] = (outcome.key, outcome.scenes)
        failures.extend(outcome.failures)
        if outcome.schema is not None:
            merged = merge_schemas(merged, outcome.schema)
        if stats is not None:
            stats.requests += outcome.stats.requests
            stats.bytes += outcome.stats.bytes
            stats.retries += outcome.stats.retries
        bar.update(outcome.assets)
        if outcome.failures:
            bar.set_postfix(failed=len(failures), refresh=False)
        if outcome.failures and on_error == "raise":
            raise IndexingError(failures)

    try:
        count = _run(executor, partial(index_task, area=area, backend=backend,
                                       on_error=on_error, max_concurrent=max_concurrent),
                     staged(area, tasks()), collect)
    finally:
        bar.close()
    if not count:
        raise NoScenesError(
            f"no scenes to index for collection {name!r} (source: {manifest.get('source')}); "
            "widen the bbox or date range, or check the query")
    scenes = sum(count for _, count in rows)
    if not scenes or merged is None:
        raise IndexingError(failures) if failures else NoScenesError(
            f"no scene of {name!r} could be indexed")
    schema = _final_schema(merged)
    failures_table = pa.Table.from_pylist([f.as_row() for f in failures], schema=FAILURE_SCHEMA)
    manifest = {
        **manifest,
        "name": name,
        "bands": [f.name for f in schema if f.name in bands],
        "created": dt.datetime.now(dt.UTC).isoformat(),
        "scenes": scenes,
        "failures": failures_table.num_rows,
    }
    groups = _group(rows)
    draft = workspace.draft(name, replace=force)
    entries: list[list[dict[str, Any]]] = [[] for _ in groups]

    def collect_part(index: int, written: list[dict[str, Any]]) -> None:
        entries[index] = written

    try:
        _run(executor, partial(write_part, draft, area=area, schema=schema,
                               manifest=manifest, failures=failures_table),
             enumerate(groups), collect_part)
    except BaseException:
        draft.discard(len(groups))
        raise
    try:
        draft.commit([entry for part in entries for entry in part], scenes=scenes)
    except CollectionConflictError:
        if force:
            raise
        # As in one process: without force= the build that published first wins.
        log.info("collection %s was published by another build first; loading it", name)
    area.clear()
    if failures_table.num_rows:
        warnings.warn(
            f"collection {name!r}: {failures_table.num_rows} asset(s) could not be indexed "
            "and were left out; see collection.failures",
            stacklevel=2,
        )
    return load(name, workspace_dir=options.workspace_dir, backend=backend)
