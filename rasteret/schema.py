"""The collection's Arrow schema and its version.

One row per scene. Per band, one struct column named after the band holds the
unsigned href and the full header record (every level's tile table, the mask, the
georeferencing), so reads rebuild a :class:`~rasteret.tiff.header.CogHeader`
without touching the network.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from affine import Affine

from rasteret.tiff.geo import GeoInfo
from rasteret.tiff.header import CogHeader, ImageLevel

#: Bumped whenever a change makes old collections unreadable without migration.
SCHEMA_VERSION = 1

#: Key of rasteret's own entry in the Parquet file metadata.
METADATA_KEY = b"rasteret"

LEVEL_TYPE = pa.struct(
    [
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("chunk_width", pa.int32()),
        ("chunk_height", pa.int32()),
        ("tiled", pa.bool_()),
        ("samples_per_pixel", pa.int32()),
        ("bits_per_sample", pa.int16()),
        ("sample_format", pa.int16()),
        ("planar_config", pa.int16()),
        ("compression", pa.int32()),
        ("predictor", pa.int32()),
        ("photometric", pa.int32()),
        ("fill_order", pa.int16()),
        ("subfile_type", pa.int32()),
        ("offsets", pa.list_(pa.uint64())),
        ("byte_counts", pa.list_(pa.uint64())),
        ("jpeg_tables", pa.binary()),
        ("extra_samples", pa.list_(pa.int32())),
        ("ycbcr_subsampling", pa.list_(pa.int32())),
        ("lerc_parameters", pa.list_(pa.int32())),
    ]
)

MASK_TYPE = pa.struct([("level_index", pa.int32()), ("level", LEVEL_TYPE)])

#: What the STAC item says about a band's values (raster extension). Reads apply it
#: only where the COG carries no scale/offset or nodata of its own.
STAC_BAND_TYPE = pa.struct(
    [
        ("scale", pa.float64()),
        ("offset", pa.float64()),
        ("nodata", pa.float64()),
        ("data_type", pa.string()),
        ("unit", pa.string()),
    ]
)

BAND_TYPE = pa.struct(
    [
        ("href", pa.string()),
        ("band_index", pa.int32()),
        ("size", pa.int64()),
        ("byteorder", pa.string()),
        ("bigtiff", pa.bool_()),
        ("epsg", pa.int32()),
        ("transform", pa.list_(pa.float64())),
        ("nodata", pa.float64()),
        ("scales", pa.list_(pa.float64())),
        ("offsets", pa.list_(pa.float64())),
        ("levels", pa.list_(LEVEL_TYPE)),
        ("masks", pa.list_(MASK_TYPE)),
        ("etag", pa.string()),
        ("last_modified", pa.string()),
        ("stac", STAC_BAND_TYPE),
    ]
)

#: The fields of a band struct a loaded collection keeps in memory: enough to filter,
#: to index scenes (CRS, transform, level-0 grid) and to name the object. Everything
#: else (tile tables, masks) stays in the files until a read needs it.
LIGHT_BAND_FIELDS = ("href", "epsg", "transform")
LIGHT_LEVEL_FIELDS = ("width", "height", "chunk_width", "chunk_height")

BBOX_TYPE = pa.struct(
    [
        ("xmin", pa.float64()),
        ("ymin", pa.float64()),
        ("xmax", pa.float64()),
        ("ymax", pa.float64()),
    ]
)

#: The column holding each scene's valid-data coverage (see :mod:`rasteret.coverage`):
#: a grid of cells in the scene's CRS, each cell's valid fraction as one byte (0 to
#: 255, row-major). Collections built before it existed have no such column; samplers
#: then compute it from the geometry and tile tables they hold (no request).
COVERAGE_COLUMN = "valid_coverage"
COVERAGE_TYPE = pa.struct(
    [
        ("crs_epsg", pa.int32()),
        ("x0", pa.float64()),
        ("y0", pa.float64()),
        ("cell_x", pa.float64()),
        ("cell_y", pa.float64()),
        ("rows", pa.int32()),
        ("columns", pa.int32()),
        ("valid", pa.binary()),
        ("sources", pa.list_(pa.string())),
    ]
)

#: Columns every collection has, before its property and band columns.
BASE_FIELDS = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("datetime", pa.timestamp("us", tz="UTC")),
    pa.field("geometry", pa.binary()),
    pa.field("bbox", BBOX_TYPE),
    pa.field("collection", pa.string()),
    pa.field("proj:epsg", pa.int32()),
]


def level_to_record(level: ImageLevel) -> dict[str, Any]:
    """Flatten an :class:`ImageLevel` into a dict matching :data:`LEVEL_TYPE`."""
    return {
        "width": level.width,
        "height": level.height,
        "chunk_width": level.chunk_width,
        "chunk_height": level.chunk_height,
        "tiled": level.tiled,
        "samples_per_pixel": level.samples_per_pixel,
        "bits_per_sample": level.bits_per_sample,
        "sample_format": level.sample_format,
        "planar_config": level.planar_config,
        "compression": level.compression,
        "predictor": level.predictor,
        "photometric": level.photometric,
        "fill_order": level.fill_order,
        "subfile_type": level.subfile_type,
        "offsets": level.offsets,
        "byte_counts": level.byte_counts,
        "jpeg_tables": level.jpeg_tables,
        "extra_samples": list(level.extra_samples),
        "ycbcr_subsampling": list(level.ycbcr_subsampling),
        "lerc_parameters": list(level.lerc_parameters),
    }


def record_to_level(record: dict[str, Any]) -> ImageLevel:
    """Rebuild an :class:`ImageLevel` from a :data:`LEVEL_TYPE` record."""
    return ImageLevel(
        width=record["width"],
        height=record["height"],
        chunk_width=record["chunk_width"],
        chunk_height=record["chunk_height"],
        tiled=record["tiled"],
        samples_per_pixel=record["samples_per_pixel"],
        bits_per_sample=record["bits_per_sample"],
        sample_format=record["sample_format"],
        planar_config=record["planar_config"],
        compression=record["compression"],
        predictor=record["predictor"],
        photometric=record["photometric"],
        fill_order=record["fill_order"],
        subfile_type=record["subfile_type"],
        offsets=np.asarray(record["offsets"], dtype=np.uint64),
        byte_counts=np.asarray(record["byte_counts"], dtype=np.uint64),
        jpeg_tables=record["jpeg_tables"],
        extra_samples=tuple(record["extra_samples"] or ()),
        ycbcr_subsampling=tuple(record["ycbcr_subsampling"] or (2, 2)),
        lerc_parameters=tuple(record["lerc_parameters"] or ()),
    )


def header_to_record(
    header: CogHeader, *, href: str, size: int | None, band_index: int = 1,
    etag: str | None = None, last_modified: str | None = None,
) -> dict[str, Any]:
    """Flatten a parsed header into a dict matching :data:`BAND_TYPE`.

    Args:
        header: The parsed header.
        href: The unsigned href (never a signed URL: collections hold no secrets).
        size: The file size in bytes, when known.
        band_index: 1-based sample of a multi-band asset this band column reads.
        etag, last_modified: The object's version when it was indexed.
    """
    geo = header.geo
    transform = geo.transform
    return {
        "href": href,
        "band_index": band_index,
        "size": size,
        "byteorder": header.byteorder,
        "bigtiff": header.bigtiff,
        "epsg": geo.epsg,
        "transform": list(transform)[:6] if transform is not None else None,
        "nodata": geo.nodata,
        "scales": list(geo.scales),
        "offsets": list(geo.offsets),
        "levels": [level_to_record(level) for level in header.levels],
        "masks": [
            {"level_index": index, "level": level_to_record(mask)}
            for index, mask in sorted(header.masks.items())
        ],
        "etag": etag,
        "last_modified": last_modified,
    }


def record_to_header(record: dict[str, Any]) -> CogHeader:
    """Rebuild a :class:`CogHeader` from a :data:`BAND_TYPE` record.

    Its nodata is the band's effective nodata (:func:`band_nodata`): the file's own,
    else the one the STAC item gives.
    """
    transform = record["transform"]
    return CogHeader(
        byteorder=record["byteorder"],
        bigtiff=record["bigtiff"],
        levels=tuple(record_to_level(level) for level in record["levels"]),
        masks={m["level_index"]: record_to_level(m["level"]) for m in record["masks"] or ()},
        geo=GeoInfo(
            transform=Affine(*transform) if transform else None,
            epsg=record["epsg"],
            nodata=band_nodata(record),
            scales=tuple(record["scales"] or ()),
            offsets=tuple(record["offsets"] or ()),
        ),
    )


def with_band_metadata(record: dict[str, Any] | None, stac: dict[str, Any] | None
                       ) -> dict[str, Any] | None:
    """A band record with what the STAC item says about its values (a dict matching
    :data:`STAC_BAND_TYPE`) added; the record unchanged without either."""
    if record is None or stac is None:
        return record
    return {**record, "stac": stac}


def _stac(record: dict[str, Any]) -> dict[str, Any]:
    return record.get("stac") or {}


def band_nodata(record: dict[str, Any]) -> float | None:
    """A band's nodata: the COG's own GDAL_NODATA when it has one, else the STAC
    item's ``raster:bands`` nodata, else None."""
    nodata: float | None = record.get("nodata")
    if nodata is None:
        nodata = _stac(record).get("nodata")
    return nodata


