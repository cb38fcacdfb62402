"""Workspaces: where collections are saved, a local folder or an object-store prefix.

Both kinds implement :class:`Workspace` (``exists``, ``names``, ``read``, ``draft``,
``delete``, ``task_area``), with a :class:`Draft` for the version a build writes and a
:class:`TaskArea` for the files of its tasks; builds, :func:`rasteret.load`,
:func:`rasteret.list_collections` and :func:`rasteret.delete_collection` go through
them.

A local workspace (a path or a ``file://`` URL) is a folder of collection folders
(see :mod:`rasteret.storage`): a build is written to a private staging folder and
renamed into place.

An object-store workspace (``s3://bucket/prefix``, ``az://container/prefix``,
``gs://bucket/prefix``) has no rename, so a collection is published through a
manifest, reached through the same :class:`~rasteret.io.backend.Backend` (stores and
credentials) as the COGs::

    <workspace>/<name>/part-<build>-00000.parquet    the parts of one build
    <workspace>/_rasteret/<name>.json                 the manifest: the parts of the
                                                      current version
    <workspace>/_rasteret/builds/<name>/<key>.parquet the batches of a build in
                                                      flight (see
                                                      rasteret.ingest.tasks)

1. A build writes its parts under names carrying its build id (a timestamp and a
   random suffix), so they never overwrite another build's parts.
2. It then writes the manifest, last, with a conditional put: ``If-None-Match: *``
   for a new collection, ``If-Match`` on the ETag of the manifest it replaces. Of
   two concurrent builds exactly one wins; the other gets
   :class:`~rasteret.errors.CollectionConflictError` and deletes its parts.
3. The winner deletes the parts of the manifest it replaced, and parts of unfinished
   builds older than :data:`ORPHAN_AGE`.

The manifest is the truth: readers read it, then exactly the parts it lists (no
listing). A reader that finds a listed part gone (a replace finished in between)
reads the new manifest again, so it gets the old or the new rows, never a mix.
The folder ``<name>/`` is clean (only the current parts) once the publisher
finishes; between the manifest write and that clean-up, a reader of the whole folder
(DuckDB ``read_parquet('s3://.../name/*.parquet')``) could see both versions.
The manifest lives outside the folder so that such readers never see it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rasteret.atomic import write_atomic
from rasteret.errors import (
    AccessDeniedError,
    CollectionConflictError,
    ConfigurationError,
    ObjectNotFoundError,
    RasteretError,
    WriteConflictError,
)
from rasteret.io.backend import Backend, default_backend
from rasteret.io.objects import (
    delete_objects,
    get_object,
    get_objects_async,
    list_objects,
    put_object,
    put_objects_async,
)
from rasteret.io.runtime import run_sync
from rasteret.storage import (
    PARQUET_OPTIONS,
    PartsSource,
    check_name,
    chosen_workspace,
    failures_from_metadata,
    is_remote,
    manifest_from_metadata,
    parquet_bytes,
    part_file,
    publish,
    read_folder_metadata,
    resolve_existing,
    staging_dir,
    workspace_dir,
)

log = logging.getLogger("rasteret")

#: The folder of an object-store workspace holding one manifest per collection.
MANIFEST_DIR = "_rasteret"
#: The manifest's ``format`` value; its ``version`` is MANIFEST_VERSION.
MANIFEST_FORMAT = "rasteret-collection-manifest"
MANIFEST_VERSION = 1
#: Parts in a collection's folder that no manifest lists are left to builds in flight
#: for this long, then deleted by the next publish or delete of that collection.
ORPHAN_AGE = dt.timedelta(hours=1)
#: A reader re-reads the manifest at most this many times when a replace races it.
READ_ATTEMPTS = 5


@dataclass
class StoredCollection:
    """A collection as read from a workspace.

    Attributes:
        source: The parts, read lazily (local parts memory-mapped, object-store parts
            as the bytes read).
        manifest: The build information from the first part's footer.
        failures: The assets that could not be indexed.
        path: The local folder (None on an object store).
        location: The folder's path or URL.
    """

    source: PartsSource
    manifest: dict[str, Any]
    failures: pa.Table
    path: Path | None
    location: str

    @property
    def table(self) -> pa.Table:
        """Every column of every scene (decodes the whole collection)."""
        return self.source.take(np.arange(self.source.num_rows))


class TaskArea(Protocol):
    """Where a build keeps its tasks' files (their scenes, their finished batches),
    each file written whole or not at all; what survives a killed build is what the
    next run resumes from (see :mod:`rasteret.ingest.tasks`)."""

    def put(self, name: str, data: bytes) -> None:
        """Store the file ``name``."""
        ...

    def get(self, name: str) -> bytes | None:
        """The file ``name``, or None when it was not written."""
        ...

    def clear(self) -> None:
        """Remove every file (after the build was published)."""
        ...


class Draft(Protocol):
    """A version of a collection being written: parts first, then one commit makes it
    visible. It pickles, so a build's tasks write its parts from other processes; the
    commit stays with the process that drafted it."""

    def write_parts(self, parts: Mapping[int, pa.Table]) -> list[dict[str, Any]]:
        """Write ``parts`` (part number -> table, metadata attached).

        Returns:
            Their entries: ``path`` (relative to the workspace), ``rows``, ``size``.
        """
        ...

    def commit(self, entries: list[dict[str, Any]], *, scenes: int) -> None:
        """Publish the parts listed in ``entries`` (``scenes`` rows in all).

        Raises:
            CollectionConflictError: Another build published the collection first.
        """
        ...

    def discard(self, parts: int = 0) -> None:
        """Remove what was written (parts ``0 .. parts - 1``) after a failure."""
        ...


class Workspace(Protocol):
    """Where collections are saved: the verbs that builds, :func:`rasteret.load`,
    :func:`rasteret.list_collections` and :func:`rasteret.delete_collection` use."""

    @property
    def location(self) -> str:
        """The folder or URL, as shown in messages."""
        ...

    def exists(self, name: str) -> bool:
        """Whether the collection ``name`` is saved here."""
        ...

    def names(self) -> list[str]:
        """Names of the collections saved here."""
        ...

    def read(self, name: str) -> StoredCollection | None:
        """The collection ``name``, or None when there is none."""
        ...

    def draft(self, name: str, *, replace: bool) -> Draft:
        """A new version of the collection ``name`` to write parts into and commit
        (``replace``: it may replace the current version)."""
        ...

    def delete(self, name: str) -> bool:
        """Delete the collection ``name``; False when there was none."""
        ...

    def task_area(self, name: str) -> TaskArea:
        """Where a build of ``name`` keeps its tasks' files."""
        ...


