"""GeoTIFF georeferencing: GeoKeys -> CRS, model tags -> affine transform, GDAL extras.

Follows GDAL's reading conventions so that transforms equal rasterio's: a
PixelIsPoint raster's origin moves half a pixel up-left, and overview transforms
scale the full-resolution pixel size by the ratio of the image sizes.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from affine import Affine
from pyproj import CRS

from rasteret.errors import UnsupportedTiffError

# GeoKey ids.
GT_MODEL_TYPE = 1024
GT_RASTER_TYPE = 1025
GEOGRAPHIC_TYPE = 2048
PROJECTED_CS_TYPE = 3072
USER_DEFINED = 32767
RASTER_PIXEL_IS_POINT = 2

# The GeoTIFF and GDAL tags this module reads (the header parser fetches them too).
TAG_MODEL_PIXEL_SCALE = 33550
TAG_MODEL_TIEPOINT = 33922
TAG_MODEL_TRANSFORMATION = 34264
TAG_GEO_KEY_DIRECTORY = 34735
TAG_GEO_DOUBLE_PARAMS = 34736
TAG_GEO_ASCII_PARAMS = 34737
TAG_GDAL_METADATA = 42112
TAG_GDAL_NODATA = 42113


@lru_cache(maxsize=256)
def crs_from_epsg(code: int) -> CRS:
    """Return the CRS of an EPSG code (cached: building a CRS costs about a millisecond)."""
    return CRS.from_epsg(code)


@dataclass(frozen=True)
class GeoInfo:
    """Georeferencing and GDAL metadata of a GeoTIFF's full-resolution image.

    Attributes:
        transform: Pixel -> CRS affine transform (pixel corners), or None.
        epsg: EPSG code of the CRS, or None.
        crs_problem: Why there is no EPSG code although GeoKeys exist (user-defined).
        nodata: GDAL_NODATA as a float, or None.
        scales: Per-band scale from GDAL_METADATA (1.0 when absent).
        offsets: Per-band offset from GDAL_METADATA (0.0 when absent).
        metadata: Dataset-level GDAL_METADATA items.
        geokeys: The raw GeoKey directory, key -> value.
    """

    transform: Affine | None = None
    epsg: int | None = None
    crs_problem: str | None = None
    nodata: float | None = None
    scales: tuple[float, ...] = ()
    offsets: tuple[float, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    geokeys: dict[int, Any] = field(default_factory=dict)

    @property
    def crs(self) -> CRS | None:
        """The CRS as a :class:`pyproj.CRS`, or None when the file has no GeoKeys.

        Raises:
            UnsupportedTiffError: The CRS is user-defined (no EPSG code); the message
                lists its GeoKeys.
        """
        if self.epsg is not None:
            return crs_from_epsg(self.epsg)
        if self.crs_problem:
            raise UnsupportedTiffError(self.crs_problem)
        return None


def parse_geokeys(tags: dict[int, Any]) -> dict[int, Any]:
    """Decode the GeoKeyDirectory tag into ``{key_id: value}``."""
    directory = tags.get(TAG_GEO_KEY_DIRECTORY)
    if directory is None or len(directory) < 4:
        return {}
    if isinstance(directory, (str, bytes)):
        return {}
    directory = [int(v) for v in directory]
    doubles = tags.get(TAG_GEO_DOUBLE_PARAMS)
    if isinstance(doubles, (str, bytes)):
        doubles = None
    ascii_params = tags.get(TAG_GEO_ASCII_PARAMS)
    if not isinstance(ascii_params, str):
        ascii_params = ""
    count = directory[3]
    keys: dict[int, Any] = {}
    for i in range(count):
        base = 4 + 4 * i
        if base + 4 > len(directory):
            break
        key_id, location, n, value_offset = directory[base : base + 4]
        if location == 0:
            keys[key_id] = value_offset
        elif location == TAG_GEO_DOUBLE_PARAMS and doubles is not None:
            values = [float(v) for v in doubles[value_offset : value_offset + n]]
            keys[key_id] = values[0] if n == 1 and values else values
        elif location == TAG_GEO_ASCII_PARAMS and isinstance(ascii_params, str):
            keys[key_id] = ascii_params[value_offset : value_offset + n].rstrip("|\0")
        elif location == TAG_GEO_KEY_DIRECTORY:
            keys[key_id] = directory[value_offset : value_offset + n]
    return keys


def _transform(tags: dict[int, Any], pixel_is_point: bool, url: str) -> Affine | None:
    matrix = tags.get(TAG_MODEL_TRANSFORMATION)
    if matrix is not None and len(matrix) >= 16:
        m = [float(v) for v in matrix]
        if m[1] != 0.0 or m[4] != 0.0:
            raise UnsupportedTiffError(
                f"rotated or sheared transform (ModelTransformation {m[:8]}) in {url}; "
                "warp the file to a north-up grid first (gdalwarp)"
            )
        transform = Affine(m[0], m[1], m[3], m[4], m[5], m[7])
    else:
        scale = tags.get(TAG_MODEL_PIXEL_SCALE)
        tiepoints = tags.get(TAG_MODEL_TIEPOINT)
        if scale is None or tiepoints is None or len(scale) < 2 or len(tiepoints) < 6:
            return None
        if len(tiepoints) > 6:
            raise UnsupportedTiffError(
                f"{len(tiepoints) // 6} tie points (a GCP-georeferenced file) in {url}; "
                "warp it to a regular grid first (gdalwarp)"
            )
        sx, sy = float(scale[0]), float(scale[1])
        i, j, _, x, y, _ = (float(v) for v in tiepoints[:6])
        transform = Affine(sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy)
    if pixel_is_point:
        # GDAL's default: the tie point names a pixel centre, so shift to its corner.
        transform = transform @ Affine.translation(-0.5, -0.5)
    return transform


def _parse_nodata(text: str | None) -> float | None:
    if not text:
        return None
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return None


def _parse_gdal_metadata(
    text: str | None, samples: int
) -> tuple[tuple[float, ...], tuple[float, ...], dict[str, str]]:
    scales = [1.0] * samples
    offsets = [0.0] * samples
    metadata: dict[str, str] = {}
    if not text:
        return tuple(scales), tuple(offsets), metadata
    try:
        root = ElementTree.fromstring(text.strip())
    except ElementTree.ParseError:
        return tuple(scales), tuple(offsets), metadata
    for item in root.iter("Item"):
        name = item.get("name", "")
        value = (item.text or "").strip()
        sample = item.get("sample")
        role = (item.get("role") or "").lower()
        if sample is None:
            if item.get("domain") in (None, ""):
                metadata[name] = value
            continue
        try:
            index, number = int(sample), float(value)
        except ValueError:
            continue
        if not 0 <= index < samples or not math.isfinite(number):
            continue
        if role == "scale" or name.upper() == "SCALE":
            scales[index] = number
        elif role == "offset" or name.upper() == "OFFSET":
            offsets[index] = number
    return tuple(scales), tuple(offsets), metadata


def parse_geo(
    tags: dict[int, Any], width: int, height: int, samples: int, url: str
) -> GeoInfo:
    """Build :class:`GeoInfo` from the tags of the full-resolution IFD."""
    geokeys = parse_geokeys(tags)
    pixel_is_point = geokeys.get(GT_RASTER_TYPE) == RASTER_PIXEL_IS_POINT
    transform = _transform(tags, pixel_is_point, url)
    epsg: int | None = None
    problem: str | None = None
    code = geokeys.get(PROJECTED_CS_TYPE)
    if code is None or code == USER_DEFINED:
        geographic = geokeys.get(GEOGRAPHIC_TYPE)
        if code is None and geographic not in (None, USER_DEFINED):
            code = geographic
    if isinstance(code, int) and 0 < code < USER_DEFINED:
        epsg = code
    elif geokeys:
        readable = {k: v for k, v in geokeys.items()}
        problem = (
            f"the CRS of {url} is user-defined (no EPSG code); its GeoKeys are {readable}. "
            "Reproject the file to an EPSG CRS (gdalwarp -t_srs EPSG:...) to read its CRS"
        )
    nodata_text = tags.get(TAG_GDAL_NODATA)
    metadata_text = tags.get(TAG_GDAL_METADATA)
    scales, offsets, metadata = _parse_gdal_metadata(
        metadata_text if isinstance(metadata_text, str) else None, samples
    )
    return GeoInfo(
        transform=transform,
        epsg=epsg,
        crs_problem=problem,
        nodata=_parse_nodata(nodata_text if isinstance(nodata_text, str) else None),
        scales=scales,
        offsets=offsets,
        metadata=metadata,
        geokeys=geokeys,
    )


def nodata_for_dtype(nodata: float | None, dtype: np.dtype) -> np.generic:
    """Return ``nodata`` as a value of ``dtype``, or 0 when it is unset or out of range."""
    scalar: type[np.generic] = dtype.type
    if nodata is None:
        return scalar(0)
    if dtype.kind == "f":
        return scalar(nodata)
    if math.isnan(nodata) or math.isinf(nodata):
        return scalar(0)
    info = np.iinfo(dtype)
    if info.min <= nodata <= info.max:
        return scalar(int(nodata))
    return scalar(0)
