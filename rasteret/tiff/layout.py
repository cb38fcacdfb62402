"""The bytes before a Cloud-Optimized GeoTIFF's tile data: header, GDAL's structural
metadata, then every IFD (no I/O).

A COG as GDAL's COG driver lays it out::

    header (8 bytes, or 16 for BigTIFF)
    GDAL_STRUCTURAL_METADATA_SIZE=... (the "ghost" area: LAYOUT=IFDS_BEFORE_DATA, ...)
    IFD of the full resolution, with its tag values    \
    IFD of overview 1 (half size), with its values      } every IFD before any data
    ...                                                 /
    tiles of the smallest overview                     \
    ...                                                 } overviews first, smallest first,
    tiles of the full resolution                       /  each image's tiles in TIFF order

With the ghost area each tile is preceded by its size (4 bytes) and followed by its
last 4 bytes repeated, so GDAL reads a tile without its byte count. The IFDs' sizes do
not depend on the offsets they hold, so :func:`cog_head` lays the file out in two
passes: sizes first, then the bytes with the real offsets.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from affine import Affine
from pyproj import CRS

from rasteret.errors import ConfigurationError
from rasteret.tiff.geo import (
    TAG_GDAL_METADATA,
    TAG_GDAL_NODATA,
    TAG_GEO_KEY_DIRECTORY,
    TAG_MODEL_PIXEL_SCALE,
    TAG_MODEL_TIEPOINT,
    TAG_MODEL_TRANSFORMATION,
)
from rasteret.tiff.header import (
    SUBFILE_REDUCED,
    TAG_BITS_PER_SAMPLE,
    TAG_COMPRESSION,
    TAG_EXTRA_SAMPLES,
    TAG_IMAGE_LENGTH,
    TAG_IMAGE_WIDTH,
    TAG_NEW_SUBFILE_TYPE,
    TAG_PHOTOMETRIC,
    TAG_PLANAR_CONFIG,
    TAG_PREDICTOR,
    TAG_SAMPLE_FORMAT,
    TAG_SAMPLES_PER_PIXEL,
    TAG_TILE_BYTE_COUNTS,
    TAG_TILE_LENGTH,
    TAG_TILE_OFFSETS,
    TAG_TILE_WIDTH,
    ImageLevel,
)
from rasteret.tiff.writer import geokeys_for

#: The TIFF ColorMap tag (a palette image's colours, 16 bits per channel).
TAG_COLOR_MAP = 320

#: Field types written: name -> (TIFF type code, numpy little-endian dtype).
FIELD_TYPES: dict[str, tuple[int, str]] = {
    "byte": (1, "u1"), "ascii": (2, "u1"), "short": (3, "<u2"), "long": (4, "<u4"),
    "double": (12, "<f8"), "long8": (16, "<u8"),
}

#: GDAL's ghost area: what it promises readers about the layout that follows (GDAL
#: adds ``INTERLEAVE=BAND`` before the last line for band-interleaved files).
STRUCTURAL_METADATA = (
    "LAYOUT=IFDS_BEFORE_DATA\n"
    "BLOCK_ORDER=ROW_MAJOR\n"
    "BLOCK_LEADER=SIZE_AS_UINT4\n"
    "BLOCK_TRAILER=LAST_4_BYTES_REPEATED\n"
    "KNOWN_INCOMPATIBLE_EDITION=NO\n "
)

#: Bytes added around each tile with the ghost area (leader before, trailer after).
LEADER_BYTES = 4
TRAILER_BYTES = 4

#: The largest classic TIFF; beyond it the file is written as a BigTIFF.
CLASSIC_LIMIT = 2**32 - 1


@dataclass(frozen=True)
class Tag:
    """One TIFF tag to write.

    Attributes:
        code: The tag number.
        kind: A key of :data:`FIELD_TYPES`.
        values: The values (a string for ``ascii``).
    """

    code: int
    kind: str
    values: Any

    def payload(self) -> tuple[int, bytes]:
        """``(count, little-endian bytes)`` of the values."""
        if self.kind == "ascii":
            raw = str(self.values).encode("latin-1") + b"\0"
            return len(raw), raw
        array = np.asarray(self.values, dtype=FIELD_TYPES[self.kind][1]).ravel()
        return array.size, array.tobytes()


@dataclass(frozen=True)
class CogImage:
    """One image (IFD) of a COG to write: the full resolution or an overview.

    Tiles are ``tile`` x ``tile``, one band each (planar configuration 2 when there
    are several bands); the tile table runs band by band, rows of tiles top down.
    """

    width: int
    height: int
    tile: int
    bands: int
    dtype: np.dtype
    compression: int
    predictor: int
    overview: bool
    palette: bool = False

    @property
    def tiles_across(self) -> int:
        """Tile columns."""
        return -(-self.width // self.tile)

    @property
    def tiles_down(self) -> int:
        """Tile rows."""
        return -(-self.height // self.tile)

    @property
    def tile_count(self) -> int:
        """Tiles in the tile table (every band's)."""
        return self.tiles_across * self.tiles_down * self.bands

    def tags(self, offsets: np.ndarray, byte_counts: np.ndarray, bigtiff: bool) -> list[Tag]:
        """The structural tags of this image (its geo and metadata tags come apart)."""
        dtype = np.dtype(self.dtype)
        word = "long8" if bigtiff else "long"
        sample_format = {"u": 1, "i": 2, "f": 3}[dtype.kind]
        tags = [
            Tag(TAG_NEW_SUBFILE_TYPE, "long", SUBFILE_REDUCED if self.overview else 0),
            Tag(TAG_IMAGE_WIDTH, "long", self.width),
            Tag(TAG_IMAGE_LENGTH, "long", self.height),
            Tag(TAG_BITS_PER_SAMPLE, "short", [dtype.itemsize * 8] * self.bands),
            Tag(TAG_COMPRESSION, "short", self.compression),
            Tag(TAG_PHOTOMETRIC, "short", 3 if self.palette else 1),
            Tag(TAG_SAMPLES_PER_PIXEL, "short", self.bands),
            Tag(TAG_PLANAR_CONFIG, "short", 2 if self.bands > 1 else 1),
            Tag(TAG_PREDICTOR, "short", self.predictor),
            Tag(TAG_TILE_WIDTH, "long", self.tile),
            Tag(TAG_TILE_LENGTH, "long", self.tile),
            Tag(TAG_TILE_OFFSETS, word, offsets),
            Tag(TAG_TILE_BYTE_COUNTS, word, byte_counts),
            Tag(TAG_SAMPLE_FORMAT, "short", [sample_format] * self.bands),
        ]
        if self.bands > 1:
            tags.append(Tag(TAG_EXTRA_SAMPLES, "short", [0] * (self.bands - 1)))
        return tags

    def level(self) -> ImageLevel:
        """This image as the header parser describes it (to decode its tiles)."""
        dtype = np.dtype(self.dtype)
        return ImageLevel(
            width=self.width, height=self.height, chunk_width=self.tile,
            chunk_height=self.tile, tiled=True, samples_per_pixel=1,
            bits_per_sample=dtype.itemsize * 8,
            sample_format={"u": 1, "i": 2, "f": 3}[dtype.kind], planar_config=1,
            compression=self.compression, predictor=self.predictor,
            photometric=1, fill_order=1, subfile_type=int(self.overview),
            offsets=np.zeros(0, np.uint64), byte_counts=np.zeros(0, np.uint64),
        )


@dataclass(frozen=True)
class CogHead:
    """The bytes before a COG's tile data, and where each tile goes.

    Attributes:
        data: Header, ghost area and every IFD.
        offsets: Per image (in the order given), the file offset of each tile's data.
        bigtiff: True when the file is a BigTIFF.
        ghost: True when tiles carry GDAL's leader and trailer.
    """

    data: bytes
    offsets: list[np.ndarray]
    bigtiff: bool
    ghost: bool


def _ifd(tags: Sequence[Tag], at: int, bigtiff: bool, next_ifd: int) -> bytes:
    """One IFD at file offset ``at``, its out-of-line values right after it."""
    entry_format = "<HHQ" if bigtiff else "<HHI"
    inline = 8 if bigtiff else 4
    ordered = sorted(tags, key=lambda t: t.code)
    count_format, offset_format = ("<Q", "<Q") if bigtiff else ("<H", "<I")
    entry_size = struct.calcsize(entry_format) + inline
    head = struct.calcsize(count_format) + len(ordered) * entry_size + inline
    extra = bytearray()
    entries = bytearray(struct.pack(count_format, len(ordered)))
    for tag in ordered:
        count, raw = tag.payload()
        if len(raw) <= inline:
            value = raw.ljust(inline, b"\0")
        else:
            if (at + head + len(extra)) % 2:
                extra += b"\0"  # TIFF values start on a word boundary
            value = struct.pack(offset_format, at + head + len(extra))
            extra += raw
        entries += struct.pack(entry_format, tag.code, FIELD_TYPES[tag.kind][0], count) + value
    entries += struct.pack(offset_format, next_ifd)
    assert len(entries) == head
    return bytes(entries + extra)


def _ghost(bands: int) -> bytes:
    text = STRUCTURAL_METADATA
    if bands > 1:
        text = text.replace("KNOWN_", "INTERLEAVE=BAND\nKNOWN_")
    body = text.encode("ascii")
    return f"GDAL_STRUCTURAL_METADATA_SIZE={len(body):06d} bytes\n".encode("ascii") + body


def _layout(images: Sequence[CogImage], byte_counts: Sequence[np.ndarray],
            extra_tags: Sequence[Sequence[Tag]], bigtiff: bool, ghost: bool,
            ) -> tuple[bytes, list[np.ndarray]]:
    header = 16 if bigtiff else 8
    ghost_area = _ghost(images[0].bands) if ghost else b""
    start = header + len(ghost_area)
    start += start % 2
    around = LEADER_BYTES + TRAILER_BYTES if ghost else 0
    offsets = [np.zeros(len(counts), np.uint64) for counts in byte_counts]
    for _ in range(2):  # the IFDs' sizes first, then the IFDs with the real offsets
        ifds, at = [], start
        for index, image in enumerate(images):
            tags = [*image.tags(offsets[index], byte_counts[index], bigtiff),
                    *extra_tags[index]]
            size = len(_ifd(tags, at, bigtiff, 0))
            at += size + size % 2
            ifds.append((tags, at - size - size % 2))
        position = at
        for index in reversed(range(len(images))):  # smallest overview's tiles first
            counts = np.asarray(byte_counts[index], np.uint64)
            spans = counts + np.uint64(around)
            ends = position + np.cumsum(spans, dtype=np.uint64)
            offsets[index] = ends - spans + np.uint64(LEADER_BYTES if ghost else 0)
            position = int(ends[-1]) if len(ends) else position
    out = bytearray(struct.pack("<2sHHHQ", b"II", 43, 8, 0, start) if bigtiff
                    else struct.pack("<2sHI", b"II", 42, start))
    out += ghost_area
    out += b"\0" * (start - len(out))
    for index, (tags, at) in enumerate(ifds):
        next_ifd = ifds[index + 1][1] if index + 1 < len(ifds) else 0
        out += _ifd(tags, at, bigtiff, next_ifd)
        out += b"\0" * (len(out) % 2)
    return bytes(out), offsets


def cog_head(images: Sequence[CogImage], byte_counts: Sequence[np.ndarray],
             extra_tags: Sequence[Sequence[Tag]], *, ghost: bool = True) -> CogHead:
    """Lay out a COG: the bytes before its tiles, and each tile's offset.

    Args:
        images: The full resolution first, then the overviews, largest first.
        byte_counts: Per image, the size of each tile's compressed bytes, in tile
            table order.
        extra_tags: Per image, its tags beyond the structure (georeferencing on the
            full resolution, nodata, colour map, GDAL metadata).
        ghost: Write GDAL's structural metadata, and a leader and trailer around
            each tile.

    Returns:
        The head; the file is ``head.data`` followed by the tiles of the last image
        first, each at ``head.offsets[image][tile]`` (with the leader and trailer).
    """
    around = (LEADER_BYTES + TRAILER_BYTES) if ghost else 0
    tiles = sum(len(c) for c in byte_counts)
    data, offsets = _layout(images, byte_counts, extra_tags, False, ghost)
    total = len(data) + sum(int(np.sum(c, dtype=np.uint64)) for c in byte_counts) + tiles * around
    if total <= CLASSIC_LIMIT:
        return CogHead(data, offsets, False, ghost)
    data, offsets = _layout(images, byte_counts, extra_tags, True, ghost)
    return CogHead(data, offsets, True, ghost)


def georeferencing_tags(crs: CRS, transform: Affine) -> list[Tag]:
    """The GeoTIFF tags of a grid: pixel scale and tie point (or the full
    transformation when the grid is rotated) and the GeoKey directory (EPSG code).

    Raises:
        ConfigurationError: ``crs`` has no EPSG code.
    """
    keys = geokeys_for(crs)
    tags = [Tag(TAG_GEO_KEY_DIRECTORY, "short", keys)]
    if transform.b == 0.0 and transform.d == 0.0 and transform.e < 0 < transform.a:
        tags += [Tag(TAG_MODEL_PIXEL_SCALE, "double", (transform.a, -transform.e, 0.0)),
                 Tag(TAG_MODEL_TIEPOINT, "double",
                     (0.0, 0.0, 0.0, transform.c, transform.f, 0.0))]
    else:
        t = transform
        tags.append(Tag(TAG_MODEL_TRANSFORMATION, "double",
                        (t.a, t.b, 0.0, t.c, t.d, t.e, 0.0, t.f,
                         0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)))
    return tags


def nodata_text(nodata: float) -> str:
    """GDAL's text of a nodata value (``"0"``, ``"-9999"``, ``"nan"``, ``"0.5"``)."""
    if math.isnan(nodata):
        return "nan"
    if math.isfinite(nodata) and float(nodata).is_integer():
        return str(int(nodata))
    return repr(float(nodata))


def nodata_tag(nodata: float) -> Tag:
    """GDAL's nodata tag (its value as text)."""
    return Tag(TAG_GDAL_NODATA, "ascii", nodata_text(nodata))


def colormap_tag(colors: Mapping[int, Sequence[int]], dtype: np.dtype) -> Tag:
    """A TIFF ColorMap of ``colors`` (class value -> 8-bit RGB or RGBA; alpha is not
    stored), black for the values not listed.

    Raises:
        ConfigurationError: ``dtype`` is not uint8/uint16, or a value or colour is out
            of range.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype("u1"), np.dtype("u2")):
        raise ConfigurationError(f"a colour table needs uint8 or uint16 values, not {dtype}")
    size = 2 ** (dtype.itemsize * 8)
    table = np.zeros((3, size), np.uint16)
    for value, colour in colors.items():
        if not 0 <= int(value) < size or len(colour) not in (3, 4) or not all(
                0 <= int(c) <= 255 for c in colour):
            raise ConfigurationError(
                f"colour {value}: {tuple(colour)} is not a {dtype} value with an 8-bit RGB(A) "
                "colour")
        table[:, int(value)] = [int(c) * 257 for c in colour[:3]]
    return Tag(TAG_COLOR_MAP, "short", table.ravel())


def gdal_metadata_tag(items: Mapping[str, str], descriptions: Sequence[str | None]) -> Tag:
    """GDAL's metadata tag: dataset items and band descriptions (as GDAL writes them)."""
    lines = [f'  <Item name="{escape(name)}">{escape(value)}</Item>'
             for name, value in items.items()]
    lines += [f'  <Item name="DESCRIPTION" sample="{band}" role="description">'
              f"{escape(text)}</Item>"
              for band, text in enumerate(descriptions) if text]
    return Tag(TAG_GDAL_METADATA, "ascii", "<GDALMetadata>\n" + "\n".join(lines)
               + "\n</GDALMetadata>\n")
