"""From scene records to a saved collection: one build engine for every executor.

Any :class:`concurrent.futures.Executor` runs a build's tasks: a Dask cluster's
``Client.get_executor()``, a ``ProcessPoolExecutor`` (with a ``spawn`` or
``forkserver`` context: obstore hangs in a child forked after its parent did I/O), a
``ThreadPoolExecutor``, or, when none is given, an
:class:`~rasteret.ingest.executor.InProcessExecutor` in this process. rasteret never
imports dask.

1. The driver (this process) consumes the scenes (a STAC search page by page, or a
   table) and cuts them into tasks of about ``batch_size`` assets, with at most
   :data:`TASKS_IN_FLIGHT` tasks submitted at once; each goes out by reference
   through the build's task area (see :mod:`rasteret.ingest.tasks`). Its memory does
   not grow with the number of assets: per task it keeps its key and row count, and
   it keeps the failures and an 8-byte digest per scene id (to refuse repeats).
2. The tasks index their scenes and write them as batches into the task area; a
   re-run of a build that failed or was killed, on any executor, skips the tasks
   whose batches are there.
3. The driver merges the batches' schemas (properties may differ between pages) and
   sends out part tasks (:mod:`rasteret.ingest.parts`) that write the parts of a
   workspace draft.
4. It commits the draft (a rename of the staging folder, or the manifest written
   last on an object store), removes the task area and reports the failures.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from array import array
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from rasteret import storage
from rasteret.collection import Collection
from rasteret.errors import (
    CollectionConflictError,
    ConfigurationError,
    IndexingError,
    NoScenesError,
    warn_user,
)
from rasteret.ingest.build_options import BuildOptions
from rasteret.ingest.coverage import check_valid_coverage
from rasteret.ingest.executor import IN_PROCESS_TASKS, InProcessExecutor
from rasteret.ingest.indexer import IndexFailure
from rasteret.ingest.parts import BatchSlice, final_schema, merge_schemas, plan_parts, write_part
from rasteret.ingest.records import SceneRecord
from rasteret.ingest.tasks import IndexTask, TaskOutcome, index_task, make_tasks, staged
from rasteret.io.backend import Backend, default_backend
from rasteret.io.fetch import FetchStats
from rasteret.loading import load
from rasteret.options import ON_ERROR, OnError, check_option
from rasteret.progress import ProgressBar, grow, progress_bar
from rasteret.workspace import TaskArea, Workspace, open_workspace

log = logging.getLogger("rasteret")

#: Tasks submitted and not yet finished, at most.
TASKS_IN_FLIGHT = 64

A = TypeVar("A")
T = TypeVar("T")


def open_build(options: BuildOptions) -> tuple[Backend, Workspace, Collection | None]:
    """Check ``options`` and open the workspace of the build they describe.

    Returns:
        The backend (the default one when ``options`` name none), the workspace, and
        the collection saved under ``options.name`` when the build has nothing to do
        (it exists and ``force`` is off), else None.

    Raises:
        ConfigurationError: ``on_error`` or ``valid_coverage`` is not an option, or
            ``batch_size`` is not a positive number.
    """
    check_option("on_error", options.on_error, ON_ERROR)
    check_valid_coverage(options.valid_coverage)
    batch_size = options.batch_size
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive number of assets, "
                                 f"not {batch_size!r}")
    backend = options.backend or default_backend()
    workspace = open_workspace(options.workspace_dir, backend)
    if not options.force and workspace.exists(options.name):
        return backend, workspace, load(options.name, workspace_dir=options.workspace_dir,
                                        backend=backend)
    return backend, workspace, None


def run_tasks(executor: Executor, task: Callable[[A], T], arguments: Iterable[A],
              collect: Callable[[int, T], None], *, in_flight: int | None = None) -> int:
    """Run ``task`` on each of ``arguments`` (consumed lazily) with at most
    ``in_flight`` (default :data:`TASKS_IN_FLIGHT`) tasks pending, passing each
    result with its argument's number to ``collect`` as it arrives.

    On the first error, the pending tasks are cancelled and the error is raised.

    Returns:
        The number of tasks run.
    """
    limit = TASKS_IN_FLIGHT if in_flight is None else in_flight
    pending: dict[Future[T], int] = {}

    def drain(until: int) -> None:
        while len(pending) > until:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                collect(pending.pop(future), future.result())

    count = 0
    try:
        for number, argument in enumerate(arguments):
            drain(limit - 1)
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


def _id_digest(scene_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(scene_id.encode(), digest_size=8).digest(), "little")


@dataclass
class Ledger:
    """What the driver keeps of a build while its tasks run: small per task.

    Attributes:
        bar: The build's progress bar (its total grows as tasks are made).
        on_error: The build's error policy.
        stats: The caller's counter of requests and bytes, if any.
        rows: Per task, in order: its key and the scenes of its batch.
        failures: The assets that could not be indexed.
        bands: The bands of the scenes, in order of appearance.
        schema: The batches' schemas merged so far.
        ids: A digest of every scene id (to refuse repeated ids).
    """

    bar: ProgressBar
    on_error: OnError
    stats: FetchStats | None
    rows: list[tuple[str, int]] = field(default_factory=list)
    failures: list[IndexFailure] = field(default_factory=list)
    bands: dict[str, None] = field(default_factory=dict)
    schema: pa.Schema | None = None
    ids: array[int] = field(default_factory=lambda: array("Q"))

    def tasks(self, records: Iterable[SceneRecord], batch_size: int) -> Iterator[IndexTask]:
        """The tasks of ``records``, noted here as they are made.

        Raises:
            ConfigurationError: A scene id repeats (checked once the source is read).
        """
        for task in make_tasks(records, batch_size):
            self.rows.append((task.key, 0))
            for record in task.records:
                self.bands.update((band, None) for band in record.bands)
                self.ids.append(_id_digest(record.id))
            grow(self.bar, task.assets)
            yield task
        if len(np.unique(np.frombuffer(self.ids, np.uint64))) != len(self.ids):
            raise ConfigurationError("scene ids are not unique in the source")

    def collect(self, number: int, outcome: TaskOutcome) -> None:
        """Note the outcome of task ``number``.

        Raises:
            IndexingError: It has failures and ``on_error="raise"``.
        """
        self.rows[number] = (outcome.key, outcome.scenes)
        self.failures.extend(outcome.failures)
        if outcome.schema is not None:
            self.schema = merge_schemas(self.schema, outcome.schema)
        if self.stats is not None:
            self.stats.requests += outcome.stats.requests
            self.stats.bytes += outcome.stats.bytes
            self.stats.retries += outcome.stats.retries
        self.bar.update(outcome.assets)
        if outcome.failures:
            self.bar.set_postfix(failed=len(self.failures), refresh=False)
        if outcome.failures and self.on_error == "raise":
            raise IndexingError(self.failures)

    @property
    def scenes(self) -> int:
        """Scenes written to batches."""
        return sum(count for _, count in self.rows)

    def failures_table(self) -> pa.Table:
        """The failures as the collection stores them (``collection.failures``)."""
        return pa.Table.from_pylist([f.as_row() for f in self.failures],
                                    schema=storage.FAILURE_SCHEMA)


def build_collection(
    records: Iterable[SceneRecord],
    *,
    manifest: dict[str, Any],
    options: BuildOptions,
) -> Collection:
    """Index ``records`` on ``options.executor`` (default: in this process) and save
    them as the collection ``options.name``.

    A re-run after a failure, on any executor, skips the tasks whose batches are
    finished (see the module's docstring).

    Args:
        records: The scenes, consumed lazily (a generator is fine).
        manifest: Build information stored with the collection (no secrets).
        options: The build's name, workspace and indexing options: ``executor`` runs
            the tasks (any :class:`concurrent.futures.Executor`; none: an
            :class:`~rasteret.ingest.executor.InProcessExecutor`), ``batch_size``
            assets each.

    Returns:
        The saved collection.

    Raises:
        NoScenesError: ``records`` is empty, or no scene could be indexed.
        IndexingError: Some assets failed and ``on_error="raise"``.
        ConfigurationError: ``on_error`` is not an option, ``batch_size`` is not
            positive, or scene ids repeat.
        ForkAfterIOError: The executor's workers were forked after this process did
            I/O (use spawn or forkserver workers).
        CollectionConflictError: With ``force=True`` on an object store, another
            build replaced the collection while this one was writing.
        AccessDeniedError: The backend may not write the workspace.
    """
    backend, workspace, existing = open_build(options)
    if existing is not None:
        return existing
    if options.executor is not None:
        _build_on(options.executor, records, manifest, options, backend, workspace,
                  max_concurrent=options.max_concurrent, parts_at_once=None)
    else:
        with InProcessExecutor(IN_PROCESS_TASKS) as executor:
            # Parts one at a time: a part is the largest thing a task holds, and here
            # every task's memory is this process's.
            _build_on(executor, records, manifest, options, backend, workspace,
                      max_concurrent=executor.share_of(options.max_concurrent),
                      parts_at_once=1)
    return load(options.name, workspace_dir=options.workspace_dir, backend=backend)


def _build_on(executor: Executor, records: Iterable[SceneRecord], manifest: dict[str, Any],
              options: BuildOptions, backend: Backend, workspace: Workspace, *,
              max_concurrent: int, parts_at_once: int | None) -> None:
    """Index ``records`` on ``executor`` (``max_concurrent`` headers per task) and
    publish them (``parts_at_once`` part tasks pending at most; None: as many as
    index tasks), reporting the failures."""
    name = options.name
    area = workspace.task_area(name)
    ledger = Ledger(progress_bar(desc=f"Indexing {name}", unit="asset",
                                 progress=options.progress), options.on_error, options.stats)
    try:
        count = run_tasks(executor, partial(index_task, area=area, backend=backend,
                                            on_error=options.on_error,
                                            max_concurrent=max_concurrent,
                                            valid_coverage=options.valid_coverage),
                          staged(area, ledger.tasks(records, options.batch_size)),
                          ledger.collect)
    finally:
        ledger.bar.close()
    if not count:
        raise NoScenesError(
            f"no scenes to index for collection {name!r} (source: {manifest.get('source')}); "
            "widen the bbox or date range, or check the query")
    if not ledger.scenes or ledger.schema is None:
        raise IndexingError(ledger.failures) if ledger.failures else NoScenesError(
            f"no scene of {name!r} could be indexed")
    failures = ledger.failures_table()
    schema = final_schema(ledger.schema)
    manifest = {
        **manifest,
        "name": name,
        "bands": [f.name for f in schema if f.name in ledger.bands],
        "created": dt.datetime.now(dt.UTC).isoformat(),
        "scenes": ledger.scenes,
        "failures": failures.num_rows,
    }
    _publish(executor, workspace, area, plan_parts(ledger.rows, storage.ROWS_PER_PART),
             schema=schema, manifest=manifest, failures=failures, force=options.force,
             parts_at_once=parts_at_once)
    area.clear()
    report_failures(name, failures)


def _publish(executor: Executor, workspace: Workspace, area: TaskArea,
             parts: list[list[BatchSlice]], *, schema: pa.Schema, manifest: dict[str, Any],
             failures: pa.Table, force: bool, parts_at_once: int | None) -> None:
    """Write ``parts`` from the batches in ``area`` as a draft of ``workspace`` (on
    ``executor``, ``parts_at_once`` pending at most) and commit it."""
    name = manifest["name"]
    draft = workspace.draft(name, replace=force)
    entries: list[list[dict[str, Any]]] = [[] for _ in parts]

    def collect(index: int, written: list[dict[str, Any]]) -> None:
        entries[index] = written

    try:
        run_tasks(executor, partial(write_part, draft, area=area, schema=schema,
                                    manifest=manifest, failures=failures),
                  enumerate(parts), collect, in_flight=parts_at_once)
    except BaseException:
        draft.discard(len(parts))
        raise
    try:
        draft.commit([entry for part in entries for entry in part],
                     scenes=int(manifest["scenes"]))
    except CollectionConflictError:
        if force:
            raise
        # Without force= an existing collection is loaded rather than rebuilt, so a
        # build that another one beat to publishing yields to it.
        log.info("collection %s was published by another build first; loading it", name)


def report_failures(name: str, failures: pa.Table) -> None:
    """Warn, once per build, that ``failures`` were left out of collection ``name``."""
    if failures.num_rows:
        warn_user(
            f"collection {name!r}: {failures.num_rows} asset(s) could not be indexed "
            "and were left out; see collection.failures")
