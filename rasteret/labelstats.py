"""Class histograms of label bands, per coverage cell: what samplers draw chips by.

A label band (a land-cover map, a segmentation mask) is read once at full resolution
(labels are small and compress well: a 1024 x 1024 uint8 scene is a few requests and a
few kilobytes) and reduced to the fraction of each class in every cell of the grid
:mod:`rasteret.coverage` uses (a few cells per tile). A chip's class content is then
bounded from the cells it covers, without a request
(:func:`rasteret.coverage.chip_fractions` on :meth:`LabelHistogram.class_grid`).

Histograms are kept per asset version (href, ETag, size, sample) for the life of the
process, so a second sampler on the same labels makes no request, and, given a
folder, in a Parquet file there that later processes read (a collection's own folder
holds its parts only, see :mod:`rasteret.storage`).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rasteret.band import BandView
from rasteret.coverage import CoverageGrid, cell_pixels
from rasteret.io.backend import Backend
from rasteret.io.fetch import FetchStats
from rasteret.io.runtime import run_sync

#: The file a histogram folder holds.
CACHE_FILE = "label-histograms.parquet"
_CACHE_SCHEMA = pa.schema([("key", pa.string()), ("crs_epsg", pa.int32()), ("x0", pa.float64()),
                           ("y0", pa.float64()), ("cell_x", pa.float64()),
                           ("cell_y", pa.float64()), ("rows", pa.int32()),
                           ("columns", pa.int32()), ("classes", pa.list_(pa.float64())),
                           ("fractions", pa.binary())])


@dataclass(frozen=True)
class LabelHistogram:
    """The class content of one label asset, per cell.

    Attributes:
        grid: The cells (its ``valid`` is the labelled fraction: pixels that are not
            nodata).
        classes: The class values found, sorted.
        fractions: ``(rows, columns, len(classes))`` float32: the fraction of each
            cell's area holding each class.
    """

    grid: CoverageGrid
    classes: np.ndarray
    fractions: np.ndarray

    def class_grid(self, value: float) -> CoverageGrid:
        """The fraction of each cell holding class ``value`` (all 0 when absent)."""
        found = np.flatnonzero(self.classes == value)
        fraction = (self.fractions[..., int(found[0])] if len(found)
                    else np.zeros(self.grid.shape, np.float32))
        return _with_valid(self.grid, fraction)

    def not_grid(self, values: Sequence[float]) -> CoverageGrid:
        """The fraction of each cell holding a class other than ``values``."""
        keep = ~np.isin(self.classes, np.asarray(values, np.float64))
        return _with_valid(self.grid, self.fractions[..., keep].sum(axis=-1))


def _with_valid(grid: CoverageGrid, valid: np.ndarray) -> CoverageGrid:
    return CoverageGrid(grid.epsg, grid.x0, grid.y0, grid.cell_x, grid.cell_y,
                        valid.astype(np.float32), grid.sources)


def histogram_of(pixels: np.ndarray, view: BandView) -> LabelHistogram:
    """The per-cell class fractions of a label image read whole (``pixels``, the
    full-resolution band of ``view``); nodata pixels belong to no class."""
    transform = view.grid.transform
    size = cell_pixels(min(view.tile_width, view.tile_height), max(view.width, view.height))
    height, width = pixels.shape
    rows, columns = math.ceil(height / size), math.ceil(width / size)
    labelled = np.ones(pixels.shape, bool)
    if view.nodata is not None:
        labelled &= pixels != view.nodata
    if pixels.dtype.kind == "f":
        labelled &= ~np.isnan(pixels)
    if pixels.dtype.kind in "ui" and pixels.dtype.itemsize <= 2:
        # Small integers: codes through a lookup table, then one count per (cell,
        # class) pair, without sorting.
        values = pixels.astype(np.int32) - (int(pixels.min()) if pixels.size else 0)
        present = np.bincount(values[labelled])
        found = np.flatnonzero(present)
        classes = found.astype(np.float64) + (int(pixels.min()) if pixels.size else 0)
        lookup = np.zeros(len(present), np.int32)
        lookup[found] = np.arange(len(found), dtype=np.int32)
        cell = ((np.arange(height, dtype=np.int32) // size)[:, None] * columns
                + (np.arange(width, dtype=np.int32) // size)[None, :])
        keys = (cell * len(found) + lookup[values])[labelled]
        counts = np.bincount(keys, minlength=rows * columns * len(found))
        fractions = (counts.reshape(rows, columns, len(found)) / float(size * size)
                     ).astype(np.float32)
    else:
        classes = np.unique(pixels[labelled]).astype(np.float64)
        # Pixels padded to whole cells (padding and nodata hold no class), then one
        # pass per class summing the cells of a (rows, size, columns, size) view.
        padded = np.zeros((rows * size, columns * size), np.float32)
        fractions = np.empty((rows, columns, len(classes)), np.float32)
        for k, value in enumerate(classes):
            padded[:height, :width] = (pixels == value) & labelled
            counts = padded.reshape(rows, size, columns, size).sum(axis=(1, 3))
            fractions[..., k] = counts / float(size * size)
    grid = CoverageGrid(view.epsg or 0, transform.c, transform.f, abs(transform.a) * size,
                        abs(transform.e) * size, fractions.sum(axis=-1), ("labels",))
    return LabelHistogram(grid, classes, fractions)


def asset_key(view: BandView) -> str:
    """The cache key of a label asset's version: href, ETag, size, sample, cell size."""
    text = "\x1f".join(str(v) for v in (view.href, view.etag, view.size, view.band_index,
                                        view.tile_width, view.tile_height))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


