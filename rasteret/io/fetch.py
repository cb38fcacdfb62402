"""Range fetching through obstore, with errors translated into rasteret's types.

Every request of a read is in flight at once, bounded by one semaphore per
process so that thousands of ranges never open thousands of connections.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import obstore
from obstore.exceptions import (
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)

from rasteret.errors import (
    AccessDeniedError,
    BackendError,
    ConfigurationError,
    NetworkError,
    ObjectChangedError,
    ObjectNotFoundError,
    RasteretError,
    RegionMismatchError,
    ShortReadError,
    WriteConflictError,
)
from rasteret.io.backend import Backend
from rasteret.io.runtime import ensure_io_allowed
from rasteret.io.urls import strip_query

if TYPE_CHECKING:
    from obstore import Bytes, GetOptions

_T = TypeVar("_T")

MAX_CONCURRENT_REQUESTS = int(os.environ.get("RASTERET_MAX_CONCURRENT_REQUESTS", "256"))

_semaphores: dict[tuple[int, int], asyncio.Semaphore] = {}

# Query strings and credential-looking fields are removed from store messages.
_QUERY = re.compile(r"(?<=[\w/.-])\?(?!xml)[^\s\"'<>)]*")
_SECRET_FIELD = re.compile(
    r"(?i)(signature|sig|token|secret|credential|key|password|x-amz-[a-z-]+)(\s*[=:]\s*)"
    r"(\"[^\"]*\"|[^\s,&;]+)"
)


@dataclass
class FetchStats:
    """Requests, bytes and retries a call made (our side's count; servers count too)."""

    requests: int = 0
    bytes: int = 0
    retries: int = 0

    def add(self, nbytes: int) -> None:
        """Count one request that returned ``nbytes`` bytes."""
        self.requests += 1
        self.bytes += nbytes


@dataclass(frozen=True)
class ObjectInfo:
    """What a store says about an object: size and version (ETag, Last-Modified)."""

    size: int | None = None
    etag: str | None = None
    last_modified: str | None = None


#: Retries made by this process since it started (all calls, all backends).
PROCESS_STATS = FetchStats()


def process_stats() -> FetchStats:
    """The retries this process has made since it started, over every call and backend.

    Returns:
        The process-wide :class:`FetchStats` (live: it keeps counting); only its
        ``retries`` is kept at this level, per-call stats count requests and bytes.
    """
    return PROCESS_STATS


_TRANSIENT = re.compile(
    r"status code: (5\d\d|429)|\b(5\d\d|429) [A-Z]|timed? ?out|connection"
    r"|error sending request|reset|broken pipe|incomplete|unexpected eof|body error"
    r"|error decoding response body|SlowDown|ServiceUnavailable",
    re.IGNORECASE,
)


# Case-sensitive: status lines and S3/Azure error codes, never a byte count like "503 b".
_THROTTLED = re.compile(
    r"status code: (429|503)\b|\b(429 Too Many Requests|503 Service Unavailable|503 Slow Down)"
    r"|\b(SlowDown|ServiceUnavailable|ServerBusy|TooManyRequests)\b"
)


def is_throttled(error: RasteretError) -> bool:
    """True when the store asked us to slow down (429, 503 Slow Down / Unavailable)."""
    return isinstance(error, BackendError) and bool(_THROTTLED.search(str(error)))


def is_transient(error: RasteretError) -> bool:
    """True for failures worth retrying: network errors, 5xx, 429, short bodies."""
    if isinstance(error, (AccessDeniedError, ObjectNotFoundError, ConfigurationError,
                          ObjectChangedError, WriteConflictError)):
        return False
    if isinstance(error, NetworkError):
        return True
    return isinstance(error, BackendError) and bool(_TRANSIENT.search(str(error)))


async def with_retries(backend: Backend, url: str, what: str,
                       attempt_once: Callable[[], Awaitable[_T]],
                       stats: FetchStats | None) -> _T:
    """Run ``attempt_once()`` until it succeeds, retrying transient failures with
    exponential backoff and full jitter within the backend's retry policy; a store
    that throttles is given ``throttle_delay`` more before each retry.

    Raises:
        NetworkError: The attempts or the time budget ran out; names the URL, what was
            read and how many attempts were made.
        RasteretError: A failure that retrying cannot fix (denied, missing, ...).
    """
    policy = backend.retries
    started = policy.clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await attempt_once()
        except RasteretError as error:
            elapsed = policy.clock() - started
            if not is_transient(error):
                raise
            delay = random.uniform(0, min(policy.max_delay, policy.base_delay * 2 ** attempt))
            if is_throttled(error):
                # Retry-After is not visible through obstore: wait at least this floor,
                # jittered on top so throttled requests do not return all at once.
                delay += policy.throttle_delay
            if attempt >= policy.attempts or elapsed + delay > policy.budget:
                raise NetworkError(
                    f"{what} of {strip_query(url)} failed after {attempt} attempt(s) in "
                    f"{elapsed:.1f} s: {error}"
                ) from None
            for counter in (stats, PROCESS_STATS):
                if counter is not None:
                    counter.retries += 1
            await policy.sleep(delay)


def request_slots(backend: Backend) -> asyncio.Semaphore:
    """The semaphore bounding requests in flight (hold it around each request): one
    per event loop, and per backend when it sets ``max_concurrent_requests`` (a small
    server may need fewer connections)."""
    loop = asyncio.get_running_loop()
    limit = backend.max_concurrent_requests
    key = (id(loop), id(backend) if limit else 0)
    semaphore = _semaphores.get(key)
    if semaphore is None:
        semaphore = _semaphores[key] = asyncio.Semaphore(limit or MAX_CONCURRENT_REQUESTS)
    return semaphore


def sanitize(message: str) -> str:
    """Remove query strings and credential-looking values from a store's message."""
    return _SECRET_FIELD.sub(r"\1\2***", _QUERY.sub("?***", message))


def translate_error(
    exc: BaseException, url: str, backend: Backend, what: str = "read"
) -> RasteretError:
    """Turn an obstore/OS exception into a typed rasteret error naming URL and fix."""
    if isinstance(exc, RasteretError):
        return exc
    shown = strip_query(url)
    detail = sanitize(str(exc).split("\n\nDebug source:", 1)[0]).strip()
    if isinstance(exc, (NotFoundError, FileNotFoundError)):
        return ObjectNotFoundError(f"{shown} does not exist (HTTP 404 / no such file): {detail}")
    text = str(exc)
    if re.search(r"InvalidToken|ExpiredToken|TokenRefreshRequired|AuthenticationFailed.*expired",
                 text):
        return AccessDeniedError(
            f"the store rejected the session token for {shown} (expired or invalid) using "
            f"{backend.describe_credentials(url)}: refresh the credentials (a credential "
            "provider refreshes them itself). Store said: " + detail
        )
    if re.search(r"PermanentRedirect|AuthorizationHeaderMalformed|IllegalLocationConstraint"
                 r"|301 Moved Permanently|wrong region|redirect without LOCATION"
                 r"|incorrectly configured region", text):
        return _region_error(url, backend, text, detail)
    if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or re.search(
        r"status code: (401|403)|40[13] (Unauthorized|Forbidden)|AccessDenied|SignatureDoesNotMatch"
        r"|InvalidAccessKeyId"
        r"|AuthenticationFailed|AuthorizationFailure",
        text,
    ):
        return AccessDeniedError(
            f"access denied to {shown} using {backend.describe_credentials(url)}. "
            "Check the credentials (aws configure / AWS_* variables, ~/.netrc for "
            "Earthdata, a credential provider), pass the same backend= to both build "
            "and read, and set request_payer for requester-pays buckets. "
            f"Store said: {detail}"
        )
    if re.search(r"status code: 404|404 Not Found|NoSuchKey|NoSuchBucket|BlobNotFound", text):
        return ObjectNotFoundError(f"{shown} does not exist: {detail}")
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)) or "error sending request" in text:
        return NetworkError(f"{what} of {shown} failed after retries: {detail}")
    return BackendError(f"{what} of {shown} failed: {detail}")


