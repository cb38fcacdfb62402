"""The sweep of a prediction: its output grid, aligned to the COGs' tiles, and the
overlapping chips that cover an area, in rows top down.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import shapely
from affine import Affine
from torch.utils.data import Sampler

from rasteret.analysis import reproject_geometry, to_geometries
from rasteret.dates import DateRange, parse_date_range
from rasteret.errors import ConfigurationError, NoCoverageError
from rasteret.read.warp import GridSpec
from rasteret.torch.dataset import RasteretDataset

#: Pixel positions this close to a whole number are that number (float round-off).
SNAP = 1e-6


def _floor(value: float) -> int:
    return math.floor(value + SNAP)


def _ceil(value: float) -> int:
    return math.ceil(value - SNAP)


def sweep_area(dataset: RasteretDataset, roi: Any, geometry_crs: Any = 4326
               ) -> shapely.Geometry:
    """The roi (a bbox tuple, shapely geometries, GeoJSON, ...) as one geometry in the
    dataset's CRS; the dataset's extent without one."""
    if roi is None:
        x, y, _ = dataset.bounds
        return shapely.box(x.start, y.start, x.stop, y.stop)
    geometries, crs = to_geometries(roi, geometry_crs)
    return reproject_geometry(shapely.union_all(geometries), crs, dataset.crs)


@dataclass(frozen=True)
class Sweep:
    """Where a prediction writes and which chips it reads.

    Attributes:
        grid: The output grid: its origin on a corner of the reference COG's tile
            grid, its far edges on the area's (pixel-snapped) edges.
        tile: The output's tile size (the reference COG's tile width).
        chip: Chip size in pixels.
        overlap: Pixels neighbouring chips share.
        chips: ``(top, left)`` of each chip in output pixels, rows of chips top down.
        time: The time slice every chip reads.
    """

    grid: GridSpec
    tile: int
    chip: int
    overlap: int
    chips: list[tuple[int, int]]
    time: slice

    def geoslice(self, index: int) -> tuple[slice, slice, slice]:
        """The dataset slice ``[xmin:xmax:xres, ymin:ymax:yres, t0:t1]`` of a chip."""
        top, left = self.chips[index]
        t = self.grid.transform
        xres, yres = t.a, -t.e
        xmin, ymax = t.c + left * xres, t.f - top * yres
        return (slice(xmin, xmin + self.chip * xres, xres),
                slice(ymax - self.chip * yres, ymax, yres), self.time)


class SweepSampler(Sampler[tuple[slice, slice, slice]]):
    """Yields the slices of a sweep's chips in order (for a DataLoader)."""

    def __init__(self, sweep: Sweep) -> None:
        self.sweep = sweep

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        """The chips' slices, rows of chips top down."""
        return (self.sweep.geoslice(i) for i in range(len(self.sweep.chips)))

    def __len__(self) -> int:
        """The number of chips."""
        return len(self.sweep.chips)


