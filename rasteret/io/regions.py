"""Finding an S3 bucket's region when a request went to the wrong one.

S3 answers an unsigned ``HEAD`` on a bucket with the header ``x-amz-bucket-region``,
whatever the status (200, 301, 403). rasteret asks only after S3 refused a request
for its region, names the region in the error and does not retry elsewhere: the fix
belongs in the backend every process shares.
"""

from __future__ import annotations

import re
import threading
import urllib.error
import urllib.request

# Bounded: the probe runs on an error path and must never make a read hang.
PROBE_TIMEOUT = 3.0

_cache: dict[tuple[str, str], str | None] = {}
_lock = threading.Lock()

_EXPECTING = re.compile(r"expecting '([a-z]{2}(?:-[a-z]+)+-\d+)'")
_REGION_TAG = re.compile(r"<Region>([a-z]{2}(?:-[a-z]+)+-\d+)</Region>")


def region_from_message(text: str) -> str | None:
    """The bucket's region as S3 states it in an error body ("expecting 'Y'", or a
    ``<Region>`` element), or None."""
    found = _EXPECTING.search(text) or _REGION_TAG.search(text)
    return found.group(1) if found else None


def bucket_url(bucket: str, endpoint: str | None) -> str:
    """The URL of the bucket itself: path-style under a custom endpoint, else AWS's
    global virtual-hosted name (which answers for buckets of every region)."""
    if endpoint:
        return f"{endpoint.rstrip('/')}/{bucket}"
    return f"https://{bucket}.s3.amazonaws.com"


def probe_bucket_region(bucket: str, endpoint: str | None = None) -> str | None:
    """Ask S3 which region ``bucket`` lives in (unsigned ``HEAD``, cached per process).

    Returns:
        The region from ``x-amz-bucket-region``, or None when the store did not say
        (not S3, unreachable, or no such header).
    """
    key = (endpoint or "", bucket)
    with _lock:
        if key in _cache:
            return _cache[key]
    request = urllib.request.Request(bucket_url(bucket, endpoint), method="HEAD")
    region: str | None
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT) as response:
            region = response.headers.get("x-amz-bucket-region")
    except urllib.error.HTTPError as error:  # 301/403 still carry the header
        region = error.headers.get("x-amz-bucket-region") if error.headers else None
    except (OSError, ValueError):
        region = None
    with _lock:
        _cache[key] = region
    return region
