"""Concurrent header indexing: many headers in flight, about one request each.

Every failure is kept with its reason; nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from rasteret.errors import ConfigurationError
from rasteret.io.backend import Backend
from rasteret.io.fetch import FetchStats, ObjectInfo
from rasteret.io.urls import strip_query
from rasteret.read.cog import read_header
from rasteret.schema import header_to_record
from rasteret.tiff.header import CogHeader

DEFAULT_MAX_CONCURRENT = 256


@dataclass(frozen=True)
class IndexFailure:
    """One asset that could not be indexed."""

    scene_id: str
    band: str
    href: str
    error_type: str
    message: str

    def as_row(self) -> dict[str, str]:
        """The failure as a plain dict (a row of ``Collection.failures``)."""
        return {
            "id": self.scene_id,
            "band": self.band,
            "href": strip_query(self.href),
            "error_type": self.error_type,
            "message": self.message,
        }


async def index_hrefs(
    hrefs: list[str],
    *,
    backend: Backend,
    max_concurrent: int = DEFAULT_MAX_CONCURRENT,
    stats: FetchStats | None = None,
) -> dict[str, tuple[CogHeader, ObjectInfo] | BaseException]:
    """Parse the headers of ``hrefs`` concurrently, ``max_concurrent`` at once.

    Returns:
        href -> ``(header, info)`` (the object's size and version) or the exception
        that stopped it.
    """
    semaphore = asyncio.Semaphore(max_concurrent)
    results: dict[str, tuple[CogHeader, ObjectInfo] | BaseException] = {}

    async def one(href: str) -> None:
        async with semaphore:
            try:
                results[href] = await read_header(href, backend=backend, stats=stats)
            except Exception as exc:  # noqa: BLE001 - every failure is recorded
                results[href] = exc

    await asyncio.gather(*(one(h) for h in hrefs))
    return results


def band_record(
    parsed: tuple[CogHeader, ObjectInfo], href: str, band_index: int
) -> dict[str, Any]:
    """The stored record of one band, checking a multi-band asset has the sample.

    Raises:
        ConfigurationError: ``band_index`` exceeds the asset's samples per pixel.
    """
    header, info = parsed
    samples = header.levels[0].samples_per_pixel
    if not 1 <= band_index <= samples:
        raise ConfigurationError(
            f"band index {band_index} does not exist in {strip_query(href)} "
            f"({samples} band(s))"
        )
    return header_to_record(header, href=href, size=info.size, band_index=band_index,
                            etag=info.etag, last_modified=info.last_modified)
