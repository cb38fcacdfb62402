"""Valid-data coverage at build time: the collection's ``valid_coverage`` column.

Each scene's grid (see :mod:`rasteret.coverage`) comes from its item's geometry and
its tile tables, at no request; with ``valid_coverage="overview"``, from one read of
each asset's smallest overview too (that overview's tiles, usually one: one ranged
request per asset, a few kilobytes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import shapely
from affine import Affine
from shapely.geometry import shape

from rasteret.band import BandView, band_views
from rasteret.coverage import nodata_mask, scene_coverage
from rasteret.io.backend import Backend
from rasteret.io.fetch import FetchStats
from rasteret.io.runtime import run_sync
from rasteret.options import VALID_COVERAGE, ValidCoverage, check_option
from rasteret.schema import COVERAGE_COLUMN, COVERAGE_TYPE, is_band_struct


def check_valid_coverage(value: ValidCoverage | None) -> None:
    """Raise :class:`~rasteret.errors.ConfigurationError` unless ``value`` is one of
    :data:`~rasteret.options.VALID_COVERAGE` or None."""
    if value is not None:
        check_option("valid_coverage", value, VALID_COVERAGE)


async def _overview_mask(view: BandView, backend: Backend, stats: FetchStats | None
                         ) -> tuple[Affine, np.ndarray] | None:
    """``(transform, valid)`` of the smallest overview of ``view``'s asset, or None
    when it has no overview or no nodata value to find."""
    # The header was read moments ago in this build: no version to check against yet.
    cog = view.cog(backend, validate=False)
    overviews = len(cog.overviews)
    if not overviews or view.nodata is None:
        return None
    last = overviews - 1
    pixels = await cog.read_async(overview=last, bands=view.band_index, stats=stats)
    valid = nodata_mask(pixels[0], view.nodata)
    transform = cog.level_transform(last)
    if valid is None or transform is None:
        return None
    return transform, valid.astype(np.float32)


async def read_overview_masks(views: Sequence[BandView], *, backend: Backend,
                              max_concurrent: int, stats: FetchStats | None = None
                              ) -> dict[str, tuple[Affine, np.ndarray]]:
    """The valid pixels of the smallest overview of each distinct asset of ``views``,
    ``max_concurrent`` reads at once: href -> ``(transform, valid)``.

    An asset that fails to read is left out (its scene's coverage then comes from the
    other sources): the build indexed its header already, and its pixels are the
    reader's business.
    """
    semaphore = asyncio.Semaphore(max(1, max_concurrent))
    unique = {view.href: view for view in views}
    found: dict[str, tuple[Affine, np.ndarray]] = {}

    async def one(view: BandView) -> None:
        async with semaphore:
            try:
                mask = await _overview_mask(view, backend, stats)
            except Exception:  # noqa: BLE001 - coverage is best effort, see above
                return
            if mask is not None:
                found[view.href] = mask

    await asyncio.gather(*(one(view) for view in unique.values()))
    return found


def with_coverage(table: pa.Table, geometries: Sequence[dict[str, Any] | None], *,
                  valid_coverage: ValidCoverage, backend: Backend, max_concurrent: int,
                  stats: FetchStats | None = None) -> pa.Table:
    """``table`` (a batch of indexed scenes) with its ``valid_coverage`` column.

    Args:
        table: The scenes, as :func:`~rasteret.ingest.records.records_to_table` gives
            them.
        geometries: Each scene's item geometry (GeoJSON, degrees), None where the
            source gave none.
        valid_coverage: ``"geometry"`` (geometry and sparse tiles) or ``"overview"``
            (also each asset's smallest overview, read now).
        backend: How to reach the assets (overview reads).
        max_concurrent: Overview reads at once.
        stats: Optional counter of requests and bytes.
    """
    ids = table.column("id").to_pylist()
    bands = [f.name for f in table.schema if is_band_struct(f.type)]
    per_band = [band_views(table.column(band), band=band, ids=ids) for band in bands]
    scenes = [[views[row] for views in per_band] for row in range(table.num_rows)]
    masks: dict[str, tuple[Affine, np.ndarray]] = {}
    if valid_coverage == "overview":
        every = [view for views in scenes for view in views if view is not None]
        masks = run_sync(read_overview_masks(every, backend=backend,
                                             max_concurrent=max_concurrent, stats=stats))
    records = []
    for views, geometry in zip(scenes, geometries, strict=True):
        wkb = shapely.to_wkb(shape(geometry)) if geometry else None
        grid = scene_coverage(views, geometry=wkb, overviews=masks)
        records.append(None if grid is None else grid.to_record())
    return table.append_column(pa.field(COVERAGE_COLUMN, COVERAGE_TYPE),
                               pa.array(records, COVERAGE_TYPE))
