"""Whole objects on URLs: get, put (optionally conditional), list and delete.

The small surface a workspace on an object store needs, through the same
:class:`~rasteret.io.backend.Backend` (stores, credentials, retries) as the COG
reads. Errors are rasteret's typed errors naming the URL; transient failures are
retried with the backend's policy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import obstore
from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError

from rasteret.errors import ObjectNotFoundError, WriteConflictError
from rasteret.io.backend import Backend
from rasteret.io.fetch import request_slots, translate_error, with_retries
from rasteret.io.runtime import ensure_io_allowed, run_sync
from rasteret.io.urls import strip_query


@dataclass(frozen=True)
class StoredObject:
    """One object found by :func:`list_objects`.

    Attributes:
        name: Its path relative to the listed prefix (no leading slash).
        size: Bytes.
        etag: The store's ETag (None when it gives none).
        last_modified: When it was written (aware UTC), None when unknown.
    """

    name: str
    size: int
    etag: str | None
    last_modified: dt.datetime | None


async def get_object_async(backend: Backend, url: str) -> tuple[bytes, dict[str, Any]]:
    """The bytes and version of the object at ``url``.

    Returns:
        ``(data, version)``; ``version`` holds the store's ``e_tag`` and ``version``
        (either may be None), ready to pass as ``if_version=`` to :func:`put_object`.

    Raises:
        ObjectNotFoundError: There is no such object.
        AccessDeniedError: The credentials may not read it.
    """
    ensure_io_allowed()
    store, path = backend.store_for(url)

    async def once() -> tuple[bytes, dict[str, Any]]:
        try:
            async with request_slots(backend):
                result = await obstore.get_async(store, path)
                data = await result.bytes_async()
        except Exception as exc:  # noqa: BLE001 - translated into a typed error
            raise translate_error(exc, url, backend, "read") from None
        meta = result.meta if isinstance(result.meta, dict) else {}
        return bytes(data), {"e_tag": meta.get("e_tag"), "version": meta.get("version")}

    return await with_retries(backend, url, "read", once, None)


def get_object(backend: Backend, url: str) -> tuple[bytes, dict[str, Any]]:
    """Synchronous :func:`get_object_async`."""
    return run_sync(get_object_async(backend, url))


async def get_objects_async(backend: Backend, urls: list[str]) -> list[bytes]:
    """The bytes of several objects, fetched concurrently, in the order given."""
    results = await asyncio.gather(*(get_object_async(backend, url) for url in urls))
    return [data for data, _ in results]


async def put_object_async(
    backend: Backend, url: str, data: bytes, *, create: bool = False,
    if_version: dict[str, Any] | None = None,
) -> str | None:
    """Write ``data`` to ``url`` in one request and return the new ETag.

    Args:
        create: Only if no object exists there (``If-None-Match: *``).
        if_version: Only if the object there is still this version (as
            :func:`get_object` returned it): ``If-Match`` on its ETag, or the
            generation on Google Cloud Storage.

    Raises:
        WriteConflictError: The condition failed: someone else wrote the object.
        AccessDeniedError: The credentials may not write it.
    """
    ensure_io_allowed()
    store, path = backend.store_for(url)
    # obstore's UpdateVersion takes e_tag and version only when they are set.
    version = {k: v for k, v in (if_version or {}).items() if v is not None}
    mode: Any = "create" if create else version if if_version else "overwrite"

    async def once() -> str | None:
        try:
            async with request_slots(backend):
                result = await obstore.put_async(store, path, data, mode=mode)
        except (AlreadyExistsError, PreconditionError):
            raise WriteConflictError(
                f"{strip_query(url)} was " + ("created" if create else "replaced or deleted")
                + " by another writer since it was read"
            ) from None
        except NotFoundError:
            # Azure and GCS answer a conditional replace of a deleted object with 404.
            if if_version:
                raise WriteConflictError(
                    f"{strip_query(url)} was deleted by another writer since it was read"
                ) from None
            raise translate_error(FileNotFoundError(url), url, backend, "write") from None
        except Exception as exc:  # noqa: BLE001 - translated into a typed error
            raise translate_error(exc, url, backend, "write") from None
        return result.get("e_tag") if isinstance(result, dict) else None

    return await with_retries(backend, url, "write", once, None)


def put_object(backend: Backend, url: str, data: bytes, *, create: bool = False,
               if_version: dict[str, Any] | None = None) -> str | None:
    """Synchronous :func:`put_object_async`."""
    return run_sync(put_object_async(backend, url, data, create=create, if_version=if_version))


#: Files larger than this are uploaded in parts (multipart upload), in parts of this size.
MULTIPART_THRESHOLD = 8 * 1024 * 1024


async def put_file_async(backend: Backend, url: str, path: str | os.PathLike[str], *,
                         create: bool = False) -> None:
    """Upload the local file ``path`` to ``url``, in parts when it is large.

    Args:
        create: Only if no object exists there, decided by the store. A small file is
            one conditional put (``If-None-Match: *``). A large one is looked for first
            (one HEAD request, so a lost race costs no upload), uploaded in parts to a
            staging object beside ``url``, then copied server-side only if ``url``
            still holds nothing, and the staging object deleted: S3 completes the copy
            with ``If-None-Match: *`` (a one-part multipart copy, so up to 5 GiB; an
            S3-compatible store without it takes its own ``copy_if_not_exists`` in
            ``default_s3_config``), Azure and GCS copy conditionally natively.

    Raises:
        WriteConflictError: ``create`` and an object exists at ``url``.
        AccessDeniedError: The credentials may not write it.
    """
    size = os.path.getsize(path)
    if size <= MULTIPART_THRESHOLD:
        with open(path, "rb") as file:
            await put_object_async(backend, url, file.read(), create=create)
        return
    if not create:
        await _put_parts(backend, url, path)
        return
    if await _exists(backend, url):
        raise WriteConflictError(f"{strip_query(url)} already exists (another writer "
                                 "created it)")
    staging = f"{url}.{uuid.uuid4().hex}.part"
    try:
        await _put_parts(backend, staging, path)
        await _copy_if_absent(backend, staging, url)
    finally:
        await delete_objects_async(backend, [staging])


async def _exists(backend: Backend, url: str) -> bool:
    """Whether an object exists at ``url`` (one HEAD request)."""
    try:
        await get_object_meta_async(backend, url)
    except ObjectNotFoundError:
        return False
    return True


async def _put_parts(backend: Backend, url: str, path: str | os.PathLike[str]) -> None:
    """Upload a large local file to ``url`` in parts (a multipart upload)."""
    ensure_io_allowed()
    store, key = backend.store_for(url)

    async def once() -> None:
        try:
            async with request_slots(backend):
                await obstore.put_async(store, key, Path(path), use_multipart=True,
                                        chunk_size=MULTIPART_THRESHOLD)
        except Exception as exc:  # noqa: BLE001 - translated into a typed error
            raise translate_error(exc, url, backend, "write") from None

    await with_retries(backend, url, "write", once, None)


async def _copy_if_absent(backend: Backend, source: str, url: str) -> None:
    """Copy ``source`` to ``url`` server-side, only if no object is at ``url``."""
    store, key = backend.store_for(url)
    _, source_key = backend.store_for(source)

    async def once() -> None:
        try:
            async with request_slots(backend):
                await obstore.copy_async(store, source_key, key, overwrite=False)
        except (AlreadyExistsError, PreconditionError):
            raise WriteConflictError(f"{strip_query(url)} was created by another writer "
                                     "while this one uploaded") from None
        except Exception as exc:  # noqa: BLE001 - translated into a typed error
            raise translate_error(exc, url, backend, "write") from None

    await with_retries(backend, url, "write", once, None)


def put_file(backend: Backend, url: str, path: str | os.PathLike[str], *,
             create: bool = False) -> None:
    """Synchronous :func:`put_file_async`."""
    run_sync(put_file_async(backend, url, path, create=create))


async def get_object_meta_async(backend: Backend, url: str) -> dict[str, Any]:
    """The store's metadata of the object at ``url`` (size, ETag, ...), one HEAD request.

    Raises:
        ObjectNotFoundError: There is no such object.
    """
    ensure_io_allowed()
    store, key = backend.store_for(url)

    async def once() -> dict[str, Any]:
        try:
            async with request_slots(backend):
                return dict(await obstore.head_async(store, key))
        except Exception as exc:  # noqa: BLE001 - translated into a typed error
            raise translate_error(exc, url, backend, "read") from None

    return await with_retries(backend, url, "read", once, None)


def object_exists(backend: Backend, url: str) -> bool:
    """Whether an object exists at ``url`` (one HEAD request)."""
    return run_sync(_exists(backend, url))


async def put_objects_async(backend: Backend, objects: dict[str, bytes]) -> None:
    """Write several objects concurrently (unconditionally)."""
    await asyncio.gather(*(put_object_async(backend, url, data) for url, data in objects.items()))


async def _list_async(backend: Backend, url: str) -> list[StoredObject]:
    ensure_io_allowed()
    store, prefix = backend.store_for(url)

    async def once() -> list[StoredObject]:
        found = []
        try:
            async with request_slots(backend):
                async for batch in obstore.list(store, prefix or None):
                    for meta in batch:
                        name = meta["path"][len(prefix):].lstrip("/")
                        found.append(StoredObject(name, meta["size"], meta.get("e_tag"),
                                                  meta.get("last_modified")))
        except Exception as exc:  # noqa: BLE001 - translated into a typed error
            raise translate_error(exc, url, backend, "listing") from None
        return found

    return await with_retries(backend, url, "listing", once, None)


def list_objects(backend: Backend, url: str) -> list[StoredObject]:
    """Every object under the prefix ``url`` (recursively), named relative to it.

    An empty or missing prefix gives an empty list.
    """
    return run_sync(_list_async(backend, url))


async def delete_objects_async(backend: Backend, urls: list[str]) -> None:
    """Delete the objects at ``urls`` (missing ones are no error)."""
    ensure_io_allowed()

    async def delete(url: str) -> None:
        store, path = backend.store_for(url)

        async def once() -> None:
            try:
                async with request_slots(backend):
                    await obstore.delete_async(store, path)
            except Exception as exc:  # noqa: BLE001 - translated into a typed error
                error = translate_error(exc, url, backend, "delete")
                if not isinstance(error, ObjectNotFoundError):
                    raise error from None

        await with_retries(backend, url, "delete", once, None)

    await asyncio.gather(*(delete(url) for url in urls))


def delete_objects(backend: Backend, urls: list[str]) -> None:
    """Synchronous :func:`delete_objects_async`."""
    if urls:
        run_sync(delete_objects_async(backend, urls))
