"""URL routing: which kind of store serves a URL, keyed how, at what path.

Every href a user or a catalog hands us becomes a :class:`StoreTarget`: a store
kind, the key that identifies one store (a bucket, a container, an HTTP origin)
and the object's path inside it. Stores are then cached per key.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from rasteret.errors import ConfigurationError
from rasteret.redact import strip_query as strip_query  # re-exported for io, read, ingest

_S3_VIRTUAL_HOST = re.compile(
    r"^(?P<bucket>[a-z0-9.\-]+)\.s3(?:[.-](?P<region>[a-z0-9-]+))?\.amazonaws\.com$"
)
_S3_PATH_HOST = re.compile(r"^s3(?:[.-](?P<region>[a-z0-9-]+))?\.amazonaws\.com$")
_AZURE_BLOB_HOST = re.compile(r"^(?P<account>[a-z0-9]+)\.(?:blob|dfs)\.core\.windows\.net$")


@dataclass(frozen=True)
class StoreTarget:
    """Where an object lives.

    Attributes:
        kind: ``"file"``, ``"http"``, ``"s3"``, ``"azure"`` or ``"gcs"``.
        key: Identifies one store of that kind: the HTTP origin, the bucket, or
            ``account/container`` for Azure; ``""`` for local files.
        path: The object's path inside that store (no leading slash).
        region: A region named by the URL itself (S3 https URLs), else None.
    """

    kind: str
    key: str
    path: str
    region: str | None = None


def _split_first(path: str) -> tuple[str, str]:
    path = path.lstrip("/")
    first, _, rest = path.partition("/")
    return first, rest


def parse_url(url: str) -> StoreTarget:
    """Route ``url`` to a store.

    Accepts local paths and ``file://`` URLs, ``http(s)://`` (with S3, Azure Blob
    and Google Cloud Storage https forms recognised), ``s3://``/``s3a://``,
    ``gs://``, ``az://``/``azure://`` (``container/path``, account from the backend
    or ``AZURE_STORAGE_ACCOUNT_NAME``) and ``abfs(s)://container@account...``.

    Raises:
        ConfigurationError: The URL's scheme is not supported.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        local = unquote(parts.path) if scheme == "file" else url
        # abspath, not resolve(): no filesystem calls on the indexing hot path.
        return StoreTarget("file", "", os.path.abspath(os.path.expanduser(local)).lstrip("/"))
    if scheme in ("s3", "s3a"):
        return StoreTarget("s3", parts.netloc, parts.path.lstrip("/"))
    if scheme in ("gs", "gcs"):
        return StoreTarget("gcs", parts.netloc, parts.path.lstrip("/"))
    if scheme in ("az", "azure"):
        account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", "")
        return StoreTarget("azure", f"{account}/{parts.netloc}", parts.path.lstrip("/"))
    if scheme in ("abfs", "abfss"):
        container, _, host = parts.netloc.partition("@")
        account = host.split(".", 1)[0]
        return StoreTarget("azure", f"{account}/{container}", parts.path.lstrip("/"))
    if scheme in ("http", "https"):
        host = (parts.hostname or "").lower()
        path = unquote(parts.path)
        match = _S3_VIRTUAL_HOST.match(host)
        if match:
            return StoreTarget("s3", match["bucket"], path.lstrip("/"), match["region"])
        match = _S3_PATH_HOST.match(host)
        if match:
            bucket, key = _split_first(path)
            return StoreTarget("s3", bucket, key, match["region"])
        match = _AZURE_BLOB_HOST.match(host)
        if match:
            container, blob = _split_first(path)
            return StoreTarget("azure", f"{match['account']}/{container}", blob)
        if host == "storage.googleapis.com":
            bucket, key = _split_first(path)
            return StoreTarget("gcs", bucket, key)
        origin = f"{scheme}://{parts.netloc}"
        return StoreTarget("http", origin, path.lstrip("/"))
    raise ConfigurationError(
        f"unsupported URL scheme {scheme!r} in {url!r}: use a local path, file://, "
        "http(s)://, s3://, gs://, az:// or abfs://"
    )
