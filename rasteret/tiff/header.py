"""TIFF / BigTIFF header parsing from bytes: IFDs, tile tables, overviews, masks.

:func:`parse_header` walks the IFD chain of a file held (partly) in a
:class:`~rasteret.tiff.bytesource.ByteSource`. It reads only the tags rasteret needs,
so unknown tags never cost a request, and it validates every count and offset so
that hostile files raise :class:`~rasteret.errors.CorruptTiffError` instead of
allocating absurd amounts of memory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from rasteret.errors import CorruptTiffError, UnsupportedTiffError
from rasteret.tiff.bytesource import ByteSource, MissingBytes
from rasteret.tiff.geo import (
    TAG_GDAL_METADATA,
    TAG_GDAL_NODATA,
    TAG_GEO_ASCII_PARAMS,
    TAG_GEO_DOUBLE_PARAMS,
    TAG_GEO_KEY_DIRECTORY,
    TAG_MODEL_PIXEL_SCALE,
    TAG_MODEL_TIEPOINT,
    TAG_MODEL_TRANSFORMATION,
    GeoInfo,
    parse_geo,
)

# Guards against decompression bombs and absurd tables in hostile files.
MAX_IFDS = 256
MAX_DIMENSION = 2**31 - 1
MAX_CHUNKS = 50_000_000
MAX_TAG_BYTES = 512 * 1024 * 1024
MAX_CHUNK_PIXELS = 2**28

# Bytes to ask for when an IFD itself lies outside the known bytes.
IFD_READ_SIZE = 16 * 1024

#: A TIFF's byte order, as a struct/numpy prefix: little-endian or big-endian.
ByteOrder = Literal["<", ">"]

# TIFF field type -> (numpy code, size in bytes)
_FIELD_TYPES: dict[int, tuple[str, int]] = {
    1: ("u1", 1),  # BYTE
    2: ("S1", 1),  # ASCII
    3: ("u2", 2),  # SHORT
    4: ("u4", 4),  # LONG
    5: ("u4", 8),  # RATIONAL (two LONGs)
    6: ("i1", 1),  # SBYTE
    7: ("u1", 1),  # UNDEFINED
    8: ("i2", 2),  # SSHORT
    9: ("i4", 4),  # SLONG
    10: ("i4", 8),  # SRATIONAL
    11: ("f4", 4),  # FLOAT
    12: ("f8", 8),  # DOUBLE
    13: ("u4", 4),  # IFD
    16: ("u8", 8),  # LONG8
    17: ("i8", 8),  # SLONG8
    18: ("u8", 8),  # IFD8
}

# The tags rasteret reads (the GeoTIFF ones come from geo.py); every other tag is
# skipped without fetching its value.
TAG_NEW_SUBFILE_TYPE = 254
TAG_IMAGE_WIDTH = 256
TAG_IMAGE_LENGTH = 257
TAG_BITS_PER_SAMPLE = 258
TAG_COMPRESSION = 259
TAG_PHOTOMETRIC = 262
TAG_FILL_ORDER = 266
TAG_STRIP_OFFSETS = 273
TAG_SAMPLES_PER_PIXEL = 277
TAG_ROWS_PER_STRIP = 278
TAG_STRIP_BYTE_COUNTS = 279
TAG_PLANAR_CONFIG = 284
TAG_PREDICTOR = 317
TAG_TILE_WIDTH = 322
TAG_TILE_LENGTH = 323
TAG_TILE_OFFSETS = 324
TAG_TILE_BYTE_COUNTS = 325
TAG_EXTRA_SAMPLES = 338
TAG_SAMPLE_FORMAT = 339
TAG_JPEG_TABLES = 347
TAG_YCBCR_SUBSAMPLING = 530
TAG_LERC_PARAMETERS = 50674

_WANTED_TAGS = frozenset(
    {
        TAG_NEW_SUBFILE_TYPE,
        TAG_IMAGE_WIDTH,
        TAG_IMAGE_LENGTH,
        TAG_BITS_PER_SAMPLE,
        TAG_COMPRESSION,
        TAG_PHOTOMETRIC,
        TAG_FILL_ORDER,
        TAG_STRIP_OFFSETS,
        TAG_SAMPLES_PER_PIXEL,
        TAG_ROWS_PER_STRIP,
        TAG_STRIP_BYTE_COUNTS,
        TAG_PLANAR_CONFIG,
        TAG_PREDICTOR,
        TAG_TILE_WIDTH,
        TAG_TILE_LENGTH,
        TAG_TILE_OFFSETS,
        TAG_TILE_BYTE_COUNTS,
        TAG_EXTRA_SAMPLES,
        TAG_SAMPLE_FORMAT,
        TAG_JPEG_TABLES,
        TAG_YCBCR_SUBSAMPLING,
        TAG_MODEL_PIXEL_SCALE,
        TAG_MODEL_TIEPOINT,
        TAG_MODEL_TRANSFORMATION,
        TAG_GEO_KEY_DIRECTORY,
        TAG_GEO_DOUBLE_PARAMS,
        TAG_GEO_ASCII_PARAMS,
        TAG_GDAL_METADATA,
        TAG_GDAL_NODATA,
        TAG_LERC_PARAMETERS,
    }
)

# Subfile type bits.
SUBFILE_REDUCED = 1
SUBFILE_MASK = 4


@dataclass(frozen=True, eq=False)
class ImageLevel:
    """One image of a TIFF (an IFD): the full resolution, an overview or a mask.

    Chunks are tiles, or strips for stripped files (a strip is a tile as wide as the
    image and ``rows_per_strip`` high). Chunk ``i`` lies at ``offsets[i]`` and is
    ``byte_counts[i]`` bytes long; with planar configuration 2 the chunks of sample
    ``s`` come after those of samples ``0..s-1``.
    """

    width: int
    height: int
    chunk_width: int
    chunk_height: int
    tiled: bool
    samples_per_pixel: int
    bits_per_sample: int
    sample_format: int
    planar_config: int
    compression: int
    predictor: int
    photometric: int
    fill_order: int
    subfile_type: int
    offsets: np.ndarray
    byte_counts: np.ndarray
    jpeg_tables: bytes | None = None
    extra_samples: tuple[int, ...] = ()
    ycbcr_subsampling: tuple[int, ...] = (2, 2)  # two values in a well-formed file
    lerc_parameters: tuple[int, ...] = ()

    @property
    def chunks_across(self) -> int:
        """Number of chunk columns."""
        return -(-self.width // self.chunk_width)

    @property
    def chunks_down(self) -> int:
        """Number of chunk rows."""
        return -(-self.height // self.chunk_height)

    @property
    def chunks_per_plane(self) -> int:
        """Number of chunks holding one plane (all samples, or one with planar=2)."""
        return self.chunks_across * self.chunks_down

    @property
    def samples_per_chunk(self) -> int:
        """Samples stored in each chunk (all of them when chunky, one when planar)."""
        return self.samples_per_pixel if self.planar_config == 1 else 1

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of decoded samples (native byte order)."""
        return sample_dtype(self.bits_per_sample, self.sample_format)

    @property
    def is_mask(self) -> bool:
        """True for a transparency mask (subfile type bit 4)."""
        return bool(self.subfile_type & SUBFILE_MASK)

    @property
    def is_reduced(self) -> bool:
        """True for a reduced-resolution image (an overview)."""
        return bool(self.subfile_type & SUBFILE_REDUCED)