class LocalWorkspace(Workspace):
    """Collections as folders of Parquet parts under a local folder.

    Attributes:
        root: The folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def location(self) -> str:
        """The folder, as shown in messages."""
        return str(self.root)

    def exists(self, name: str) -> bool:
        """Whether the collection ``name`` is saved here."""
        return resolve_existing(self.root / check_name(name)) is not None

    def names(self) -> list[str]:
        """Names of the collections saved here."""
        names = set()
        for path in self.root.iterdir():
            if not path.is_dir():
                continue
            if not path.name.startswith("."):
                names.add(path.name)
            elif ".old-" in path.name:
                # A collection set aside by a swap that did not finish: recovered below.
                names.add(path.name[1:].rpartition(".old-")[0])
        # Hidden folders (builds in progress, swaps) are never collections themselves.
        return sorted(name for name in names if resolve_existing(self.root / name))

    def read(self, name: str) -> StoredCollection | None:
        """The collection ``name``, or None when there is none."""
        folder = resolve_existing(self.root / check_name(name))
        if folder is None:
            return None
        return read_folder(folder)

    def draft(self, name: str, *, replace: bool) -> LocalDraft:
        """A new version of the collection ``name``, to write parts into and commit
        (``replace`` is moot: a local folder has one writer at a time)."""
        return LocalDraft(self.root / check_name(name))

    def delete(self, name: str) -> bool:
        """Delete the collection ``name``; False when there was none."""
        folder = self.root / check_name(name)
        if not folder.exists():
            return False
        shutil.rmtree(folder)
        return True

    def task_area(self, name: str) -> LocalTaskArea:
        """Where the tasks of a build of ``name`` keep their scenes and finished
        batches: the private folder ``.<name>.tasks`` (the workers must see this
        folder: the same machine, or a shared file system)."""
        return LocalTaskArea(self.root / f".{check_name(name)}.tasks")


class LocalDraft(Draft):
    """A version of a collection being written: parts go into a private staging
    folder beside the collection, and :meth:`commit` renames it into place.

    It pickles, so the tasks of a build write their parts into it from
    other processes (of this machine, or of machines sharing the folder).

    Attributes:
        final: The collection's folder.
        folder: The staging folder the parts are written to.
    """

    def __init__(self, final: Path) -> None:
        self.final = final
        self.folder = staging_dir(final)

    def write_parts(self, parts: Mapping[int, pa.Table]) -> list[dict[str, Any]]:
        """Write ``parts`` (part number -> table, metadata attached) and return their
        entries (``path`` relative to the workspace, ``rows``, ``size``)."""
        entries = []
        for index, part in parts.items():
            path = self.folder / part_file(index)
            pq.write_table(part, path, **PARQUET_OPTIONS)
            entries.append({"path": f"{self.final.name}/{path.name}", "rows": part.num_rows,
                            "size": path.stat().st_size})
        return entries

    def commit(self, entries: list[dict[str, Any]], *, scenes: int) -> None:
        """Publish the parts written (all of them: ``entries`` is for the record):
        the staging folder replaces the collection's folder in one rename."""
        publish(self.folder, self.final)

    def discard(self, parts: int = 0) -> None:
        """Remove what was written (the staging folder)."""
        shutil.rmtree(self.folder, ignore_errors=True)


