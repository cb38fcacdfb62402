"""Where a scene has data: a grid of valid fractions per scene, built from what the
index already holds.

A scene's coverage is a small grid of cells (a few per COG tile, at most 8 x 8) in the
scene's own CRS, each holding the fraction of its area that has valid data, as a
``uint8`` (0 to 255, rounded down). It is filled at build time, without reading
full-resolution pixels, from up to three sources:

- ``"geometry"``: the STAC item's geometry (for Sentinel-2 and Landsat it outlines the
  data, not the raster), shrunk by one pixel so that pixels cut by its edge count as
  empty;
- ``"sparse"``: tiles with a zero byte count (GDAL's sparse tiles) are empty;
- ``"overview"``: the smallest overview of each asset, read once at build time
  (``valid_coverage="overview"``); its nodata pixels, grown by one overview pixel, are
  empty. The only source that sees nodata margins inside the raster.

Sources are combined conservatively (a cell's fraction is a lower bound of the true
one), and so are cells into a chip (:func:`chip_fractions`): a sampler that keeps
chips whose lower bound reaches ``min_valid`` never yields one with less valid data,
up to the accuracy of the sources (an overview can miss a hole smaller than one of its
pixels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import shapely
from affine import Affine

from rasteret.band import BandView, crs_of
from rasteret.read.warp import transformer

#: Cells per tile side at most, their smallest size in pixels, and cells across an
#: image beyond which they grow (see :func:`cell_pixels`).
MAX_CELLS_PER_TILE = 8
MIN_CELL_PIXELS = 64
MAX_CELLS_PER_SIDE = 48
#: The stored value of a fully valid cell.
_FULL = 255


@dataclass(frozen=True)
class CoverageGrid:
    """Valid fractions of one scene on a grid of cells in its CRS.

    Cell ``(i, j)`` spans ``x0 + j * cell_x`` to ``x0 + (j + 1) * cell_x`` and
    ``y0 - (i + 1) * cell_y`` to ``y0 - i * cell_y``; outside the grid a scene has no
    data.

    Attributes:
        epsg: The CRS of the grid (the scene's).
        x0: Left edge of the grid.
        y0: Top edge of the grid.
        cell_x: Cell width in CRS units (positive).
        cell_y: Cell height in CRS units (positive).
        valid: ``(rows, columns)`` float32 fractions in [0, 1].
        sources: The sources that filled it (``"geometry"``, ``"sparse"``,
            ``"overview"``).
    """

    epsg: int
    x0: float
    y0: float
    cell_x: float
    cell_y: float
    valid: np.ndarray
    sources: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of cells."""
        rows, columns = self.valid.shape
        return int(rows), int(columns)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` of the grid."""
        rows, columns = self.shape
        return (self.x0, self.y0 - rows * self.cell_y, self.x0 + columns * self.cell_x,
                self.y0)

    @property
    def fraction(self) -> float:
        """The valid fraction of the whole scene."""
        return float(self.valid.mean()) if self.valid.size else 0.0

    def to_record(self) -> dict[str, Any]:
        """The grid as a dict matching :data:`rasteret.schema.COVERAGE_TYPE`."""
        rows, columns = self.shape
        quantized = np.floor(np.clip(self.valid, 0, 1) * _FULL + 1e-6).astype(np.uint8)
        return {"crs_epsg": self.epsg, "x0": self.x0, "y0": self.y0, "cell_x": self.cell_x,
                "cell_y": self.cell_y, "rows": rows, "columns": columns,
                "valid": quantized.tobytes(), "sources": list(self.sources)}

    @classmethod
    def from_record(cls, stored: dict[str, Any]) -> CoverageGrid:
        """The grid stored by :meth:`to_record`."""
        rows, columns = int(stored["rows"]), int(stored["columns"])
        valid = np.frombuffer(stored["valid"], np.uint8).reshape(rows, columns)
        return cls(int(stored["crs_epsg"]), float(stored["x0"]), float(stored["y0"]),
                   float(stored["cell_x"]), float(stored["cell_y"]),
                   valid.astype(np.float32) / _FULL, tuple(stored["sources"] or ()))


def valid_outline(grid: CoverageGrid, threshold: float = 0.5) -> shapely.Geometry:
    """The cells of ``grid`` at least ``threshold`` valid, as one geometry in degrees
    (EPSG:4326; empty when no cell is): what pictures of a collection shade."""
    rows, columns = np.nonzero(grid.valid >= threshold)
    if not len(rows):
        return shapely.Polygon()
    left = grid.x0 + columns * grid.cell_x
    top = grid.y0 - rows * grid.cell_y
    union = shapely.union_all(shapely.box(left, top - grid.cell_y, left + grid.cell_x, top))
    # Densified before projecting: a cell's straight edges bend in degrees.
    dense = shapely.segmentize(union, max(grid.cell_x, grid.cell_y))
    to_degrees = transformer(crs_of(grid.epsg), crs_of(4326))
    return shapely.transform(
        dense, lambda xy: np.column_stack(to_degrees.transform(xy[:, 0], xy[:, 1])))


def cell_pixels(tile: int, extent: int = 0) -> int:
    """The side of a coverage cell in pixels for tiles of ``tile`` pixels and an image
    of ``extent`` pixels (its longer side): a tile holds up to
    :data:`MAX_CELLS_PER_TILE` cells per side, each at least :data:`MIN_CELL_PIXELS`
    wide (a tile smaller than that is one cell), and cells double (up to a tile) until
    the image is at most :data:`MAX_CELLS_PER_SIDE` cells across, so a scene's grid
    stays within a few kilobytes (a 10,980-pixel Sentinel-2 band of 1024-pixel tiles:
    43 x 43 cells of 256 pixels)."""
    per_tile = max(1, min(MAX_CELLS_PER_TILE, tile // MIN_CELL_PIXELS))
    size = max(1, tile // per_tile)
    while size < tile and math.ceil(extent / size) > MAX_CELLS_PER_SIDE:
        size *= 2
    return min(size, max(1, tile))


def empty_grid(view: BandView) -> CoverageGrid:
    """The cells of ``view``'s image (cells of :func:`cell_pixels` of its tiles, from
    its top-left corner), all valid.

    Raises:
        ConfigurationError: The image is not georeferenced.
    """
    transform = view.grid.transform  # raises when not georeferenced
    epsg = view.epsg or 0
    size = cell_pixels(min(view.tile_width, view.tile_height), max(view.width, view.height))
    rows, columns = math.ceil(view.height / size), math.ceil(view.width / size)
    left, top = transform.c, transform.f
    # North-up images only (as every COG a collection samples): the grid's cells are
    # whole pixels of the image; the image's right and bottom edges cut the last ones.
    grid = CoverageGrid(epsg, left, top, abs(transform.a) * size, abs(transform.e) * size,
                        np.ones((rows, columns), np.float32))
    return with_image_edges(grid, view)


def with_image_edges(grid: CoverageGrid, view: BandView) -> CoverageGrid:
    """``grid`` with the parts of its last cells beyond ``view``'s image empty."""
    minx, miny, maxx, maxy = view.bounds
    x_overlap = _overlaps(grid.x0, grid.cell_x, grid.shape[1], np.array([minx]),
                          np.array([maxx]))[0]
    y_overlap = _overlaps_down(grid.y0, grid.cell_y, grid.shape[0], np.array([maxy]),
                               np.array([miny]))[0]
    inside = np.outer(y_overlap / grid.cell_y, x_overlap / grid.cell_x)
    return _replace(grid, np.minimum(grid.valid, inside.astype(np.float32)), "")


def _replace(grid: CoverageGrid, valid: np.ndarray, source: str) -> CoverageGrid:
    sources = grid.sources + ((source,) if source and source not in grid.sources else ())
    return CoverageGrid(grid.epsg, grid.x0, grid.y0, grid.cell_x, grid.cell_y, valid, sources)


def _overlaps(start: float, step: float, count: int, lo: np.ndarray, hi: np.ndarray
              ) -> np.ndarray:
    """``(len(lo), count)`` lengths of ``[lo, hi]`` inside each of ``count`` cells of
    ``step`` from ``start`` (an axis growing with the index)."""
    edges = start + step * np.arange(count + 1)
    lengths: np.ndarray = np.clip(np.minimum(hi[:, None], edges[None, 1:])
                                  - np.maximum(lo[:, None], edges[None, :-1]), 0, None)
    return lengths


def _overlaps_down(start: float, step: float, count: int, hi: np.ndarray, lo: np.ndarray
                   ) -> np.ndarray:
    """As :func:`_overlaps` on an axis going down from ``start`` (rows)."""
    edges = start - step * np.arange(count + 1)
    lengths: np.ndarray = np.clip(np.minimum(hi[:, None], edges[None, :-1])
                                  - np.maximum(lo[:, None], edges[None, 1:]), 0, None)
    return lengths


def combine(grid: CoverageGrid, fraction: np.ndarray, source: str) -> CoverageGrid:
    """``grid`` with another source's fractions of the same cells: the valid part of a
    cell is where both say valid, of which ``a + b - 1`` is a lower bound (the true
    value when one of them is 0 or 1)."""
    valid = np.clip(grid.valid + fraction.astype(np.float32) - 1, 0, 1)
    return _replace(grid, valid.astype(np.float32), source)


def geometry_fraction(grid: CoverageGrid, geometry: shapely.Geometry, *,
                      geometry_epsg: int = 4326, margin: float = 0.0,
                      raster: tuple[float, float, float, float] | None = None
                      ) -> np.ndarray:
    """The fraction of each cell inside ``geometry`` (given in ``geometry_epsg``,
    degrees by default), shrunk by ``margin`` CRS units first, except along the edges
    of the ``raster`` bounds (where the geometry only repeats the raster's edge)."""
    if geometry_epsg != grid.epsg:
        to_grid = transformer(crs_of(geometry_epsg), crs_of(grid.epsg))
        # Straight edges in degrees bend in a projected CRS: densify before projecting
        # (a sixteenth of the extent: well under a pixel of bend for a 110 km scene,
        # and few vertices, which the cell intersections below are paid by).
        minx, miny, maxx, maxy = geometry.bounds
        dense = shapely.segmentize(geometry, max(maxx - minx, maxy - miny, 1e-9) / 16)
        geometry = shapely.transform(
            dense, lambda xy: np.column_stack(to_grid.transform(xy[:, 0], xy[:, 1])))
    if margin:
        shrunk = geometry.buffer(-margin, join_style="mitre")
        if raster is not None:
            rim = shapely.difference(shapely.box(*raster).buffer(margin, join_style="mitre"),
                                     shapely.box(*raster).buffer(-margin, join_style="mitre"))
            shrunk = shapely.union(shrunk, shapely.intersection(geometry, rim))
        geometry = shrunk
    rows, columns = grid.shape
    xs = grid.x0 + grid.cell_x * np.arange(columns)
    ys = grid.y0 - grid.cell_y * np.arange(rows)
    left, top = np.meshgrid(xs, ys)
    cells = shapely.box(left, top - grid.cell_y, left + grid.cell_x, top)
    # Cells the outline crosses are measured; the others are wholly in or out, as
    # their centre is (a point test, cheaper than a cell-polygon predicate).
    boundary = geometry.boundary
    shapely.prepare(boundary)
    edge = shapely.intersects(boundary, cells)
    shapely.prepare(geometry)
    fraction = shapely.contains_xy(geometry, left + grid.cell_x / 2,
                                   top - grid.cell_y / 2).astype(np.float64)
    if edge.any():
        # Clipping to each cell's rectangle gives the intersection's area at about a
        # third of a general intersection's cost (the bulk of a build's coverage CPU).
        area = [clipped_area(geometry, (x, y - grid.cell_y, x + grid.cell_x, y))
                for x, y in zip(left[edge].tolist(), top[edge].tolist())]
        fraction[edge] = np.asarray(area) / (grid.cell_x * grid.cell_y)
    clipped: np.ndarray = np.clip(fraction, 0, 1)
    return clipped


def clipped_area(geometry: shapely.Geometry, box: tuple[float, float, float, float]
                 ) -> float:
    """The area of ``geometry`` inside ``box`` (minx, miny, maxx, maxy): clipped to
    the rectangle, or intersected where GEOS's clipping refuses a degenerate ring."""
    try:
        return float(shapely.area(shapely.clip_by_rect(geometry, *box)))
    except shapely.errors.GEOSException:
        return float(shapely.area(shapely.intersection(geometry, shapely.box(*box))))


def raster_fraction(grid: CoverageGrid, transform: Affine, valid: np.ndarray) -> np.ndarray:
    """The valid fraction of each cell from a north-up raster of 0/1 (or fractions)
    ``valid`` on ``transform``, in the grid's CRS: an area-weighted resampling (parts
    of cells beyond the raster count as empty)."""
    height, width = valid.shape
    rows, columns = grid.shape
    # Per axis, the length of each source pixel inside each cell: the 2-D overlap is
    # their outer product, so the resampling is two matrix products.
    x_lo = transform.c + transform.a * np.arange(width)
    y_hi = transform.f + transform.e * np.arange(height)
    wx = _overlaps(grid.x0, grid.cell_x, columns, x_lo, x_lo + transform.a)  # (w, cols)
    wy = _overlaps_down(grid.y0, grid.cell_y, rows, y_hi, y_hi + transform.e)  # (h, rows)
    area = wy.T @ valid.astype(np.float64) @ wx
    fraction: np.ndarray = np.clip(area / (grid.cell_x * grid.cell_y), 0, 1)
    return fraction


def sparse_tiles(view: BandView) -> tuple[Affine, np.ndarray] | None:
    """``(transform, valid)`` of ``view``'s tile grid, 0 where a tile has a zero byte
    count (GDAL's sparse tiles, read as nodata); None when no tile is sparse."""
    counts = view.tile_byte_counts()
    if counts.all():
        return None
    across = math.ceil(view.width / view.tile_width)
    down = math.ceil(view.height / view.tile_height)
    planes = max(1, len(counts) // max(1, across * down))
    per_plane = counts[:across * down * planes].reshape(planes, down, across)
    # Chunky images have one plane; a band of a planar image reads its own plane.
    plane = min(view.band_index - 1, planes - 1)
    empty = per_plane[plane] == 0
    if not empty.any():
        return None
    transform = view.grid.transform @ Affine.scale(view.tile_width, view.tile_height)
    return transform, (~empty).astype(np.float32)


def nodata_mask(pixels: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """Valid pixels of an overview read (``pixels != nodata``, NaN invalid) grown
    conservatively: a pixel next to a nodata pixel counts as invalid, since its
    full-resolution block may hold some. None without a nodata value and NaN."""
    invalid = np.isnan(pixels) if pixels.dtype.kind == "f" else np.zeros(pixels.shape, bool)
    if nodata is not None and not math.isnan(nodata):
        invalid |= pixels == nodata
    if nodata is None and not invalid.any():
        return None
    grown = invalid.copy()
    grown[1:, :] |= invalid[:-1, :]
    grown[:-1, :] |= invalid[1:, :]
    grown[:, 1:] |= invalid[:, :-1]
    grown[:, :-1] |= invalid[:, 1:]
    return ~grown


def finest_view(views: Sequence[BandView | None]) -> BandView | None:
    """The georeferenced view with the smallest pixels (the first on a tie): the grid
    a scene's coverage is measured on."""
    usable = [v for v in views if v is not None and v.georeferenced]
    if not usable:
        return None
    return min(usable, key=lambda v: abs(v.grid.transform.a))


def scene_coverage(views: Sequence[BandView | None], *, geometry: bytes | None = None,
                   overviews: dict[str, tuple[Affine, np.ndarray]] | None = None,
                   ) -> CoverageGrid | None:
    """A scene's coverage from its bands, its geometry and overview masks.

    Args:
        views: The scene's bands (None where not indexed).
        geometry: The item's geometry as WKB in degrees (None: not used).
        overviews: href -> ``(transform, valid)`` of its smallest overview's valid
            pixels (see :func:`nodata_mask`), for the assets read.

    Returns:
        The grid, or None when no band is georeferenced.
    """
    base = finest_view(views)
    if base is None:
        return None
    grid = empty_grid(base)
    if geometry is not None:
        polygon = shapely.from_wkb(geometry)
        if not polygon.is_empty:
            pixel = max(abs(base.grid.transform.a), abs(base.grid.transform.e))
            fraction = geometry_fraction(grid, polygon, margin=1.5 * pixel,
                                         raster=base.bounds)
            grid = combine(grid, fraction, "geometry")
    for view in views:
        if view is None or not view.georeferenced or view.epsg != base.epsg:
            continue
        sparse = sparse_tiles(view)
        if sparse is not None:
            grid = combine(grid, raster_fraction(grid, *sparse), "sparse")
        found = (overviews or {}).get(view.href)
        if found is not None:
            grid = combine(grid, raster_fraction(grid, *found), "overview")
    return grid


def chip_fractions(grid: CoverageGrid, xmin: np.ndarray, ymin: np.ndarray,
                   xmax: np.ndarray, ymax: np.ndarray, *, bound: Literal["lower", "upper"]
                   = "lower") -> np.ndarray:
    """For boxes in the grid's CRS, a bound on the fraction of each box's area whose
    cells say valid (or, for any other fraction grid, hold the property).

    The lower bound gives each cell at most its share that must fall in the box: a
    cell of area ``A``, fraction ``v`` and overlap ``a`` adds ``max(0, a - A(1 - v))``.
    The upper bound adds ``min(a, vA)``. Both are exact for boxes made of whole cells.
    """
    xmin, ymin, xmax, ymax = (np.asarray(v, np.float64).reshape(-1)
                              for v in (xmin, ymin, xmax, ymax))
    rows, columns = grid.shape
    total = np.zeros(len(xmin))
    if not len(xmin) or not rows or not columns:
        return total
    cell_area = grid.cell_x * grid.cell_y
    first_col = np.clip(np.floor((xmin - grid.x0) / grid.cell_x), 0, columns - 1).astype(int)
    last_col = np.clip(np.ceil((xmax - grid.x0) / grid.cell_x) - 1, 0, columns - 1).astype(int)
    first_row = np.clip(np.floor((grid.y0 - ymax) / grid.cell_y), 0, rows - 1).astype(int)
    last_row = np.clip(np.ceil((grid.y0 - ymin) / grid.cell_y) - 1, 0, rows - 1).astype(int)
    span_x = int(np.max(last_col - first_col)) + 1
    span_y = int(np.max(last_row - first_row)) + 1
    for dj in range(span_x):
        col = first_col + dj
        in_x = col <= last_col
        cx0 = grid.x0 + col * grid.cell_x
        ox = np.clip(np.minimum(xmax, cx0 + grid.cell_x) - np.maximum(xmin, cx0), 0, None)
        for di in range(span_y):
            row = first_row + di
            here = in_x & (row <= last_row)
            cy1 = grid.y0 - row * grid.cell_y
            oy = np.clip(np.minimum(ymax, cy1) - np.maximum(ymin, cy1 - grid.cell_y), 0, None)
            overlap = ox * oy
            v = grid.valid[np.minimum(row, rows - 1), np.minimum(col, columns - 1)]
            if bound == "lower":
                part = np.clip(overlap - cell_area * (1 - v), 0, None)
            else:
                part = np.minimum(overlap, v * cell_area)
            total += np.where(here, part, 0.0)
    area = (xmax - xmin) * (ymax - ymin)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area > 0, np.clip(total / area, 0, 1), 0.0)