@dataclass(frozen=True, eq=False)
class CogHeader:
    """Everything a reader needs from a GeoTIFF's header.

    Attributes:
        byteorder: ``"<"`` or ``">"``.
        bigtiff: True for BigTIFF.
        levels: The full-resolution image first, then overviews, largest first.
        masks: Internal masks by level index (``masks[i]`` masks ``levels[i]``).
        geo: Georeferencing, nodata, scale/offset and metadata.
    """

    byteorder: ByteOrder
    bigtiff: bool
    levels: tuple[ImageLevel, ...]
    masks: dict[int, ImageLevel] = field(default_factory=dict)
    geo: GeoInfo = field(default_factory=GeoInfo)


def sample_dtype(bits: int, sample_format: int) -> np.dtype:
    """Return the numpy dtype decoded samples are held in.

    Sub-byte and odd widths (1 to 7, 12 bits, ...) are unpacked into the next
    unsigned integer width, as tifffile does.

    Raises:
        UnsupportedTiffError: For complex or unknown sample formats.
    """
    if sample_format in (1, 4):  # unsigned, undefined
        if bits <= 8:
            return np.dtype("u1")
        if bits <= 16:
            return np.dtype("u2")
        if bits <= 32:
            return np.dtype("u4")
        if bits <= 64:
            return np.dtype("u8")
    elif sample_format == 2 and bits in (8, 16, 32, 64):
        return np.dtype(f"i{bits // 8}")
    elif sample_format == 3 and bits in (16, 32, 64):
        return np.dtype(f"f{bits // 8}")
    raise UnsupportedTiffError(f"sample format {sample_format} with {bits} bits per sample")


