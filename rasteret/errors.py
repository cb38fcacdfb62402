"""The exception types users catch.

Every error rasteret raises on purpose derives from :class:`RasteretError`. Errors
that have a natural builtin meaning also derive from it (a missing object is a
:class:`FileNotFoundError`, denied access a :class:`PermissionError`) so that code
written against the standard library keeps working.
"""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Any

# The exception types; warn_user (below) is for rasteret's own modules.
__all__ = [
    "AccessDeniedError",
    "BackendError",
    "CollectionChangedError",
    "CollectionConflictError",
    "CollectionNotFoundError",
    "ConfigurationError",
    "CorruptCollectionError",
    "CorruptTiffError",
    "DatasetNotFoundError",
    "ForkAfterIOError",
    "IndexingError",
    "NetworkError",
    "NoCoverageError",
    "NoScenesError",
    "ObjectChangedError",
    "ObjectNotFoundError",
    "RasteretError",
    "RegionMismatchError",
    "ShortReadError",
    "StacSearchError",
    "TiffError",
    "UnsupportedTiffError",
    "WriteConflictError",
]


class RasteretError(Exception):
    """Base class of every error rasteret raises on purpose."""


class TiffError(RasteretError):
    """A TIFF could not be used; the base of the two cases below."""


class UnsupportedTiffError(TiffError):
    """The file is a valid TIFF that uses a feature rasteret does not read.

    The message names the feature and the URL.
    """


class CorruptTiffError(TiffError, ValueError):
    """The file's bytes are not a valid TIFF (or a tile does not decode)."""


class BackendError(RasteretError):
    """The storage layer failed: the base of the transport errors."""


class ObjectNotFoundError(BackendError, FileNotFoundError):
    """The object does not exist (HTTP 404 or a missing local file)."""


class AccessDeniedError(BackendError, PermissionError):
    """The store refused the request (HTTP 401/403): credentials are missing or wrong."""


class NetworkError(BackendError, ConnectionError):
    """The request failed after its retries (connection refused, reset, timeout, 5xx)."""


class ObjectChangedError(BackendError):
    """The object was replaced after it was indexed: its ETag, size or modification
    time differs from the ones recorded, so the stored tile offsets no longer apply.

    The message names the object and how to rebuild the collection. Never retried.
    """


class WriteConflictError(BackendError):
    """A conditional write lost: the object was created or replaced by someone else
    since it was read (``If-None-Match`` / ``If-Match`` failed). Never retried."""


class CollectionConflictError(WriteConflictError):
    """Another build published the same collection first.

    Publishing a collection to an object-store workspace ends with one conditional
    write of its manifest, so of two concurrent builds exactly one wins; the other
    raises this (its parts are removed). The message names the collection and the
    workspace: load the winner, or rebuild with ``force=True`` to replace it.
    """


class CollectionChangedError(RasteretError):
    """A collection's files now hold another build than the one that was loaded.

    Tasks on other processes (a dask DataFrame's partitions in
    ``sample_points``) open a loaded collection again from its files; when it was
    rebuilt or deleted meanwhile they would read other scenes, so they raise this.
    The message names the collection and where it is: load it again and rerun.
    """


class ForkAfterIOError(RasteretError, RuntimeError):
    """This process was forked after its parent did rasteret I/O.

    obstore's runtime does not survive ``fork``: any request from the child would hang.
    Use ``multiprocessing_context="forkserver"`` (or ``"spawn"``) for DataLoader workers.
    """


class ConfigurationError(RasteretError, ValueError):
    """An argument or configuration value is invalid; the message says which and why."""


class RegionMismatchError(ConfigurationError):
    """An S3 bucket lives in another region than the one requests were signed for.

    S3 answers ``400 AuthorizationHeaderMalformed`` or ``301 PermanentRedirect``.
    rasteret asks the bucket for its region (an unsigned ``HEAD``, answered with
    ``x-amz-bucket-region``) and names it, with the setting to change.

    Attributes:
        bucket: The bucket.
        requested_region: The region the requests used (None when unknown).
        bucket_region: The bucket's region (None when it could not be found out).
    """

    def __init__(self, message: str, *, bucket: str, requested_region: str | None = None,
                 bucket_region: str | None = None) -> None:
        super().__init__(message)
        self.bucket = bucket
        self.requested_region = requested_region
        self.bucket_region = bucket_region


class ShortReadError(NetworkError):
    """A range came back shorter or longer than asked: never turned into pixels."""


class CollectionNotFoundError(RasteretError, FileNotFoundError):
    """No saved collection has that name or path."""


class CorruptCollectionError(RasteretError, ValueError):
    """A saved collection's files are damaged or not a rasteret collection."""


class StacSearchError(RasteretError, ConnectionError):
    """The STAC API or catalog could not be searched; the message names it."""


class NoScenesError(RasteretError):
    """The source returned no scenes; the message says what was asked."""


class DatasetNotFoundError(ConfigurationError, LookupError):
    """No dataset of the catalog has that id; the message lists the registered ones.

    A :class:`ConfigurationError` in the API; the command line, like for a missing
    collection, exits with status 1 (the thing named does not exist), not 2.
    """


class NoCoverageError(ConfigurationError):
    """No scene of the collection covers the requested area or point."""


class IndexingError(RasteretError):
    """Indexing failed for some assets (``on_error="raise"``).

    Attributes:
        failures: The :class:`rasteret.ingest.IndexFailure` records, one per asset
            that could not be indexed.
    """

    def __init__(self, failures: list[Any]) -> None:
        self.failures = failures
        rows = [f.as_row() for f in failures[:10]]  # as_row strips signed queries
        lines = [f"  {r['id']}/{r['band']} {r['href']}: {r['error_type']}: {r['message']}"
                 for r in rows]
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        super().__init__(
            f"{len(failures)} asset(s) could not be indexed:\n" + "\n".join(lines) + more
            + '\nPass on_error="skip" to build without them (they are kept in '
            "collection.failures); re-running the build resumes where it stopped."
        )


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn, naming the first frame outside rasteret: the user's call.

    A fixed ``stacklevel`` names whichever rasteret function happened to call the
    warning code (``build`` and ``build_from_table`` reach the builder at different
    depths); this walks up to the caller the message is meant for, so the warning
    points at the user's line and their filters (by module) apply to it.

    Args:
        message: The warning's text.
        category: The warning class (``UserWarning`` by default).
    """
    here = inspect.currentframe()  # None only on Pythons without frames: stacklevel 2
    frame = here.f_back if here is not None else None
    level = 2  # stacklevel 2 names the frame that called warn_user
    while (frame is not None and frame.f_back is not None
           and frame.f_code.co_filename.startswith(_PACKAGE)):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
