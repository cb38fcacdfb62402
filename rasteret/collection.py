"""The Collection: an Arrow table of scenes and their COG headers, with filters.

A collection is built once (see :mod:`rasteret.ingest`) and then queried and read
without touching any header on the network: every band column holds the tile
layout a read needs.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rasteret.arrow import stream_schema, stream_table, table_from_arrow
from rasteret.atomic import write_atomic
from rasteret.band import BandView, band_grids
from rasteret.coverage import CoverageGrid, valid_outline
from rasteret.dates import DateRange, parse_date_range
from rasteret.errors import (
    ConfigurationError,
)
from rasteret.io.backend import Backend, default_backend
from rasteret.options import (
    CRSLike,
    Match,
    MosaicOrder,
    OnError,
    ReadOptions,
    Resampling,
    Resolution,
    read_options,
)
from rasteret.read.cog import CogFile
from rasteret.reopen import Origin
from rasteret.scenes import PartsStore, SceneStore, TableStore
from rasteret.schema import (
    COVERAGE_COLUMN,
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
    from matplotlib.figure import Figure
    from pyproj import CRS

    from rasteret.points import PointValues
    from rasteret.torch.dataset import RasteretDataset
    from rasteret.torch.samplers import ChipMode
    from rasteret.torch.timeseries import GroupBy, Layout, TimeSelect

BBox = tuple[float, float, float, float]


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
    Either way the scenes sit in one store (:attr:`store`, see :mod:`rasteret.scenes`)
    and rows are numbered ``0 .. len - 1``: :meth:`rows_where` selects row numbers,
    which :meth:`band_views`, :meth:`band_view` and :meth:`take_rows` take.

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
        self.name = name
        self.manifest = dict(manifest or {})
        self.path = path
        self._failures = failures
        # Where the scenes are held (a table in memory, or the files of a loaded
        # collection read lazily): every method below asks the store, whichever it is.
        # Band columns of older versions get today's type (new fields null).
        self._store: SceneStore = TableStore(upgrade_band_columns(table))

    @classmethod
    def _of(cls, store: SceneStore, *, name: str | None, manifest: dict[str, Any],
            failures: pa.Table | None, path: Path | None) -> Collection:
        """A collection of the scenes in ``store``."""
        collection = cls.__new__(cls)
        collection.name = name
        collection.manifest = dict(manifest)
        collection.path = path
        collection._failures = failures
        collection._store = store
        return collection

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
        # The build the files hold now: a process that opens them again after
        # unpickling refuses another build (CollectionChangedError).
        store = PartsStore(source, rows, origin=origin, light=light,
                           built=(manifest.get("created"), source.num_rows))
        return cls._of(store, name=name, manifest=manifest, failures=failures, path=path)

    @property
    def table(self) -> pa.Table:
        """The Arrow table: one row per scene; GeoParquet columns, properties, one
        struct column per band (tile tables included). A collection loaded from files
        decodes it from them on first access (only the row groups holding its rows);
        filters, indexing and reads do not need it."""
        return self._store.table()

    @table.setter
    def table(self, table: pa.Table) -> None:
        self._store = TableStore(upgrade_band_columns(table))

    @property
    def source(self) -> PartsSource:
        """The files the collection reads lazily (re-opened after unpickling).

        Raises:
            ConfigurationError: The collection was not loaded from files.
        """
        parts = self._store.parts
        if parts is None:
            raise ConfigurationError(
                f"collection {self.name!r} was not loaded from files; save it and "
                "load it to read it lazily")
        return parts

    @property
    def lazy(self) -> bool:
        """Whether the collection reads its files lazily (loaded from a folder, a
        GeoParquet file or an object-store workspace) rather than holding a table."""
        return self._store.lazy

    @property
    def store(self) -> SceneStore:
        """Where the scenes are held: a :class:`~rasteret.scenes.TableStore` in memory,
        or a :class:`~rasteret.scenes.PartsStore` reading the collection's files."""
        return self._store

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
        return list(self._store.schema.names)

    def _frame(self) -> pa.Table:
        """The columns filters and indexing use, in memory (see SceneStore.frame)."""
        return self._store.frame()

    # -- description -----------------------------------------------------------------
    def __len__(self) -> int:
        return self._store.num_rows

    @property
    def bands(self) -> list[str]:
        """The band names this collection can read."""
        return [f.name for f in self._store.schema if is_band_struct(f.type)]

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
    def rows_where(
        self,
        expression: pc.Expression | None = None,
        *,
        bbox: Sequence[float] | None = None,
        date_range: DateRange | None = None,
        cloud_cover_lt: float | None = None,
        ids: Sequence[str] | None = None,
        **equals: Any,
    ) -> np.ndarray:
        """The row numbers (ascending) of the scenes meeting every condition given:
        the filters of :meth:`subset` and an Arrow compute ``expression`` (as in
        :meth:`filter`). Readers take these rows directly (``band_views``,
        ``band_view``, ``column(...)[row]``), so a selection never goes from ids back
        to rows; :meth:`subset` and :meth:`filter` keep them as a collection.

        On a collection loaded from files the conditions are evaluated on the columns
        kept in memory (every column but the bands' tile tables and masks); the files
        are read only where ``expression`` names a field that is not among them.

        Args:
            expression: An Arrow expression, e.g. ``pc.field("platform") == "s2a"``
                (null counts as false).
            bbox: ``(minx, miny, maxx, maxy)`` in degrees the footprint's bbox meets.
            date_range: ``(start, end)``, inclusive (a bare end date: the whole day).
            cloud_cover_lt: ``eo:cloud_cover`` below this.
            ids: Scene ids to keep.
            equals: Columns equal to values (``platform="sentinel-2a"``).

        Returns:
            An int64 array of row numbers into this collection (all rows when no
            condition is given).

        Raises:
            ConfigurationError: A bad bbox or date range, or a column it names is
                missing.
        """
        frame = self._frame()
        conditions = _subset_conditions(frame, bbox=bbox, date_range=date_range,
                                       cloud_cover_lt=cloud_cover_lt, ids=ids, equals=equals)
        if expression is not None:
            try:
                conditions.append(_expression_mask(frame, expression))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError):
                if self._store.decoded:  # the frame held every column already
                    raise
                # It names a heavy field (a tile table): evaluated on every column.
                conditions.append(_expression_mask(self.table, expression))
        if not conditions:
            return np.arange(len(self), dtype=np.int64)
        mask = conditions[0]
        for condition in conditions[1:]:
            mask = pc.and_(mask, condition)
        keep = np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), bool)
        return np.flatnonzero(keep).astype(np.int64)

    def take_rows(self, rows: Sequence[int] | np.ndarray) -> Collection:
        """The scenes at ``rows`` (row numbers, e.g. from :meth:`rows_where`), in that
        order, as a collection of the same kind: one loaded from files stays lazy
        (nothing is decoded, it pickles small).

        Raises:
            IndexError: A row is out of range.
        """
        picked = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(picked) and (int(np.min(picked)) < 0 or int(np.max(picked)) >= len(self)):
            raise IndexError(f"rows out of range for a collection of {len(self)} rows")
        return Collection._of(self._store.select(picked), name=self.name,
                              manifest=self.manifest, failures=self._failures, path=self.path)

    def filter(self, expression: pc.Expression) -> Collection:
        """Keep the rows matching an Arrow compute expression, e.g.
        ``pc.field("platform") == "sentinel-2a"`` (see :meth:`rows_where`).

        On a collection loaded from files the expression is evaluated on the columns
        kept in memory (every column but the bands' tile tables and masks); the
        files are read only where it names a field that is not among them."""
        return self.take_rows(self.rows_where(expression))

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
        colon is matched through :meth:`filter`). See :meth:`rows_where`."""
        return self.take_rows(self.rows_where(
            bbox=bbox, date_range=date_range, cloud_cover_lt=cloud_cover_lt, ids=ids,
            **equals))

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

    def band_views(self, band: str, rows: Sequence[int] | np.ndarray | None = None
                   ) -> list[BandView | None]:
        """Typed views of one band of ``rows`` (row numbers, e.g. from
        :meth:`rows_where`; default: every scene), in that order.

        Only the light fields are read from the Arrow columns (href, version, CRS,
        transform, level-0 grid, nodata/scale/offset); tile tables stay in Arrow until
        a view's ``header()`` or ``cog()`` is asked for.

        Returns:
            One :class:`~rasteret.band.BandView` per row; None where the band was not
            indexed (see :attr:`failures`).

        Raises:
            ConfigurationError: Unknown band.
            IndexError: A row is out of range.
        """
        self.check_bands([band])
        return self._store.band_views(band, rows)

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

    def valid_geometries(self) -> list[Any] | None:
        """Each scene's recorded valid data (its coverage cells at least half valid,
        see :mod:`rasteret.coverage`) as a shapely geometry in degrees, None for a
        scene without coverage; None when the collection records none (built before
        coverage existed). Pictures of the collection shade it."""
        if COVERAGE_COLUMN not in self.column_names:
            return None
        return [None if record is None else valid_outline(CoverageGrid.from_record(record))
                for record in self.column(COVERAGE_COLUMN).to_pylist()]

    # -- pixels ----------------------------------------------------------------------
    # The readers live above the collection (they take a Collection): these methods
    # import them when called (as xarray's Dataset.to_zarr imports its backend), so
    # mypy checks each call, `import rasteret` stays light (no torch, no dask), and the
    # import contracts list each of these upward edges on purpose.
    def get_numpy(
        self, geometries: Any, bands: Sequence[str], *, geometry_crs: CRSLike = 4326,
        backend: Backend | None = None,
        options: ReadOptions | None = None, target_crs: CRSLike | None = None,
        resolution: Resolution | None = None, resampling: Resampling = "nearest",
        apply_scale: bool = False, masked: bool = False, clip: bool = True,
        date_range: DateRange | None = None, on_error: OnError = "raise",
        validate: bool = True,
        progress: bool = True,
    ) -> np.ndarray | list[np.ndarray]:
        """Pixels of ``bands`` over ``geometries`` as ``(time, band, y, x)`` arrays.

        The read options (``options`` and the keywords from ``target_crs`` to
        ``validate``) are :class:`~rasteret.options.ReadOptions`; see
        :func:`rasteret.analysis.get_numpy` for the other arguments, the result and
        the errors.
        """
        from rasteret.analysis import get_numpy  # upward: see [tool.importlinter]

        read = read_options(
            options, target_crs=target_crs, resolution=resolution, resampling=resampling,
            apply_scale=apply_scale, masked=masked, clip=clip, date_range=date_range,
            on_error=on_error, validate=validate)
        arrays: np.ndarray | list[np.ndarray] = get_numpy(
            self, geometries, bands, read, geometry_crs=geometry_crs, backend=backend,
            progress=progress)
        return arrays

    def get_xarray(
        self, geometries: Any, bands: Sequence[str], *, geometry_crs: CRSLike = 4326,
        backend: Backend | None = None,
        options: ReadOptions | None = None, target_crs: CRSLike | None = None,
        resolution: Resolution | None = None, resampling: Resampling = "nearest",
        apply_scale: bool = False, masked: bool = False, clip: bool = True,
        date_range: DateRange | None = None, on_error: OnError = "raise",
        validate: bool = True,
        chunks: str | Mapping[str, int | str | None] | None = None, progress: bool = True,
    ) -> xr.Dataset | list[xr.Dataset]:
        """Pixels as an ``xarray.Dataset`` (one variable per band, dims time/y/x, CF
        grid mapping). The read options are :class:`~rasteret.options.ReadOptions`;
        see :func:`rasteret.analysis.get_xarray`. With ``chunks=`` (``"auto"`` or e.g.
        ``{"time": 1, "y": 2048, "x": 2048}``) the variables are dask arrays read
        lazily, see :func:`rasteret.lazy.get_xarray` (nothing is read here, so
        ``progress`` has no bar to show: Dask's diagnostics follow the compute)."""
        read = read_options(
            options, target_crs=target_crs, resolution=resolution, resampling=resampling,
            apply_scale=apply_scale, masked=masked, clip=clip, date_range=date_range,
            on_error=on_error, validate=validate)
        if chunks is not None:
            from rasteret.lazy import get_xarray as get_lazy_xarray  # upward, see above

            lazy: xr.Dataset | list[xr.Dataset] = get_lazy_xarray(
                self, geometries, bands, read, chunks=chunks, geometry_crs=geometry_crs,
                backend=backend)
            return lazy
        from rasteret.analysis import get_xarray  # upward: see [tool.importlinter]

        datasets: xr.Dataset | list[xr.Dataset] = get_xarray(
            self, geometries, bands, read, geometry_crs=geometry_crs, backend=backend,
            progress=progress)
        return datasets

    def get_gdf(
        self, geometries: Any, bands: Sequence[str], *, geometry_crs: CRSLike = 4326,
        backend: Backend | None = None,
        options: ReadOptions | None = None, target_crs: CRSLike | None = None,
        resolution: Resolution | None = None, resampling: Resampling = "nearest",
        apply_scale: bool = False, masked: bool = False, clip: bool = True,
        date_range: DateRange | None = None, on_error: OnError = "raise",
        validate: bool = True,
        progress: bool = True,
    ) -> gpd.GeoDataFrame:
        """One row per scene x geometry with its arrays and transform. The read
        options are :class:`~rasteret.options.ReadOptions`; see
        :func:`rasteret.analysis.get_gdf`."""
        from rasteret.analysis import get_gdf  # upward: see [tool.importlinter]

        read = read_options(
            options, target_crs=target_crs, resolution=resolution, resampling=resampling,
            apply_scale=apply_scale, masked=masked, clip=clip, date_range=date_range,
            on_error=on_error, validate=validate)
        frame: gpd.GeoDataFrame = get_gdf(self, geometries, bands, read,
                                          geometry_crs=geometry_crs, backend=backend,
                                          progress=progress)
        return frame

    def sample_points(
        self, points: Any, bands: Sequence[str], *, geometry_crs: CRSLike = 4326,
        backend: Backend | None = None, match: Match = "all", date_column: str | None = None,
        dates: Any = None, max_days: float | None = None, quality_band: str | None = None,
        invalid_values: Sequence[float] | None = None, max_distance_pixels: int = 0,
        neighbourhood: int | None = None, xy_columns: tuple[str, str] | None = None,
        options: ReadOptions | None = None, apply_scale: bool = False, masked: bool = False,
        date_range: DateRange | None = None, on_error: OnError = "raise",
        validate: bool = True, progress: bool = True,
    ) -> PointValues:
        """Values of ``bands`` at ``points`` (nearest pixel, nearest valid pixel or a
        window; scenes matched by time), in the points' own kind. The read options
        points apply are ``apply_scale``, ``masked``, ``date_range``, ``on_error`` and
        ``validate`` (:class:`~rasteret.options.ReadOptions`); see
        :func:`rasteret.analysis.sample_points` for the rest."""
        from rasteret.analysis import sample_points  # upward: see [tool.importlinter]
        from rasteret.points import PointQuery  # upward, as analysis

        read = read_options(options, apply_scale=apply_scale, masked=masked,
                            date_range=date_range, on_error=on_error, validate=validate)
        query = PointQuery(
            geometry_crs=geometry_crs, match=match, date_column=date_column,
            max_days=max_days, quality_band=quality_band,
            invalid_values=None if invalid_values is None else tuple(invalid_values),
            max_distance_pixels=max_distance_pixels, neighbourhood=neighbourhood,
            xy_columns=xy_columns)
        values: PointValues = sample_points(self, points, bands, read, query, dates=dates,
                                            backend=backend, progress=progress)
        return values

    def to_torchgeo_dataset(
        self, bands: Sequence[str], *, chip_size: int | None = None,
        time_series: bool = False, backend: Backend | None = None, is_image: bool = True,
        dtype: torch.dtype | None = None, mosaic_order: MosaicOrder = "latest",
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        mask_bands: Sequence[str] | None = None,
        cache_bytes: int | Literal["auto"] = "auto", cache_dir: str | None = None,
        options: ReadOptions | None = None, target_crs: CRSLike | None = None,
        resolution: Resolution | None = None, resampling: Resampling = "nearest",
        apply_scale: bool = False, masked: bool = False, clip: bool = True,
        date_range: DateRange | None = None, on_error: OnError = "raise",
        validate: bool = True,
        time_steps: int | None = None, time_select: TimeSelect = "even",
        time_bins: str | None = None, group_by: GroupBy = "scene", layout: Layout = "TCHW",
    ) -> RasteretDataset:
        """A TorchGeo ``GeoDataset`` reading ``bands`` of this collection (needs the
        ``torch`` extra). The read options are :class:`~rasteret.options.ReadOptions`
        (``resolution`` is TorchGeo's ``res``, which the dataset keeps as its
        attribute); time series that batch take ``time_steps`` and ``time_select``, or
        ``time_bins``, with ``group_by`` and ``layout``; see
        :class:`rasteret.torch.RasteretDataset` for the rest."""
        from rasteret.torch.dataset import RasteretDataset  # upward; needs the torch extra

        read = read_options(
            options, target_crs=target_crs, resolution=resolution, resampling=resampling,
            apply_scale=apply_scale, masked=masked, clip=clip, date_range=date_range,
            on_error=on_error, validate=validate)
        dataset: RasteretDataset = RasteretDataset(
            self, bands, options=read, chip_size=chip_size, time_series=time_series,
            backend=backend, is_image=is_image, dtype=dtype, mosaic_order=mosaic_order,
            transforms=transforms, mask_bands=mask_bands, cache_bytes=cache_bytes,
            cache_dir=cache_dir, time_steps=time_steps, time_select=time_select,
            time_bins=time_bins, group_by=group_by, layout=layout)
        return dataset

    def export_chips(
        self, bands: Sequence[str], out_dir: str | os.PathLike[str], *,
        chip_size: int = 256, sampler: Iterable[Any] | None = None,
        mode: ChipMode = "grid", length: int | None = None, seed: int | None = 0,
        png: bool = False, quicklook: bool = True, overwrite: bool = False,
        mask_bands: Sequence[str] | None = None,
        label_classes: Mapping[int, str] | Sequence[str] | None = None,
        label_studio: bool = True, image_url: str | None = None,
        backend: Backend | None = None, mosaic_order: MosaicOrder = "latest",
        options: ReadOptions | None = None, target_crs: CRSLike | None = None,
        resolution: Resolution | None = None, resampling: Resampling = "nearest",
        apply_scale: bool = False, masked: bool = False, clip: bool = True,
        date_range: DateRange | None = None, on_error: OnError = "raise",
        validate: bool = True,
        progress: bool = True,
    ) -> Path:
        """Write georeferenced chips, a GeoParquet manifest and a quick-look PNG for
        labelling (needs the ``torch`` extra). The read options are
        :class:`~rasteret.options.ReadOptions`; see
        :func:`rasteret.torch.export.export_chips` for the rest."""
        from rasteret.torch.export import ChipExport, export_chips  # upward; torch extra

        read = read_options(
            options, target_crs=target_crs, resolution=resolution, resampling=resampling,
            apply_scale=apply_scale, masked=masked, clip=clip, date_range=date_range,
            on_error=on_error, validate=validate)
        export = ChipExport(chip_size=chip_size, mode=mode, length=length, seed=seed,
                            png=png, quicklook=quicklook, overwrite=overwrite,
                            label_studio=label_studio, image_url=image_url)
        manifest: Path = export_chips(
            self, bands, out_dir, read, export, sampler=sampler, mask_bands=mask_bands,
            label_classes=label_classes, backend=backend, mosaic_order=mosaic_order,
            progress=progress)
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

    # -- pictures (issue 21, item 6) ----------------------------------------------------
    def plot(self, *, geometries: Any = None, geometry_crs: CRSLike = 4326,
             target_crs: CRSLike | None = None, coverage: bool = True,
             title: str | None = None) -> Figure:
        """A map of the scenes: footprints coloured by date (with a date colorbar), the
        valid data shaded where the collection records it, and an area of interest.
        Nothing is read: footprints and dates come from the table.

        Args:
            geometries: An area of interest, outlined (any input
                :meth:`get_numpy` takes: a bbox tuple, shapely geometries, GeoJSON...).
            geometry_crs: The CRS of ``geometries`` (default EPSG:4326).
            target_crs: The CRS the map is drawn in (default: the scenes' CRS when
                they share one, else EPSG:4326).
            coverage: Shade each scene's valid data when the collection records it
                (see :func:`rasteret.plots.valid_coverage`).
            title: The axes' title (default: the name, the scene count and the CRS).

        Returns:
            A matplotlib ``Figure``, built without pyplot (headless;
            ``fig.savefig("map.png")`` writes it). Needs matplotlib
            (``pip install 'rasteret[plot]'``).

        Raises:
            ConfigurationError: An empty collection, a bad CRS or unreadable geometries.
        """
        from rasteret.plots import plot_collection  # upward: see [tool.importlinter]

        return plot_collection(self, geometries=geometries, geometry_crs=geometry_crs,
                               target_crs=target_crs, coverage=coverage, title=title)


def _subset_conditions(
    frame: pa.Table, *, bbox: Sequence[float] | None, date_range: DateRange | None,
    cloud_cover_lt: float | None, ids: Sequence[str] | None, equals: Mapping[str, Any],
) -> list[Any]:
    """Boolean arrays over ``frame``'s rows, one per filter of
    :meth:`Collection.subset` given (an empty list when none is).

    Raises:
        ConfigurationError: A bad bbox or date range, or a column it names is missing.
    """
    conditions: list[Any] = []
    if bbox is not None:
        minx, miny, maxx, maxy = check_bbox(bbox)
        box = frame["bbox"]
        conditions.append(pc.less_equal(pc.struct_field(box, "xmin"), maxx))
        conditions.append(pc.greater_equal(pc.struct_field(box, "xmax"), minx))
        conditions.append(pc.less_equal(pc.struct_field(box, "ymin"), maxy))
        conditions.append(pc.greater_equal(pc.struct_field(box, "ymax"), miny))
    window = parse_date_range(date_range)
    if window is not None:
        start = pa.scalar(window[0], pa.timestamp("us", tz="UTC"))
        end = pa.scalar(window[1], pa.timestamp("us", tz="UTC"))
        times = frame["datetime"]
        conditions.append(pc.and_(pc.greater_equal(times, start), pc.less_equal(times, end)))
    if cloud_cover_lt is not None:
        if "eo:cloud_cover" not in frame.column_names:
            raise ConfigurationError(
                "cloud_cover_lt needs an eo:cloud_cover column, which this collection lacks")
        conditions.append(pc.less(frame["eo:cloud_cover"], cloud_cover_lt))
    if ids is not None:
        conditions.append(pc.is_in(frame["id"], value_set=pa.array(list(ids), pa.string())))
    for column, value in equals.items():
        if column not in frame.column_names:
            raise ConfigurationError(f"no column {column!r}; columns are {frame.column_names}")
        conditions.append(pc.equal(frame[column], value))
    return conditions


def _expression_mask(table: pa.Table, expression: pc.Expression) -> pa.ChunkedArray:
    """Where ``expression`` holds on ``table``'s rows (null counts as false)."""
    import pyarrow.dataset as pads

    mask = pads.dataset(table).to_table(columns={"keep": expression})["keep"]
    return pc.fill_null(mask, False)
