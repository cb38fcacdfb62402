"""Chunk decoding: compressed tile or strip bytes -> a numpy array.

Codecs and predictors come from imagecodecs, whose functions release the GIL, so
decoding scales across the threads of the read path's pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import imagecodecs
import numpy as np

from rasteret.errors import CorruptTiffError, UnsupportedTiffError
from rasteret.tiff.geo import nodata_for_dtype
from rasteret.tiff.header import ByteOrder, ImageLevel

_LERC_DEFLATE = 1
_LERC_ZSTD = 2
_UNASSOCIATED_ALPHA = 2


# A DEFLATE decoder that runs out of room stops before the literal, match (at most
# 258 bytes) or stored block (at most 65,535 bytes) that does not fit: an output
# buffer this much larger than the bytes wanted always receives every one of them.
_DEFLATE_LARGEST_UNIT = 65_535 + 258


def _deflate_into(data: bytes, out: np.ndarray) -> np.ndarray:
    """libdeflate-decode ``data`` into ``out``; returns the part of ``out`` it filled."""
    # Some releases of imagecodecs' stubs list bytearray/memoryview outputs only, later
    # ones accept arrays; a numpy array is decoded into in place and a view of it
    # returned (the predictors rely on that). Typed here so either stub checks.
    decode = cast(Callable[..., np.ndarray], imagecodecs.deflate_decode)
    return decode(data, out=out)


def _zlib(data: bytes, size: int, wanted: int) -> np.ndarray | bytes:
    if wanted + _DEFLATE_LARGEST_UNIT < size:
        # Only the first rows are needed: stop inflating soon after them (libdeflate
        # writes straight into our buffer and reports that it ran out of room).
        prefix = np.empty(wanted + _DEFLATE_LARGEST_UNIT, np.uint8)
        try:
            _deflate_into(data, prefix)
        except imagecodecs.DeflateError as exc:
            if "INSUFFICIENT_SPACE" in str(exc):
                return prefix[:wanted]
        # The stream ended early or is damaged: the whole-chunk path below decides.
    # libdeflate needs the output size; fall back to zlib for streams it rejects
    # (for example a truncated or padded stream that zlib tolerates, as GDAL does).
    raw: np.ndarray | bytes
    try:
        raw = _deflate_into(data, np.empty(size, np.uint8))
    except Exception:  # noqa: BLE001 - any libdeflate failure gets the lenient decoder
        raw = bytes(imagecodecs.zlib_decode(data))  # bytes already: no copy
    if len(raw) < size:
        raise CorruptTiffError(f"a chunk decompressed to {len(raw)} bytes, {size} expected")
    return raw


def _into_buffer(decode: Callable[..., Any]) -> Callable[[bytes, int, int], np.ndarray]:
    # Decoding into a fresh writable array lets predictors run in place (no copy).
    return lambda data, size, wanted: decode(data, out=np.empty(size, np.uint8))


@dataclass(frozen=True)
class Compression:
    """What rasteret knows of one value of the TIFF Compression tag.

    Attributes:
        name: The name messages and :attr:`CogFile.compression` show.
        codec: The imagecodecs codec whose ``available`` says whether this build of
            imagecodecs decodes it (None: nothing to check).
        decode: ``function(bytes, chunk size, bytes wanted)`` returning bytes or an
            array holding at least the wanted bytes (all of the chunk for codecs that
            cannot stop early); None for codecs that decode straight to pixels (their
            own layout, no predictor).
    """

    name: str
    codec: str | None
    decode: Callable[[bytes, int, int], Any] | None = None

    @property
    def to_pixels(self) -> bool:
        """True when the codec yields pixels itself (JPEG, WebP, LERC, ...)."""
        return self.decode is None


_ZSTD = Compression("zstd", "ZSTD", _into_buffer(imagecodecs.zstd_decode))
_DEFLATE = Compression("deflate", "DEFLATE", _zlib)
_WEBP = Compression("webp", "WEBP")

#: The compressions rasteret decodes, by tag value (old and new codes alike).
COMPRESSIONS: dict[int, Compression] = {
    1: Compression("none", None, lambda data, size, wanted: data),
    5: Compression("lzw", "LZW", _into_buffer(imagecodecs.lzw_decode)),
    7: Compression("jpeg", "JPEG8"),
    8: _DEFLATE,
    32946: _DEFLATE,
    32773: Compression("packbits", "PACKBITS",
                       lambda data, size, wanted: imagecodecs.packbits_decode(data)),
    34712: Compression("jpeg2000", "JPEG2K"),
    34887: Compression("lerc", "LERC"),
    34925: Compression("lzma", "LZMA", lambda data, size, wanted: imagecodecs.lzma_decode(data)),
    34926: _ZSTD,
    50000: _ZSTD,
    34927: _WEBP,
    50001: _WEBP,
    50002: Compression("jpegxl", "JPEGXL"),
}


def compression_name(code: int) -> str:
    """The name of the TIFF compression ``code`` (the number itself when unknown)."""
    known = COMPRESSIONS.get(code)
    return known.name if known else str(code)


def check_supported(level: ImageLevel, url: str) -> None:
    """Raise :class:`UnsupportedTiffError` if rasteret cannot decode ``level``.

    Called once per file when it is opened, so that reads never meet a surprise.
    """
    compression = level.compression
    name = compression_name(compression)
    known = COMPRESSIONS.get(compression)
    if known is None:
        raise UnsupportedTiffError(f"compression {name} (tag value {compression}) in {url}")
    codec = known.codec
    if codec is not None and not getattr(imagecodecs, codec).available:
        raise UnsupportedTiffError(f"compression {name}: imagecodecs lacks {codec}, in {url}")
    if level.predictor not in (1, 2, 3):
        raise UnsupportedTiffError(f"predictor {level.predictor} in {url}")
    if level.predictor == 3 and level.sample_format != 3:
        raise UnsupportedTiffError(f"floating-point predictor on integer samples in {url}")
    if level.predictor == 2 and level.bits_per_sample not in (8, 16, 32, 64):
        raise UnsupportedTiffError(
            f"horizontal predictor on {level.bits_per_sample}-bit samples in {url}"
        )
    if level.photometric in (32844, 32845):
        raise UnsupportedTiffError(f"LogLuv photometric interpretation in {url}")
    if level.photometric == 6 and compression != 7 and level.ycbcr_subsampling != (1, 1):
        raise UnsupportedTiffError(f"subsampled YCbCr without JPEG compression in {url}")
    if known.to_pixels and level.bits_per_sample not in (8, 16, 32, 64):
        raise UnsupportedTiffError(f"{name} with {level.bits_per_sample}-bit samples in {url}")
    bits = level.bits_per_sample
    if bits not in (8, 16, 32, 64) and (level.sample_format == 3 or bits > 32):
        raise UnsupportedTiffError(f"{bits}-bit samples of format {level.sample_format} in {url}")


def decode_chunk(
    data: bytes, level: ImageLevel, byteorder: ByteOrder, rows: int, url: str = "<bytes>",
    *, max_rows: int | None = None, nodata: float | None = None,
) -> np.ndarray:
    """Decode one tile or strip.

    Args:
        data: The chunk's compressed bytes.
        level: The image the chunk belongs to.
        byteorder: The file's byte order (``"<"`` or ``">"``).
        rows: Rows the chunk holds (the tile height; fewer for a file's last strip).
        url: Named in error messages.
        max_rows: Decode only the chunk's first ``max_rows`` rows (a window ending
            inside the chunk needs no more). DEFLATE stops inflating soon after them
            and predictors run on those rows only; other codecs decode everything.

    Returns:
        An array shaped ``(min(rows, max_rows), chunk_width, samples_per_chunk)`` in
        native byte order.

    Raises:
        CorruptTiffError: The bytes do not decode to the size the header promises.
    """
    width = level.chunk_width
    samples = level.samples_per_chunk
    dtype = level.dtype
    chunk_rows = rows
    if max_rows is not None:
        rows = max(1, min(rows, max_rows))
    try:
        if COMPRESSIONS[level.compression].to_pixels:
            array = _decode_image_codec(data, level, nodata)
        else:
            array = _decode_bytes(data, level, byteorder, chunk_rows, rows)
    except (UnsupportedTiffError, CorruptTiffError):
        raise
    except Exception as exc:  # codec errors come in many types
        raise CorruptTiffError(
            f"a {compression_name(level.compression)} chunk of "
            f"{len(data)} bytes does not decode in {url}: {exc}"
        ) from exc
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.shape[1] != width or array.shape[2] != samples or array.shape[0] < rows:
        raise CorruptTiffError(
            f"a chunk decoded to shape {array.shape}, expected ({rows}, {width}, {samples}) "
            f"in {url}"
        )
    if array.dtype != dtype:
        array = array.astype(dtype)
    return array[:rows]


def _decode_image_codec(data: bytes, level: ImageLevel, nodata: float | None) -> np.ndarray:
    compression = level.compression
    if compression == 7:
        colorspace, outcolorspace = None, None
        if level.planar_config == 1 and not level.extra_samples:
            if level.photometric == 6:
                outcolorspace = "RGB"  # YCbCr JPEG reads as RGB, as GDAL does
            elif level.photometric == 2:
                outcolorspace = "RGB"
            elif level.photometric == 5:
                outcolorspace = "CMYK"
        return imagecodecs.jpeg_decode(
            data,
            tables=level.jpeg_tables,
            colorspace=colorspace,
            outcolorspace=outcolorspace,
            shape=(level.chunk_height, level.chunk_width),
        )
    if compression in (34927, 50001):
        return imagecodecs.webp_decode(data, hasalpha=level.samples_per_pixel == 4)
    if compression == 34887:
        extra = level.lerc_parameters[1] if len(level.lerc_parameters) > 1 else 0
        if extra == _LERC_DEFLATE:
            data = bytes(imagecodecs.zlib_decode(data))  # bytes already: no copy
        elif extra == _LERC_ZSTD:
            data = bytes(imagecodecs.zstd_decode(data))
        array, valid = imagecodecs.lerc_decode(data, masks=True)
        return _apply_lerc_mask(np.asarray(array), valid, level, nodata)
    if compression == 34712:
        return imagecodecs.jpeg2k_decode(data)
    return imagecodecs.jpegxl_decode(data)


def _apply_lerc_mask(array: np.ndarray, valid: np.ndarray | None, level: ImageLevel,
                     nodata: float | None) -> np.ndarray:
    """Give the pixels a LERC blob marks invalid the value GDAL (libtiff) gives them.

    LERC stores no value for an invalid pixel (it decodes as 0). libtiff turns the
    mask into NaN for floating-point samples, whatever the file's nodata, and into the
    alpha sample (0 or 255) of 8-bit RGBA-style images whose alpha GDAL moved into
    the mask. It cannot read a mask on other integer images; there the file's nodata
    (0 without one) marks the invalid pixels.
    """
    samples = 1 if array.ndim == 2 else array.shape[2]
    if (level.planar_config == 1 and level.extra_samples
            and level.extra_samples[-1] == _UNASSOCIATED_ALPHA and level.dtype == np.uint8
            and samples == level.samples_per_pixel - 1):
        colour = array.reshape(*array.shape[:2], samples)
        alpha = np.full(array.shape[:2], 255, np.uint8)
        if valid is not None:  # None: every pixel valid, LERC stored no mask
            invalid = ~np.asarray(valid, dtype=bool).reshape(alpha.shape)
            colour = colour.copy() if not colour.flags.writeable else colour
            colour[invalid] = 0
            alpha[invalid] = 0
        return np.concatenate([colour, alpha[:, :, np.newaxis]], axis=2)
    if valid is None:
        return array
    valid = np.asarray(valid, dtype=bool).reshape(array.shape[:2])
    fill = np.nan if array.dtype.kind == "f" else nodata_for_dtype(nodata, array.dtype)
    if not array.flags.writeable:
        array = array.copy()
    array[~valid] = fill
    return array


def _decode_bytes(data: bytes, level: ImageLevel, byteorder: ByteOrder, chunk_rows: int,
                  rows: int) -> np.ndarray:
    """Decode the first ``rows`` of a chunk's ``chunk_rows`` rows."""
    width = level.chunk_width
    samples = level.samples_per_chunk
    bits = level.bits_per_sample
    dtype = level.dtype
    row_bytes = (width * samples * dtype.itemsize if bits in (8, 16, 32, 64)
                 else -(-(width * samples * bits) // 8))
    expected = rows * row_bytes
    # The codec is told the whole chunk's size, so a short stream is still detected.
    decode = COMPRESSIONS[level.compression].decode
    assert decode is not None  # codecs decoding to pixels never reach this function
    raw = decode(data, chunk_rows * row_bytes, expected)
    if level.fill_order == 2:
        raw = imagecodecs.bitorder_decode(bytes(raw))
    if bits not in (8, 16, 32, 64):
        array = imagecodecs.packints_decode(
            bytes(raw)[:expected], dtype, bits, runlen=width * samples
        )
        if array.size < rows * width * samples:
            raise CorruptTiffError(f"a chunk holds {array.size} samples, too few")
        return array[: rows * width * samples].reshape(rows, width, samples)
    buffer = memoryview(raw).cast("B") if not isinstance(raw, np.ndarray) else raw
    if len(buffer) < expected:
        raise CorruptTiffError(
            f"a chunk decompressed to {len(buffer)} bytes, {expected} expected"
        )
    if level.predictor == 3:
        # The float predictor stores bytes most significant first whatever the file's
        # byte order, and rebuilds values in the array's (native) order.
        array = np.frombuffer(buffer, dtype=dtype, count=rows * width * samples)
        array = array.reshape(rows, width, samples)
        return imagecodecs.floatpred_decode(array, axis=-2)
    array = np.frombuffer(buffer, dtype=dtype.newbyteorder(byteorder), count=rows * width * samples)
    array = array.reshape(rows, width, samples)
    if level.predictor == 2:
        # Undo horizontal differencing in native byte order, in place when the
        # decompressed buffer is ours to change.
        if not array.flags.writeable or not array.dtype.isnative:
            array = array.astype(dtype, copy=True)
        return imagecodecs.delta_decode(array, axis=-2, out=array)
    return array
