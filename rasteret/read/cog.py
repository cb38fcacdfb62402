"""``open_cog``: one GeoTIFF, its header in one request, windows read tile-exactly."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from affine import Affine
from pyproj import CRS

from rasteret.errors import ConfigurationError, CorruptTiffError
from rasteret.io.backend import Backend, default_backend
from rasteret.io.fetch import FetchStats, ObjectInfo, fetch_head, fetch_ranges
from rasteret.io.runtime import run_sync
from rasteret.io.urls import strip_query
from rasteret.read.cache import ChunkCaches
from rasteret.read.execute import execute_plan, fill_uncovered
from rasteret.read.plan import Window, plan_window
from rasteret.tiff.bytesource import ByteSource, MissingBytes
from rasteret.tiff.codecs import check_supported, compression_name
from rasteret.tiff.geo import nodata_for_dtype
from rasteret.tiff.header import CogHeader, ImageLevel, parse_header

#: Bytes fetched by the header's single request. GDAL COG headers (every IFD and
#: tile table, overviews included) fit in it for images up to about 20,000 tiles.
HEADER_BYTES = 64 * 1024
# Missing header pieces closer than this are fetched as one range.
_HEADER_MERGE_GAP = 256 * 1024
_MAX_HEADER_ROUNDS = 8


async def read_header(
    url: str,
    *,
    backend: Backend,
    header_bytes: int = HEADER_BYTES,
    stats: FetchStats | None = None,
) -> tuple[CogHeader, ObjectInfo]:
    """Fetch and parse a TIFF header: one ranged GET, plus one concurrent round for
    any tile tables or IFDs that lie beyond it.

    Returns:
        ``(header, info)``: the parsed header and the object's size and version.
    """
    data, info = await fetch_head(backend, url, header_bytes, stats)
    size = info.size
    if size is None and len(data) < header_bytes:
        size = len(data)
        info = ObjectInfo(size, info.etag, info.last_modified)
    source = ByteSource(size=size)
    source.add(0, data)
    shown = strip_query(url)
    for _ in range(_MAX_HEADER_ROUNDS):
        try:
            header = parse_header(source, url=shown)
        except MissingBytes as missing:
            ranges = _merge_header_ranges(missing.ranges, size, shown)
            chunks = await fetch_ranges(backend, url, ranges, stats, version=info)
            for (start, _end), chunk in zip(ranges, chunks):
                source.add(start, chunk)
            continue
        check_supported(header.levels[0], shown)
        return header, info
    raise CorruptTiffError(f"the header of {shown} did not resolve in {_MAX_HEADER_ROUNDS} rounds")


def _merge_header_ranges(
    ranges: list[tuple[int, int]], size: int | None, url: str
) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for start, end in sorted(ranges):
        if size is not None:
            if start >= size:
                raise CorruptTiffError(f"the header of {url} points past its end ({start})")
            end = min(end, size)
        if merged and start <= merged[-1][1] + _HEADER_MERGE_GAP:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


class CogFile:
    """An open (Cloud-Optimized) GeoTIFF: its header is in memory, reads fetch only
    the tiles a window covers.

    Create it with :func:`open_cog` or :func:`open_cog_async`.

    Attributes:
        url: Where the file lives.
        header: The parsed header (every level, mask and tile table).
        size: The file's size in bytes, when the store reported it.
        caches: Optional chunk caches (decoded tiles in memory, bytes on disk).
        etag: The object's ETag when the header was read (or indexed).
        last_modified: The object's modification time then (ISO 8601), if known.
        validate: Check that every tile comes from that version of the object: a
            strong ETag goes with each tile request as ``If-Match`` (no extra
            request), and the size and ETag on each response are compared with the
            recorded ones. An object replaced since raises
            :class:`~rasteret.errors.ObjectChangedError` instead of giving pixels from
            another version. On by default; without a recorded ETag, size or time
            there is nothing to compare and reads go on as usual.
    """

    def __init__(self, url: str, header: CogHeader, *, backend: Backend, size: int | None,
                 caches: ChunkCaches | None = None, etag: str | None = None,
                 last_modified: str | None = None, validate: bool = True):
        self.url = url
        self.header = header
        self.backend = backend
        self.size = size
        self.caches = caches
        self.etag = etag
        self.last_modified = last_modified
        self.validate = validate

    @property
    def version(self) -> ObjectInfo | None:
        """The recorded version of the object (None when nothing was recorded)."""
        if self.size is None and not self.etag and not self.last_modified:
            return None
        return ObjectInfo(self.size, self.etag, self.last_modified)

    def __repr__(self) -> str:
        return (
            f"CogFile({strip_query(self.url)!r}, {self.width}x{self.height}x{self.count} "
            f"{self.dtype}, tiles {self.tile_width}x{self.tile_height}, {self.compression}, "
            f"{len(self.overviews)} overviews)"
        )

    # -- description ---------------------------------------------------------------
    @property
    def _main(self) -> ImageLevel:
        return self.header.levels[0]

    @property
    def width(self) -> int:
        """Columns of the full-resolution image."""
        return self._main.width

    @property
    def height(self) -> int:
        """Rows of the full-resolution image."""
        return self._main.height

    @property
    def count(self) -> int:
        """Number of bands (samples per pixel)."""
        return self._main.samples_per_pixel

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of the pixels."""
        return self._main.dtype

    @property
    def tile_width(self) -> int:
        """Tile width (the image width for stripped files)."""
        return self._main.chunk_width

    @property
    def tile_height(self) -> int:
        """Tile height (rows per strip for stripped files)."""
        return self._main.chunk_height

    @property
    def transform(self) -> Affine | None:
        """Pixel -> CRS affine transform of the full-resolution image (GDAL's convention)."""
        return self.header.geo.transform

    @property
    def crs(self) -> CRS | None:
        """The CRS, or None when the file has no georeferencing.

        Raises:
            UnsupportedTiffError: The CRS is user-defined (the message lists its keys).
        """
        return self.header.geo.crs

    @property
    def nodata(self) -> float | None:
        """The GDAL_NODATA value, or None."""
        return self.header.geo.nodata

    @property
    def scale(self) -> tuple[float, ...]:
        """Per-band scale factors from GDAL metadata (1.0 when unset)."""
        return self.header.geo.scales

    @property
    def offset(self) -> tuple[float, ...]:
        """Per-band offsets from GDAL metadata (0.0 when unset)."""
        return self.header.geo.offsets

    @property
    def compression(self) -> str:
        """The compression's name (``deflate``, ``zstd``, ``lzw``, ``jpeg``, ...)."""
        return compression_name(self._main.compression)

    @property
    def predictor(self) -> int:
        """The TIFF predictor (1 none, 2 horizontal, 3 floating point)."""
        return self._main.predictor

    @property
    def overviews(self) -> list[tuple[int, int]]:
        """``(width, height)`` of each reduced-resolution level, largest first."""
        return [(lvl.width, lvl.height) for lvl in self.header.levels[1:]]

    @property
    def has_mask(self) -> bool:
        """True when the file holds an internal (per-dataset) mask."""
        return 0 in self.header.masks

    @property
    def bounds(self) -> tuple[float, float, float, float] | None:
        """``(left, bottom, right, top)`` in the CRS, or None without a transform."""
        if self.transform is None:
            return None
        t = self.transform
        xs = (t.c, t.c + t.a * self.width)
        ys = (t.f, t.f + t.e * self.height)
        return min(xs), min(ys), max(xs), max(ys)

    def level_transform(self, overview: int | None = None) -> Affine | None:
        """The transform of an overview level (None: full resolution)."""
        if self.transform is None or overview is None:
            return self.transform
        level = self._level(overview)
        return self.transform @ Affine.scale(self.width / level.width, self.height / level.height)

    def level(self, overview: int | None = None) -> ImageLevel:
        """The image level read for ``overview`` (None: full resolution): its size,
        tile size, dtype and tile tables.

        Raises:
            ConfigurationError: No such overview.
        """
        return self._level(overview)

    def _level(self, overview: int | None) -> ImageLevel:
        if overview is None:
            return self._main
        if not 0 <= overview < len(self.header.levels) - 1:
            raise ConfigurationError(
                f"overview {overview} does not exist in {strip_query(self.url)}: it has "
                f"{len(self.header.levels) - 1} overviews (0 to {len(self.header.levels) - 2})"
            )
        return self.header.levels[overview + 1]

    def _band_indices(self, bands: int | Sequence[int] | None) -> tuple[int, ...]:
        if bands is None:
            return tuple(range(self.count))
        requested = [bands] if isinstance(bands, int) else list(bands)
        for band in requested:
            if not 1 <= band <= self.count:
                raise ConfigurationError(
                    f"band {band} does not exist in {strip_query(self.url)}: bands are "
                    f"numbered 1 to {self.count}"
                )
        return tuple(b - 1 for b in requested)

    # -- reading ---------------------------------------------------------------------
    async def read_async(
        self,
        window: tuple[int, int, int, int] | Window | None = None,
        *,
        overview: int | None = None,
        bands: int | Sequence[int] | None = None,
        stats: FetchStats | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Async twin of :meth:`read`.

        ``out`` (optional) is the array to decode into, shaped ``(bands, rows, cols)``
        in the level's dtype (for example a slice of a larger result): every pixel of it
        is written, and it is returned.
        """
        level_index = 0 if overview is None else overview + 1
        level = self._level(overview)
        if level_index:
            check_supported(level, strip_query(self.url))
        win = Window.of(window, level)
        indices = self._band_indices(bands)
        fill = nodata_for_dtype(self.nodata, level.dtype)
        shape = (len(indices), win.height, win.width)
        if out is None:
            out = np.empty(shape, dtype=level.dtype)
        elif out.shape != shape or out.dtype != level.dtype:
            raise ConfigurationError(
                f"out= must be {level.dtype} shaped {shape} to read {win} of "
                f"{strip_query(self.url)}, not {out.dtype} {out.shape}")
        plan = plan_window(level, win, indices, file_size=self.size)
        # Chunks write their own pixels: only the rest needs the fill value.
        fill_uncovered(out, plan, level, fill)
        return await execute_plan(
            plan,
            level,
            backend=self.backend,
            url=self.url,
            byteorder=self.header.byteorder,
            nodata=self.nodata,
            out=out,
            stats=stats,
            caches=self.caches,
            version=self.version,
            validate=self.validate,
        )

    def read(
        self,
        window: tuple[int, int, int, int] | Window | None = None,
        *,
        overview: int | None = None,
        bands: int | Sequence[int] | None = None,
        stats: FetchStats | None = None,
    ) -> np.ndarray:
        """Read pixels, fetching only the tiles the window covers.

        Args:
            window: ``(col_off, row_off, width, height)`` in the pixel grid of the chosen
                level; None reads the whole level. It may extend past the image: those
                pixels get the nodata value (0 without one), like rasterio's boundless
                reads.
            overview: None for full resolution, else the index into :attr:`overviews`.
            bands: 1-based band numbers (like rasterio's ``indexes``), an int or a list;
                None reads all bands.
            stats: Optional counter of requests and bytes.

        Returns:
            An array shaped ``(bands, rows, cols)``.

        Raises:
            ConfigurationError: An unknown band or overview.
            CorruptTiffError: A tile does not decode.
            BackendError: The store failed (typed: not found, access denied, network).
        """
        return run_sync(self.read_async(window, overview=overview, bands=bands, stats=stats))

    async def read_mask_async(
        self,
        window: tuple[int, int, int, int] | Window | None = None,
        *,
        overview: int | None = None,
        stats: FetchStats | None = None,
    ) -> np.ndarray:
        """Async twin of :meth:`read_mask`."""
        level_index = 0 if overview is None else overview + 1
        level = self._level(overview)
        win = Window.of(window, level)
        mask_level = self.header.masks.get(level_index)
        if mask_level is None:
            data = await self.read_async(win, overview=overview, stats=stats)
            inside = np.zeros((win.height, win.width), dtype=bool)
            r0, c0 = max(-win.row_off, 0), max(-win.col_off, 0)
            r1 = min(level.height - win.row_off, win.height)
            c1 = min(level.width - win.col_off, win.width)
            if r0 < r1 and c0 < c1:
                inside[r0:r1, c0:c1] = True
            if self.nodata is not None:
                fill = nodata_for_dtype(self.nodata, level.dtype)
                valid = np.any(data != fill, axis=0)
                if np.isnan(self.nodata) and level.dtype.kind == "f":
                    valid = np.any(~np.isnan(data), axis=0)
                inside &= valid
            return np.where(inside, 255, 0).astype(np.uint8)
        check_supported(mask_level, strip_query(self.url))
        out = np.zeros((1, win.height, win.width), dtype=mask_level.dtype)
        plan = plan_window(mask_level, win, (0,), file_size=self.size)
        await execute_plan(
            plan,
            mask_level,
            backend=self.backend,
            url=self.url,
            byteorder=self.header.byteorder,
            out=out,
            stats=stats,
            version=self.version,
            validate=self.validate,
        )
        return np.where(out[0] > 0, 255, 0).astype(np.uint8)

    def read_mask(
        self,
        window: tuple[int, int, int, int] | Window | None = None,
        *,
        overview: int | None = None,
        stats: FetchStats | None = None,
    ) -> np.ndarray:
        """Read the dataset mask like rasterio's ``dataset_mask()``: 255 valid, 0 not.

        Uses the internal mask when the file has one; otherwise pixels equal to
        nodata in every band (and pixels outside the image) are invalid.
        """
        return run_sync(self.read_mask_async(window, overview=overview, stats=stats))


async def open_cog_async(
    url: str | os.PathLike[str],
    *,
    backend: Backend | None = None,
    header_bytes: int = HEADER_BYTES,
    stats: FetchStats | None = None,
) -> CogFile:
    """Async twin of :func:`open_cog`."""
    url = os.fspath(url)
    backend = backend or default_backend()
    header, info = await read_header(url, backend=backend, header_bytes=header_bytes, stats=stats)
    return CogFile(url, header, backend=backend, size=info.size, etag=info.etag,
                   last_modified=info.last_modified)


def open_cog(
    url: str | os.PathLike[str],
    *,
    backend: Backend | None = None,
    header_bytes: int = HEADER_BYTES,
    stats: FetchStats | None = None,
) -> CogFile:
    """Open a GeoTIFF (local path, ``file://``, ``http(s)://``, ``s3://``, ``gs://``,
    ``az://``...) by fetching its header in one ranged request.

    Args:
        url: Where the file lives.
        backend: How to reach the store (see :func:`rasteret.create_backend`); the
            default reads public data anonymously or with environment credentials.
        header_bytes: Size of the first request; pieces of the header beyond it cost
            one more round of requests, all in flight together.
        stats: Optional counter of requests and bytes.

    Returns:
        A :class:`CogFile` whose reads fetch only the tiles they cover.

    Raises:
        UnsupportedTiffError: The file uses a layout or codec rasteret cannot read.
        CorruptTiffError: The bytes are not a valid TIFF.
        BackendError: The store failed (typed: not found, access denied, network).
    """
    return run_sync(
        open_cog_async(url, backend=backend, header_bytes=header_bytes, stats=stats)
    )


__all__ = ["CogFile", "open_cog", "open_cog_async", "read_header"]
