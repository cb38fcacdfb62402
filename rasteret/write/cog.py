"""``CogWriter``: a Cloud-Optimized GeoTIFF written tile by tile, in bounded memory.

Tiles are handed over as they are finished, in any order; each is encoded at once
and kept, compressed, in an anonymous spool file. Closing the writer builds the
overviews from the spooled tiles (one overview tile at a time), lays the file out
as GDAL's COG driver does (every IFD first, then the smallest overview's tiles, the
full resolution's last) and publishes it whole: a local file appears by a rename
(or a link that refuses to replace another run's file), an object is uploaded in
parts through the same backend as reads. Nothing is published when a step fails.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np
from affine import Affine
from pyproj import CRS

from rasteret.atomic import write_atomic
from rasteret.errors import ConfigurationError, WriteConflictError
from rasteret.io.backend import Backend, default_backend
from rasteret.io.objects import object_exists, put_file
from rasteret.storage import is_remote, local_path
from rasteret.tiff.encode import check_compression, encode_tile, predictor_for
from rasteret.tiff.layout import (
    CogHead,
    CogImage,
    Tag,
    cog_head,
    colormap_tag,
    gdal_metadata_tag,
    georeferencing_tags,
    nodata_tag,
    nodata_text,
)
from rasteret.write.overviews import (
    OverviewResampling,
    TileCount,
    build_overview,
    overview_count,
)
from rasteret.write.spool import MISSING, TileSpool, replay, run_description

#: GDAL metadata item holding the class names of a class map (a JSON list).
CLASS_NAMES_ITEM = "CLASS_NAMES"


class CogWriter:
    """Writes one Cloud-Optimized GeoTIFF from tiles handed over one at a time.

    Memory holds a few tiles whatever the map's size: every tile is compressed when it
    arrives and spooled to a temporary file; overviews are built from the spooled
    tiles. Tiles never written are filled with ``nodata`` (0 without one).

    Example::

        with CogWriter("map.tif", width=w, height=h, crs=crs, transform=t,
                       dtype="float32", nodata=float("nan")) as writer:
            for row, col in writer.tiles():
                writer.write_tile(row, col, predict(writer.tile_window(row, col)))

    Args:
        out: A local path, or an object-store URL (``s3://``, ``az://``, ``gs://``).
        width: Pixels across.
        height: Pixels down.
        crs: The CRS (an EPSG one).
        transform: The affine transform of the top-left pixel corner.
        dtype: The pixels' dtype.
        bands: Bands (written band-interleaved: one band per tile).
        nodata: The nodata value (GDAL_NODATA), if any.
        tile_size: Tile width and height (a multiple of 16).
        compression: ``"deflate"`` or ``"zstd"``.
        level: The compression level (default: GDAL's).
        predictor: The TIFF predictor (default: 2 for integers, 3 for floats).
        overviews: Number of overviews (default: halvings until one tile holds the image).
        resampling: ``"mean"`` or ``"nearest"`` for overviews (default: ``"nearest"``
            when ``colors`` or ``class_names`` say the values are classes).
        colors: Class value -> 8-bit RGB(A): a colour table (one uint8/uint16 band).
        class_names: Class names, by value (stored as GDAL metadata).
        descriptions: One description per band (GDAL's band descriptions).
        metadata: More dataset-level GDAL metadata items.
        ghost: Write GDAL's structural metadata and tile leaders/trailers.
        overwrite: Replace an existing output; by default an existing output raises
            :class:`~rasteret.errors.WriteConflictError` (now or when publishing).
        backend: How to reach the store of a URL ``out`` (default: the environment's).
        spool_dir: Where the spool file lives (default: the system's temp folder).
        journal: A local folder keeping the finished tiles so that a run that is
            killed (or fails) can resume: a writer given the same folder and options
            starts with those tiles written (see :meth:`written`) and gives the same
            file. It is removed once the file is published.

    Raises:
        ConfigurationError: An invalid option.
        WriteConflictError: ``out`` exists and ``overwrite`` is False, or ``journal``
            holds the tiles of another run.
    """

    def __init__(
        self, out: str | os.PathLike[str], *, width: int, height: int, crs: CRS | str | int,
        transform: Affine | Sequence[float], dtype: np.dtype | str | type, bands: int = 1,
        nodata: float | None = None, tile_size: int = 512, compression: str = "deflate",
        level: int | None = None, predictor: int | None = None, overviews: int | None = None,
        resampling: OverviewResampling | None = None,
        colors: Mapping[int, Sequence[int]] | None = None,
        class_names: Sequence[str] | None = None, descriptions: Sequence[str] | None = None,
        metadata: Mapping[str, str] | None = None, ghost: bool = True, overwrite: bool = False,
        backend: Backend | None = None, spool_dir: str | os.PathLike[str] | None = None,
        journal: str | os.PathLike[str] | None = None,
    ) -> None:
        self.out = os.fspath(out)
        self.dtype = np.dtype(dtype)
        self.crs = CRS.from_user_input(crs)
        self.transform = transform if isinstance(transform, Affine) else Affine(*transform[:6])
        self.nodata = nodata
        self.compression = compression
        self.level = level
        self.predictor = predictor_for(self.dtype) if predictor is None else predictor
        self.overwrite = overwrite
        self.ghost = ghost
        self.backend = backend
        self.resampling: OverviewResampling = resampling or (
            "nearest" if colors or class_names else "mean")
        _check_options(width, height, bands, tile_size, self.dtype, nodata, self.resampling)
        if self.predictor not in (1, predictor_for(self.dtype)) or (overviews or 0) < 0:
            raise ConfigurationError(
                f"predictor={self.predictor}, overviews={overviews}: {self.dtype} takes "
                f"predictor 1 or {predictor_for(self.dtype)}, and overviews >= 0")
        code = check_compression(compression)
        self.fill = _fill_value(nodata, self.dtype)
        count = overview_count(width, height, tile_size) if overviews is None else overviews
        self.images = _images(width, height, tile_size, bands, self.dtype, code, self.predictor,
                              count, palette=bool(colors))
        self.extra_tags = self._tags(colors, class_names, descriptions, metadata)
        check_output(self.out, overwrite=overwrite, backend=backend)
        self.count = TileCount()
        self.spool: TileSpool | None = TileSpool(
            [(bands, image.tiles_down, image.tiles_across) for image in self.images],
            spool_dir, journal=journal, run=self.description())

    def description(self) -> dict[str, Any]:
        """What this writer writes (a journal is resumed only by the same description)."""
        main = self.images[0]
        return {"out": self.out, "width": main.width, "height": main.height,
                "bands": main.bands, "dtype": self.dtype.str, "tile": main.tile,
                "compression": self.compression, "level": self.level,
                "predictor": self.predictor, "overviews": len(self.images) - 1,
                "resampling": self.resampling, "crs": self.crs.to_wkt(),
                "transform": list(self.transform)[:6], "ghost": self.ghost,
                "nodata": None if self.nodata is None else nodata_text(self.nodata),
                "tags": hashlib.sha256(b"".join(
                    t.payload()[1] for tags in self.extra_tags for t in tags)).hexdigest()}

    def _tags(self, colors: Mapping[int, Sequence[int]] | None,
              class_names: Sequence[str] | None, descriptions: Sequence[str] | None,
              metadata: Mapping[str, str] | None) -> list[list[Tag]]:
        bands = self.images[0].bands
        if (colors or class_names) and bands != 1:
            raise ConfigurationError(f"colors and class_names describe one band of classes, "
                                     f"not {bands} bands")
        if descriptions is not None and len(descriptions) != bands:
            raise ConfigurationError(
                f"{len(descriptions)} descriptions for {bands} bands")
        shared = [] if self.nodata is None else [nodata_tag(self.nodata)]
        if colors:
            shared.append(colormap_tag(colors, self.dtype))
        items = dict(metadata or {})
        if class_names is not None:
            items[CLASS_NAMES_ITEM] = json.dumps(list(class_names))
        main = [*georeferencing_tags(self.crs, self.transform), *shared]
        if items or descriptions:
            main.append(gdal_metadata_tag(items, list(descriptions or [])))
        return [main] + [list(shared) for _ in self.images[1:]]

    # -- the grid of tiles ---------------------------------------------------------------
    @property
    def width(self) -> int:
        """Pixels across."""
        return self.images[0].width

    @property
    def height(self) -> int:
        """Pixels down."""
        return self.images[0].height

    @property
    def tile_size(self) -> int:
        """Tile width and height."""
        return self.images[0].tile

    @property
    def tiles_across(self) -> int:
        """Tile columns of the full resolution."""
        return self.images[0].tiles_across

    @property
    def tiles_down(self) -> int:
        """Tile rows of the full resolution."""
        return self.images[0].tiles_down

    @property
    def overviews(self) -> int:
        """The number of overviews the file gets."""
        return len(self.images) - 1

    def tiles(self) -> list[tuple[int, int]]:
        """Every ``(row, col)`` of the full resolution's tiles, row by row."""
        return [(r, c) for r in range(self.tiles_down) for c in range(self.tiles_across)]

    def written(self, row: int, col: int) -> bool:
        """True when tile ``(row, col)`` was written (by this run or, with a journal,
        by the run it resumes)."""
        spool = self._open_spool()
        self._check_index(row, col)
        return all(spool.has(0, band, row, col) for band in range(self.images[0].bands))

    def tile_window(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(row_off, col_off, height, width)`` in pixels of one tile inside the image
        (edge tiles are cut at the image's edge)."""
        self._check_index(row, col)
        size = self.tile_size
        return (row * size, col * size, min(size, self.height - row * size),
                min(size, self.width - col * size))

    def _check_index(self, row: int, col: int) -> None:
        if not (0 <= row < self.tiles_down and 0 <= col < self.tiles_across):
            raise ConfigurationError(
                f"tile ({row}, {col}) is outside the {self.tiles_down} x {self.tiles_across} "
                f"tiles of {self.out}")

    # -- writing -------------------------------------------------------------------------
    def _open_spool(self) -> TileSpool:
        if self.spool is None:
            raise ConfigurationError(f"the writer of {self.out} is closed")
        return self.spool

    def encode(self, tile: np.ndarray) -> bytes:
        """One full-size tile of one band, compressed as the file stores it."""
        return encode_tile(tile, compression=self.compression, predictor=self.predictor,
                           level=self.level)

    def write_tile(self, row: int, col: int, data: np.ndarray) -> None:
        """Hand over the pixels of one tile, once; any order.

        Args:
            row: The tile's row (0 at the top).
            col: The tile's column (0 at the left).
            data: ``(bands, h, w)`` (or ``(h, w)`` with one band): the whole tile, or
                at the right and bottom edges either the whole tile or just its part
                inside the image (see :meth:`tile_window`).

        Raises:
            ConfigurationError: The index is outside the grid, the tile was already
                written, the shape does not fit, the values do not fit the dtype, or
                the writer is closed.
        """
        spool = self._open_spool()
        if self.written(row, col):
            raise ConfigurationError(f"tile ({row}, {col}) of {self.out} was already written")
        array = np.asarray(data)
        bands, size = self.images[0].bands, self.tile_size
        if array.ndim == 2 and bands == 1:
            array = array[np.newaxis]
        _, _, rows, cols = self.tile_window(row, col)
        if array.ndim != 3 or array.shape[0] != bands or array.shape[1:] not in (
                (size, size), (rows, cols)):
            raise ConfigurationError(
                f"tile ({row}, {col}) of {self.out} has shape {array.shape}; expected "
                f"({bands}, {size}, {size})" + (f" or ({bands}, {rows}, {cols})"
                                                  if (rows, cols) != (size, size) else ""))
        if not np.can_cast(array.dtype, self.dtype, "same_kind"):
            raise ConfigurationError(
                f"tile ({row}, {col}) holds {array.dtype} values; {self.out} stores "
                f"{self.dtype}")
        with self.count.hold(1):
            for band in range(bands):
                if spool.has(0, band, row, col):
                    continue  # journaled before the previous run stopped
                tile = np.full((size, size), self.fill, self.dtype)
                tile[: array.shape[1], : array.shape[2]] = array[band, :rows, :cols]
                spool.put(0, band, row, col, self.encode(tile))

    # -- finishing -----------------------------------------------------------------------
    def close(self) -> str:
        """Fill the tiles not written, build the overviews, write and publish the file.

        Returns:
            ``out``.

        Raises:
            WriteConflictError: Another run published ``out`` meanwhile (and
                ``overwrite`` is False); this run's file is discarded.
        """
        spool = self._open_spool()
        try:
            self._fill_missing(spool)
            for index in range(1, len(self.images)):
                build_overview(spool, self.images, index, method=self.resampling,
                               nodata=self.nodata, fill=self.fill, encode=self.encode,
                               count=self.count)
            head = cog_head(self.images, [spool.byte_counts(i) for i in range(len(self.images))],
                            self.extra_tags, ghost=self.ghost)
            self._publish(spool, head)
        except BaseException:
            self.abort()
            raise
        spool.close(keep=False)
        self.spool = None
        return self.out

    def _fill_missing(self, spool: TileSpool) -> None:
        missing = spool.missing(0)
        if not len(missing):
            return
        band, row, col = (int(v) for v in missing[0])
        spool.put(0, band, row, col, self.encode(np.full((self.tile_size,) * 2, self.fill,
                                                         self.dtype)))
        for other_band, other_row, other_col in missing[1:].tolist():
            spool.alias(0, other_band, other_row, other_col, source=(0, band, row, col))

    def _publish(self, spool: TileSpool, head: CogHead) -> None:
        if not is_remote(self.out):
            local_path(self.out).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(local_path(self.out), lambda tmp: self._assemble(spool, head, tmp),
                         replace=self.overwrite)
            return
        with tempfile.TemporaryDirectory(dir=spool.folder) as folder:
            staged = Path(folder) / "cog.tif"
            self._assemble(spool, head, staged)
            put_file(self.backend or default_backend(), self.out, staged,
                     create=not self.overwrite)

    def _assemble(self, spool: TileSpool, head: CogHead, path: Path) -> None:
        with open(path, "wb") as file:
            file.write(head.data)
            for index in reversed(range(len(self.images))):
                _copy_tiles(spool, index, head, file)

    def abort(self) -> None:
        """Stop; nothing is published. Without a journal the tiles written so far are
        dropped; a journal keeps them for a run that resumes."""
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def __enter__(self) -> CogWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def finished_rows(journal: str | os.PathLike[str] | None) -> int:
    """How many rows of full-resolution tiles, from the top, a journal holds whole (0
    without a journal): a resumed run need not compute them again."""
    run = None if journal is None else run_description(journal)
    if journal is None or run is None:
        return 0
    tile, bands = int(run["tile"]), int(run["bands"])
    shapes = [(bands, -(-math.ceil(run["height"] / 2**i) // tile),
               -(-math.ceil(run["width"] / 2**i) // tile))
              for i in range(int(run["overviews"]) + 1)]
    offsets, *_ = replay(journal, shapes)
    whole = (offsets[0] != MISSING).all(axis=(0, 2))
    return int(np.argmin(whole)) if not whole.all() else len(whole)


def check_output(out: str | os.PathLike[str], *, overwrite: bool,
                 backend: Backend | None = None) -> None:
    """Fail early when ``out`` exists and may not be replaced (a local file, or an
    object, one HEAD request); publishing checks again, atomically.

    Raises:
        WriteConflictError: ``out`` exists and ``overwrite`` is False.
    """
    if overwrite:
        return
    if is_remote(out):
        exists = object_exists(backend or default_backend(), os.fspath(out))
    else:
        exists = local_path(out).exists()
    if exists:
        raise WriteConflictError(
            f"{os.fspath(out)} already exists (another run wrote it); remove it or pass "
            "overwrite=True")


def _copy_tiles(spool: TileSpool, index: int, head: CogHead, file: BinaryIO) -> None:
    """Write the tiles of image ``index`` where the head says they go."""
    shape = spool.offsets[index].shape
    for flat, (band, row, col) in enumerate(np.ndindex(*shape)):
        data = spool.get(index, band, row, col)
        lead = struct.pack("<I", len(data)) if head.ghost else b""
        if file.tell() + len(lead) != int(head.offsets[index][flat]):
            raise AssertionError("the tiles are not where the COG's head says")
        file.write(lead + data + (data[-4:] if head.ghost else b""))


def _images(width: int, height: int, tile: int, bands: int, dtype: np.dtype, code: int,
            predictor: int, overviews: int, *, palette: bool) -> list[CogImage]:
    images = []
    for index in range(overviews + 1):
        scale = 2 ** index
        images.append(CogImage(math.ceil(width / scale), math.ceil(height / scale), tile,
                               bands, dtype, code, predictor, overview=index > 0,
                               palette=palette))
    return images


def _fill_value(nodata: float | None, dtype: np.dtype) -> Any:
    return dtype.type(0 if nodata is None else nodata)


def _check_options(width: int, height: int, bands: int, tile: int, dtype: np.dtype,
                   nodata: float | None, resampling: str) -> None:
    if width <= 0 or height <= 0 or bands <= 0:
        raise ConfigurationError(f"a {width} x {height} image of {bands} bands is empty")
    if tile <= 0 or tile % 16:
        raise ConfigurationError(f"tile_size={tile}: give a positive multiple of 16 (256, 512)")
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise ConfigurationError(f"dtype {dtype}: give an integer or float dtype")
    if resampling not in ("mean", "nearest"):
        raise ConfigurationError(f"resampling={resampling!r}: give 'mean' or 'nearest'")
    if nodata is None:
        return
    if dtype.kind == "f":
        if not math.isnan(nodata) and not np.isfinite(dtype.type(nodata)):
            raise ConfigurationError(f"nodata={nodata} does not fit {dtype}")
    elif math.isnan(nodata) or not float(nodata).is_integer() or not (
            np.iinfo(dtype).min <= nodata <= np.iinfo(dtype).max):
        raise ConfigurationError(f"nodata={nodata} is not a {dtype} value")
