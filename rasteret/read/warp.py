"""Reading a COG into any target grid: aligned windows, resampling, reprojection.

A target grid is a CRS, an affine transform and a shape. When it is aligned with
the file's own pixel grid (same CRS and resolution, whole-pixel offset) a read is a
plain window read: exact and tile-exact. Otherwise the covering source window is
read once and sampled at the target pixel centres (nearest or bilinear), after
mapping them through pyproj when the CRS differ. No GDAL is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer

from rasteret.errors import ConfigurationError
from rasteret.io.fetch import FetchStats
from rasteret.options import RESAMPLING, Resampling, check_option
from rasteret.read.cog import CogFile
from rasteret.tiff.geo import nodata_for_dtype

_ALIGN_TOLERANCE = 1e-6


@dataclass(frozen=True)
class GridSpec:
    """A target pixel grid.

    Attributes:
        crs: The grid's CRS.
        transform: Pixel -> CRS transform of the grid's top-left corner.
        width, height: Size in pixels.
    """

    crs: CRS
    transform: Affine
    width: int
    height: int

    @classmethod
    def from_bounds(
        cls, crs: CRS, bounds: tuple[float, float, float, float], res: tuple[float, float]
    ) -> GridSpec:
        """A north-up grid covering ``bounds`` (minx, miny, maxx, maxy) at ``res``."""
        minx, miny, maxx, maxy = bounds
        xres, yres = abs(res[0]), abs(res[1])
        width = max(1, round((maxx - minx) / xres))
        height = max(1, round((maxy - miny) / yres))
        return cls(crs, Affine(xres, 0.0, minx, 0.0, -yres, maxy), width, height)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` of the grid."""
        t = self.transform
        xs = (t.c, t.c + t.a * self.width)
        ys = (t.f, t.f + t.e * self.height)
        return min(xs), min(ys), max(xs), max(ys)


@lru_cache(maxsize=128)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst),
                                always_xy=True)


def transformer(src: CRS, dst: CRS) -> Transformer:
    """A cached always-xy transformer between two CRS."""
    return _transformer(src.to_wkt(), dst.to_wkt())


def aligned_window(cog_transform: Affine, grid: GridSpec) -> tuple[int, int] | None:
    """The ``(col_off, row_off)`` of ``grid`` in the file's pixel grid when both share
    resolution and whole-pixel alignment (None otherwise)."""
    t, g = cog_transform, grid.transform
    if t.b or t.d or g.b or g.d:
        return None
    if abs(t.a - g.a) > _ALIGN_TOLERANCE * abs(t.a) or abs(t.e - g.e) > _ALIGN_TOLERANCE * abs(t.e):
        return None
    col = (g.c - t.c) / t.a
    row = (g.f - t.f) / t.e
    if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
        return None
    return round(col), round(row)


def choose_overview(cog: CogFile, grid: GridSpec, same_crs: bool) -> int | None:
    """The coarsest overview still at least as fine as the grid (GDAL's choice), or None."""
    if not same_crs or not cog.overviews or cog.transform is None:
        return None
    target = abs(grid.transform.a)
    chosen = None
    for index, (width, _) in enumerate(cog.overviews):
        if abs(cog.transform.a) * cog.width / width <= target * (1 + 1e-9):
            chosen = index
    return chosen


