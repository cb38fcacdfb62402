"""The build verbs: ``build`` (a registered dataset), ``build_from_stac`` (any STAC API
or static catalog) and ``build_from_table`` (a user's table of hrefs)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rasteret.collection import Collection
from rasteret.dates import parse_date_range, parse_datetime
from rasteret.errors import ConfigurationError
from rasteret.ingest.build_options import DEFAULT_BATCH_SIZE, BuildOptions
from rasteret.ingest.builder import build_collection
from rasteret.ingest.indexer import DEFAULT_MAX_CONCURRENT
from rasteret.ingest.records import BandSource, SceneRecord, unsigned
from rasteret.ingest.stac import item_to_record, iter_items
from rasteret.io.backend import Backend
from rasteret.io.fetch import FetchStats
from rasteret.options import OnError, ValidCoverage
from rasteret.registry import BandMap, BandTarget, find_dataset, list_datasets


def build_from_stac(
    *,
    name: str,
    stac_api: str,
    collection: str | None,
    bbox: Sequence[float] | None = None,
    date_range: tuple[Any, Any] | None = None,
    backend: Backend | None = None,
    band_map: BandMap | None = None,
    query: Mapping[str, Any] | None = None,
    max_items: int | None = None,
    workspace_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    on_error: OnError = "raise",
    max_concurrent: int = DEFAULT_MAX_CONCURRENT,
    progress: bool = True,
    stats: FetchStats | None = None,
    dataset_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    page_size: int = 100,
    executor: Executor | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    valid_coverage: ValidCoverage | None = "geometry",
) -> Collection:
    """Build a collection from a STAC API search or a static catalog.

    Args:
        name: The collection's name in the workspace.
        stac_api: A STAC API root URL, or a static ``catalog.json`` (a local path,
            ``file://``, ``http(s)://``, ``s3://``, ``az://``...; relative hrefs work),
            crawled concurrently through ``backend``.
        collection: The STAC collection id.
        bbox: ``(minx, miny, maxx, maxy)`` in degrees.
        date_range: ``(start, end)``, inclusive; dates or ISO strings.
        backend: How to reach the assets' stores (used for header parsing). Default:
            the backend of the :class:`~rasteret.CloudConfig` registered under
            ``dataset_id`` or ``collection``, which reads of the collection use too;
            else anonymous / environment credentials.
        band_map: User band code -> asset key or ``(asset key, band index)``; default:
            every GeoTIFF asset under its own key.
        query: STAC property filters, e.g. ``{"eo:cloud_cover": {"lt": 20}}``, also
            applied on the client side.
        max_items: Stop after this many items.
        workspace_dir: See :class:`~rasteret.ingest.BuildOptions`.
        force: See :class:`~rasteret.ingest.BuildOptions`.
        on_error: See :class:`~rasteret.ingest.BuildOptions`.
        max_concurrent: See :class:`~rasteret.ingest.BuildOptions`.
        stats: See :class:`~rasteret.ingest.BuildOptions`.
        progress: Show progress bars: the search's or the crawl's (once it has
            taken a few seconds) and the indexing's. ``progress=False`` or
            ``RASTERET_PROGRESS=0`` hides them (see :mod:`rasteret.progress`).
        dataset_id: The dataset id this build belongs to (set by :func:`build`). It
            and ``collection`` are recorded, so reads find the same CloudConfig.
        headers: Extra HTTP headers for the STAC API.
        page_size: Items per page of the search (pages are followed to the end).
        executor: Index on an executor, tasks of ``batch_size`` assets (see
            :class:`rasteret.ingest.BuildOptions`); the search runs here page by
            page. Default: index in this process.
        batch_size: Assets per task with an ``executor``.
        valid_coverage: Record each scene's valid-data coverage: ``"geometry"``
            (default; the item's geometry and sparse tiles, no request),
            ``"overview"`` (also one read of each asset's smallest overview: one
            request per asset) or None. See :class:`~rasteret.ingest.BuildOptions`.

    Returns:
        The saved :class:`~rasteret.collection.Collection`.
    """
    from rasteret.io.cloud_config import CloudConfig, backend_for_dataset

    # One CloudConfig drives the rewrites, the header indexing and (through the ids
    # recorded in the manifest) every later read, so build and reads agree. A static
    # catalog's JSON and the workspace go through the same backend as its COGs.
    backend = backend_for_dataset(dataset_id, backend, collection=collection)
    found = CloudConfig.lookup(dataset_id, collection)
    rewrite = found[1].rewrite_url if found is not None else None
    # A lazy search: pages are fetched as the items are consumed, so an existing
    # collection is loaded (by the builder, without force=) before any search.
    items = iter_items(
        stac_api, collection=collection, bbox=bbox, date_range=date_range, query=query,
        max_items=max_items, headers=headers, page_size=page_size, backend=backend,
        progress=progress,
    )
    records = (item_to_record(item, band_map=band_map, rewrite=rewrite) for item in items)
    manifest = _stac_manifest(dataset_id, stac_api, collection, bbox=bbox,
                              date_range=date_range, query=query, band_map=band_map)
    return build_collection(records, manifest=manifest, options=BuildOptions(
        name=name, backend=backend, workspace_dir=workspace_dir, force=force,
        on_error=on_error, max_concurrent=max_concurrent, progress=progress, stats=stats,
        executor=executor, batch_size=batch_size, valid_coverage=valid_coverage))


def _stac_manifest(dataset_id: str | None, stac_api: str, collection: str | None, *,
                   bbox: Sequence[float] | None, date_range: tuple[Any, Any] | None,
                   query: Mapping[str, Any] | None,
                   band_map: BandMap | None) -> dict[str, Any]:
    """The build information of a STAC build, stored with its collection."""
    window = parse_date_range(date_range)
    return {
        "dataset_id": dataset_id,
        "source": {
            "kind": "stac",
            "stac_api": stac_api,
            "collection": collection,
            "bbox": list(bbox) if bbox else None,
            "date_range": [w.isoformat() for w in window] if window else None,
            "query": dict(query) if query else None,
        },
        "band_map": {k: list(v) if isinstance(v, tuple) else v
                     for k, v in (band_map or {}).items()},
    }


def build(
    dataset_id: str,
    *,
    name: str,
    bbox: Sequence[float],
    date_range: tuple[Any, Any],
    backend: Backend | None = None,
    query: Mapping[str, Any] | None = None,
    bands: Sequence[str] | None = None,
    workspace_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    on_error: OnError = "raise",
    max_concurrent: int = DEFAULT_MAX_CONCURRENT,
    progress: bool = True,
    stac_api: str | None = None,
    collection: str | None = None,
    executor: Executor | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    valid_coverage: ValidCoverage | None = "geometry",
) -> Collection:
    """Build a collection of a dataset by id.

    A registered dataset (see ``rasteret.datasets.list()``) brings its STAC API,
    collection and band map. Any other id is built from ``stac_api=``: its STAC
    collection is the part of the id after the last ``/`` (or ``collection=``) and
    every GeoTIFF asset becomes a band. Either way the :class:`~rasteret.CloudConfig`
    registered under the id or under the STAC collection id sets the URL rewrites and
    the backend of the build and of every read of the collection.

    Building a name that exists loads it unless ``force=True``.

    Args:
        dataset_id: E.g. ``"earthsearch/sentinel-2-l2a"``, ``"pc/sentinel-2-l2a"`` or
            your own ``"my-org/my-collection"``.
        name: The collection's name in the workspace.
        bbox: ``(minx, miny, maxx, maxy)`` in degrees.
        date_range: ``(start, end)``, inclusive.
        backend: How to reach the stores; default: the registered CloudConfig's
            (region, requester pays, provider). An explicit backend always wins.
        query: STAC property filters (merged over the dataset's default query).
        bands: Restrict to these band codes of the dataset's band map (for an id
            not in the catalog: these asset keys).
        stac_api: Override the dataset's STAC API (a mirror, or a local test server);
            required for an id that is not in the catalog.
        collection: Override the STAC collection id.
        workspace_dir: See :class:`~rasteret.ingest.BuildOptions`.
        force: See :class:`~rasteret.ingest.BuildOptions`.
        on_error: See :class:`~rasteret.ingest.BuildOptions`.
        max_concurrent: See :class:`~rasteret.ingest.BuildOptions`.
        progress: See :class:`~rasteret.ingest.BuildOptions`.
        executor: See :class:`~rasteret.ingest.BuildOptions`.
        batch_size: See :class:`~rasteret.ingest.BuildOptions`.
        valid_coverage: See :func:`build_from_stac`.

    Raises:
        ConfigurationError: The id is not registered and no ``stac_api`` is given, or
            a band is unknown.
    """
    stac_api, collection, band_map, default_query = _dataset_source(
        dataset_id, stac_api=stac_api, collection=collection, bands=bands)
    merged_query = {**default_query, **(query or {})} or None
    return build_from_stac(
        name=name, stac_api=stac_api, collection=collection, bbox=bbox,
        date_range=date_range, backend=backend, band_map=band_map, query=merged_query,
        workspace_dir=workspace_dir, force=force, on_error=on_error,
        max_concurrent=max_concurrent, progress=progress, dataset_id=dataset_id,
        executor=executor, batch_size=batch_size, valid_coverage=valid_coverage,
    )


def _dataset_source(
    dataset_id: str, *, stac_api: str | None, collection: str | None,
    bands: Sequence[str] | None,
) -> tuple[str, str, BandMap | None, Mapping[str, Any]]:
    """The STAC API, collection, band map and default query of ``dataset_id`` (see
    :func:`build`), overridden by the arguments given.

    Raises:
        ConfigurationError: The id is not registered and no ``stac_api`` is given, or
            a band is unknown.
    """
    info = find_dataset(dataset_id)
    band_map: dict[str, BandTarget | Mapping[str, BandTarget]] | None
    if info is not None:
        band_map = dict(info.band_map)
        default_query: Mapping[str, Any] = info.query or {}
        stac_api = stac_api or info.stac_api
        collection = collection or info.collection
    elif stac_api is None:
        raise ConfigurationError(
            f"unknown dataset {dataset_id!r}: register it with rasteret.datasets.register("
            f"id={dataset_id!r}, stac_api=..., collection=..., band_map=...), or pass "
            f"stac_api= (the STAC collection is then {dataset_id.rsplit('/', 1)[-1]!r}, or "
            f"collection=); registered datasets: {[d.id for d in list_datasets()]}"
        )
    else:
        band_map = None
        default_query = {}
        collection = collection or dataset_id.rsplit("/", 1)[-1]
    if bands is not None and band_map is not None:
        unknown = [b for b in bands if b not in band_map]
        if unknown:
            raise ConfigurationError(
                f"unknown band(s) {unknown} for {dataset_id}; its bands: {sorted(band_map)}"
            )
        band_map = {b: band_map[b] for b in bands}
    elif bands is not None:
        band_map = {b: b for b in bands}
    return stac_api, collection, band_map, default_query


def _as_arrow(table: Any) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    if isinstance(table, (str, os.PathLike)):
        return pq.read_table(Path(table))
    if hasattr(table, "to_wkb") or type(table).__name__ == "GeoDataFrame":
        frame = table.copy()
        frame[frame.geometry.name] = frame.geometry.to_wkb()
        return pa.Table.from_pandas(frame, preserve_index=False)
    if hasattr(table, "columns") and hasattr(table, "to_dict"):  # pandas
        return pa.Table.from_pandas(table, preserve_index=False)
    raise ConfigurationError(
        f"build_from_table takes a pyarrow Table, a Parquet path or a pandas/GeoPandas "
        f"DataFrame, not {type(table).__name__}"
    )


def _geometry_of(value: Any) -> dict[str, Any] | None:
    import shapely
    from shapely.geometry import mapping

    if value is None:
        return None
    if isinstance(value, dict):
        return value
    if isinstance(value, (bytes, bytearray)):
        value = shapely.from_wkb(bytes(value))
    elif isinstance(value, str):
        value = shapely.from_wkt(value)
    geojson: dict[str, Any] = mapping(value)
    return geojson


def build_from_table(
    table: Any,
    *,
    name: str,
    href_columns: Mapping[str, str] | Sequence[str] | None = None,
    assets_column: str | None = None,
    band_map: BandMap | None = None,
    id_column: str = "id",
    datetime_column: str | None = "datetime",
    geometry_column: str | None = "geometry",
    backend: Backend | None = None,
    workspace_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    on_error: OnError = "raise",
    max_concurrent: int = DEFAULT_MAX_CONCURRENT,
    progress: bool = True,
    stats: FetchStats | None = None,
    executor: Executor | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    valid_coverage: ValidCoverage | None = "geometry",
) -> Collection:
    """Build a collection from a table of hrefs.

    Args:
        table: A pyarrow Table, a Parquet/GeoParquet path, or a pandas/GeoPandas
            DataFrame; one row per scene.
        name: The collection's name in the workspace.
        href_columns: Band name -> column holding that band's href (a list means the
            column names are the band names).
        assets_column: Alternatively, a column of STAC-like assets
            (``{key: {"href": ...}}`` or ``{key: href}``), mapped by ``band_map``.
        band_map: Band -> asset key (or ``(key, band index)``) for ``assets_column``.
        id_column: Scene ids (default ``id``; row numbers when absent).
        datetime_column: Acquisition times (optional).
        geometry_column: Footprints in degrees as WKB, WKT, GeoJSON or shapely
            (optional: without it, footprints come from the headers).
        backend, workspace_dir, force, on_error, max_concurrent, progress, stats,
        executor, batch_size, valid_coverage: See :func:`build_from_stac` (the rows
            are turned into tasks a record batch at a time).
    """
    arrow = _as_arrow(table)
    columns = set(arrow.column_names)
    if href_columns is None and assets_column is None:
        raise ConfigurationError("pass href_columns={band: column} or assets_column=")
    # A list names columns that are named after their bands.
    band_columns: Mapping[str, str] = (
        href_columns if isinstance(href_columns, Mapping)
        else {c: c for c in href_columns or ()}
    )
    for column in band_columns.values():
        if column not in columns:
            raise ConfigurationError(f"no column {column!r}; columns are {sorted(columns)}")
    if assets_column is not None and assets_column not in columns:
        raise ConfigurationError(f"no column {assets_column!r}; columns are {sorted(columns)}")
    used = {id_column, datetime_column, geometry_column, assets_column,
            *band_columns.values()}

    def rows() -> Iterator[dict[str, Any]]:
        # A thousand rows at a time as Python dicts: the driver streams the table
        # into tasks, so its memory does not grow with the table's length.
        for batch in arrow.to_batches(max_chunksize=1000):
            yield from batch.to_pylist()

    records = (
        _table_record(index, row, columns=columns, band_columns=band_columns,
                      assets_column=assets_column, band_map=band_map, id_column=id_column,
                      datetime_column=datetime_column, geometry_column=geometry_column,
                      used=used)
        for index, row in enumerate(rows()))
    manifest = {"dataset_id": None, "source": {"kind": "table", "rows": arrow.num_rows}}
    return build_collection(records, manifest=manifest, options=BuildOptions(
        name=name, backend=backend, workspace_dir=workspace_dir, force=force,
        on_error=on_error, max_concurrent=max_concurrent, progress=progress, stats=stats,
        executor=executor, batch_size=batch_size, valid_coverage=valid_coverage))


def _table_record(
    index: int,
    row: dict[str, Any],
    *,
    columns: set[str],
    band_columns: Mapping[str, str],
    assets_column: str | None,
    band_map: BandMap | None,
    id_column: str,
    datetime_column: str | None,
    geometry_column: str | None,
    used: set[str | None],
) -> SceneRecord:
    """The scene of row ``index`` of a table given to :func:`build_from_table`."""
    bands: dict[str, BandSource | None] = {}
    for band, column in band_columns.items():
        href = row[column]
        bands[band] = BandSource(unsigned(str(href))) if href else None
    if assets_column is not None:
        assets = row[assets_column] or {}
        if isinstance(assets, list):  # map<string, ...> arrives as key/value pairs
            assets = dict(assets)
        item = {"id": "_", "properties": {}, "assets": {
            k: (v if isinstance(v, dict) else {"href": v, "type": "image/tiff"})
            for k, v in assets.items()}}
        bands.update(item_to_record(item, band_map=band_map).bands)
    geometry = _geometry_of(row.get(geometry_column)) if geometry_column else None
    properties = {k: v for k, v in row.items() if k not in used}
    return SceneRecord(
        id=str(row.get(id_column, index) if id_column in columns else index),
        datetime=parse_datetime(row.get(datetime_column)) if datetime_column else None,
        geometry=geometry,
        bbox=None,
        collection=None,
        properties=properties,
        bands=bands,
    )