class LocalTaskArea(TaskArea):
    """The files of a build's tasks (their scenes, their finished
    batches) in a local folder, each written whole or not at all.

    Attributes:
        folder: The folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def put(self, name: str, data: bytes) -> None:
        """Store the file ``name``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / check_name(name), lambda tmp: tmp.write_bytes(data))

    def get(self, name: str) -> bytes | None:
        """The file ``name``, or None when it was not written."""
        try:
            return (self.folder / check_name(name)).read_bytes()
        except FileNotFoundError:
            return None

    def clear(self) -> None:
        """Remove every file (after the build was published)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def read_folder(folder: Path) -> StoredCollection:
    """The collection in the local folder ``folder``.

    Raises:
        ValueError: The folder holds no parts, or its metadata is not a collection's.
    """
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        raise ValueError(f"{folder} holds no part-*.parquet files")
    manifest, failures = read_folder_metadata(folder)
    return StoredCollection(PartsSource(parts), manifest, failures, folder, str(folder))


class ObjectWorkspace(Workspace):
    """Collections under a prefix of an object store, published through manifests
    (see the module's docstring for the protocol).

    Attributes:
        url: The workspace's URL, without a trailing slash.
        backend: The stores and credentials used.
    """

    def __init__(self, url: str, backend: Backend) -> None:
        self.url = url.rstrip("/")
        self.backend = backend

    @property
    def location(self) -> str:
        """The workspace URL, as shown in messages."""
        return self.url

    def url_of(self, relative: str) -> str:
        """The URL of ``relative``, a path inside the workspace."""
        return f"{self.url}/{relative}"

    def manifest_url(self, name: str) -> str:
        """The URL of the manifest of ``name``."""
        return self.url_of(f"{MANIFEST_DIR}/{check_name(name)}.json")

    def folder_url(self, name: str) -> str:
        """The URL of the folder holding the parts of ``name``."""
        return self.url_of(check_name(name))

    def denied(self, error: AccessDeniedError) -> AccessDeniedError:
        """``error`` again, naming this workspace."""
        return AccessDeniedError(f"workspace {self.url}: {error}")

    def _head(self, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The manifest of ``name`` and its version, or None when there is none."""
        url = self.manifest_url(name)
        try:
            data, version = get_object(self.backend, url)
        except ObjectNotFoundError:
            return None
        except AccessDeniedError as exc:
            raise self.denied(exc) from None
        head = json.loads(data)
        if (not isinstance(head, dict) or head.get("format") != MANIFEST_FORMAT
                or not isinstance(head.get("parts"), list) or not head["parts"]):
            raise ValueError(f"{url} is not a rasteret collection manifest")
        if head.get("version", 0) > MANIFEST_VERSION:
            raise ValueError(
                f"{url} was written by a newer rasteret (manifest version "
                f"{head.get('version')}): upgrade rasteret to read it")
        return head, version

    def exists(self, name: str) -> bool:
        """Whether the collection ``name`` is published here."""
        return self._head(name) is not None

    def names(self) -> list[str]:
        """Names of the collections published here (one listing of the manifests)."""
        try:
            found = list_objects(self.backend, self.url_of(MANIFEST_DIR))
        except AccessDeniedError as exc:
            raise self.denied(exc) from None
        names = []
        for item in found:
            stem, dot, suffix = item.name.partition(".json")
            if dot and not suffix and "/" not in stem:
                try:
                    names.append(check_name(stem))
                except ConfigurationError:
                    continue
        return sorted(names)

    def read(self, name: str) -> StoredCollection | None:
        """The collection ``name`` (its manifest, then exactly the parts it lists), or
        None when there is none.

        Raises:
            ObjectNotFoundError: A listed part is missing and no replace explains it.
        """
        for attempt in range(READ_ATTEMPTS):
            found = self._head(name)
            if found is None:
                return None
            head, version = found
            urls = [self.url_of(str(part["path"])) for part in head["parts"]]
            try:
                blobs = run_sync(get_objects_async(self.backend, urls))
            except AccessDeniedError as exc:
                raise self.denied(exc) from None
            except ObjectNotFoundError:
                # A replace (or a delete) finished between our manifest read and the
                # part reads and removed the parts we were sent to: read the new one.
                now = self._head(name)
                if now is not None and now[1] != version and attempt + 1 < READ_ATTEMPTS:
                    continue
                if now is None:
                    return None
                raise
            source = PartsSource([pa.py_buffer(blob) for blob in blobs])
            metadata = pq.read_schema(pa.BufferReader(blobs[0])).metadata
            return StoredCollection(source, manifest_from_metadata(metadata),
                                    failures_from_metadata(metadata), None,
                                    self.folder_url(name))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def draft(self, name: str, *, replace: bool) -> ObjectDraft:
        """A new version of the collection ``name`` (a new build id), to write parts
        into and commit.

        Args:
            replace: Replace the current version (its manifest is read now, and the
                commit is conditioned on its ETag); when False the collection must not
                exist when the commit comes.
        """
        return ObjectDraft(self, check_name(name),
                           self._head(name) if replace else None)

    def task_area(self, name: str) -> ObjectTaskArea:
        """Where the tasks of a build of ``name`` keep their scenes and finished
        batches: ``<workspace>/_rasteret/builds/<name>/`` (outside the collection's
        folder, so readers of the folder never see them)."""
        return ObjectTaskArea(self, self.url_of(f"{MANIFEST_DIR}/builds/{check_name(name)}"))

    def write_manifest(self, name: str, head: dict[str, Any],
                       previous: tuple[dict[str, Any], dict[str, Any]] | None) -> None:
        """Write the manifest ``head`` of ``name``, conditioned on ``previous`` (the
        version it replaces; None: there must be none): the one step that makes a
        build visible.

        Raises:
            WriteConflictError: The manifest is not (or no longer) ``previous``.
        """
        data = json.dumps(head, indent=1).encode()
        if previous is None:
            put_object(self.backend, self.manifest_url(name), data, create=True)
        else:
            put_object(self.backend, self.manifest_url(name), data, if_version=previous[1])

    def is_current(self, name: str, build: str) -> bool:
        """Whether the manifest of ``name`` is that of build ``build`` (False when it
        cannot be read)."""
        try:
            found = self._head(name)
        except (RasteretError, ValueError):
            return False
        return found is not None and found[0].get("build") == build

    def remove_objects(self, urls: list[str]) -> None:
        """Delete a failed build's own parts ``urls`` (best effort: a part left
        behind is invisible to readers of the manifest and swept later)."""
        try:
            delete_objects(self.backend, urls)
        except RasteretError as exc:
            log.warning("could not remove the parts of a failed build: %s", exc)

    def sweep(self, name: str, head: dict[str, Any] | None,
              superseded: dict[str, Any] | None) -> None:
        """Delete the parts of the replaced version and stale parts no manifest lists.

        Parts of builds still in flight are younger than ORPHAN_AGE and stay.
        """
        keep = {part["path"] for part in (head or {}).get("parts", [])}
        doomed = {part["path"] for part in (superseded or {}).get("parts", [])} - keep
        cutoff = dt.datetime.now(dt.UTC) - ORPHAN_AGE
        try:
            for item in list_objects(self.backend, self.folder_url(name)):
                relative = f"{name}/{item.name}"
                if relative not in keep and item.last_modified and item.last_modified < cutoff:
                    doomed.add(relative)
            delete_objects(self.backend, [self.url_of(p) for p in sorted(doomed)])
        except RasteretError as exc:
            # The manifest is the truth: leftovers are invisible to it and swept later.
            log.warning("collection %r in %s: old parts not removed yet: %s",
                        name, self.url, exc)

    def delete(self, name: str) -> bool:
        """Delete the collection ``name`` (manifest first, then its parts); False when
        there was none."""
        found = self._head(name)
        if found is None:
            return False
        try:
            delete_objects(self.backend, [self.manifest_url(name)])
        except AccessDeniedError as exc:
            raise self.denied(exc) from None
        self.sweep(name, None, found[0])
        return True

    def export(self, table: pa.Table, url: str) -> str:
        """Write ``table`` as the single object ``url`` (one put: atomic)."""
        try:
            put_object(self.backend, url, parquet_bytes(table))
        except AccessDeniedError as exc:
            raise self.denied(exc) from None
        return url


class ObjectDraft(Draft):
    """A version of a collection being written to an object store: parts under names
    carrying a new build id, then :meth:`commit` writes the manifest (see the
    module's docstring for the protocol).

    It pickles, so the tasks of a build write their parts into it from
    other processes or machines; the commit stays with the process that drafted it.

    Attributes:
        workspace: The workspace.
        name: The collection's name.
        build: This version's build id.
        previous: The manifest replaced and its version (None for a new collection).
    """

    def __init__(self, workspace: ObjectWorkspace, name: str,
                 previous: tuple[dict[str, Any], dict[str, Any]] | None) -> None:
        self.workspace = workspace
        self.name = name
        self.build = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        self.previous = previous

    def part_path(self, index: int) -> str:
        """The path of part ``index``, relative to the workspace."""
        return f"{self.name}/part-{self.build}-{index:05d}.parquet"

    def write_parts(self, parts: Mapping[int, pa.Table]) -> list[dict[str, Any]]:
        """Write ``parts`` (part number -> table, metadata attached) concurrently and
        return their entries in the manifest (``path``, ``rows``, ``size``).

        Raises:
            AccessDeniedError: The backend may not write the workspace.
        """
        blobs: dict[str, bytes] = {}
        entries = []
        for index, part in parts.items():
            data = parquet_bytes(part)
            blobs[self.workspace.url_of(self.part_path(index))] = data
            entries.append({"path": self.part_path(index), "rows": part.num_rows,
                            "size": len(data)})
        try:
            run_sync(put_objects_async(self.workspace.backend, blobs))
        except AccessDeniedError as exc:
            raise self.workspace.denied(exc) from None
        return entries

    def commit(self, entries: list[dict[str, Any]], *, scenes: int) -> None:
        """Write the manifest listing ``entries`` (the one step that makes this
        version visible), then sweep the replaced version's parts.

        Raises:
            CollectionConflictError: Another build published the collection first
                (this build's parts are deleted again).
            AccessDeniedError: The backend may not write the workspace.
        """
        workspace, name = self.workspace, self.name
        head = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "name": name,
            "build": self.build,
            "created": dt.datetime.now(dt.UTC).isoformat(),
            "scenes": scenes,
            "parts": entries,
        }
        try:
            workspace.write_manifest(name, head, self.previous)
        except BaseException as exc:
            won = isinstance(exc, WriteConflictError) and workspace.is_current(name, self.build)
            if not won:  # a put retried after a lost answer can find its own manifest
                self.discard(len(entries))
                if isinstance(exc, AccessDeniedError):
                    raise workspace.denied(exc) from None
                if isinstance(exc, WriteConflictError):
                    raise CollectionConflictError(
                        f"collection {name!r} in workspace {workspace.url} was "
                        + ("replaced" if self.previous else "published")
                        + " by another build while this one was writing; this build's "
                        "parts were removed. Load the other build's collection, or run "
                        "this build again with force=True to replace it"
                    ) from None
                raise
        workspace.sweep(name, head, self.previous[0] if self.previous else None)

    def discard(self, parts: int = 0) -> None:
        """Delete parts ``0 .. parts - 1`` of this build (best effort)."""
        self.workspace.remove_objects([self.workspace.url_of(self.part_path(index))
                                 for index in range(parts)])


