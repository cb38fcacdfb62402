"""Encoding one tile for a TIFF to write: predictor, then compression (bytes, no I/O).

The inverse of :func:`rasteret.tiff.codecs.decode_chunk` for the codecs rasteret
writes: deflate (libdeflate, zlib-wrapped as TIFF's Adobe Deflate) and zstd, with
the horizontal predictor (2) for integers or the floating-point predictor (3).
"""

from __future__ import annotations

from typing import Literal

import imagecodecs
import numpy as np

from rasteret.errors import ConfigurationError

#: A compression rasteret writes.
WriteCompression = Literal["deflate", "zstd"]

#: The TIFF Compression tag value of each compression rasteret writes (GDAL's codes).
COMPRESSION_TAGS: dict[str, int] = {"deflate": 8, "zstd": 50000}

#: The default level of each compression (GDAL's defaults: DEFLATE 6, ZSTD 9).
DEFAULT_LEVELS: dict[str, int] = {"deflate": 6, "zstd": 9}


def predictor_for(dtype: np.dtype) -> int:
    """The TIFF predictor suited to ``dtype``: 3 (floating point) or 2 (horizontal)."""
    return 3 if np.dtype(dtype).kind == "f" else 2


def check_compression(compression: str) -> int:
    """The TIFF tag value of ``compression``.

    Raises:
        ConfigurationError: rasteret does not write that compression.
    """
    code = COMPRESSION_TAGS.get(compression)
    if code is None:
        raise ConfigurationError(
            f"compression={compression!r}: rasteret writes {sorted(COMPRESSION_TAGS)}"
        )
    return code


def encode_tile(tile: np.ndarray, *, compression: str, predictor: int,
                level: int | None = None) -> bytes:
    """One tile (``(rows, cols)``, one band) as the bytes a little-endian TIFF stores.

    Args:
        tile: The tile's pixels, the full tile size (edge tiles padded).
        compression: ``"deflate"`` or ``"zstd"``.
        predictor: 1 (none), 2 (horizontal differencing) or 3 (floating point).
        level: The compression level (default: :data:`DEFAULT_LEVELS`).

    Returns:
        The compressed bytes.

    Raises:
        ConfigurationError: An unknown compression, or a predictor that does not suit
            the dtype.
    """
    check_compression(compression)
    data = np.ascontiguousarray(tile, dtype=tile.dtype.newbyteorder("<"))
    if predictor == 2 and data.dtype.kind in "iu":
        data = imagecodecs.delta_encode(data, axis=-1)
    elif predictor == 3 and data.dtype.kind == "f":
        # Its output is bytes (most significant first), whatever the array's order.
        data = imagecodecs.floatpred_encode(data, axis=-1)
    elif predictor != 1:
        raise ConfigurationError(f"predictor {predictor} does not suit {data.dtype} samples")
    effort = DEFAULT_LEVELS[compression] if level is None else level
    if compression == "zstd":
        return bytes(imagecodecs.zstd_encode(data, level=effort))
    return bytes(imagecodecs.deflate_encode(data, level=effort))
