"""Transport: URL routing, backends, the per-process I/O runtime, range fetching."""

from rasteret.io.backend import Backend, create_backend, default_backend
from rasteret.io.fetch import FetchStats, fetch_head, fetch_range, fetch_ranges
from rasteret.io.runtime import run_sync
from rasteret.io.urls import StoreTarget, parse_url

__all__ = [
    "Backend",
    "FetchStats",
    "StoreTarget",
    "create_backend",
    "default_backend",
    "fetch_head",
    "fetch_range",
    "fetch_ranges",
    "parse_url",
    "run_sync",
]