class _Reader:
    """Decodes IFD entries from a :class:`ByteSource`, collecting what is missing."""

    def __init__(self, source: ByteSource, byteorder: ByteOrder, bigtiff: bool, url: str) -> None:
        self.source = source
        self.byteorder = byteorder
        self.bigtiff = bigtiff
        self.url = url
        self.missing: list[tuple[int, int]] = []

    def need(self, start: int, length: int) -> None:
        self.missing.append((start, start + length))

    def read_ifd(self, offset: int) -> tuple[dict[int, Any], int] | None:
        """Return ``(tags, next_ifd_offset)``, or None if the IFD is not known yet."""
        bo = self.byteorder
        count_size, entry_size, offset_size = (8, 20, 8) if self.bigtiff else (2, 12, 4)
        raw_count = self.source.get(offset, count_size)
        if raw_count is None:
            self.need(offset, IFD_READ_SIZE)
            return None
        (n_entries,) = struct.unpack(bo + ("Q" if self.bigtiff else "H"), raw_count)
        if n_entries == 0 or n_entries > 4096:
            raise CorruptTiffError(f"IFD at byte {offset} has {n_entries} entries in {self.url}")
        body_length = n_entries * entry_size + offset_size
        body = self.source.get(offset + count_size, body_length)
        if body is None:
            # Writers put tag values right after their IFD: one read gets both.
            self.need(offset, max(count_size + body_length, IFD_READ_SIZE))
            return None
        tags: dict[int, Any] = {}
        for i in range(n_entries):
            entry = body[i * entry_size : (i + 1) * entry_size]
            if self.bigtiff:
                tag, ftype, count = struct.unpack(bo + "HHQ", entry[:12])
                inline = entry[12:20]
            else:
                tag, ftype, count = struct.unpack(bo + "HHI", entry[:8])
                inline = entry[8:12]
            if tag not in _WANTED_TAGS:
                continue
            value = self._read_value(tag, ftype, count, inline)
            if value is not None:
                tags[tag] = value
        (next_offset,) = struct.unpack(bo + ("Q" if self.bigtiff else "I"), body[-offset_size:])
        return tags, next_offset

    def _read_value(self, tag: int, ftype: int, count: int, inline: bytes) -> Any:
        if ftype not in _FIELD_TYPES:
            raise CorruptTiffError(f"tag {tag} has unknown field type {ftype} in {self.url}")
        code, size = _FIELD_TYPES[ftype]
        total = count * size
        if total > MAX_TAG_BYTES:
            raise CorruptTiffError(f"tag {tag} claims {total} bytes in {self.url}")
        raw: bytes | None
        if total <= len(inline):
            raw = inline[:total]
        else:
            (offset,) = struct.unpack(
                self.byteorder + ("Q" if self.bigtiff else "I"), inline
            )
            raw = self.source.get(offset, total)
            if raw is None:
                if self.source.size is not None and offset + total > self.source.size:
                    raise CorruptTiffError(
                        f"tag {tag} points past the end of the file ({offset}+{total} > "
                        f"{self.source.size} bytes) in {self.url}"
                    )
                self.need(offset, total)
                return None
        if ftype == 2:
            return raw.split(b"\0", 1)[0].decode("latin-1")
        if ftype == 7 or tag == TAG_JPEG_TABLES:
            return bytes(raw)
        if ftype in (5, 10):
            pairs = np.frombuffer(raw, self.byteorder + code).reshape(-1, 2)
            return (pairs[:, 0] / np.where(pairs[:, 1] == 0, 1, pairs[:, 1])).tolist()
        return np.frombuffer(raw, self.byteorder + code, count=count)


def _scalar(tags: dict[int, Any], tag: int, default: int | None, url: str) -> int:
    value = tags.get(tag)
    if value is None:
        if default is None:
            raise CorruptTiffError(f"required TIFF tag {tag} is missing in {url}")
        return default
    if isinstance(value, (bytes, str)) or len(value) == 0:
        raise CorruptTiffError(f"TIFF tag {tag} has an invalid value in {url}")
    return int(value[0])