def _region_error(url: str, backend: Backend, text: str, detail: str) -> RegionMismatchError:
    """The error for a bucket in another region: names the bucket's region (from S3's
    message, else from an unsigned HEAD on the bucket) and the setting to change."""
    from rasteret.io.regions import probe_bucket_region, region_from_message
    from rasteret.io.urls import parse_url

    shown = strip_query(url)
    target = parse_url(url)
    bucket = target.key if target.kind == "s3" else ""
    config = backend.s3_config(target.region) if target.kind == "s3" else {}
    asked = config.get("region")
    real = region_from_message(text)
    if real is None and bucket:
        # A 301 carries no region obstore shows; S3 names it on a HEAD of the bucket.
        real = probe_bucket_region(bucket, config.get("endpoint"))
    # default_s3_config's region wins over create_backend(region=): name the one to edit.
    setting = ("default_s3_config={'region': %r} (it takes precedence over "
               "create_backend(region=...))" if "region" in backend.default_s3_config
               else "create_backend(region=%r)")
    if real:
        # AWS_REGION only matters when the backend sets no region itself.
        env = "" if "region" in backend.default_s3_config or backend.region else \
            f" (or set AWS_REGION={real})"
        message = (
            f"{shown}: bucket {bucket!r} is in region {real!r}, but the requests used "
            f"{asked or 'no region'!r}. Pass {setting % real}{env}. Store said: {detail}"
        )
    else:
        message = (
            f"{shown}: bucket {bucket!r} is in another region than {asked or 'the default'!r}"
            " and it did not say which: set create_backend(region=...) to the bucket's "
            f"region. Store said: {detail}"
        )
    return RegionMismatchError(message, bucket=bucket, requested_region=asked,
                               bucket_region=real)


