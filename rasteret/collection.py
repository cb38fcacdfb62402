"""The Collection: an Arrow table of scenes and their COG headers, with filters.

A collection is built once (see :mod:`rasteret.ingest`) and then queried and read
without touching any header on the network: every band column holds the tile
layout a read needs.
"""

from __future__ import annotations

import datetime as dt
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rasteret.arrow import stream_schema, stream_table, table_from_arrow
from rasteret.atomic import write_atomic
from rasteret.band import BandView, band_grids, band_views
from rasteret.errors import (
    ConfigurationError,
)
from rasteret.io.backend import Backend, default_backend
from rasteret.options import Match, MosaicOrder, OnError, Resampling
from rasteret.read.cog import CogFile
from rasteret.reopen import Origin, open_source
from rasteret.schema import (
    SCHEMA_VERSION,
    is_band_struct,
    upgrade_band_columns,
)
from rasteret.storage import (
    FAILURE_SCHEMA,
    PARQUET_OPTIONS,
    PartsSource,
    is_remote,
    local_path,
    with_metadata,
)
from rasteret.workspace import (
    ObjectWorkspace,
)

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd
    import torch
    import xarray as xr
    from pyproj import CRS

    from rasteret.torch.dataset import RasteretDataset

BBox = tuple[float, float, float, float]
DateRange = tuple[Any, Any]


def parse_datetime(value: Any, *, end: bool = False) -> dt.datetime | None:
    """Parse a date or datetime (ISO string as STAC writes it, date, datetime) into an
    aware UTC datetime; None stays None. Naive values are taken as UTC.

    Args:
        value: The date or datetime.
        end: ``value`` ends a range: a bare date then means the whole day.

    Raises:
        ValueError: The string is not an ISO 8601 date or datetime.
    """
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, dt.date):
        stamp = dt.datetime(value.year, value.month, value.day)
        if end:
            stamp += dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    else:
        text = str(value).strip().replace("Z", "+00:00")
        stamp = dt.datetime.fromisoformat(text)
        if end and len(text) <= 10:
            stamp += dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.astimezone(dt.UTC)


def parse_date_range(date_range: DateRange | None) -> tuple[dt.datetime, dt.datetime] | None:
    """Normalise ``(start, end)`` into aware UTC datetimes (end inclusive)."""
    if date_range is None:
        return None
    if len(date_range) != 2 or None in date_range:
        raise ConfigurationError(f"date_range must be (start, end), got {date_range!r}")
    try:
        start, end = parse_datetime(date_range[0]), parse_datetime(date_range[1], end=True)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"date_range {date_range!r} is not two ISO dates or datetimes "
            f"(e.g. ('2024-05-01', '2024-06-30')): {exc}"
        ) from None
    assert start is not None and end is not None  # None was refused above
    if start > end:
        raise ConfigurationError(f"date_range starts after it ends: {date_range!r}")
    return start, end


def check_bbox(bbox: Sequence[float]) -> BBox:
    """Validate ``(minx, miny, maxx, maxy)`` in degrees."""
    if len(bbox) != 4:
        raise ConfigurationError(f"bbox must be (minx, miny, maxx, maxy), got {bbox!r}")
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if minx > maxx or miny > maxy:
        raise ConfigurationError(f"bbox {bbox!r} has min greater than max")
    return minx, miny, maxx, maxy