def _build_level(tags: dict[int, Any], url: str) -> ImageLevel:
    width = _scalar(tags, TAG_IMAGE_WIDTH, None, url)
    height = _scalar(tags, TAG_IMAGE_LENGTH, None, url)
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise CorruptTiffError(f"image size {width}x{height} is invalid in {url}")
    samples = _scalar(tags, TAG_SAMPLES_PER_PIXEL, 1, url)
    if not 0 < samples <= 65535:
        raise CorruptTiffError(f"{samples} samples per pixel is invalid in {url}")
    bits_values = tags.get(TAG_BITS_PER_SAMPLE)
    bits = 1 if bits_values is None else int(bits_values[0])
    if bits_values is not None and len(set(bits_values.tolist())) > 1:
        raise UnsupportedTiffError(
            f"samples of different bit depths {bits_values.tolist()} in {url}"
        )
    sample_format_values = tags.get(TAG_SAMPLE_FORMAT)
    sample_format = 1 if sample_format_values is None else int(sample_format_values[0])
    if sample_format_values is not None and len(set(sample_format_values.tolist())) > 1:
        raise UnsupportedTiffError(f"samples of different formats in {url}")
    if not 0 < bits <= 64:
        raise CorruptTiffError(f"{bits} bits per sample is invalid in {url}")
    planar = _scalar(tags, TAG_PLANAR_CONFIG, 1, url)
    if planar not in (1, 2):
        raise CorruptTiffError(f"planar configuration {planar} is invalid in {url}")
    if samples == 1:
        planar = 1  # the two layouts are the same with one sample

    tiled = TAG_TILE_OFFSETS in tags or TAG_TILE_WIDTH in tags
    if tiled:
        chunk_width = _scalar(tags, TAG_TILE_WIDTH, None, url)
        chunk_height = _scalar(tags, TAG_TILE_LENGTH, None, url)
        offsets = tags.get(TAG_TILE_OFFSETS)
        byte_counts = tags.get(TAG_TILE_BYTE_COUNTS)
    else:
        chunk_width = width
        chunk_height = min(_scalar(tags, TAG_ROWS_PER_STRIP, height, url), height)
        offsets = tags.get(TAG_STRIP_OFFSETS)
        byte_counts = tags.get(TAG_STRIP_BYTE_COUNTS)
    if chunk_width <= 0 or chunk_height <= 0:
        raise CorruptTiffError(f"chunk size {chunk_width}x{chunk_height} is invalid in {url}")
    if chunk_width * chunk_height * (samples if planar == 1 else 1) > MAX_CHUNK_PIXELS:
        raise UnsupportedTiffError(
            f"chunks of {chunk_width}x{chunk_height} pixels exceed the decode limit in {url}"
        )
    if offsets is None or byte_counts is None:
        raise CorruptTiffError(f"the image has no tile/strip offsets or byte counts in {url}")
    level = ImageLevel(
        width=width,
        height=height,
        chunk_width=chunk_width,
        chunk_height=chunk_height,
        tiled=tiled,
        samples_per_pixel=samples,
        bits_per_sample=bits,
        sample_format=sample_format,
        planar_config=planar,
        compression=_scalar(tags, TAG_COMPRESSION, 1, url),
        predictor=_scalar(tags, TAG_PREDICTOR, 1, url),
        photometric=_scalar(tags, TAG_PHOTOMETRIC, 1, url),
        fill_order=_scalar(tags, TAG_FILL_ORDER, 1, url),
        subfile_type=_scalar(tags, TAG_NEW_SUBFILE_TYPE, 0, url),
        offsets=np.asarray(offsets, dtype=np.uint64),
        byte_counts=np.asarray(byte_counts, dtype=np.uint64),
        jpeg_tables=tags.get(TAG_JPEG_TABLES),
        extra_samples=tuple(int(v) for v in tags.get(TAG_EXTRA_SAMPLES, ())),
        ycbcr_subsampling=tuple(int(v) for v in tags.get(TAG_YCBCR_SUBSAMPLING, (2, 2)))[:2],
        lerc_parameters=tuple(int(v) for v in tags.get(TAG_LERC_PARAMETERS, ())),
    )
    expected = level.chunks_per_plane * (samples if planar == 2 else 1)
    if expected > MAX_CHUNKS:
        raise UnsupportedTiffError(f"{expected} tiles exceed the limit in {url}")
    if len(level.offsets) < expected or len(level.byte_counts) < expected:
        raise CorruptTiffError(
            f"the tile table has {len(level.offsets)} offsets and "
            f"{len(level.byte_counts)} byte counts, {expected} expected, in {url}"
        )
    level.dtype  # noqa: B018 - validates the sample format early
    return level


