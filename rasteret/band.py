"""``BandView``: one band of one scene, as the stored collection record describes it.

A collection stores, per band, one Arrow struct (see :data:`rasteret.schema.BAND_TYPE`)
holding the unsigned href, the object's version, the georeferencing and every level's
tile table. This module is the only reader of that struct: the collection, the
analysis functions, the TorchGeo datasets and samplers, chip export and the ingest
footprints all ask a :class:`BandView` for what they need (href, grid, CRS, footprint,
resolution, effective nodata/scale/offset, or a :class:`~rasteret.read.cog.CogFile`).
:mod:`rasteret.schema` and this module are the only places that know its field names.

Views are built from the Arrow child arrays of the requested rows: the light fields
(href, CRS, transform, level-0 grid...) are read column by column, and the tile tables
stay in Arrow until :meth:`BandView.header` (or :meth:`BandView.cog`) needs them.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from affine import Affine
from pyproj import CRS

from rasteret.errors import ConfigurationError
from rasteret.io.backend import Backend
from rasteret.read.cache import ChunkCaches
from rasteret.read.cog import CogFile
from rasteret.read.warp import GridSpec, transformer
from rasteret.schema import band_nodata, band_scale_offset, record_to_header
from rasteret.tiff.header import CogHeader, sample_dtype

Bounds = tuple[float, float, float, float]

# The light fields of a band struct, read as Python values for each view.
_SCALAR_FIELDS = ("href", "band_index", "size", "etag", "last_modified", "epsg",
                  "transform", "nodata", "scales", "offsets", "stac")
# The level-0 grid, read from the first element of each row's ``levels`` list.
_LEVEL_FIELDS = ("width", "height", "chunk_width", "chunk_height", "bits_per_sample",
                 "sample_format")


@lru_cache(maxsize=256)
def crs_of(epsg: int) -> CRS:
    """The pyproj CRS of an EPSG code (cached: building one parses the database)."""
    return CRS.from_epsg(epsg)


@dataclass(frozen=True)
class BandView:
    """One band of one scene of a collection: where it lives and how it is gridded.

    Build views with :meth:`rasteret.collection.Collection.band_views` (or
    :meth:`~rasteret.collection.Collection.band_view`); a view of a band that failed to
    index is None there.

    Attributes:
        scene_id: The scene's id.
        band: The band's name in the collection.
        row: The scene's row in the collection table the view was built from.
        href: The unsigned href of the object.
        band_index: The 1-based sample of the object this band reads.
        size: The object's size in bytes when it was indexed, if known.
        etag: The object's ETag when it was indexed, if known.
        last_modified: Its modification time then (ISO 8601), if known.
        epsg: The EPSG code of the image's CRS (None: not georeferenced).
        transform: Pixel -> CRS transform of the full-resolution image (None: not
            georeferenced).
        width: Width of the full-resolution image in pixels.
        height: Its height in pixels.
        tile_width: Width of its tiles (or strips) in pixels.
        tile_height: Height of its tiles (or strips) in pixels.
        bits_per_sample: Bits per sample of the full-resolution image.
        sample_format: Its TIFF sample format (1 unsigned, 2 signed, 3 float).
        nodata: The effective nodata: the COG's own GDAL_NODATA, else the STAC
            item's ``raster:bands`` nodata, else None.
        scale: The effective scale: physical value = stored value x scale + offset
            (the COG's own scale/offset when not the identity, else the STAC item's).
        offset: The effective offset.
    """

    scene_id: str
    band: str
    row: int
    href: str
    band_index: int
    size: int | None
    etag: str | None
    last_modified: str | None
    epsg: int | None
    transform: Affine | None
    width: int
    height: int
    tile_width: int
    tile_height: int
    bits_per_sample: int
    sample_format: int
    nodata: float | None
    scale: float
    offset: float
    # The Arrow struct array holding the full record (tile tables) and its position.
    _source: pa.StructArray = field(repr=False, compare=False)
    _index: int = field(repr=False, compare=False)

    # -- georeferencing ------------------------------------------------------------------
    @property
    def georeferenced(self) -> bool:
        """Whether the image has a CRS and a transform."""
        return self.epsg is not None and self.transform is not None

    @property
    def crs(self) -> CRS:
        """The image's CRS.

        Raises:
            ConfigurationError: The image is not georeferenced.
        """
        return crs_of(self._georeferencing()[0])

    def _georeferencing(self) -> tuple[int, Affine]:
        if self.epsg is None or self.transform is None:
            raise ConfigurationError(
                f"band {self.band!r} of scene {self.scene_id!r} ({self.href}) has no CRS or "
                "transform: georeference the file (GeoTIFF tags) and rebuild the collection"
            )
        return self.epsg, self.transform

    @property
    def grid(self) -> GridSpec:
        """The full-resolution image's own pixel grid.

        Raises:
            ConfigurationError: The image is not georeferenced.
        """
        epsg, transform = self._georeferencing()
        return GridSpec(crs_of(epsg), transform, self.width, self.height)

    @property
    def bounds(self) -> Bounds:
        """``(minx, miny, maxx, maxy)`` of the full-resolution image in its own CRS."""
        t = self._georeferencing()[1]
        left, top = t.c, t.f
        right, bottom = left + t.a * self.width, top + t.e * self.height
        return min(left, right), min(top, bottom), max(left, right), max(top, bottom)

    def footprint(self, crs: CRS | None = None) -> shapely.Polygon:
        """The image's bounding box in ``crs`` (default: its own), as a polygon.

        Reprojected bounds are densified (21 points per edge), so they enclose the
        image's curved outline in the other CRS.
        """
        bounds = self.bounds
        if crs is not None and not self.crs.equals(crs):
            bounds = transformer(self.crs, crs).transform_bounds(*bounds, densify_pts=21)
        return shapely.box(*bounds)

    def resolution(self, crs: CRS | None = None) -> tuple[float, float]:
        """``(xres, yres)``: the native pixel size in ``crs`` units (default: its own),
        positive; in another CRS, the size of the image's top-left pixel there."""
        t = self._georeferencing()[1]
        if crs is None or self.crs.equals(crs):
            return abs(t.a), abs(t.e)
        to_crs = transformer(self.crs, crs)
        x0, y0 = to_crs.transform(t.c, t.f)
        x1, y1 = to_crs.transform(t.c + t.a, t.f + t.e)
        return abs(x1 - x0), abs(y1 - y0)

    def pixel_of(self, x: float, y: float, crs: CRS | None = None) -> tuple[int, int]:
        """``(col, row)`` of the full-resolution pixel containing the point ``(x, y)``
        given in ``crs`` (default: the image's own)."""
        transform = self._georeferencing()[1]
        if crs is not None and not crs.equals(self.crs):
            x, y = transformer(crs, self.crs).transform(x, y)
        col, row = ~transform @ (x, y)
        return math.floor(col), math.floor(row)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the band's decoded pixels (no tile table is read).

        Raises:
            UnsupportedTiffError: A sample format rasteret does not decode.
        """
        return sample_dtype(self.bits_per_sample, self.sample_format)

    # -- the full record -----------------------------------------------------------------
    def detached(self) -> BandView:
        """A copy holding only its own record, so it pickles small (a view normally
        points into the whole column of the collection)."""
        return dataclasses.replace(self, _source=self._source.take([self._index]), _index=0)

    def record(self) -> dict[str, Any]:
        """The stored record as a dict matching :data:`rasteret.schema.BAND_TYPE`
        (every level's tile table included)."""
        record: dict[str, Any] = self._source[self._index].as_py()
        return record

    def header(self) -> CogHeader:
        """The COG header rebuilt from the stored record (no network request); its
        nodata is the effective :attr:`nodata`."""
        return record_to_header(self.record())

    def tile_byte_counts(self) -> np.ndarray:
        """The byte count of every tile (or strip) of the full-resolution image, in
        the tile table's order (0: a sparse tile GDAL left unwritten), read from the
        stored table alone (no other field is decoded)."""
        levels = self._source.field("levels")
        first = int(levels.offsets[self._index].as_py())
        counts = levels.values.field("byte_counts")[first].values
        return np.asarray(counts.to_numpy(zero_copy_only=False), dtype=np.uint64)

    def cog(self, backend: Backend, caches: ChunkCaches | None = None, *,
            validate: bool = True) -> CogFile:
        """A :class:`~rasteret.read.cog.CogFile` reading this band's object from its
        stored header (no header request).

        Args:
            backend: How to reach the object's store.
            caches: Chunk caches the file's reads share, if any.
            validate: Check that every tile comes from the version of the object
                recorded at build time (``If-Match`` with the ETag, size and ETag
                compared on each response).
        """
        return CogFile(self.href, self.header(), backend=backend, size=self.size,
                       caches=caches, etag=self.etag, last_modified=self.last_modified,
                       validate=validate)


def band_views(column: pa.ChunkedArray | pa.StructArray, *, band: str,
               ids: Sequence[str], rows: Sequence[int] | np.ndarray | None = None,
               numbers: Sequence[int] | np.ndarray | None = None
               ) -> list[BandView | None]:
    """Views of one band column, for ``rows`` (default: every row), in that order.

    Reads the light child arrays of the requested rows only; tile tables stay in
    Arrow (no copy) until a view's :meth:`BandView.header` is asked for.

    Args:
        column: The band's column of the collection table.
        band: The band's name.
        ids: The scene ids of the requested rows, in the same order.
        rows: Rows of the column (default: all).
        numbers: The row numbers the views report (default: ``rows``), e.g. the
            collection's rows when ``column`` is one row group of its files.

    Returns:
        One view per requested row; None where the band was not indexed.
    """
    chunks: list[pa.StructArray] = (list(column.chunks) if isinstance(column, pa.ChunkedArray)
                                    else [column])
    starts = np.cumsum([0] + [len(c) for c in chunks])
    wanted = (np.arange(starts[-1], dtype=np.int64) if rows is None
              else np.asarray(rows, dtype=np.int64).reshape(-1))
    if len(wanted) != len(ids):
        raise ValueError(f"got {len(ids)} ids for {len(wanted)} rows")
    if len(wanted) and (int(np.min(wanted)) < 0 or int(np.max(wanted)) >= starts[-1]):
        raise IndexError(f"rows out of range for a column of {starts[-1]} rows")
    reported = wanted if numbers is None else np.asarray(numbers, dtype=np.int64).reshape(-1)
    if len(reported) != len(wanted):
        raise ValueError(f"got {len(reported)} row numbers for {len(wanted)} rows")
    views: list[BandView | None] = [None] * len(wanted)
    which = np.searchsorted(starts, wanted, side="right") - 1
    for number, chunk in enumerate(chunks):
        positions = np.flatnonzero(which == number)
        if not len(positions):
            continue
        local = wanted[positions] - starts[number]
        built = _chunk_views(chunk, local, band=band,
                             ids=[ids[int(p)] for p in positions],
                             rows=[int(r) for r in reported[positions]])
        for position, view in zip(positions, built):
            views[position] = view
    return views


def _chunk_views(chunk: pa.StructArray, local: np.ndarray, *, band: str,
                 ids: list[str], rows: list[int]) -> list[BandView | None]:
    indices = pa.array(local, pa.int64())
    valid = chunk.is_valid().take(indices).to_pylist()
    values = {name: chunk.field(name).take(indices).to_pylist() for name in _SCALAR_FIELDS}
    # Level 0 of each row: the first element of its levels list, read field by field
    # from the list's values so that no tile table is materialised.
    levels = chunk.field("levels")
    offsets = levels.offsets.to_numpy()
    first = offsets[local]
    present = offsets[local + 1] > first
    level_values = levels.values
    grid = {name: np.zeros(len(local), np.int64) for name in _LEVEL_FIELDS}
    if present.any():
        picked = pa.array(first[present], pa.int64())
        for name in _LEVEL_FIELDS:
            grid[name][present] = pc.take(level_values.field(name), picked).to_numpy(
                zero_copy_only=False)
    views: list[BandView | None] = []
    for i, is_valid in enumerate(valid):
        if not is_valid or not present[i]:
            views.append(None)
            continue
        light = {name: values[name][i] for name in _SCALAR_FIELDS}
        scale, offset = band_scale_offset(light)
        transform = light["transform"]
        views.append(BandView(
            scene_id=ids[i], band=band, row=rows[i], href=light["href"],
            band_index=light["band_index"] or 1, size=light["size"], etag=light["etag"],
            last_modified=light["last_modified"], epsg=light["epsg"],
            transform=Affine(*transform[:6]) if transform else None,
            width=int(grid["width"][i]), height=int(grid["height"][i]),
            tile_width=int(grid["chunk_width"][i]), tile_height=int(grid["chunk_height"][i]),
            bits_per_sample=int(grid["bits_per_sample"][i]),
            sample_format=int(grid["sample_format"][i]),
            nodata=band_nodata(light), scale=scale, offset=offset,
            _source=chunk, _index=int(local[i]),
        ))
    return views


def most_common_crs(views: Iterable[BandView | None]) -> CRS:
    """The CRS shared by most of the (georeferenced) views; on a tie, the first met.

    Raises:
        ConfigurationError: No view has a CRS.
    """
    counts = Counter(v.epsg for v in views if v is not None and v.epsg is not None)
    if not counts:
        raise ConfigurationError("the collection's scenes have no CRS")
    return crs_of(counts.most_common(1)[0][0])


def native_view(views: Iterable[BandView | None], crs: CRS) -> BandView | None:
    """The first georeferenced view whose image is natively in ``crs`` (None: none is)."""
    return next((v for v in views if v is not None and v.georeferenced and v.crs.equals(crs)),
                None)


def native_resolution(views: Sequence[BandView | None], crs: CRS) -> tuple[float, float]:
    """The native pixel size in ``crs``: the first view natively in ``crs``, else the
    first view's pixel size reprojected there.

    Raises:
        ConfigurationError: No view is georeferenced.
    """
    native = native_view(views, crs)
    if native is not None:
        return native.resolution()
    first = next((v for v in views if v is not None and v.georeferenced), None)
    if first is None:
        raise ConfigurationError("the collection's scenes have no CRS")
    return first.resolution(crs)


def band_grids(column: pa.ChunkedArray | pa.StructArray) -> dict[str, np.ndarray]:
    """The georeferencing of every row of a band column as NumPy arrays, read from
    the Arrow child arrays (no view, no Python object per row): what indexing and
    tile-aligned sampling of many scenes need.

    Works on a full band column and on the light one a lazily read collection keeps
    (``href``, ``epsg``, ``transform`` and the levels' grid).

    Args:
        column: The band's column.

    Returns:
        ``valid`` (bool: the band was indexed and has a level), ``crs_epsg`` (int64, -1
        where none), ``a``, ``b``, ``c``, ``d``, ``e``, ``f`` (float64 affine terms,
        NaN where no transform), ``width``, ``height``, ``tile_width``,
        ``tile_height`` (int64, of the full-resolution level; 0 where none).
    """
    chunks: list[pa.StructArray] = (list(column.chunks) if isinstance(column, pa.ChunkedArray)
                                    else [column])
    parts: dict[str, list[np.ndarray]] = {}
    for chunk in chunks:
        count = len(chunk)
        out: dict[str, np.ndarray] = {}
        levels = chunk.field("levels")
        offsets = levels.offsets.to_numpy()
        present = offsets[1:] > offsets[:-1]
        out["valid"] = chunk.is_valid().to_numpy(zero_copy_only=False) & present
        out["crs_epsg"] = pc.fill_null(chunk.field("epsg"), -1).to_numpy(
            zero_copy_only=False).astype(np.int64)
        transform = chunk.field("transform")
        t_offsets = transform.offsets.to_numpy()
        t_values = transform.values.to_numpy(zero_copy_only=False).astype(np.float64)
        has = (t_offsets[1:] - t_offsets[:-1] >= 6) & transform.is_valid().to_numpy(
            zero_copy_only=False)
        for k, name in enumerate("abcdef"):
            values = np.full(count, np.nan)
            values[has] = t_values[t_offsets[:-1][has] + k]
            out[name] = values
        picked = pa.array(offsets[:-1][present], pa.int64())
        for key, name in zip(("width", "height", "tile_width", "tile_height"), _LEVEL_FIELDS):
            values = np.zeros(count, np.int64)
            if present.any():
                values[present] = pc.take(levels.values.field(name), picked).to_numpy(
                    zero_copy_only=False)
            out[key] = values
        for key, values in out.items():
            parts.setdefault(key, []).append(values)
    keys = ("valid", "crs_epsg", *"abcdef", "width", "height", "tile_width", "tile_height")
    return {key: (np.concatenate(parts[key]) if key in parts
                  else np.zeros(0, bool if key == "valid" else np.int64)) for key in keys}


def grid_bounds(grids: dict[str, np.ndarray]) -> np.ndarray:
    """``(n, 4)`` ``minx, miny, maxx, maxy`` of each row's full-resolution image in its
    own CRS, from :func:`band_grids` (NaN where not georeferenced)."""
    left, top = grids["c"], grids["f"]
    right = left + grids["a"] * grids["width"]
    bottom = top + grids["e"] * grids["height"]
    return np.column_stack([np.minimum(left, right), np.minimum(top, bottom),
                            np.maximum(left, right), np.maximum(top, bottom)])