class Collection:
    """Scenes with per-band COG headers, ready to filter and read.

    A collection loaded from files (:func:`load`: a folder, an exported GeoParquet
    file, an object-store workspace) reads them lazily: only the columns that filter
    and index scenes are decoded (ids, times, footprints, properties, and per band the
    href, CRS, transform and level-0 grid); each band's tile tables and masks are
    decoded per row group when a read needs them (local parts are memory-mapped,
    object-store parts are kept as the compressed bytes read). :meth:`subset` and
    :meth:`filter` select rows without decoding tile tables, so a subset later
    decodes only the row groups holding its rows. Such a collection pickles as
    where its files are plus its rows (a few kilobytes at any size) and each process
    that unpickles it opens the files again. A collection built from a table in
    memory (:meth:`from_arrow`, ``Collection(table)``) has no files to re-open: it
    pickles its whole table (save it and :func:`load` it to get the small pickle).

    Attributes:
        table: The Arrow table (one row per scene; GeoParquet columns, properties,
            one struct column per band).
        name: The collection's name in its workspace (None for an unsaved one).
        manifest: Build information: dataset, band map, source, schema version.
        path: The folder it was loaded from, if any.
    """

    def __init__(
        self,
        table: pa.Table,
        *,
        name: str | None = None,
        manifest: dict[str, Any] | None = None,
        failures: pa.Table | None = None,
        path: Path | None = None,
    ) -> None:
        self._table: pa.Table | None = upgrade_band_columns(table)  # older: new fields null
        self.name = name
        self.manifest = dict(manifest or {})
        self.path = path
        self._failures = failures
        # A collection loaded from files reads them lazily: ``_light`` holds the small
        # columns of its rows (see PartsSource.light_columns), ``_rows`` their global
        # row numbers in ``_source``, ``_origin`` how another process re-opens the
        # files. ``_table`` (every column) is decoded only when asked for.
        self._source: PartsSource | None = None
        self._rows: np.ndarray | None = None
        self._light: pa.Table | None = None
        self._origin: Origin | None = None
        # The build the files held when loaded (manifest "created", rows): a process
        # that opens them again refuses another build (CollectionChangedError).
        self._built: tuple[str | None, int] | None = None

    @classmethod
    def from_source(cls, source: PartsSource, *, origin: Origin | None,
                    name: str | None, manifest: dict[str, Any], failures: pa.Table | None,
                    path: Path | None, rows: np.ndarray | None = None,
                    light: pa.Table | None = None) -> Collection:
        """A collection reading ``rows`` (default: all) of ``source`` lazily.

        Args:
            source: The collection's files, opened.
            origin: How another process opens them again (None: it cannot, the
                collection then pickles as its whole table).
            name: The collection's name.
            manifest: Its build information.
            failures: The assets its build could not index.
            path: The folder it was loaded from, if any.
            rows: The rows of ``source`` it holds (default: all of them).
            light: Those rows' light columns, if already read.
        """
        collection = cls.__new__(cls)
        collection._table = None
        collection.name = name
        collection.manifest = dict(manifest)
        collection.path = path
        collection._failures = failures
        collection._source = source
        collection._rows = (np.arange(source.num_rows, dtype=np.int64) if rows is None
                            else rows)
        collection._light = light
        collection._origin = origin
        collection._built = (manifest.get("created"), source.num_rows)
        return collection

    @property
    def table(self) -> pa.Table:
        """The Arrow table: one row per scene; GeoParquet columns, properties, one
        struct column per band (tile tables included). A collection loaded from files
        decodes it from them on first access (only the row groups holding its rows);
        filters, indexing and reads do not need it."""
        if self._table is None:
            assert self._rows is not None
            self._table = self.source.take(self._rows)
        return self._table

    @table.setter
    def table(self, table: pa.Table) -> None:
        self._table = upgrade_band_columns(table)
        self._source = self._rows = self._light = self._origin = None

    @property
    def source(self) -> PartsSource:
        """The files the collection reads lazily (re-opened after unpickling).

        Raises:
            ConfigurationError: The collection was not loaded from files.
        """
        if self._source is None:
            if self._origin is None:
                raise ConfigurationError(
                    f"collection {self.name!r} was not loaded from files; save it and "
                    "load it to read it lazily")
            self._source = open_source(self._origin, self._built)
        return self._source

    @property
    def lazy(self) -> bool:
        """Whether the collection reads its files lazily (loaded from a folder, a
        GeoParquet file or an object-store workspace) rather than holding a table."""
        return self._rows is not None

    def column(self, name: str) -> pa.ChunkedArray:
        """The column ``name`` (``id``, ``datetime``, a property, ``bbox``...) of every
        scene, from the columns kept in memory: on a collection loaded from files this
        never decodes the bands' tile tables.

        Raises:
            ConfigurationError: No such column (the message lists them).
        """
        frame = self._frame()
        if name not in frame.column_names:
            raise ConfigurationError(
                f"collection {self.name!r} has no column {name!r}; columns: "
                f"{frame.column_names}")
        return frame[name]

    @property
    def column_names(self) -> list[str]:
        """The names of the collection's columns (band columns included)."""
        return list(self._schema().names)

    def _frame(self) -> pa.Table:
        """The columns filters and indexing use, in memory: the light columns of a
        lazily read collection (every column but the bands' tile tables and masks),
        else the table."""
        if self._table is not None or self._rows is None:
            return self.table
        if self._light is None:
            light = self.source.read_light()
            if len(self._rows) != light.num_rows or not np.array_equal(
                    self._rows, np.arange(light.num_rows)):
                light = light.take(pa.array(self._rows))
            self._light = light
        return self._light

    # -- pickling: a lazily read collection travels as where its files are -------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._rows is not None and self._origin is not None:
            # The rows as zlib-packed steps: a few bytes per run of consecutive rows,
            # so a subset of millions of scenes pickles to kilobytes.
            steps = np.diff(self._rows, prepend=np.int64(0)).astype("<i8")
            state.update(_table=None, _light=None, _source=None,
                         _rows=zlib.compress(steps.tobytes(), 6))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        packed = state.get("_rows")
        if isinstance(packed, bytes):
            state["_rows"] = np.cumsum(np.frombuffer(zlib.decompress(packed), "<i8"))
        self.__dict__.update(state)

    # -- description -----------------------------------------------------------------
    def __len__(self) -> int:
        if self._table is None and self._rows is not None:
            return len(self._rows)
        return int(self.table.num_rows)

    def _schema(self) -> pa.Schema:
        if self._table is None and self._rows is not None:
            schema = self.source.schema
            assert schema is not None
            return schema
        return self.table.schema

    @property
    def bands(self) -> list[str]:
        """The band names this collection can read."""
        return [f.name for f in self._schema() if is_band_struct(f.type)]

    @property
    def dataset_id(self) -> str | None:
        """The catalog dataset it was built from (None for custom sources)."""
        return self.manifest.get("dataset_id")

    @property
    def stac_collection(self) -> str | None:
        """The STAC collection id it was built from (None for tables and catalogs
        searched without one); reads use the CloudConfig registered under it when
        none is registered under :attr:`dataset_id`."""
        source = self.manifest.get("source") or {}
        return source.get("collection") if source.get("kind") == "stac" else None

    @property
    def epsg_codes(self) -> list[int]:
        """The distinct raster CRS (EPSG codes) of its scenes."""
        frame = self._frame()
        if "proj:epsg" not in frame.column_names or not len(self):
            return []
        return sorted(int(v) for v in pc.unique(frame["proj:epsg"]).to_pylist() if v)

    @property
    def crs(self) -> CRS | None:
        """The raster CRS as a pyproj CRS when all scenes share one, else None."""
        from pyproj import CRS

        codes = self.epsg_codes
        return CRS.from_epsg(codes[0]) if len(codes) == 1 else None

    @property
    def bounds(self) -> BBox | None:
        """Union of the footprints' bounding boxes in degrees (CRS84), or None if empty."""
        if not len(self):
            return None
        bbox = self._frame()["bbox"].combine_chunks()
        return (
            pc.min(bbox.field("xmin")).as_py(),
            pc.min(bbox.field("ymin")).as_py(),
            pc.max(bbox.field("xmax")).as_py(),
            pc.max(bbox.field("ymax")).as_py(),
        )

    @property
    def date_range(self) -> tuple[dt.datetime, dt.datetime] | None:
        """Earliest and latest scene datetimes, or None if empty."""
        if not len(self):
            return None
        times = self._frame()["datetime"]
        first, last = pc.min(times).as_py(), pc.max(times).as_py()
        return (first, last) if first is not None else None

    @property
    def failures(self) -> pa.Table:
        """Assets that could not be indexed at build time, with their reasons."""
        if self._failures is None:
            self._failures = FAILURE_SCHEMA.empty_table()
        return self._failures

    def summary(self) -> dict[str, Any]:
        """A plain dict describing the collection (used by ``repr`` and the CLI)."""
        dates = self.date_range
        return {
            "name": self.name,
            "dataset_id": self.dataset_id,
            "scenes": len(self),
            "bands": self.bands,
            "epsg": self.epsg_codes,
            "bounds": self.bounds,
            "date_range": [d.isoformat() for d in dates] if dates else None,
            "failures": self.failures.num_rows,
            "schema_version": self.manifest.get("schema_version", SCHEMA_VERSION),
            "path": str(self.path) if self.path else None,
        }

    def __repr__(self) -> str:
        s = self.summary()
        dates = " to ".join(d[:10] for d in s["date_range"]) if s["date_range"] else "no dates"
        return (
            f"Collection({s['name']!r}: {s['scenes']} scenes, bands {s['bands']}, "
            f"EPSG {s['epsg']}, {dates}, {s['failures']} failures)"
        )

    # -- views -----------------------------------------------------------------------
    def to_pandas(self) -> pd.DataFrame:
        """The table as a pandas DataFrame (band columns as dicts)."""
        return self.table.to_pandas()

    def to_geopandas(self) -> gpd.GeoDataFrame:
        """The table as a GeoDataFrame with footprints in EPSG:4326 (needs geopandas)."""
        import geopandas as gpd
        import shapely

        frame = self.table.drop_columns(["geometry"]).to_pandas()
        geometry = shapely.from_wkb(self.table["geometry"].to_numpy(zero_copy_only=False))
        return gpd.GeoDataFrame(frame, geometry=geometry, crs="EPSG:4326")

    # -- Arrow interop ---------------------------------------------------------------
    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        """The scenes as an Arrow C stream (the Arrow PyCapsule interface), so
        ``pyarrow.table(c)``, ``polars.DataFrame(c)``, ``duckdb.sql("select ... from
        c")`` and ``GeoDataFrame.from_arrow(c)`` take the collection as it is.

        The stream shares the table's buffers (no copy); its ``geometry`` field is
        tagged GeoArrow WKB with the CRS (OGC:CRS84) and its schema metadata holds the
        build information (see :mod:`rasteret.arrow`).

        Args:
            requested_schema: A PyCapsule of the schema the consumer asks for, or None.

        Returns:
            A PyCapsule holding an ``ArrowArrayStream``.
        """
        return stream_table(self.table, self.manifest).__arrow_c_stream__(requested_schema)

    def __arrow_c_schema__(self) -> Any:
        """The schema of :meth:`__arrow_c_stream__` as a PyCapsule (``ArrowSchema``)."""
        return stream_schema(self.table.schema, self.manifest).__arrow_c_schema__()

    @classmethod
    def from_arrow(cls, data: Any, *, name: str | None = None,
                   manifest: dict[str, Any] | None = None) -> Collection:
        """A collection from Arrow data carrying a collection's columns, e.g. a
        collection filtered in DuckDB or Polars, ready to read pixels.

        Columns get their stored types back (see
        :func:`rasteret.arrow.table_from_arrow`). The build information (dataset id,
        STAC collection, band map), which reads need to pick their stores and
        credentials, comes from ``manifest`` when given, else from the data's schema
        metadata (kept by pyarrow, dropped by DuckDB and Polars: pass
        ``manifest=original.manifest`` after those).

        Args:
            data: A pyarrow Table, RecordBatch or RecordBatchReader, or any object
                with ``__arrow_c_stream__`` (a DuckDB relation, a Polars DataFrame,
                a Collection...).
            name: The collection's name (default: the one in the build information).
            manifest: The build information, overriding the data's.

        Returns:
            An unsaved collection (``path`` None, no failures).

        Raises:
            ConfigurationError: Not Arrow data, a column every collection has or
                every band column is missing, or a column has an unusable type
                (the message names it).
            CorruptCollectionError: The schema's ``rasteret`` metadata is damaged.
        """
        table, manifest = table_from_arrow(data, manifest)
        return cls(table, name=name if name is not None else manifest.get("name"),
                   manifest=manifest)

    # -- filters ---------------------------------------------------------------------
    def _with(self, table: pa.Table) -> Collection:
        return Collection(
            table, name=self.name, manifest=self.manifest, failures=self._failures, path=self.path
        )

    def _select(self, mask: Any) -> Collection:
        """The rows where the boolean array ``mask`` (over :meth:`_frame`) is true."""
        if self._rows is None:
            return self._with(self.table.filter(mask))
        keep = np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), bool)
        light = self._frame().filter(mask) if self._table is None else None
        subset = Collection.from_source(
            self.source, origin=self._origin, name=self.name,
            manifest=self.manifest, failures=self._failures, path=self.path,
            rows=self._rows[keep], light=light)
        if self._table is not None:
            subset._table = self._table.filter(mask)
        return subset

    def filter(self, expression: pc.Expression) -> Collection:
        """Keep the rows matching an Arrow compute expression, e.g.
        ``pc.field("platform") == "sentinel-2a"``.

        On a collection loaded from files the expression is evaluated on the columns
        kept in memory (every column but the bands' tile tables and masks); the
        files are read only where it names a field that is not among them."""
        if self._rows is None:
            return self._with(self.table.filter(expression))
        frame = self._frame()
        try:
            mask = _expression_mask(frame, expression)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError):
            mask = _expression_mask(self.table, expression)  # names a heavy field
        return self._select(mask)

    def subset(
        self,
        *,
        bbox: Sequence[float] | None = None,
        date_range: DateRange | None = None,
        cloud_cover_lt: float | None = None,
        ids: Sequence[str] | None = None,
        **equals: Any,
    ) -> Collection:
        """Keep scenes intersecting ``bbox`` (degrees), within ``date_range``
        (inclusive), with cloud cover below a limit, with given ids, and whose
        properties equal ``equals`` (use ``platform="sentinel-2a"``; a property with a
        colon is matched through :meth:`filter`)."""
        table = self._frame()
        conditions: list[Any] = []
        if bbox is not None:
            minx, miny, maxx, maxy = check_bbox(bbox)
            box = table["bbox"]
            conditions.append(pc.less_equal(pc.struct_field(box, "xmin"), maxx))
            conditions.append(pc.greater_equal(pc.struct_field(box, "xmax"), minx))
            conditions.append(pc.less_equal(pc.struct_field(box, "ymin"), maxy))
            conditions.append(pc.greater_equal(pc.struct_field(box, "ymax"), miny))
        window = parse_date_range(date_range)
        if window is not None:
            start = pa.scalar(window[0], pa.timestamp("us", tz="UTC"))
            end = pa.scalar(window[1], pa.timestamp("us", tz="UTC"))
            times = table["datetime"]
            conditions.append(pc.and_(pc.greater_equal(times, start), pc.less_equal(times, end)))
        if cloud_cover_lt is not None:
            if "eo:cloud_cover" not in table.column_names:
                raise ConfigurationError(
                    "cloud_cover_lt needs an eo:cloud_cover column, which this collection "
                    "lacks"
                )
            conditions.append(pc.less(table["eo:cloud_cover"], cloud_cover_lt))
        if ids is not None:
            conditions.append(pc.is_in(table["id"], value_set=pa.array(list(ids), pa.string())))
        for column, value in equals.items():
            if column not in table.column_names:
                raise ConfigurationError(
                    f"no column {column!r}; columns are {table.column_names}"
                )
            conditions.append(pc.equal(table[column], value))
        if not conditions:
            return self._with(table) if self._rows is None else self._select(
                pa.chunked_array([np.ones(len(self), bool)]))
        mask = conditions[0]
        for condition in conditions[1:]:
            mask = pc.and_(mask, condition)
        return self._select(mask)

    # -- scenes and headers ----------------------------------------------------------
    def check_bands(self, bands: Sequence[str]) -> list[str]:
        """Validate band names, listing the available ones when one is unknown."""
        available = self.bands
        unknown = [b for b in bands if b not in available]
        if unknown:
            raise ConfigurationError(
                f"unknown band(s) {unknown} in collection {self.name!r}; available bands: "
                f"{available}"
            )
        return list(bands)

    def band_views(self, band: str, rows: Sequence[int] | None = None
                   ) -> list[BandView | None]:
        """Typed views of one band of ``rows`` (default: every scene), in that order.

        Only the light fields are read from the Arrow columns (href, version, CRS,
        transform, level-0 grid, nodata/scale/offset); tile tables stay in Arrow until
        a view's ``header()`` or ``cog()`` is asked for.

        Returns:
            One :class:`~rasteret.band.BandView` per row; None where the band was not
            indexed (see :attr:`failures`).

        Raises:
            ConfigurationError: Unknown band.
        """
        self.check_bands([band])
        if self._table is None and self._rows is not None:
            return self._lazy_band_views(band, rows)
        ids_column = self.table["id"]
        ids = (ids_column.to_pylist() if rows is None
               else ids_column.take(pa.array(list(rows), pa.int64())).to_pylist())
        return band_views(self.table[band], band=band, ids=ids, rows=rows)

    def _lazy_band_views(self, band: str, rows: Sequence[int] | None
                         ) -> list[BandView | None]:
        """:meth:`band_views` of a collection read lazily: each row group holding a
        requested row is decoded once (and kept in the source's cache), the views
        read it as they read a table's column."""
        assert self._rows is not None
        wanted = (np.arange(len(self._rows), dtype=np.int64) if rows is None
                  else np.asarray(rows, dtype=np.int64).reshape(-1))
        if len(wanted) and (int(np.min(wanted)) < 0 or int(np.max(wanted)) >= len(self._rows)):
            raise IndexError(f"rows out of range for a collection of {len(self._rows)} rows")
        return self.source_band_views(band, self._rows[wanted], numbers=wanted)

    def source_band_views(self, band: str, global_rows: np.ndarray,
                          numbers: np.ndarray) -> list[BandView | None]:
        """Views of ``band`` of the source's ``global_rows``, reported as the rows
        ``numbers`` (ids read with the band from the same row groups)."""
        source = self.source
        views: list[BandView | None] = [None] * len(global_rows)
        if not len(global_rows):
            return views
        groups = source.group_of(global_rows)
        order = np.argsort(groups, kind="stable")
        splits = np.flatnonzero(np.diff(groups[order])) + 1
        for positions in np.split(order, splits):
            table, first = source.group_columns(int(global_rows[positions[0]]), ("id", band))
            local = global_rows[positions] - (int(global_rows[positions[0]]) - first)
            # A copy of the requested rows: views must not keep the whole row group
            # alive after the source's cache dropped it.
            rows_of = table.take(pa.array(local))
            built = band_views(rows_of[band], band=band, ids=rows_of["id"].to_pylist(),
                               numbers=numbers[positions])
            for position, view in zip(positions, built):
                views[int(position)] = view
        return views

    def band_grids(self, band: str) -> dict[str, np.ndarray]:
        """The georeferencing of ``band`` for every scene as NumPy arrays (see
        :func:`rasteret.band.band_grids`), read from the columns in memory.

        Raises:
            ConfigurationError: Unknown band.
        """
        self.check_bands([band])
        return band_grids(self._frame()[band])

    def band_stats(self, bands: Sequence[str], by: str | None = None, *,
                   backend: Backend | None = None, refresh: bool = False,
                   exact: bool = False, progress: bool = True) -> pd.DataFrame:
        """Per-band mean, std, min, max and 1st/2nd/98th/99th percentiles of the
        stored values, nodata excluded, from each COG's smallest overview.

        Reads one level per file and band: the smallest overview (one request per
        asset and band), or the full resolution where a file has no overview. The
        result is stored in :attr:`manifest` (it travels with :meth:`export`,
        :func:`~rasteret.load` and the Arrow stream) and given back without a request
        by the next call for the same bands, grouping and scenes (a subset computes
        its own). See :mod:`rasteret.stats`.

        Args:
            bands: The bands.
            by: A column to group scenes by (e.g. ``"platform"`` or Sentinel-2's
                ``"s2:processing_baseline"``); None: one group.
            backend: How to reach the files (default: the collection's CloudConfig).
            refresh: Read the files even when statistics are stored.
            exact: Read every file at full resolution (exact statistics, at the cost
                of every tile; memory stays small for integers of up to 16 bits).
            progress: Show a bar counting files read (after a moment).

        Returns:
            One row per band (per group and band with ``by``, the group in a column
            named ``by``): ``count`` (valid pixels read), ``mean``, ``std``
            (population), ``min``, ``max``, ``p1``, ``p2``, ``p98``, ``p99``,
            ``files``, ``full_resolution`` (files without an overview), and the
            ``scale`` and ``offset`` that turn them into physical values (NaN when the
            group's files differ), and ``exact``.

        Raises:
            ConfigurationError: Unknown band or column.
            BackendError: A file could not be read.
        """
        from rasteret.io.cloud_config import backend_for_collection
        from rasteret.stats import (
            band_statistics,
            scenes_key,
            stats_frame,
            store_records,
            stored_records,
        )

        bands = self.check_bands(list(bands))
        scenes = scenes_key(self.column("id").to_pylist())
        stored = None if refresh else stored_records(self.manifest, bands, by, scenes,
                                                     exact=exact)
        if stored is not None:
            return stats_frame(stored, by)
        groups = self.column(by).to_pylist() if by is not None else [None] * len(self)
        records = band_statistics({band: self.band_views(band) for band in bands}, groups,
                                  backend=backend_for_collection(self, backend), exact=exact,
                                  progress=progress)
        store_records(self.manifest, records, by, scenes)
        return stats_frame(records, by)

    def band_view(self, row: int, band: str) -> BandView:
        """The typed view of one band of one scene.

        Raises:
            ConfigurationError: Unknown band, or the band was not indexed for this scene.
        """
        view = self.band_views(band, [row])[0]
        if view is None:
            raise ConfigurationError(
                f"band {band!r} of scene {self._frame()['id'][row].as_py()!r} was not indexed "
                "(see collection.failures)"
            )
        return view

    def band_record(self, row: int, band: str) -> dict[str, Any] | None:
        """The stored header record of one band of one scene (None if it failed)."""
        view = self.band_views(band, [row])[0]
        return None if view is None else view.record()

    def cog(self, row: int, band: str, *, backend: Backend | None = None,
            validate: bool = True) -> CogFile:
        """A :class:`CogFile` for one band of one scene, built from the stored header
        (no network request). With ``validate`` (the default), every tile request
        carries the ETag recorded at build time (``If-Match``) and each response's
        size and ETag are checked, so an object replaced since the build raises
        :class:`~rasteret.errors.ObjectChangedError` instead of giving wrong pixels.

        Raises:
            ConfigurationError: Unknown band, or the band was not indexed for this scene.
        """
        from rasteret.io.cloud_config import backend_for_collection

        return self.band_view(row, band).cog(backend_for_collection(self, backend),
                                             validate=validate)

    # -- pixels ----------------------------------------------------------------------
    # The readers live above the collection (they take a Collection): these methods
    # import them when called (as xarray's Dataset.to_zarr imports its backend), so
    # mypy checks each call, `import rasteret` stays light (no torch, no dask), and the
    # import contracts list each of these upward edges on purpose.
    def get_numpy(
        self, geometries: Any, bands: Sequence[str], *, geometry_crs: CRS | str | int = 4326,
        backend: Backend | None = None, target_crs: CRS | str | int | None = None,
        resolution: float | tuple[float, float] | None = None,
        resampling: Resampling = "nearest", apply_scale: bool = False, mask: bool = True,
        date_range: DateRange | None = None, on_error: OnError = "raise",
        validate: bool = True, progress: bool = True,
    ) -> np.ndarray | list[np.ndarray]:
        """Pixels of ``bands`` over ``geometries`` as ``(time, band, y, x)`` arrays.

        See :func:`rasteret.analysis.get_numpy` for the arguments, the result and the
        errors.
        """
        from rasteret.analysis import get_numpy  # upward: see [tool.importlinter]

        arrays: np.ndarray | list[np.ndarray] = get_numpy(
            self, geometries, bands, geometry_crs=geometry_crs, backend=backend,
            target_crs=target_crs, resolution=resolution, resampling=resampling,
            apply_scale=apply_scale, mask=mask, date_range=date_range, on_error=on_error,
            validate=validate, progress=progress)
        return arrays

    def get_xarray(
        self, geometries: Any, bands: Sequence[str], *, masked: bool = False,
        apply_scale: bool = False, geometry_crs: CRS | str | int = 4326,
        backend: Backend | None = None, target_crs: CRS | str | int | None = None,
        resolution: float | tuple[float, float] | None = None,
        resampling: Resampling = "nearest", mask: bool = True,
        date_range: DateRange | None = None, on_error: OnError = "raise",
        validate: bool = True, chunks: str | Mapping[str, int | str | None] | None = None,
        progress: bool = True,
    ) -> xr.Dataset | list[xr.Dataset]:
        """Pixels as an ``xarray.Dataset`` (one variable per band, dims time/y/x, CF
        grid mapping). See :func:`rasteret.analysis.get_xarray`; with ``chunks=``
        (``"auto"`` or e.g. ``{"time": 1, "y": 2048, "x": 2048}``) the variables are
        dask arrays read lazily, see :func:`rasteret.lazy.get_xarray` (nothing is read
        here, so ``progress`` has no bar to show: Dask's diagnostics follow the
        compute)."""
        if chunks is not None:
            from rasteret.lazy import get_xarray as get_lazy_xarray  # upward, see above

            lazy: xr.Dataset | list[xr.Dataset] = get_lazy_xarray(
                self, geometries, bands, chunks=chunks, masked=masked,
                apply_scale=apply_scale, geometry_crs=geometry_crs, backend=backend,
                target_crs=target_crs, resolution=resolution, resampling=resampling,
                mask=mask, date_range=date_range, on_error=on_error, validate=validate)
            return lazy
        from rasteret.analysis import get_xarray  # upward: see [tool.importlinter]

        datasets: xr.Dataset | list[xr.Dataset] = get_xarray(
            self, geometries, bands, masked=masked, apply_scale=apply_scale,
            geometry_crs=geometry_crs, backend=backend, target_crs=target_crs,
            resolution=resolution, resampling=resampling, mask=mask, date_range=date_range,
            on_error=on_error, validate=validate, progress=progress)
        return datasets

    def get_gdf(
        self, geometries: Any, bands: Sequence[str], *, geometry_crs: CRS | str | int = 4326,
        backend: Backend | None = None, target_crs: CRS | str | int | None = None,
        resolution: float | tuple[float, float] | None = None,
        resampling: Resampling = "nearest", mask: bool = True,
        date_range: DateRange | None = None, on_error: OnError = "raise",
        validate: bool = True, progress: bool = True,
    ) -> gpd.GeoDataFrame:
        """One row per scene x geometry with its arrays and transform. See
        :func:`rasteret.analysis.get_gdf`."""
        from rasteret.analysis import get_gdf  # upward: see [tool.importlinter]

        frame: gpd.GeoDataFrame = get_gdf(
            self, geometries, bands, geometry_crs=geometry_crs, backend=backend,
            target_crs=target_crs, resolution=resolution, resampling=resampling, mask=mask,
            date_range=date_range, on_error=on_error, validate=validate, progress=progress)
        return frame

    def sample_points(
        self, points: Any, bands: Sequence[str], *, geometry_crs: CRS | str | int = 4326,
        backend: Backend | None = None,
        match: Match | None = None,
        scenes: Literal["all", "latest"] | None = None, date_column: str | None = None,
        dates: Any = None, max_days: float | None = None, mask_band: str | None = None,
        mask_values: Sequence[float] | None = None, max_distance_pixels: int = 0,
        neighbourhood: int | None = None, xy_columns: tuple[str, str] | None = None,
        date_range: DateRange | None = None, validate: bool = True, progress: bool = True,
    ) -> pd.DataFrame | pa.Table:
        """Values of ``bands`` at ``points`` (nearest pixel, nearest valid pixel or a
        window; scenes matched by time), in the points' own kind. See
        :func:`rasteret.analysis.sample_points`."""
        from rasteret.analysis import sample_points  # upward: see [tool.importlinter]

        values: pd.DataFrame | pa.Table = sample_points(
            self, points, bands, geometry_crs=geometry_crs, backend=backend, match=match,
            scenes=scenes, date_column=date_column, dates=dates, max_days=max_days,
            mask_band=mask_band, mask_values=mask_values,
            max_distance_pixels=max_distance_pixels, neighbourhood=neighbourhood,
            xy_columns=xy_columns, date_range=date_range, validate=validate,
            progress=progress)
        return values

    def to_torchgeo_dataset(
        self, bands: Sequence[str], *, chip_size: int | None = None,
        time_series: bool = False, backend: Backend | None = None,
        target_crs: CRS | str | int | None = None,
        res: float | tuple[float, float] | None = None, is_image: bool = True,
        dtype: torch.dtype | None = None, mosaic_order: MosaicOrder = "latest",
        resampling: Resampling = "nearest",
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        mask_bands: Sequence[str] | None = None, on_error: OnError = "raise",
        cache_bytes: int | Literal["auto"] = "auto", cache_dir: str | None = None,
        apply_scale: bool = False, validate: bool = True,
    ) -> RasteretDataset:
        """A TorchGeo ``GeoDataset`` reading ``bands`` of this collection (needs the
        ``torch`` extra). See :class:`rasteret.torch.RasteretDataset` for the
        arguments."""
        from rasteret.torch.dataset import RasteretDataset  # upward; needs the torch extra

        dataset: RasteretDataset = RasteretDataset(
            self, bands, chip_size=chip_size, time_series=time_series, backend=backend,
            target_crs=target_crs, res=res, is_image=is_image, dtype=dtype,
            mosaic_order=mosaic_order, resampling=resampling, transforms=transforms,
            mask_bands=mask_bands, on_error=on_error, cache_bytes=cache_bytes,
            cache_dir=cache_dir, apply_scale=apply_scale, validate=validate)
        return dataset

    def export_chips(self, bands: Sequence[str], out_dir: str | os.PathLike[str],
                     **options: Any) -> Path:
        """Write georeferenced chips, a GeoParquet manifest and a quick-look PNG for
        labelling (needs the ``torch`` extra). See
        :func:`rasteret.torch.export.export_chips`."""
        from rasteret.torch.export import export_chips  # upward; needs the torch extra

        manifest: Path = export_chips(self, bands, out_dir, **options)
        return manifest

    # -- saving ----------------------------------------------------------------------
    def export(self, path: str | os.PathLike[str], *, backend: Backend | None = None
               ) -> Path | str:
        """Write the collection as one GeoParquet file (readable by DuckDB, GeoPandas,
        pyarrow; its footer keeps the build information and failures) and return its
        path.

        Args:
            path: A local path, a ``file://`` URL, or an object-store URL
                (``s3://bucket/key.parquet``, ``az://...``, ``gs://...``), written in
                one put (readers see the whole file or none).
            backend: The stores and credentials for an object-store URL.

        Returns:
            The local path, or the URL for an object store.
        """
        table = with_metadata(self.table, self.manifest, self.failures)
        if is_remote(path):
            url = str(path)
            return ObjectWorkspace(url.rpartition("/")[0], backend or default_backend()
                                   ).export(table, url)
        target = local_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        return write_atomic(target, lambda tmp: pq.write_table(table, tmp, **PARQUET_OPTIONS))


def _expression_mask(table: pa.Table, expression: pc.Expression) -> pa.ChunkedArray:
    """Where ``expression`` holds on ``table``'s rows (null counts as false)."""
    import pyarrow.dataset as pads

    mask = pads.dataset(table).to_table(columns={"keep": expression})["keep"]
    return pc.fill_null(mask, False)