def read_preamble(source: ByteSource, url: str) -> tuple[ByteOrder, bool, int]:
    """Return ``(byteorder, bigtiff, first_ifd_offset)`` from the file's first bytes.

    Raises:
        CorruptTiffError: The bytes are not a TIFF.
    """
    head = source.get(0, 16) or source.get(0, 8)
    if head is None:
        raise CorruptTiffError(f"{url} is too short to be a TIFF")
    byteorder: ByteOrder
    if head[:2] == b"II":
        byteorder = "<"
    elif head[:2] == b"MM":
        byteorder = ">"
    else:
        raise CorruptTiffError(f"{url} is not a TIFF (it starts with {head[:4]!r})")
    (version,) = struct.unpack(byteorder + "H", head[2:4])
    if version == 42:
        (first,) = struct.unpack(byteorder + "I", head[4:8])
        return byteorder, False, first
    if version == 43:
        if len(head) < 16:
            raise CorruptTiffError(f"{url} is too short to be a BigTIFF")
        offset_size, _ = struct.unpack(byteorder + "HH", head[4:8])
        if offset_size != 8:
            raise CorruptTiffError(f"BigTIFF offset size {offset_size} is invalid in {url}")
        (first,) = struct.unpack(byteorder + "Q", head[8:16])
        return byteorder, True, first
    raise CorruptTiffError(f"{url} is not a TIFF (version {version})")


def parse_header(source: ByteSource, *, url: str = "<bytes>") -> CogHeader:
    """Parse every IFD of a TIFF held in ``source``.

    Args:
        source: The bytes known so far (at least the first 16 bytes).
        url: Named in error messages.

    Returns:
        The header: levels (full resolution and overviews), masks, georeferencing.

    Raises:
        MissingBytes: Some IFDs or tag values lie outside ``source``; fetch the listed
            ranges, add them to ``source`` and call again.
        CorruptTiffError: The bytes are not a valid TIFF.
        UnsupportedTiffError: The TIFF uses a feature rasteret does not read.
    """
    byteorder, bigtiff, offset = read_preamble(source, url)
    reader = _Reader(source, byteorder, bigtiff, url)
    ifds: list[dict[int, Any]] = []
    seen: set[int] = set()
    while offset:
        if offset in seen:
            raise CorruptTiffError(f"the IFD chain loops back to byte {offset} in {url}")
        if len(seen) >= MAX_IFDS:
            raise UnsupportedTiffError(f"more than {MAX_IFDS} images in {url}")
        if source.size is not None and offset >= source.size:
            raise CorruptTiffError(f"an IFD offset points past the end of {url}")
        seen.add(offset)
        result = reader.read_ifd(offset)
        if result is None:
            break  # the rest of the chain is unknown until this IFD is fetched
        tags, offset = result
        ifds.append(tags)
    if reader.missing:
        raise MissingBytes(reader.missing)
    if not ifds:
        raise CorruptTiffError(f"{url} holds no image")
    try:
        return _assemble(ifds, byteorder, bigtiff, url)
    except (ValueError, TypeError, IndexError, KeyError, OverflowError) as exc:
        if isinstance(exc, CorruptTiffError):
            raise
        # A tag of an unexpected type or shape: the file is malformed.
        raise CorruptTiffError(f"malformed tag values in {url}: {exc}") from exc


def _assemble(
    ifds: list[dict[int, Any]], byteorder: ByteOrder, bigtiff: bool, url: str
) -> CogHeader:
    """Sort IFDs into the main image, its overviews and masks."""
    main_tags = ifds[0]
    main = _build_level(main_tags, url)
    if main.is_mask:
        raise UnsupportedTiffError(f"the first image of {url} is a mask")
    levels = [main]
    mask_candidates: list[ImageLevel] = []
    for tags in ifds[1:]:
        try:
            level = _build_level(tags, url)
        except UnsupportedTiffError:
            continue  # an exotic extra page (thumbnail, ...) does not block the main image
        if level.is_mask:
            mask_candidates.append(level)
        elif level.is_reduced and level.width < main.width and _compatible(level, main):
            levels.append(level)
    levels.sort(key=lambda lvl: -lvl.width)
    masks: dict[int, ImageLevel] = {}
    for mask in mask_candidates:
        for index, level in enumerate(levels):
            if (mask.width, mask.height) == (level.width, level.height) and index not in masks:
                masks[index] = mask
                break
    return CogHeader(
        byteorder=byteorder,
        bigtiff=bigtiff,
        levels=tuple(levels),
        masks=masks,
        geo=parse_geo(main_tags, main.width, main.height, main.samples_per_pixel, url),
    )


def _compatible(level: ImageLevel, main: ImageLevel) -> bool:
    return (
        level.samples_per_pixel == main.samples_per_pixel
        and level.bits_per_sample == main.bits_per_sample
        and level.sample_format == main.sample_format
    )