async def fetch_head(
    backend: Backend, url: str, length: int, stats: FetchStats | None = None
) -> tuple[bytes, ObjectInfo]:
    """Fetch the first ``length`` bytes of ``url`` in one ranged GET (no HEAD).

    Returns:
        ``(data, info)``; ``data`` is shorter than ``length`` for small files; ``info``
        holds the size, ETag and Last-Modified the store reported.
    """
    ensure_io_allowed()
    store, path = backend.store_for(url)

    async def once() -> tuple[bytes, ObjectInfo]:
        try:
            async with request_slots(backend):
                result = await obstore.get_async(store, path, options={"range": (0, length)})
                data = await result.bytes_async()
        except Exception as exc:  # noqa: BLE001 - translated into a typed error
            raise translate_error(exc, url, backend, "header read") from None
        meta = result.meta if isinstance(result.meta, dict) else {}
        size = meta.get("size")
        modified = meta.get("last_modified")
        info = ObjectInfo(size, meta.get("e_tag"), modified.isoformat() if modified else None)
        expected = min(length, size) if size is not None else None
        if expected is not None and len(data) != expected:
            raise ShortReadError(
                f"{strip_query(url)} returned {len(data)} header bytes, {expected} expected"
            )
        if stats is not None:
            stats.add(len(data))
        return bytes(data), info

    return await with_retries(backend, url, "header read", once, stats)


def _strong_etag(etag: str | None) -> str | None:
    """The ETag to send as ``If-Match``: weak ETags (``W/"..."``) never match under
    If-Match's strong comparison, so they are compared on the response instead."""
    return etag if etag and not etag.startswith("W/") else None


def changed_error(url: str, why: str) -> ObjectChangedError:
    """The error for an object replaced after indexing: names it and the fix."""
    return ObjectChangedError(
        f"{strip_query(url)} changed after it was indexed ({why}): the tile offsets "
        "recorded for it belong to another version of the object, so no pixels were "
        "read from it. Rebuild the collection with force=True (rasteret.build(..., "
        "force=True), or the build_from_stac / build_from_table call that made it), or "
        "open_cog() the file again"
    )


