"""From scene records to a saved collection: index in batches, resume, publish atomically.

Progress is kept in a private ``.<name>.partial`` folder next to the collection (for
an object-store workspace, in a local temporary folder): each finished batch of
scenes is one Parquet file there, so a killed build loses at most one batch and a
re-run skips what is done. The collection is published only once everything is
written (see :mod:`rasteret.workspace`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rasteret.atomic import write_atomic
from rasteret.collection import Collection
from rasteret.errors import (
    CollectionConflictError,
    ConfigurationError,
    IndexingError,
    NoScenesError,
    RasteretError,
    warn_user,
)
from rasteret.ingest.build_options import BuildOptions
from rasteret.ingest.indexer import IndexFailure, band_record, index_hrefs
from rasteret.ingest.records import SceneRecord, records_to_table
from rasteret.io.backend import Backend, default_backend
from rasteret.io.fetch import FetchStats
from rasteret.io.runtime import run_sync
from rasteret.loading import load
from rasteret.options import ON_ERROR, check_option
from rasteret.progress import ProgressBar, progress_bar
from rasteret.storage import FAILURE_SCHEMA, PARQUET_OPTIONS
from rasteret.workspace import Workspace, open_workspace

log = logging.getLogger("rasteret")

BATCH_SCENES = 2000

def _fingerprint(records: list[SceneRecord]) -> str:
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: r.id):
        digest.update(record.id.encode())
        for band, source in sorted(record.bands.items()):
            where = f"{source.href}#{source.band_index}" if source else "-"
            digest.update(f"{band}={where}".encode())
    return digest.hexdigest()


def _hrefs(batch: list[SceneRecord]) -> list[str]:
    """The distinct assets of ``batch`` (a multi-band asset is read once)."""
    return list(dict.fromkeys(s.href for r in batch for s in r.bands.values() if s))


def _write_atomic(table: pa.Table, path: Path) -> None:
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, **PARQUET_OPTIONS))


def index_batch(
    batch: list[SceneRecord],
    *,
    backend: Backend,
    max_concurrent: int,
    stats: FetchStats | None,
    bar: ProgressBar | None = None,
) -> tuple[list[SceneRecord], list[dict[str, Any]], list[IndexFailure]]:
    """Index the headers of one batch of scenes (each href read once, concurrently).

    Args:
        bar: Count the assets on this bar (the build's); none: no bar.

    Returns:
        The scenes kept, their band records (parallel to the scenes), and the assets
        that failed (a scene with a failed band is left out).
    """
    hrefs = _hrefs(batch)
    parsed = run_sync(
        index_hrefs(
            hrefs, backend=backend, max_concurrent=max_concurrent, progress=False, stats=stats,
            bar=bar,
        )
    )
    kept: list[SceneRecord] = []
    kept_bands: list[dict[str, Any]] = []
    failures: list[IndexFailure] = []
    for record in batch:
        bands: dict[str, Any] = {}
        scene_failures = []
        for band, source in record.bands.items():
            if source is None:
                scene_failures.append(
                    IndexFailure(record.id, band, "", "MissingAsset",
                                 f"scene {record.id} has no asset for band {band!r}")
                )
                continue
            result = parsed[source.href]
            try:
                if isinstance(result, BaseException):
                    raise result
                bands[band] = band_record(result, source.href, source.band_index)
            except RasteretError as exc:
                scene_failures.append(
                    IndexFailure(record.id, band, source.href, type(exc).__name__, str(exc))
                )
        if scene_failures:
            failures.extend(scene_failures)
        else:
            kept.append(record)
            kept_bands.append(bands)
    return kept, kept_bands, failures


def open_build(options: BuildOptions) -> tuple[Backend, Workspace, Collection | None]:
    """Check ``options`` and open the workspace of the build they describe.

    Returns:
        The backend (the default one when ``options`` name none), the workspace, and
        the collection saved under ``options.name`` when the build has nothing to do
        (it exists and ``force`` is off), else None.

    Raises:
        ConfigurationError: ``on_error`` is not an option.
    """
    check_option("on_error", options.on_error, ON_ERROR)
    backend = options.backend or default_backend()
    workspace = open_workspace(options.workspace_dir, backend)
    if not options.force and workspace.exists(options.name):
        return backend, workspace, load(options.name, workspace_dir=options.workspace_dir,
                                        backend=backend)
    return backend, workspace, None


def build_collection(
    records: list[SceneRecord],
    *,
    manifest: dict[str, Any],
    options: BuildOptions,
) -> Collection:
    """Index ``records`` in this process and save them as the collection
    ``options.name``.

    Args:
        records: Scenes with one unsigned href per band.
        manifest: Build information stored with the collection (no secrets).
        options: The build's name, workspace and indexing options
            (``executor`` and ``batch_size`` are not used here).

    Returns:
        The saved collection.

    Raises:
        NoScenesError: ``records`` is empty.
        IndexingError: Some assets failed and ``on_error="raise"``.
        ConfigurationError: ``on_error`` is not an option, or scene ids repeat.
        CollectionConflictError: With ``force=True`` on an object store, another
            build replaced the collection while this one was writing.
        AccessDeniedError: The backend may not write the workspace.
    """
    name, force, on_error = options.name, options.force, options.on_error
    max_concurrent, progress, stats = options.max_concurrent, options.progress, options.stats
    backend, workspace, existing = open_build(options)
    if existing is not None:
        return existing
    if not records:
        raise NoScenesError(
            f"no scenes to index for collection {name!r} (source: {manifest.get('source')}); "
            "widen the bbox or date range, or check the query"
        )
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise ConfigurationError(f"scene ids are not unique in the source of {name!r}")

    fingerprint = _fingerprint(records)
    partial = workspace.progress_dir(name, fingerprint)
    state_file = partial / "build.json"
    if partial.exists():
        try:
            same = json.loads(state_file.read_text()).get("fingerprint") == fingerprint
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps({"fingerprint": fingerprint}))

    done: set[str] = set()
    for path in partial.glob("batch-*.parquet"):
        done.update(pq.read_table(path, columns=["id"])["id"].to_pylist())
    if on_error == "skip":
        for path in partial.glob("failures-*.parquet"):
            done.update(pq.read_table(path, columns=["id"])["id"].to_pylist())
    todo = [r for r in records if r.id not in done]
    if done:
        log.info("resuming %s: %d scenes already indexed, %d to go", name, len(done), len(todo))

    all_failures: list[IndexFailure] = []
    batch_number = len(list(partial.glob("batch-*.parquet")))
    # One bar for the whole build (its batches are an implementation detail); none
    # when a resumed build has nothing left to index.
    bar = progress_bar(total=sum(len(_hrefs(todo[start : start + BATCH_SCENES]))
                                 for start in range(0, len(todo), BATCH_SCENES)),
                       desc=f"Indexing {name}", unit="asset", progress=progress and bool(todo))
    try:
        for start in range(0, len(todo), BATCH_SCENES):
            kept, kept_bands, failures = index_batch(
                todo[start : start + BATCH_SCENES], backend=backend,
                max_concurrent=max_concurrent, stats=stats, bar=bar,
            )
            suffix = f"{batch_number:05d}-{os.getpid()}"
            if kept:
                _write_atomic(records_to_table(kept, kept_bands),
                              partial / f"batch-{suffix}.parquet")
            if failures and on_error == "skip":
                table = pa.Table.from_pylist([f.as_row() for f in failures],
                                             schema=FAILURE_SCHEMA)
                _write_atomic(table, partial / f"failures-{suffix}.parquet")
            batch_number += 1
            all_failures.extend(failures)
            if failures:
                bar.set_postfix(failed=len(all_failures), refresh=False)
            if failures and on_error == "raise":
                raise IndexingError(failures)
    finally:
        bar.close()

    batches = [pq.read_table(p) for p in sorted(partial.glob("batch-*.parquet"))]
    failure_tables = [pq.read_table(p) for p in sorted(partial.glob("failures-*.parquet"))]
    failures_table = (
        pa.concat_tables(failure_tables) if failure_tables else FAILURE_SCHEMA.empty_table()
    )
    if not batches:
        raise IndexingError(all_failures) if all_failures else NoScenesError(
            f"no scene of {name!r} could be indexed"
        )
    table = pa.concat_tables(batches, promote_options="permissive").sort_by(
        [("datetime", "ascending"), ("id", "ascending")]
    )
    manifest = {
        **manifest,
        "name": name,
        "bands": [f.name for f in table.schema if f.name in _band_names(records)],
        "created": dt.datetime.now(dt.UTC).isoformat(),
        "scenes": table.num_rows,
        "failures": failures_table.num_rows,
    }
    try:
        # The folder holds only the parts (the failures ride in the first one's
        # footer), so GeoParquet readers given the folder see exactly the scenes.
        workspace.publish(name, table, manifest, failures_table, replace=force)
    except CollectionConflictError:
        if force:
            raise
        # Another build of the same name published first: without force= an existing
        # collection is loaded rather than rebuilt, so this build yields to it.
        log.info("collection %s was published by another build first; loading it", name)
    shutil.rmtree(partial, ignore_errors=True)
    if failures_table.num_rows:
        warn_user(
            f"collection {name!r}: {failures_table.num_rows} asset(s) could not be indexed "
            "and were left out; see collection.failures",
        )
    return load(name, workspace_dir=options.workspace_dir, backend=backend)


def _band_names(records: list[SceneRecord]) -> set[str]:
    return {band for r in records for band in r.bands}
