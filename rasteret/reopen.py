"""Where a loaded collection's files are (its :class:`Origin`), and opening them again
in another process, once per process and build.

A collection loaded from files pickles as its origin and rows; the process that
unpickles it opens the files again through :func:`open_source`, which keeps the last
few sources opened so tasks and workers that receive the same collection many times
open its files once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa

from rasteret.errors import CollectionChangedError, CollectionNotFoundError
from rasteret.io.backend import Backend, default_backend
from rasteret.storage import PartsSource, manifest_from_metadata
from rasteret.workspace import ObjectWorkspace, read_folder, split_collection_url

OriginKind = Literal["file", "url-file", "folder", "url"]


@dataclass(frozen=True)
class Origin:
    """How another process opens a loaded collection's files again.

    Attributes:
        kind: ``"file"`` (a local GeoParquet file), ``"url-file"`` (one on an object
            store), ``"folder"`` (a local collection folder) or ``"url"`` (a
            collection in an object-store workspace).
        location: The file's or folder's absolute path, or the URL.
        backend: The stores and credentials for an object store (None: the default).
    """

    kind: OriginKind
    location: str
    backend: Backend | None = None


#: Sources this process opened again after unpickling, most recent last.
_reopened: OrderedDict[tuple[OriginKind, str, tuple[str | None, int] | None], PartsSource] = (
    OrderedDict())
_reopened_lock = threading.Lock()
_REOPENED_KEPT = 4


def open_source(origin: Origin, built: tuple[str | None, int] | None) -> PartsSource:
    """The files of a collection, opened again in this process (after unpickling),
    once per process and build.

    Args:
        origin: Where the files are.
        built: The build the collection was loaded from (its manifest's ``created``
            and its number of rows), or None to accept any.

    Raises:
        CollectionChangedError: The files are gone, or hold another build than
            ``built`` (the collection was rebuilt since it was loaded).
    """
    key = (origin.kind, origin.location, built)
    with _reopened_lock:  # held while opening: concurrent tasks open the files once
        source = _reopened.get(key)
        if source is None:
            try:
                source, created = read_source(origin)
            except (CollectionNotFoundError, FileNotFoundError):
                raise CollectionChangedError(
                    f"collection at {origin.location!r} is gone since it was loaded; load "
                    "it again (or rebuild it) and rerun") from None
            if built is not None and (created, source.num_rows) != built:
                raise CollectionChangedError(
                    f"collection at {origin.location!r} was rebuilt since it was loaded "
                    f"(built {created} with {source.num_rows} scenes, not {built[0]} with "
                    f"{built[1]}); load it again and rerun")
            _reopened[key] = source
        _reopened.move_to_end(key)
        while len(_reopened) > _REOPENED_KEPT:
            _reopened.popitem(last=False)
        return source


def read_source(origin: Origin) -> tuple[PartsSource, str | None]:
    """The files of ``origin`` opened, and the build time in their manifest.

    Raises:
        CollectionNotFoundError: The folder or the workspace's collection is gone.
    """
    backend = origin.backend or default_backend()
    if origin.kind in ("file", "url-file"):
        if origin.kind == "file":
            source = PartsSource([Path(origin.location)])
        else:
            from rasteret.io.objects import get_object

            data, _ = get_object(backend, origin.location)
            source = PartsSource([pa.py_buffer(data)])
        return source, manifest_from_metadata(source.file_metadata()).get("created")
    if origin.kind == "folder":
        if not Path(origin.location).is_dir():
            raise CollectionNotFoundError(origin.location)
        stored = read_folder(Path(origin.location))
    else:
        base, name = split_collection_url(origin.location)
        found = ObjectWorkspace(base, backend).read(name)
        if found is None:
            raise CollectionNotFoundError(origin.location)
        stored = found
    return stored.source, stored.manifest.get("created")


def clear_reopened() -> None:
    """Forget the sources this process opened again: the next collection unpickled
    here opens its files afresh (and checks their build again)."""
    with _reopened_lock:
        _reopened.clear()
