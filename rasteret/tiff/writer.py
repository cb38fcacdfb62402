"""Encoding small georeferenced GeoTIFFs (chips and label masks) to bytes (no I/O)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import tifffile
from pyproj import CRS

from rasteret.errors import ConfigurationError
from rasteret.tiff.geo import (
    GEOGRAPHIC_TYPE,
    GT_MODEL_TYPE,
    GT_RASTER_TYPE,
    PROJECTED_CS_TYPE,
    TAG_GDAL_NODATA,
    TAG_GEO_KEY_DIRECTORY,
    TAG_MODEL_PIXEL_SCALE,
    TAG_MODEL_TIEPOINT,
)


def geokeys_for(crs: CRS) -> list[int]:
    """A GeoKeyDirectory naming ``crs`` by its EPSG code (area pixels).

    Raises:
        ConfigurationError: ``crs`` has no EPSG code.
    """
    code = crs.to_epsg()
    if code is None:
        raise ConfigurationError(f"chips need an EPSG CRS, got {crs.name}")
    # Model type 2 geographic / 1 projected; raster type 1 PixelIsArea.
    if crs.is_geographic:
        keys = [(GT_MODEL_TYPE, 0, 1, 2), (GT_RASTER_TYPE, 0, 1, 1),
                (GEOGRAPHIC_TYPE, 0, 1, code)]
    else:
        keys = [(GT_MODEL_TYPE, 0, 1, 1), (GT_RASTER_TYPE, 0, 1, 1),
                (PROJECTED_CS_TYPE, 0, 1, code)]
    return [1, 1, 0, len(keys)] + [v for key in keys for v in key]


def encode_geotiff(data: np.ndarray, transform: Sequence[float], crs: CRS,
                   nodata: float | None = None) -> bytes:
    """``data`` ``(bands, rows, cols)`` as a deflate GeoTIFF with north-up georeferencing.

    Args:
        data: The pixels, band-sequential.
        transform: The affine ``(a, b, c, d, e, f)`` of the top-left pixel corner
            (no rotation).
        crs: The CRS, written as its EPSG code.
        nodata: Written as GDAL's nodata tag when given.
    """
    a, _, c, _, e, f = transform[:6]
    keys = geokeys_for(crs)
    tags: list[tuple[int, str, int, Any, bool]] = [
        (TAG_MODEL_PIXEL_SCALE, "d", 3, (a, -e, 0.0), False),
        (TAG_MODEL_TIEPOINT, "d", 6, (0.0, 0.0, 0.0, c, f, 0.0), False),
        (TAG_GEO_KEY_DIRECTORY, "H", len(keys), keys, False),
    ]
    if nodata is not None:
        tags.append((TAG_GDAL_NODATA, "s", 0, f"{nodata:g}", False))
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, photometric="minisblack", planarconfig="separate",
                     compression="zlib", predictor=data.dtype.kind in "iu", extratags=tags)
    return buffer.getvalue()