def resumed(sweep: Sweep, rows: int) -> Sweep:
    """``sweep`` without the chips that reach only the first ``rows`` rows of output
    tiles (finished by a run this one resumes)."""
    # The last row's chips always run: a run killed while publishing resumes with a
    # writer to publish through.
    rows = min(rows, -(-sweep.grid.height // sweep.tile) - 1)
    if rows <= 0:
        return sweep
    keep = [chip for chip in sweep.chips if chip[0] + sweep.chip > rows * sweep.tile]
    return replace(sweep, chips=keep)


def _offsets(start: int, extent: int, chip: int, stride: int) -> list[int]:
    count = _ceil(max(extent - chip, 0) / stride) + 1
    return [start + k * stride for k in range(count)]


def _reference_grid(dataset: RasteretDataset, rows: np.ndarray, corner: tuple[float, float]
                    ) -> tuple[float, float, int]:
    """Origin and tile width of the first scene on the dataset's own grid, else the
    area's corner and 512-pixel tiles."""
    grids = dataset.grids()
    epsg = dataset.crs.to_epsg()
    for row in rows:
        same_res = np.allclose((abs(grids["a"][row]), abs(grids["e"][row])), dataset.res)
        if grids["crs_epsg"][row] == epsg and same_res and grids["tile_width"][row] % 16 == 0:
            return float(grids["c"][row]), float(grids["f"][row]), int(grids["tile_width"][row])
    return corner[0], corner[1], 512


def plan_sweep(dataset: RasteretDataset, area: shapely.Geometry, *, chip: int, overlap: int,
               time: slice, tile: int | None = None) -> Sweep:
    """The output grid and chips covering ``area`` (in the dataset's CRS) with the
    scenes of the ``time`` slice.

    The grid takes the pixel grid of the first scene under the area and starts on a
    corner of its COG tiles, so output tiles fall on input tiles; chips start at the
    area's top-left pixel, ``chip - overlap`` apart; chips outside the area (an roi
    that is not a box) or over no scene are left out.

    Raises:
        ConfigurationError: ``chip`` or ``overlap`` do not fit together.
        NoCoverageError: No scene of the dataset covers the area.
    """
    if chip <= 0 or not 0 <= overlap < chip:
        raise ConfigurationError(f"chip_size={chip}, overlap={overlap}: give 0 <= overlap < "
                                 "chip_size")
    frame = dataset.index
    frame = frame.iloc[frame.index.overlaps(pd.Interval(time.start, time.stop, closed="both"))]
    # Sorted: the first scene under the area is the same on every run (a resume).
    under = (frame.iloc[np.sort(frame.sindex.query(area, predicate="intersects"))]
             if len(frame) else frame)
    if not len(under) or area.is_empty:
        raise NoCoverageError(
            f"no scene of {dataset.collection.name!r} from {time.start} to {time.stop} covers "
            f"the roi {area.bounds} (EPSG:{dataset.crs.to_epsg()}); the scenes cover "
            f"{tuple(dataset.index.total_bounds)}")
    xres, yres = dataset.res
    minx, miny, maxx, maxy = shapely.intersection(area, shapely.box(*frame.total_bounds)).bounds
    c, f, native_tile = _reference_grid(dataset, under["row"].to_numpy(np.int64), (minx, maxy))
    tile = tile or native_tile
    col0, row0 = _floor((minx - c) / xres), _floor((f - maxy) / yres)
    col1, row1 = _ceil((maxx - c) / xres), _ceil((f - miny) / yres)
    left, top = col0 // tile * tile, row0 // tile * tile
    transform = Affine(xres, 0.0, c + left * xres, 0.0, -yres, f - top * yres)
    grid = GridSpec(dataset.crs, transform, col1 - left, row1 - top)
    stride = chip - overlap
    chips = [(r, q) for r in _offsets(row0 - top, row1 - row0, chip, stride)
             for q in _offsets(col0 - left, col1 - col0, chip, stride)]
    boxes = [shapely.box(transform.c + q * xres, transform.f - (r + chip) * yres,
                         transform.c + (q + chip) * xres, transform.f - r * yres)
             for r, q in chips]
    boxes_array = np.asarray(boxes)
    over_scenes = np.zeros(len(chips), bool)
    over_scenes[frame.sindex.query(boxes_array, predicate="intersects")[0]] = True
    keep = over_scenes & shapely.intersects(area, boxes_array)
    return Sweep(grid, tile, chip, overlap, [place for place, k in zip(chips, keep) if k], time)


def time_slice(dataset: RasteretDataset, date_range: DateRange | None) -> slice:
    """The time slice chips read: the dataset's whole span, or ``date_range`` (end
    inclusive; the dataset's index holds naive UTC times).

    Raises:
        ConfigurationError: ``date_range`` is not two dates in order.
    """
    window = parse_date_range(date_range)
    if window is None:
        span: slice = dataset.bounds[2]
        return slice(span.start, span.stop, 1)
    start, stop = (pd.Timestamp(d).tz_convert(None) for d in window)
    return slice(start, stop, 1)
