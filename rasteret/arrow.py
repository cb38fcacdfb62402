"""Arrow interop: a collection's table as an Arrow stream, and back.

A :class:`~rasteret.collection.Collection` speaks the Arrow PyCapsule interface
(``__arrow_c_stream__``, ``__arrow_c_schema__``), so pyarrow, Polars, DuckDB and
GeoPandas take it as it is. The stream carries the stored table's buffers
unchanged (no copy); only its schema differs from the stored one:

- the ``geometry`` field is tagged as GeoArrow WKB (``ARROW:extension:name =
  geoarrow.wkb``, ``ARROW:extension:metadata`` with the footprints' CRS, OGC:CRS84,
  as PROJJSON), so GeoPandas and DuckDB read it as geometry with its CRS;
- the schema metadata holds the GeoParquet ``geo`` entry and the build information
  under the ``rasteret`` key (as in the Parquet footers), so a consumer that keeps
  schema metadata (pyarrow) hands the manifest back to ``Collection.from_arrow``.

The stored table keeps a plain binary ``geometry`` column: the tag exists only on
the stream, and :func:`table_from_arrow` removes it again.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from rasteret.errors import ConfigurationError, CorruptCollectionError
from rasteret.schema import (
    BAND_TYPE,
    BASE_FIELDS,
    COVERAGE_COLUMN,
    COVERAGE_TYPE,
    is_band_struct,
    upgrade_band_columns,
)
from rasteret.storage import geo_metadata, manifest_from_metadata, with_metadata

#: Field metadata keys of an Arrow extension type (the C data interface carries
#: extension types this way).
EXTENSION_NAME = b"ARROW:extension:name"
EXTENSION_METADATA = b"ARROW:extension:metadata"
#: The GeoArrow extension name of WKB geometries.
GEOARROW_WKB = "geoarrow.wkb"
GEOMETRY = "geometry"


@functools.cache
def geometry_field_metadata() -> dict[bytes, bytes]:
    """The field metadata marking ``geometry`` as GeoArrow WKB in CRS84 (PROJJSON)."""
    crs = geo_metadata(bbox_covering=False)["columns"][GEOMETRY]["crs"]
    return {
        EXTENSION_NAME: GEOARROW_WKB.encode(),
        EXTENSION_METADATA: json.dumps({"crs": crs, "crs_type": "projjson"}).encode(),
    }


def stream_schema(schema: pa.Schema, manifest: Mapping[str, Any]) -> pa.Schema:
    """The schema a collection's Arrow stream has: ``schema`` with the GeoArrow tag
    on ``geometry`` and the ``geo`` and ``rasteret`` (build information) entries in
    its metadata.

    Args:
        schema: The stored table's schema.
        manifest: The collection's build information.
    """
    # Exactly the entries a Parquet footer has (the failures stay out of the stream).
    schema = schema.with_metadata(with_metadata(pa.table({}), dict(manifest)).schema.metadata)
    index = schema.get_field_index(GEOMETRY)
    if index >= 0:
        schema = schema.set(index, schema.field(index).with_metadata(geometry_field_metadata()))
    return schema


def stream_table(table: pa.Table, manifest: Mapping[str, Any]) -> pa.Table:
    """``table`` under its :func:`stream_schema`, sharing every buffer (no copy)."""
    return pa.Table.from_arrays(table.columns, schema=stream_schema(table.schema, manifest))


def _as_table(data: Any) -> pa.Table:
    """Any Arrow tabular object as a pyarrow Table (a stream is read to its end)."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    if hasattr(data, "__arrow_c_stream__") or hasattr(data, "__arrow_c_array__"):
        return pa.table(data)
    raise ConfigurationError(
        f"Collection.from_arrow needs Arrow data (a pyarrow Table, RecordBatch or "
        f"RecordBatchReader, or an object with __arrow_c_stream__ such as a DuckDB "
        f"relation or a Polars DataFrame), got {type(data).__name__}"
    )


def _extension(field: pa.Field) -> tuple[str | None, bytes | None]:
    """The extension name and metadata of ``field``: a registered extension type's,
    else the field metadata's (an unregistered type arrives as field metadata)."""
    kind = field.type
    if isinstance(kind, pa.ExtensionType):
        return kind.extension_name, kind.__arrow_ext_serialize__()
    metadata = field.metadata or {}
    name = metadata.get(EXTENSION_NAME)
    return (name.decode() if name else None), metadata.get(EXTENSION_METADATA)


