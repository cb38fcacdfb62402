"""Saved collections by name or path: :func:`load`, :func:`list_collections` and
:func:`delete_collection` over local folders, exported GeoParquet files and
object-store workspaces."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from rasteret.collection import Collection
from rasteret.errors import CollectionNotFoundError, CorruptCollectionError, RasteretError
from rasteret.io.backend import Backend, default_backend
from rasteret.reopen import Origin
from rasteret.storage import (
    PartsSource,
    failures_from_metadata,
    is_remote,
    local_path,
    manifest_from_metadata,
    resolve_existing,
)
from rasteret.workspace import (
    ObjectWorkspace,
    StoredCollection,
    open_workspace,
    read_folder,
    split_collection_url,
)


def load(
    path_or_name: str | os.PathLike[str], *,
    workspace_dir: str | os.PathLike[str] | None = None, backend: Backend | None = None,
) -> Collection:
    """Load a saved collection by name (in the workspace) or by path (a collection
    folder or a GeoParquet file written by :meth:`Collection.export`).

    A bare name (a string without a path separator, a leading ``~`` or a URL scheme)
    is always looked up in the workspace, never in the current directory: pass
    ``"./bench"`` for a folder there. Anything else, and every ``os.PathLike[str]``, is a
    path; ``file://`` URLs are local paths. An object-store URL names a collection
    in a workspace there (``s3://bucket/prefix/NAME``: its manifest is read, then the
    parts it lists) or an exported file (``s3://bucket/key.parquet``).

    Args:
        path_or_name: The collection's name, or the path or URL of its folder or file.
        workspace_dir: The workspace names are looked up in (default
            ``$RASTERET_WORKSPACE`` or ``~/.rasteret/collections``): a local folder or
            an object-store URL (``s3://bucket/prefix``, ``az://container/prefix``,
            ``gs://bucket/prefix``).
        backend: The stores and credentials for an object-store workspace or URL
            (pass the one that reads the COGs).

    Returns:
        The collection.

    Raises:
        CollectionNotFoundError: Nothing by that name or path; the message lists the
            saved collections.
        CorruptCollectionError: The files are damaged or not a rasteret collection.
        ConfigurationError: The name is not a valid collection name, or the URL does
            not name a collection.
        AccessDeniedError: The backend may not read the workspace (names its URL).
    """
    try:
        return _load(path_or_name, workspace_dir, backend)
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, RasteretError):
            raise
        raise CorruptCollectionError(
            f"collection {str(path_or_name)!r} is damaged or not a rasteret collection "
            f"({type(exc).__name__}: {exc}); rebuild it with force=True"
        ) from exc


def _is_bare_name(path_or_name: str | os.PathLike[str]) -> bool:
    """A string without a separator, a leading ``~`` or a URL scheme names a
    collection in the workspace; everything else is a path."""
    if not isinstance(path_or_name, str):
        return False
    separators = {"/"} | {sep for sep in (os.sep, os.altsep) if sep}
    return not (
        any(sep in path_or_name for sep in separators)
        or path_or_name.startswith("~")
        or "://" in path_or_name
    )


def _from_file(source: PartsSource, origin: Origin) -> Collection:
    """The collection in one GeoParquet file written by :meth:`Collection.export`."""
    assert source.schema is not None
    metadata = source.file_metadata()
    manifest = manifest_from_metadata(metadata)
    failures = failures_from_metadata(metadata)
    _check_columns(source.schema)
    return Collection.from_source(source, origin=origin, name=manifest.get("name"),
                                   manifest=manifest, failures=failures, path=None)


def _from_stored(stored: StoredCollection, origin: Origin
                 ) -> Collection:
    assert stored.source.schema is not None
    _check_columns(stored.source.schema)
    return Collection.from_source(
        stored.source, origin=origin, name=stored.manifest.get("name"),
        manifest=stored.manifest, failures=stored.failures, path=stored.path)


def _load(path_or_name: str | os.PathLike[str], workspace_dir: str | os.PathLike[str] | None,
          backend: Backend | None) -> Collection:
    if _is_bare_name(path_or_name):
        name = str(path_or_name)
        workspace = open_workspace(workspace_dir, backend)
        stored = workspace.read(name)
        if stored is None:
            hint = (
                f"; a folder or file {name!r} is in the current directory: load it as "
                f"the path './{name}'" if Path(name).exists() else ""
            )
            raise CollectionNotFoundError(
                f"no collection {name!r}; saved collections: "
                f"{workspace.names() or 'none'} (workspace {workspace.location}){hint}"
            )
        return _from_stored(stored, _origin_of(stored, backend))
    if is_remote(path_or_name):
        url = str(path_or_name).rstrip("/")
        if url.endswith(".parquet"):
            from rasteret.io.objects import get_object

            data, _ = get_object(backend or default_backend(), url)
            return _from_file(PartsSource([pa.py_buffer(data)]), Origin("url-file", url, backend))
        base, name = split_collection_url(url)
        workspace = ObjectWorkspace(base, backend or default_backend())
        stored = workspace.read(name)
        if stored is None:
            raise CollectionNotFoundError(
                f"no collection at {url!r}: no manifest {workspace.manifest_url(name)}; "
                f"collections in workspace {base}: {workspace.names() or 'none'}"
            )
        return _from_stored(stored, Origin("url", url, backend))
    candidate = local_path(path_or_name)
    if candidate.is_file():
        return _from_file(PartsSource([candidate]), Origin("file", str(candidate.resolve())))
    folder = resolve_existing(candidate) if candidate.is_dir() else None
    if folder is None:
        saved = list_collections(workspace_dir=workspace_dir, backend=backend)
        raise CollectionNotFoundError(
            f"no collection at {str(path_or_name)!r}: not a collection folder or "
            "GeoParquet file; to load a saved collection by name, pass the bare name "
            f"(saved collections: {saved or 'none'})"
        )
    if not any(folder.glob("part-*.parquet")):
        raise CollectionNotFoundError(f"{folder} holds no part-*.parquet files")
    stored = read_folder(folder)
    return _from_stored(stored, _origin_of(stored, backend))


def _origin_of(stored: StoredCollection, backend: Backend | None) -> Origin:
    """How another process opens the files of ``stored`` again."""
    if stored.path is not None:
        return Origin("folder", str(stored.path.resolve()))
    return Origin("url", stored.location, backend)


def _check_columns(schema: pa.Schema) -> None:
    """Refuse tables that lack the columns every collection has."""
    for name, kind in (("id", pa.string()), ("datetime", pa.timestamp("us", tz="UTC"))):
        if name not in schema.names or schema.field(name).type != kind:
            raise ValueError(f"column {name!r} is missing or not {kind}")


def list_collections(*, workspace_dir: str | os.PathLike[str] | None = None,
                     backend: Backend | None = None) -> list[str]:
    """Names of the collections saved in the workspace.

    Args:
        workspace_dir: The workspace: a local folder or an object-store URL such as
            ``s3://bucket/prefix`` (default ``$RASTERET_WORKSPACE`` or
            ``~/.rasteret/collections``).
        backend: The stores and credentials reaching an object-store workspace.
    """
    return open_workspace(workspace_dir, backend).names()


def delete_collection(name: str, *, workspace_dir: str | os.PathLike[str] | None = None,
                      backend: Backend | None = None) -> None:
    """Delete a saved collection (in an object-store workspace: its manifest first, so
    it disappears at once, then its parts).

    Args:
        name: The collection's name.
        workspace_dir: The workspace (default ``$RASTERET_WORKSPACE`` or
            ``~/.rasteret/collections``).

    Raises:
        CollectionNotFoundError: No collection by that name.
    """
    workspace = open_workspace(workspace_dir, backend)
    if not workspace.delete(name):
        raise CollectionNotFoundError(f"no collection {name!r} in {workspace.location}")