#: Histograms scanned in this process, by :func:`asset_key`.
_SCANNED: dict[str, LabelHistogram] = {}


def _read_cache(folder: Path) -> dict[str, LabelHistogram]:
    path = folder / CACHE_FILE
    if not path.exists():
        return {}
    found = {}
    for row in pq.read_table(path).to_pylist():
        rows, columns, classes = row["rows"], row["columns"], np.asarray(row["classes"])
        fractions = np.frombuffer(row["fractions"], np.float32).reshape(
            rows, columns, len(classes))
        grid = CoverageGrid(row["crs_epsg"], row["x0"], row["y0"], row["cell_x"], row["cell_y"],
                            fractions.sum(axis=-1), ("labels",))
        found[row["key"]] = LabelHistogram(grid, classes, fractions)
    return found


def _write_cache(folder: Path, histograms: dict[str, LabelHistogram]) -> None:
    rows = [{"key": key, "crs_epsg": h.grid.epsg, "x0": h.grid.x0, "y0": h.grid.y0,
             "cell_x": h.grid.cell_x, "cell_y": h.grid.cell_y, "rows": h.grid.shape[0],
             "columns": h.grid.shape[1], "classes": h.classes.tolist(),
             "fractions": np.ascontiguousarray(h.fractions, np.float32).tobytes()}
            for key, h in histograms.items()]
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{CACHE_FILE}.{os.getpid()}"
    pq.write_table(pa.Table.from_pylist(rows, _CACHE_SCHEMA), temporary)
    temporary.replace(folder / CACHE_FILE)


async def _scan(views: Sequence[BandView], backend: Backend, max_concurrent: int,
                stats: FetchStats | None) -> dict[str, LabelHistogram]:
    semaphore = asyncio.Semaphore(max(1, max_concurrent))
    found: dict[str, LabelHistogram] = {}

    async def one(view: BandView) -> None:
        async with semaphore:
            cog = view.cog(backend)
            pixels = await cog.read_async(bands=view.band_index, stats=stats)
        # Off the event loop: the counting releases the GIL, other reads go on.
        found[asset_key(view)] = await asyncio.to_thread(histogram_of, pixels[0], view)

    await asyncio.gather(*(one(view) for view in views))
    return found


def label_histograms(views: Sequence[BandView], *, backend: Backend,
                     cache_dir: str | os.PathLike[str] | None = None,
                     max_concurrent: int = 16, stats: FetchStats | None = None
                     ) -> list[LabelHistogram]:
    """The class histograms of label assets, scanning only those not seen before.

    Each asset not in this process's cache (nor in ``cache_dir``) is read once, whole,
    at full resolution: its tiles, merged into ranged requests (a 1024 x 1024 label
    of 256-pixel tiles is at most 16 tiles).

    Args:
        views: One label band per scene.
        backend: How to reach the assets.
        cache_dir: A folder keeping the histograms between processes (None: this
            process only).
        max_concurrent: Assets read at once.
        stats: Optional counter of requests and bytes.

    Returns:
        One histogram per view, in order.
    """
    folder = Path(cache_dir) if cache_dir is not None else None
    keys = [asset_key(view) for view in views]
    if folder is not None and any(key not in _SCANNED for key in keys):
        _SCANNED.update({k: h for k, h in _read_cache(folder).items() if k not in _SCANNED})
    missing = list({key: view for key, view in zip(keys, views)
                    if key not in _SCANNED}.values())
    if missing:
        _SCANNED.update(run_sync(_scan(missing, backend, max_concurrent, stats)))
        if folder is not None:
            _write_cache(folder, {key: _SCANNED[key] for key in dict.fromkeys(keys)})
    return [_SCANNED[key] for key in keys]

