"""The options of one build: what the build verbs take beside their source, handed
whole to the build engine (:mod:`rasteret.ingest.builder`)."""

from __future__ import annotations

import os
from concurrent.futures import Executor
from dataclasses import dataclass

from rasteret.ingest.indexer import DEFAULT_MAX_CONCURRENT
from rasteret.io.backend import Backend
from rasteret.io.fetch import FetchStats
from rasteret.options import OnError, ValidCoverage

#: Assets per task: a few hundred headers keep a worker's connections busy (a task
#: parses up to ``max_concurrent`` at once) while a lost task costs little.
DEFAULT_BATCH_SIZE = 500


@dataclass(frozen=True)
class BuildOptions:
    """How a build indexes its scenes and saves them as a collection.

    :func:`rasteret.build`, :func:`rasteret.build_from_stac` and
    :func:`rasteret.build_from_table` take these as keyword arguments.

    Attributes:
        name: The collection's name in the workspace.
        backend: How to reach the stores (default: anonymous / environment
            credentials).
        workspace_dir: The workspace (default ``$RASTERET_WORKSPACE`` or
            ``~/.rasteret/collections``): a local folder or an object-store URL
            (``s3://bucket/prefix``, ``az://container/prefix``, ``gs://...``) written
            through ``backend``.
        force: Rebuild even if a collection with that name exists. Without it, a
            concurrent build that publishes the same name first wins and its
            collection is returned.
        on_error: ``"raise"`` stops with :class:`~rasteret.errors.IndexingError` when
            an asset fails (finished batches are kept, so a re-run resumes);
            ``"skip"`` leaves failed scenes out and records every failure in
            ``collection.failures``.
        max_concurrent: Headers in flight at once: per task with ``executor``; in
            all without it (shared by the tasks running at once in this process).
        progress: Show a progress bar of the assets indexed (see
            :mod:`rasteret.progress`; ``RASTERET_PROGRESS=0`` hides it too).
        stats: Optional counter of requests and bytes.
        executor: Run the build's tasks on this :class:`concurrent.futures.Executor`
            (e.g. ``distributed.Client(...).get_executor()``, or a
            ``ProcessPoolExecutor`` with a ``spawn`` or ``forkserver`` context): tasks
            of ``batch_size`` assets index and write their own batches and parts into
            the workspace, and this process publishes (see
            :mod:`rasteret.ingest.builder`). Default: the same tasks run in this
            process (:class:`~rasteret.ingest.executor.InProcessExecutor`).
        batch_size: Assets per task (whole scenes: a task may hold a few more). A
            killed build resumes from its finished tasks when run again with the same
            ``batch_size``, on any executor.
        valid_coverage: What the build records of each scene's valid data (the
            ``valid_coverage`` column samplers filter chips by, see
            :mod:`rasteret.coverage`): ``"geometry"`` (default) from the item's
            geometry and the sparse tiles of the tile tables, at no request;
            ``"overview"`` also reads each asset's smallest overview once (one ranged
            request per asset, usually a few kB; the only source that sees nodata
            margins inside the raster); None records nothing.
    """

    name: str
    backend: Backend | None = None
    workspace_dir: str | os.PathLike[str] | None = None
    force: bool = False
    on_error: OnError = "raise"
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    progress: bool = True
    stats: FetchStats | None = None
    executor: Executor | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    valid_coverage: ValidCoverage | None = "geometry"
