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
    ]
)

BBOX_TYPE = pa.struct(
    [
        ("xmin", pa.float64()),
        ("ymin", pa.float64()),
        ("xmax", pa.float64()),
        ("ymax", pa.float64()),
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
    """Rebuild a :class:`CogHeader` from a :data:`BAND_TYPE` record."""
    transform = record["transform"]
    return CogHeader(
        byteorder=record["byteorder"],
        bigtiff=record["bigtiff"],
        levels=tuple(record_to_level(level) for level in record["levels"]),
        masks={m["level_index"]: record_to_level(m["level"]) for m in record["masks"] or ()},
        geo=GeoInfo(
            transform=Affine(*transform) if transform else None,
            epsg=record["epsg"],
            nodata=record["nodata"],
            scales=tuple(record["scales"] or ()),
            offsets=tuple(record["offsets"] or ()),
        ),
    )