def band_scale_offset(record: dict[str, Any]) -> tuple[float, float]:
    """``(scale, offset)`` turning a band's stored values into physical values
    (``value * scale + offset``).

    The COG's own scale/offset (GDAL metadata) win when they are not the identity;
    otherwise the STAC item's ``raster:bands`` scale/offset apply; otherwise
    ``(1.0, 0.0)``.
    """
    sample = (record.get("band_index") or 1) - 1
    scales, offsets = record.get("scales") or (), record.get("offsets") or ()
    scale = scales[sample] if sample < len(scales) else 1.0
    offset = offsets[sample] if sample < len(offsets) else 0.0
    if (scale, offset) != (1.0, 0.0):
        return scale, offset
    stac = _stac(record)
    stac_scale, stac_offset = stac.get("scale"), stac.get("offset")
    return (1.0 if stac_scale is None else stac_scale,
            0.0 if stac_offset is None else stac_offset)


def is_band_struct(kind: pa.DataType) -> bool:
    """Whether ``kind`` is a band column's struct, of today's :data:`BAND_TYPE` or
    another version of it (older collections, other engines' round trips)."""
    return pa.types.is_struct(kind) and {"href", "levels"} <= {f.name for f in kind}


def upgrade_band_columns(table: pa.Table) -> pa.Table:
    """Give band columns written by older versions today's :data:`BAND_TYPE`.

    Fields added since (``stac``, ...) read as null, so older collections load and
    read as before.
    """
    for index, column in enumerate(table.schema):
        if column.type == BAND_TYPE or not is_band_struct(column.type):
            continue
        chunks = []
        for chunk in table.column(index).chunks:
            present = {f.name for f in chunk.type}
            children = [
                chunk.field(f.name).cast(f.type) if f.name in present
                else pa.nulls(len(chunk), f.type)
                for f in BAND_TYPE
            ]
            chunks.append(pa.StructArray.from_arrays(
                children, fields=list(BAND_TYPE), mask=chunk.is_null()))
        upgraded = pa.chunked_array(chunks, BAND_TYPE)
        table = table.set_column(index, pa.field(column.name, BAND_TYPE), upgraded)
    return table