def _check_geometry(field: pa.Field) -> None:
    """Refuse a geometry column that is not WKB in CRS84 (or EPSG:4326 read in
    longitude/latitude order, as WKB always is)."""
    name, metadata = _extension(field)
    storage = field.type.storage_type if isinstance(field.type, pa.ExtensionType) else field.type
    if name not in (None, GEOARROW_WKB) or not (
        pa.types.is_binary(storage) or pa.types.is_large_binary(storage)
        or pa.types.is_binary_view(storage)
    ):
        raise ConfigurationError(
            f"column {GEOMETRY!r} must hold WKB footprints (binary or geoarrow.wkb), got "
            f"{name or storage}; convert it with ST_AsWKB(geometry) in DuckDB or "
            "to_arrow(geometry_encoding='WKB') in GeoPandas"
        )
    try:
        crs = json.loads(metadata).get("crs") if metadata else None
    except (ValueError, AttributeError) as exc:
        raise ConfigurationError(
            f"column {GEOMETRY!r} has GeoArrow metadata that is not a JSON object: "
            f"{metadata!r}"
        ) from exc
    if crs is None:
        return
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        same = CRS.from_user_input(crs).equals(CRS("OGC:CRS84"), ignore_axis_order=True)
    except CRSError:
        same = False
    if not same:
        shown = crs.get("name", crs) if isinstance(crs, dict) else crs
        raise ConfigurationError(
            f"column {GEOMETRY!r} is in CRS {shown!r}; a collection's footprints are in "
            "OGC:CRS84 (longitude, latitude): transform them back before from_arrow"
        )


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A column of a registered extension type as its storage (others unchanged)."""
    if isinstance(column.type, pa.ExtensionType):
        return pa.chunked_array([chunk.storage for chunk in column.chunks],
                                column.type.storage_type)
    return column


def _plain_type(kind: pa.DataType) -> pa.DataType:
    """The plain string or binary type of a large or view one (Polars exports those),
    as the stored properties have; other types unchanged."""
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return pa.string()
    if pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
        return pa.binary()
    return kind


def table_from_arrow(
    data: Any, manifest: Mapping[str, Any] | None = None
) -> tuple[pa.Table, dict[str, Any]]:
    """A collection's table and build information from Arrow data carrying its columns.

    The base columns get their stored types back (strings, timestamps in UTC, WKB
    as plain binary without the GeoArrow tag) and every band column the exact band
    struct type, whatever the producer made of them (large or view types from
    Polars, ``Etc/UTC`` timestamps from DuckDB...). The build information is
    ``manifest``, else the ``rasteret`` entry of the schema metadata (empty when the
    producer dropped it); its ``bands`` list is cut to the band columns present.

    Args:
        data: A pyarrow Table, RecordBatch or RecordBatchReader, or any object with
            ``__arrow_c_stream__`` (a Collection, a DuckDB relation, a Polars
            DataFrame...).
        manifest: The build information, overriding the one in the schema metadata.

    Returns:
        The table (without schema metadata) and the build information.

    Raises:
        ConfigurationError: ``data`` is not Arrow data, lacks a column every
            collection has, has no band column, or a column cannot take its type.
        CorruptCollectionError: The ``rasteret`` schema metadata is not a JSON object.
    """
    table = _as_table(data)
    if manifest is None:
        try:
            manifest = manifest_from_metadata(table.schema.metadata)
        except ValueError as exc:
            raise CorruptCollectionError(
                f"Arrow data for Collection.from_arrow: {exc}") from exc
    manifest = dict(manifest)
    table = table.replace_schema_metadata(None)
    names = table.column_names
    for base in BASE_FIELDS:
        if base.name not in names:
            raise ConfigurationError(
                f"Arrow data for Collection.from_arrow lacks the column {base.name!r} "
                f"that every collection has (columns: {names}); keep "
                f"{[f.name for f in BASE_FIELDS]} and the band columns in the query"
            )
    _check_geometry(table.schema.field(GEOMETRY))
    for base in BASE_FIELDS:
        index = names.index(base.name)
        incoming = table.schema.field(index)
        try:
            column = _plain(table.column(index)).cast(base.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise ConfigurationError(
                f"column {base.name!r} of the Arrow data is {incoming.type}, which does "
                f"not convert to the collection's {base.type}: {exc}"
            ) from exc
        if base.name == "id" and column.null_count:
            raise ConfigurationError("column 'id' of the Arrow data has null scene ids")
        table = table.set_column(
            index, pa.field(base.name, base.type, nullable=incoming.nullable), column)
    for index, field in enumerate(table.schema):
        kind = _plain_type(field.type)
        if kind != field.type:
            table = table.set_column(index, pa.field(field.name, kind, field.nullable),
                                     table.column(index).cast(kind))
    if COVERAGE_COLUMN in table.column_names:
        # The stored coverage type back (Polars gives view and large types inside).
        index = table.column_names.index(COVERAGE_COLUMN)
        table = table.set_column(index, pa.field(COVERAGE_COLUMN, COVERAGE_TYPE),
                                 table.column(index).cast(COVERAGE_TYPE))
    listed = manifest.get("bands")
    for band in listed if isinstance(listed, list) else ():
        if band in names and not is_band_struct(table.schema.field(band).type):
            raise ConfigurationError(
                f"column {band!r} of the Arrow data is {table.schema.field(band).type}, "
                "not a band struct (href, levels, ...): select the whole band column"
            )
    try:
        table = upgrade_band_columns(table)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ConfigurationError(
            f"a band column of the Arrow data does not convert to the band struct: {exc}"
        ) from exc
    bands = [f.name for f in table.schema if f.type == BAND_TYPE]
    if not bands:
        raise ConfigurationError(
            "Arrow data for Collection.from_arrow has no band column (a struct with "
            f"href, levels, ...); columns: {names}"
        )
    if isinstance(listed, list):
        manifest["bands"] = [b for b in listed if b in bands]
    return table, manifest