def check_version(url: str, version: ObjectInfo, meta: Any) -> None:
    """Compare what a response says about the object with the recorded version.

    Size and ETag are compared when both sides know them; Last-Modified only when
    no ETag was recorded (an ETag is the better witness, and some stores rewrite the
    time without changing the object).

    Raises:
        ObjectChangedError: The object is another version than the one recorded.
    """
    meta = meta if isinstance(meta, dict) else {}
    size, etag, modified = meta.get("size"), meta.get("e_tag"), meta.get("last_modified")
    if version.size is not None and size is not None and size != version.size:
        raise changed_error(url, f"{size} bytes now, {version.size} when indexed")
    if version.etag and etag and etag != version.etag:
        raise changed_error(url, f"ETag {etag} now, {version.etag} when indexed")
    if not version.etag and version.last_modified and modified is not None:
        now = modified.isoformat() if hasattr(modified, "isoformat") else str(modified)
        if now != version.last_modified:
            raise changed_error(
                url, f"modified {now}, {version.last_modified} when indexed")


async def fetch_range(
    backend: Backend, url: str, start: int, end: int, stats: FetchStats | None = None,
    *, version: ObjectInfo | None = None,
) -> Bytes:
    """Fetch bytes ``[start, end)`` of ``url``; the result supports the buffer protocol.

    Args:
        version: When given, the store must still hold this version of the object:
            a strong ETag is sent as ``If-Match`` (the store refuses another version,
            at no extra request), and the size, ETag (and, without an ETag, the
            modification time) of the response are compared with it.

    Raises:
        NetworkError: The store returned fewer bytes than asked for, after retries.
        ObjectChangedError: The object changed since ``version`` was recorded.
    """
    ensure_io_allowed()
    store, path = backend.store_for(url)
    what = f"read of bytes {start}-{end}"
    options: GetOptions = {"range": (start, end)}
    if_match = _strong_etag(version.etag) if version is not None else None
    if if_match:
        options["if_match"] = if_match

    async def once() -> Bytes:
        try:
            async with request_slots(backend):
                if version is None:
                    data = await obstore.get_range_async(store, path, start=start, end=end)
                else:
                    result = await obstore.get_async(store, path, options=options)
                    data = await result.bytes_async()
        except PreconditionError:
            raise changed_error(url, f"ETag {if_match} no longer matches") from None
        except Exception as exc:  # noqa: BLE001 - translated into a typed error
            raise translate_error(exc, url, backend, what) from None
        if version is not None:
            check_version(url, version, result.meta)
        if len(data) != end - start:
            raise ShortReadError(
                f"{strip_query(url)} returned {len(data)} bytes for range {start}-{end} "
                f"({end - start} expected): a truncated transfer, or the object is shorter "
                "than its header says or changed after it was indexed"
            )
        if stats is not None:
            stats.add(len(data))
        return data

    return await with_retries(backend, url, what, once, stats)


async def fetch_ranges(
    backend: Backend,
    url: str,
    ranges: list[tuple[int, int]],
    stats: FetchStats | None = None,
    *,
    version: ObjectInfo | None = None,
) -> list[Bytes]:
    """Fetch several ranges of one object concurrently, in the order given."""
    return list(await asyncio.gather(
        *(fetch_range(backend, url, s, e, stats, version=version) for s, e in ranges)))


async def fetch_object(
    backend: Backend, url: str, stats: FetchStats | None = None, *, what: str = "read"
) -> bytes:
    """Fetch the whole of ``url`` in one GET (small documents: STAC JSON, sidecars).

    Raises:
        ObjectNotFoundError: The object does not exist.
        RasteretError: Another failure, translated and retried as range reads are.
    """
    ensure_io_allowed()
    store, path = backend.store_for(url)

    async def once() -> bytes:
        try:
            async with request_slots(backend):
                result = await obstore.get_async(store, path)
                data = await result.bytes_async()
        except Exception as exc:  # noqa: BLE001 - translated into a typed error
            raise translate_error(exc, url, backend, what) from None
        if stats is not None:
            stats.add(len(data))
        return bytes(data)

    return await with_retries(backend, url, what, once, stats)