class ObjectTaskArea(TaskArea):
    """The files of a build's tasks (their scenes, their finished batches) under a
    prefix of an object-store workspace (each put is whole or absent).

    Attributes:
        workspace: The workspace.
        url: The prefix.
    """

    def __init__(self, workspace: ObjectWorkspace, url: str) -> None:
        self.workspace = workspace
        self.url = url

    def put(self, name: str, data: bytes) -> None:
        """Store the file ``name``.

        Raises:
            AccessDeniedError: The backend may not write the workspace.
        """
        try:
            put_object(self.workspace.backend, f"{self.url}/{check_name(name)}", data)
        except AccessDeniedError as exc:
            raise self.workspace.denied(exc) from None

    def get(self, name: str) -> bytes | None:
        """The file ``name``, or None when it was not written.

        Raises:
            AccessDeniedError: The backend may not read the workspace.
        """
        try:
            return get_object(self.workspace.backend, f"{self.url}/{check_name(name)}")[0]
        except ObjectNotFoundError:
            return None
        except AccessDeniedError as exc:
            raise self.workspace.denied(exc) from None

    def clear(self) -> None:
        """Remove every file (after the build was published; best effort)."""
        backend = self.workspace.backend
        try:
            found = list_objects(backend, self.url)
            delete_objects(backend, [f"{self.url}/{item.name}" for item in found])
        except RasteretError as exc:
            log.warning("the batches of a finished build under %s were not removed: %s",
                        self.url, exc)