def source_coordinates(cog_transform: Affine, cog_crs: CRS, grid: GridSpec
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Fractional source pixel coordinates (col, row) of every target pixel centre."""
    cols, rows = np.meshgrid(np.arange(grid.width) + 0.5, np.arange(grid.height) + 0.5)
    t = grid.transform
    xs = t.c + cols * t.a + rows * t.b
    ys = t.f + cols * t.d + rows * t.e
    if not cog_crs.equals(grid.crs):
        xs, ys = transformer(grid.crs, cog_crs).transform(xs, ys)
    inverse = ~cog_transform
    src_cols = inverse.c + xs * inverse.a + ys * inverse.b
    src_rows = inverse.f + xs * inverse.d + ys * inverse.e
    return src_cols, src_rows


def _sample(
    data: np.ndarray,
    src_cols: np.ndarray,
    src_rows: np.ndarray,
    fill: np.generic,
    nodata: float | None,
    resampling: Resampling,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Sample ``data`` (bands, rows, cols) at fractional pixel positions, into ``out``
    when given (shaped ``(bands,) + src_cols.shape``, any dtype data casts to)."""
    bands, height, width = data.shape
    if out is None:
        out = np.empty((bands,) + src_cols.shape, dtype=data.dtype)
    out[...] = fill
    if resampling == "nearest":
        c = np.floor(src_cols).astype(np.int64)
        r = np.floor(src_rows).astype(np.int64)
        valid = (c >= 0) & (c < width) & (r >= 0) & (r < height) & np.isfinite(src_cols)
        out[:, valid] = data[:, r[valid], c[valid]]
        return out
    # Bilinear on pixel centres; neighbours equal to nodata are left out and the
    # remaining weights renormalised, as GDAL does.
    x = src_cols - 0.5
    y = src_rows - 0.5
    c0 = np.floor(x).astype(np.int64)
    r0 = np.floor(y).astype(np.int64)
    fx = x - c0
    fy = y - r0
    total = np.zeros((bands,) + src_cols.shape, dtype=np.float64)
    weight = np.zeros((bands,) + src_cols.shape, dtype=np.float64)
    inside_any = np.zeros(src_cols.shape, dtype=bool)
    for dr, dc, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
                      (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        rr, cc = r0 + dr, c0 + dc
        inside = (cc >= 0) & (cc < width) & (rr >= 0) & (rr < height)
        inside_any |= inside & (w > 0)
        values = np.zeros((bands,) + src_cols.shape, dtype=np.float64)
        values[:, inside] = data[:, rr[inside], cc[inside]]
        usable = np.broadcast_to(inside, values.shape).copy()
        if nodata is not None:
            usable &= ~((values == nodata) | (np.isnan(values) if math.isnan(nodata) else False))
        if data.dtype.kind == "f":
            usable &= ~np.isnan(values)
        ww = np.where(usable, w, 0.0)
        total += values * ww
        weight += ww
    result = np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)
    good = (weight > 0) & inside_any
    if data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        result = np.clip(np.rint(result), info.min, info.max)
    out[good] = result[good].astype(data.dtype)
    return out


async def read_into_grid(
    cog: CogFile,
    grid: GridSpec,
    *,
    bands: list[int] | None = None,
    resampling: Resampling = "nearest",
    stats: FetchStats | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Read ``bands`` (1-based) of ``cog`` onto ``grid``; pixels outside the file get
    nodata (0 without one).

    On a grid aligned with the file's, tiles are decoded straight into the result
    (``out`` when given: no other copy of the pixels is made).

    Args:
        cog: The file.
        grid: The target grid.
        bands: 1-based band numbers (None: all).
        resampling: ``"nearest"`` or ``"bilinear"`` off the file's grid.
        stats: Optional counter of requests and bytes.
        out: An array shaped ``(bands, grid.height, grid.width)`` to write into (for
            example one scene's slice of a time series); the file's dtype for a
            copy-free read, else any dtype its values cast to.

    Returns:
        ``out``, or a new array shaped ``(bands, grid.height, grid.width)`` of the
        file's dtype.

    Raises:
        ConfigurationError: Unknown resampling, or the file has no georeferencing.
    """
    check_option("resampling", resampling, RESAMPLING)
    if cog.transform is None or cog.crs is None:
        raise ConfigurationError(f"{cog.url} has no georeferencing to place on a grid")
    count = len(bands) if bands else cog.count
    if out is not None and out.shape != (count, grid.height, grid.width):
        raise ConfigurationError(
            f"out= must be shaped {(count, grid.height, grid.width)} to read {cog.url} onto "
            f"the grid, not {out.shape}")
    same_crs = cog.crs.equals(grid.crs)
    if same_crs:
        offset = aligned_window(cog.transform, grid)
        if offset is not None:
            window = (offset[0], offset[1], grid.width, grid.height)
            if out is None or out.dtype == cog.dtype:
                return await cog.read_async(window, bands=bands, stats=stats, out=out)
            out[...] = await cog.read_async(window, bands=bands, stats=stats)
            return out
    overview = choose_overview(cog, grid, same_crs)
    if out is None:
        out = np.empty((count, grid.height, grid.width), dtype=cog.dtype)
    # Off the file's grid the destination is filled strip by strip: each strip's
    # source coordinates, source window and resampling temporaries exist only while
    # it is filled, so memory stays near the output's size at any area.
    rows = strip_rows(cog, grid, overview)
    for top in range(0, grid.height, rows):
        height = min(rows, grid.height - top)
        strip = GridSpec(grid.crs, grid.transform @ Affine.translation(0, top), grid.width,
                         height)
        await _warp_strip(cog, strip, overview, bands, resampling, stats,
                          out[:, top:top + height])
    return out


#: Destination pixels whose source coordinates a strip computes at once (two float64
#: arrays: 64 MiB), unless a strip must be taller to span several source tile rows.
STRIP_PIXELS = 1 << 22
#: Source tile rows a strip spans at least, so tiles on strip edges (decoded by both
#: strips) stay a small share of the work.
STRIP_TILE_ROWS = 4


def strip_rows(cog: CogFile, grid: GridSpec, overview: int | None) -> int:
    """Destination rows filled per strip when warping ``cog`` onto ``grid``: at most
    :data:`STRIP_PIXELS` pixels, but at least :data:`STRIP_TILE_ROWS` source tile rows."""
    by_memory = max(1, STRIP_PIXELS // max(grid.width, 1))
    if grid.height <= by_memory:
        return grid.height
    src_transform = cog.level_transform(overview)
    assert src_transform is not None and cog.crs is not None
    # Source rows per destination row, sampled along the grid's left, middle and
    # right columns between its first and last rows.
    probe = GridSpec(grid.crs, grid.transform @ Affine.scale(max(grid.width - 1, 1) / 2,
                                                             grid.height - 1), 3, 2)
    _, src_rows = source_coordinates(src_transform, cog.crs, probe)
    finite = np.isfinite(src_rows).all(axis=0)
    if not finite.any():
        return by_memory
    per_row = float(np.max(np.abs(src_rows[1, finite] - src_rows[0, finite]))) / max(
        grid.height - 1, 1)
    tile_height = cog.level(overview).chunk_height
    by_tiles = math.ceil(STRIP_TILE_ROWS * tile_height / max(per_row, 1e-9))
    return min(grid.height, max(by_memory, by_tiles))


async def _warp_strip(cog: CogFile, grid: GridSpec, overview: int | None,
                      bands: list[int] | None, resampling: Resampling,
                      stats: FetchStats | None, out: np.ndarray) -> None:
    """Resample the part of ``cog`` under ``grid`` (one strip) into ``out``."""
    src_transform = cog.level_transform(overview)
    assert src_transform is not None and cog.crs is not None
    src_cols, src_rows = source_coordinates(src_transform, cog.crs, grid)
    fill = nodata_for_dtype(cog.nodata, cog.dtype)
    finite = np.isfinite(src_cols) & np.isfinite(src_rows)
    if not finite.any():
        out[...] = fill
        return
    col0 = int(math.floor(src_cols[finite].min())) - 1
    row0 = int(math.floor(src_rows[finite].min())) - 1
    col1 = int(math.ceil(src_cols[finite].max())) + 1
    row1 = int(math.ceil(src_rows[finite].max())) + 1
    level_width, level_height = (
        (cog.width, cog.height) if overview is None else cog.overviews[overview]
    )
    # Only the part overlapping the file is fetched; the rest is fill.
    col0, row0 = max(col0, 0), max(row0, 0)
    col1, row1 = min(col1, level_width), min(row1, level_height)
    if col0 >= col1 or row0 >= row1:
        out[...] = fill
        return
    data = await cog.read_async(
        (col0, row0, col1 - col0, row1 - row0), overview=overview, bands=bands, stats=stats
    )
    src_cols = np.where(finite, src_cols - col0, -1.0)
    src_rows = np.where(finite, src_rows - row0, -1.0)
    _sample(data, src_cols, src_rows, fill, cog.nodata, resampling, out=out)
