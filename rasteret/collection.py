"""The Collection: an Arrow table of scenes and their COG headers, with filters.

A collection is built once (see :mod:`rasteret.ingest`) and then queried and read
without touching any header on the network: every band column holds the tile
layout a read needs.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rasteret.arrow import stream_schema, stream_table, table_from_arrow
from rasteret.atomic import write_atomic
from rasteret.band import BandView, band_views
from rasteret.errors import (
    CollectionChangedError,
    CollectionNotFoundError,
    ConfigurationError,
    CorruptCollectionError,
    RasteretError,
)
from rasteret.io.backend import Backend, default_backend
from rasteret.options import Match, MosaicOrder, OnError, Resampling
from rasteret.read.cog import CogFile
from rasteret.schema import (
    BAND_TYPE,
    SCHEMA_VERSION,
    upgrade_band_columns,
)
from rasteret.storage import (
    FAILURE_SCHEMA,
    PARQUET_OPTIONS,
    failures_from_metadata,
    is_remote,
    local_path,
    manifest_from_metadata,
    resolve_existing,
    with_metadata,
)
from rasteret.workspace import (
    ObjectWorkspace,
    StoredCollection,
    open_workspace,
    read_folder,
    split_collection_url,
    strip_failures,
)

if TYPE_CHECKING:
    import geopandas as gpd
    import numpy as np
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


@dataclass(frozen=True)
class CollectionOrigin:
    """Where a loaded collection's files are: what another process needs to open
    the same collection again, a few hundred bytes whatever its size.

    Attributes:
        location: The collection's folder or GeoParquet file (an absolute path), or
            its URL in an object-store workspace (``s3://bucket/prefix/NAME``) or of
            an exported file.
        backend: The backend it was loaded with (it pickles to its description; None:
            the default backend).
        created: The build time in its manifest (None when it has none).
        scenes: Its number of scenes.
    """

    location: str
    backend: Backend | None
    created: str | None
    scenes: int

    def open(self) -> Collection:
        """Load the collection from its files (in any process).

        Returns:
            The collection, with the same build and scenes as when it was loaded.

        Raises:
            CollectionChangedError: The files hold another build now (the collection
                was rebuilt), or are gone.
            CorruptCollectionError: The files are damaged.
            AccessDeniedError: The backend may not read them.
        """
        try:
            collection = load(self.location, backend=self.backend)
        except CollectionNotFoundError:
            raise CollectionChangedError(
                f"collection at {self.location!r} is gone since it was loaded; load it "
                "again (or rebuild it) and rerun") from None
        if (collection.manifest.get("created") != self.created
                or len(collection) != self.scenes):
            raise CollectionChangedError(
                f"collection at {self.location!r} was rebuilt since it was loaded (built "
                f"{collection.manifest.get('created')} with {len(collection)} scenes, not "
                f"{self.created} with {self.scenes}); load it again and rerun")
        return collection


class Collection:
    """Scenes with per-band COG headers, ready to filter and read.

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
        self.table = upgrade_band_columns(table)  # older collections: new fields null
        self.name = name
        self.manifest = dict(manifest or {})
        self.path = path
        self._failures = failures
        # Set by load(): valid while ``table`` is still the table read from the files.
        self._origin: CollectionOrigin | None = None
        self._origin_table: pa.Table | None = None

    # -- description -----------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.table.num_rows)

    @property
    def bands(self) -> list[str]:
        """The band names this collection can read."""
        return [f.name for f in self.table.schema if f.type == BAND_TYPE]

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
        if "proj:epsg" not in self.table.column_names or not len(self):
            return []
        return sorted(int(v) for v in pc.unique(self.table["proj:epsg"]).to_pylist() if v)

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
        bbox = self.table["bbox"].combine_chunks()
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
        times = self.table["datetime"]
        first, last = pc.min(times).as_py(), pc.max(times).as_py()
        return (first, last) if first is not None else None

    @property
    def origin(self) -> CollectionOrigin | None:
        """Where the files of this collection are, so that another process can open
        it again instead of being sent its table (see :meth:`CollectionOrigin.open`).

        None unless the collection holds exactly the scenes loaded from its files:
        one built in memory (:meth:`from_arrow`), filtered (:meth:`subset`,
        :meth:`filter`), or whose ``table`` was replaced has none.
        """
        if self._origin is None or self.table is not self._origin_table:
            return None
        return self._origin

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

    def filter(self, expression: pc.Expression) -> Collection:
        """Keep the rows matching an Arrow compute expression, e.g.
        ``pc.field("platform") == "sentinel-2a"``."""
        return self._with(self.table.filter(expression))

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
        table = self.table
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
            return self._with(table)
        mask = conditions[0]
        for condition in conditions[1:]:
            mask = pc.and_(mask, condition)
        return self._with(table.filter(mask))

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
        ids_column = self.table["id"]
        ids = (ids_column.to_pylist() if rows is None
               else ids_column.take(pa.array(list(rows), pa.int64())).to_pylist())
        return band_views(self.table[band], band=band, ids=ids, rows=rows)

    def band_view(self, row: int, band: str) -> BandView:
        """The typed view of one band of one scene.

        Raises:
            ConfigurationError: Unknown band, or the band was not indexed for this scene.
        """
        view = self.band_views(band, [row])[0]
        if view is None:
            raise ConfigurationError(
                f"band {band!r} of scene {self.table['id'][row].as_py()!r} was not indexed "
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

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """Yield each scene as a dict (band columns as records)."""
        yield from self.table.to_pylist()

    # -- pixels ----------------------------------------------------------------------
    # The analysis functions live in rasteret.analysis, above the collection (they take
    # a Collection); these methods reach it by name, see _module.
    def get_numpy(
        self, geometries: Any, bands: Sequence[str], *, geometry_crs: CRS | str | int = 4326,
        backend: Backend | None = None, target_crs: CRS | str | int | None = None,
        resolution: float | tuple[float, float] | None = None,
        resampling: Resampling = "nearest", apply_scale: bool = False, mask: bool = True,
        date_range: DateRange | None = None, on_error: OnError = "raise",
        validate: bool = True,
    ) -> np.ndarray | list[np.ndarray]:
        """Pixels of ``bands`` over ``geometries`` as ``(time, band, y, x)`` arrays.

        See :func:`rasteret.analysis.get_numpy` for the arguments, the result and the
        errors.
        """
        arrays: np.ndarray | list[np.ndarray] = _module("rasteret.analysis").get_numpy(
            self, geometries, bands, geometry_crs=geometry_crs, backend=backend,
            target_crs=target_crs, resolution=resolution, resampling=resampling,
            apply_scale=apply_scale, mask=mask, date_range=date_range, on_error=on_error,
            validate=validate)
        return arrays

    def get_xarray(
        self, geometries: Any, bands: Sequence[str], *, masked: bool = False,
        apply_scale: bool = False, geometry_crs: CRS | str | int = 4326,
        backend: Backend | None = None, target_crs: CRS | str | int | None = None,
        resolution: float | tuple[float, float] | None = None,
        resampling: Resampling = "nearest", mask: bool = True,
        date_range: DateRange | None = None, on_error: OnError = "raise",
        validate: bool = True, chunks: str | Mapping[str, int | str | None] | None = None,
    ) -> xr.Dataset | list[xr.Dataset]:
        """Pixels as an ``xarray.Dataset`` (one variable per band, dims time/y/x, CF
        grid mapping). See :func:`rasteret.analysis.get_xarray`; with ``chunks=``
        (``"auto"`` or e.g. ``{"time": 1, "y": 2048, "x": 2048}``) the variables are
        dask arrays read lazily, see :func:`rasteret.lazy.get_xarray`."""
        if chunks is not None:
            lazy: xr.Dataset | list[xr.Dataset] = _module("rasteret.lazy").get_xarray(
                self, geometries, bands, chunks=chunks, masked=masked,
                apply_scale=apply_scale, geometry_crs=geometry_crs, backend=backend,
                target_crs=target_crs, resolution=resolution, resampling=resampling,
                mask=mask, date_range=date_range, on_error=on_error, validate=validate)
            return lazy
        datasets: xr.Dataset | list[xr.Dataset] = _module("rasteret.analysis").get_xarray(
            self, geometries, bands, masked=masked, apply_scale=apply_scale,
            geometry_crs=geometry_crs, backend=backend, target_crs=target_crs,
            resolution=resolution, resampling=resampling, mask=mask, date_range=date_range,
            on_error=on_error, validate=validate)
        return datasets

    def get_gdf(
        self, geometries: Any, bands: Sequence[str], *, geometry_crs: CRS | str | int = 4326,
        backend: Backend | None = None, target_crs: CRS | str | int | None = None,
        resolution: float | tuple[float, float] | None = None,
        resampling: Resampling = "nearest", mask: bool = True,
        date_range: DateRange | None = None, on_error: OnError = "raise",
        validate: bool = True,
    ) -> gpd.GeoDataFrame:
        """One row per scene x geometry with its arrays and transform. See
        :func:`rasteret.analysis.get_gdf`."""
        frame: gpd.GeoDataFrame = _module("rasteret.analysis").get_gdf(
            self, geometries, bands, geometry_crs=geometry_crs, backend=backend,
            target_crs=target_crs, resolution=resolution, resampling=resampling, mask=mask,
            date_range=date_range, on_error=on_error, validate=validate)
        return frame

    def sample_points(
        self, points: Any, bands: Sequence[str], *, geometry_crs: CRS | str | int = 4326,
        backend: Backend | None = None,
        match: Match | None = None,
        scenes: Literal["all", "latest"] | None = None, date_column: str | None = None,
        dates: Any = None, max_days: float | None = None, mask_band: str | None = None,
        mask_values: Sequence[float] | None = None, max_distance_pixels: int = 0,
        neighbourhood: int | None = None, xy_columns: tuple[str, str] | None = None,
        date_range: DateRange | None = None, validate: bool = True,
    ) -> pd.DataFrame | pa.Table:
        """Values of ``bands`` at ``points`` (nearest pixel, nearest valid pixel or a
        window; scenes matched by time), in the points' own kind. See
        :func:`rasteret.analysis.sample_points`."""
        values: pd.DataFrame | pa.Table = _module("rasteret.analysis").sample_points(
            self, points, bands, geometry_crs=geometry_crs, backend=backend, match=match,
            scenes=scenes, date_column=date_column, dates=dates, max_days=max_days,
            mask_band=mask_band, mask_values=mask_values,
            max_distance_pixels=max_distance_pixels, neighbourhood=neighbourhood,
            xy_columns=xy_columns, date_range=date_range, validate=validate)
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
        dataset: RasteretDataset = _torch_module("dataset").RasteretDataset(
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
        manifest: Path = _torch_module("export").export_chips(self, bands, out_dir, **options)
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


def _module(name: str) -> ModuleType:
    """A module above the collection (``rasteret.analysis``, ``rasteret.torch.*``),
    imported when one of its entry points is called.

    Those modules take a Collection, so the collection reaches them by name at call
    time rather than by an import statement: the import graph keeps one direction, the
    import-linter contracts see no cycle, and ``import rasteret`` never loads torch.
    Without the ``torch`` extra this raises the ImportError naming the missing package.
    """
    return importlib.import_module(name)


def _torch_module(name: str) -> ModuleType:
    """``rasteret.torch.<name>``, imported when a TorchGeo entry point is called (see
    :func:`_module`)."""
    return _module(f"rasteret.torch.{name}")


def load(
    path_or_name: str | os.PathLike[str], *,
    workspace_dir: str | os.PathLike[str] | None = None, backend: Backend | None = None,
) -> Collection:
    """Load a saved collection by name (in the workspace) or by path (a collection
    folder or a GeoParquet file written by :meth:`Collection.export`).

    A bare name (a string without a path separator, a leading ``~`` or a URL scheme)
    is always looked up in the workspace, never in the current directory: pass
    ``"./bench"`` for a folder there. Anything else, and every ``os.PathLike[str]``, is a
    path; ``file://`` URLs are local paths. An object-store URL names a collection
    in a workspace there (``s3://bucket/prefix/NAME``: its manifest is read, then the
    parts it lists) or an exported file (``s3://bucket/key.parquet``).

    Args:
        path_or_name: The collection's name, or the path or URL of its folder or file.
        workspace_dir: The workspace names are looked up in (default
            ``$RASTERET_WORKSPACE`` or ``~/.rasteret/collections``): a local folder or
            an object-store URL (``s3://bucket/prefix``, ``az://container/prefix``,
            ``gs://bucket/prefix``).
        backend: The stores and credentials for an object-store workspace or URL
            (pass the one that reads the COGs).

    Returns:
        The collection.

    Raises:
        CollectionNotFoundError: Nothing by that name or path; the message lists the
            saved collections.
        CorruptCollectionError: The files are damaged or not a rasteret collection.
        ConfigurationError: The name is not a valid collection name, or the URL does
            not name a collection.
        AccessDeniedError: The backend may not read the workspace (names its URL).
    """
    try:
        return _load(path_or_name, workspace_dir, backend)
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, RasteretError):
            raise
        raise CorruptCollectionError(
            f"collection {str(path_or_name)!r} is damaged or not a rasteret collection "
            f"({type(exc).__name__}: {exc}); rebuild it with force=True"
        ) from exc


def _is_bare_name(path_or_name: str | os.PathLike[str]) -> bool:
    """A string without a separator, a leading ``~`` or a URL scheme names a
    collection in the workspace; everything else is a path."""
    if not isinstance(path_or_name, str):
        return False
    separators = {"/"} | {sep for sep in (os.sep, os.altsep) if sep}
    return not (
        any(sep in path_or_name for sep in separators)
        or path_or_name.startswith("~")
        or "://" in path_or_name
    )


def _from_file(table: pa.Table) -> Collection:
    """The collection in one GeoParquet file written by :meth:`Collection.export`."""
    metadata = table.schema.metadata
    manifest = manifest_from_metadata(metadata)
    failures = failures_from_metadata(metadata)
    table = strip_failures(table)
    _check_columns(table)
    return Collection(table, name=manifest.get("name"), manifest=manifest, failures=failures)


def _from_stored(stored: StoredCollection) -> Collection:
    _check_columns(stored.table)
    return Collection(stored.table, name=stored.manifest.get("name"), manifest=stored.manifest,
                      failures=stored.failures, path=stored.path)


def _load(path_or_name: str | os.PathLike[str], workspace_dir: str | os.PathLike[str] | None,
          backend: Backend | None) -> Collection:
    if _is_bare_name(path_or_name):
        name = str(path_or_name)
        workspace = open_workspace(workspace_dir, backend)
        stored = workspace.read(name)
        if stored is None:
            hint = (
                f"; a folder or file {name!r} is in the current directory: load it as "
                f"the path './{name}'" if Path(name).exists() else ""
            )
            raise CollectionNotFoundError(
                f"no collection {name!r}; saved collections: "
                f"{workspace.names() or 'none'} (workspace {workspace.location}){hint}"
            )
        return _loaded_from(_from_stored(stored), stored, backend)
    if is_remote(path_or_name):
        url = str(path_or_name).rstrip("/")
        if url.endswith(".parquet"):
            from rasteret.io.objects import get_object

            data, _ = get_object(backend or default_backend(), url)
            return _loaded_from(_from_file(pq.read_table(pa.BufferReader(data))), url, backend)
        base, name = split_collection_url(url)
        workspace = ObjectWorkspace(base, backend or default_backend())
        stored = workspace.read(name)
        if stored is None:
            raise CollectionNotFoundError(
                f"no collection at {url!r}: no manifest {workspace.manifest_url(name)}; "
                f"collections in workspace {base}: {workspace.names() or 'none'}"
            )
        return _loaded_from(_from_stored(stored), stored, backend)
    candidate = local_path(path_or_name)
    if candidate.is_file():
        return _loaded_from(_from_file(pq.read_table(candidate)), str(candidate.resolve()), None)
    folder = resolve_existing(candidate) if candidate.is_dir() else None
    if folder is None:
        saved = list_collections(workspace_dir=workspace_dir, backend=backend)
        raise CollectionNotFoundError(
            f"no collection at {str(path_or_name)!r}: not a collection folder or "
            "GeoParquet file; to load a saved collection by name, pass the bare name "
            f"(saved collections: {saved or 'none'})"
        )
    if not any(folder.glob("part-*.parquet")):
        raise CollectionNotFoundError(f"{folder} holds no part-*.parquet files")
    stored = read_folder(folder)
    return _loaded_from(_from_stored(stored), stored, backend)


def _loaded_from(collection: Collection, source: StoredCollection | str,
                 backend: Backend | None) -> Collection:
    """``collection``, knowing it was read from ``source`` (a stored collection, or a
    file's path or URL) with ``backend``: see :attr:`Collection.origin`."""
    if isinstance(source, str):
        location = source
    elif source.path is not None:
        location, backend = str(source.path.resolve()), None  # a local folder
    else:
        location = source.location
    collection._origin = CollectionOrigin(location, backend, collection.manifest.get("created"),
                                          len(collection))
    collection._origin_table = collection.table
    return collection


def _check_columns(table: pa.Table) -> None:
    """Refuse tables that lack the columns every collection has."""
    for name, kind in (("id", pa.string()), ("datetime", pa.timestamp("us", tz="UTC"))):
        if name not in table.column_names or table.schema.field(name).type != kind:
            raise ValueError(f"column {name!r} is missing or not {kind}")


def list_collections(*, workspace_dir: str | os.PathLike[str] | None = None,
                     backend: Backend | None = None) -> list[str]:
    """Names of the collections saved in the workspace.

    Args:
        workspace_dir: The workspace: a local folder or an object-store URL such as
            ``s3://bucket/prefix`` (default ``$RASTERET_WORKSPACE`` or
            ``~/.rasteret/collections``).
        backend: The stores and credentials reaching an object-store workspace.
    """
    return open_workspace(workspace_dir, backend).names()


def delete_collection(name: str, *, workspace_dir: str | os.PathLike[str] | None = None,
                      backend: Backend | None = None) -> None:
    """Delete a saved collection (in an object-store workspace: its manifest first, so
    it disappears at once, then its parts).

    Args:
        name: The collection's name.
        workspace_dir: The workspace (default ``$RASTERET_WORKSPACE`` or
            ``~/.rasteret/collections``).

    Raises:
        CollectionNotFoundError: No collection by that name.
    """
    workspace = open_workspace(workspace_dir, backend)
    if not workspace.delete(name):
        raise CollectionNotFoundError(f"no collection {name!r} in {workspace.location}")