def open_workspace(workspace: str | os.PathLike[str] | None = None,
                   backend: Backend | None = None) -> Workspace:
    """The workspace at ``workspace`` (default ``$RASTERET_WORKSPACE`` or
    ``~/.rasteret/collections``): a local folder for paths and ``file://`` URLs, an
    object-store prefix for ``s3://``, ``az://``, ``gs://``... reached with
    ``backend`` (default: the default backend).

    Raises:
        ConfigurationError: The URL's scheme is not supported.
    """
    chosen = chosen_workspace(workspace)
    if is_remote(chosen):
        from rasteret.io.urls import parse_url

        url = str(chosen)
        if parse_url(url).kind == "http" or "?" in url:
            raise ConfigurationError(
                f"workspace {url!r}: use an object-store URL (s3://, az://, gs://) or a "
                "local folder; plain HTTP servers cannot be written to")
        return ObjectWorkspace(url, backend or default_backend())
    return LocalWorkspace(workspace_dir(chosen))


def split_collection_url(url: str) -> tuple[str, str]:
    """``(workspace URL, name)`` of the URL of a collection's folder."""
    base, _, name = url.rstrip("/").rpartition("/")
    if "://" not in base or base.endswith(":/"):
        raise ConfigurationError(
            f"{url!r} does not name a collection inside a workspace: use "
            "s3://bucket/prefix/NAME (the collection NAME in workspace s3://bucket/prefix)")
    return base, check_name(name)

