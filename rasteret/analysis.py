"""Pixels for analysis: areas over time as NumPy or xarray, rows per scene, points.

These functions are the collection's analysis methods (``Collection.get_numpy``,
``get_xarray``, ``get_gdf``, ``sample_points`` delegate here): they sit above
:mod:`rasteret.collection` and use its band views and :mod:`rasteret.read` (grids,
windows, warping).

Every read uses the collection's stored headers (no header request) and keeps the
tiles of all scenes of a request in flight at once, within a fixed budget of
compressed bytes; each tile is decoded straight into its scene's slice of the result
(memory: the output plus a fixed working set). Scenes in one CRS come back on
their native grid (equal to rasterio's windowed reads); a request spanning several
CRS is reprojected to one grid: the most common CRS among the scenes that cover the
geometry, at the native resolution of its first scene, unless ``target_crs`` /
``resolution`` say otherwise.
"""

from __future__ import annotations

import asyncio
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
import shapely.geometry
from affine import Affine
from pyproj import CRS

from rasteret.band import BandView, most_common_crs, native_resolution, native_view
from rasteret.collection import Collection
from rasteret.dates import DateRange
from rasteret.errors import ConfigurationError, NoCoverageError
from rasteret.io.backend import Backend
from rasteret.io.cloud_config import backend_for_collection
from rasteret.io.runtime import run_sync
from rasteret.options import (
    CRSLike,
    ReadOptions,
    Resolution,
    Values,
)
from rasteret.pixels import (
    CogOpener,
    SceneRead,
    fill_block,
    keep_slots,
    plan_pixels,
)
from rasteret.points import PointQuery, PointValues
from rasteret.points import sample_points as sample
from rasteret.progress import ProgressBar, grow, progress_bar
from rasteret.read.cache import ChunkCaches
from rasteret.read.warp import GridSpec, transformer
from rasteret.tiff.geo import nodata_for_dtype

if TYPE_CHECKING:
    import geopandas as gpd
    import xarray as xr



@dataclass
class AreaResult:
    """The pixels of one geometry: ``data`` is ``(time, band, y, x)``.

    Attributes:
        data: The pixels (a NumPy array; a dask array in a lazy read).
        grid: Their grid.
        rows: The collection row of each time step.
        bands: The band names.
        views: ``views[band][t]``: the view of each band of each scene in ``rows``.
        values: What the bands hold (stored, masked or scaled values).
        dtype: The stored values' dtype (the result type of every scene's band).
    """

    data: Any
    grid: GridSpec
    rows: list[int]
    bands: list[str]
    views: dict[str, list[BandView]]
    values: Values
    dtype: np.dtype


# -- inputs ---------------------------------------------------------------------------------
def to_geometries(geometries: Any, geometry_crs: CRSLike
                  ) -> tuple[list[shapely.Geometry], CRS]:
    """Normalise the accepted geometry inputs to shapely geometries and their CRS.

    Accepts a ``(minx, miny, maxx, maxy)`` tuple, a shapely geometry, a GeoJSON
    geometry/Feature/FeatureCollection dict, a GeoSeries/GeoDataFrame (its CRS wins),
    an Arrow array or column of WKB, or a list of any of these.
    """
    crs = CRS.from_user_input(geometry_crs)
    if hasattr(geometries, "geometry") and hasattr(geometries, "crs"):  # GeoDataFrame
        geometries = geometries.geometry
    if hasattr(geometries, "crs") and hasattr(geometries, "values"):  # GeoSeries
        if geometries.crs is not None:
            crs = CRS.from_user_input(geometries.crs)
        return list(geometries.values), crs
    if hasattr(geometries, "to_pylist"):  # pyarrow WKB array / chunked array
        return [shapely.from_wkb(v) for v in geometries.to_pylist()], crs
    if isinstance(geometries, shapely.Geometry):
        return [geometries], crs
    if isinstance(geometries, dict):
        if geometries.get("type") == "FeatureCollection":
            return [shapely.geometry.shape(f["geometry"]) for f in geometries["features"]], crs
        if geometries.get("type") == "Feature":
            return [shapely.geometry.shape(geometries["geometry"])], crs
        return [shapely.geometry.shape(geometries)], crs
    if (isinstance(geometries, (tuple, list)) and len(geometries) == 4
            and all(isinstance(v, (int, float)) for v in geometries)):
        return [shapely.box(*geometries)], crs
    if isinstance(geometries, (list, tuple)):
        out: list[shapely.Geometry] = []
        for item in geometries:
            out.extend(to_geometries(item, crs)[0])
        return out, crs
    raise ConfigurationError(
        f"cannot read geometries from {type(geometries).__name__}: pass a bbox tuple, shapely "
        "geometries, GeoJSON, a GeoSeries/GeoDataFrame or an Arrow WKB column"
    )


def _check_degrees(geometry: shapely.Geometry, crs: CRS, collection: Collection) -> None:
    if not crs.is_geographic:
        return
    minx, miny, maxx, maxy = geometry.bounds
    if min(minx, miny) < -180 or maxx > 360 or maxy > 90 or miny < -90:
        # Projected coordinates are most likely in the collection's own CRS.
        codes = ([c for c in collection.column("proj:epsg").to_pylist() if c is not None]
                 if "proj:epsg" in collection.column_names else [])
        example = (f"geometry_crs={Counter(codes).most_common(1)[0][0]} (the collection's "
                   "CRS)" if codes else "geometry_crs=<the EPSG code of your coordinates>")
        raise ConfigurationError(
            f"coordinates {geometry.bounds} look projected but geometry_crs is {crs.name} "
            f"(degrees): pass geometry_crs= the geometry's CRS, e.g. {example}"
        )


def reproject_geometry(geometry: shapely.Geometry, source: CRS, target: CRS, *,
                       densify: bool = True) -> shapely.Geometry:
    """``geometry`` from ``source`` to ``target`` (edges densified first, so a box
    stays a faithful outline after a curved projection)."""
    if source is target or source.equals(target):
        return geometry
    if densify:
        geometry = shapely.segmentize(geometry, _segment(geometry))
    return shapely.transform(geometry, transformer(source, target).transform, interleaved=False)


def _check_collection(collection: Collection) -> None:
    if not len(collection):
        source = collection.manifest.get("source")
        raise NoCoverageError(
            f"collection {collection.name!r} is empty (built from {source}); rebuild it with "
            "a wider bbox or date range"
        )


# -- grids ----------------------------------------------------------------------------------
def scene_views(collection: Collection, rows: list[int], band: str) -> list[BandView]:
    """The views of ``band`` in ``rows``, refusing a scene where it was not indexed."""
    views = collection.band_views(band, rows)
    for row, view in zip(rows, views):
        if view is None:
            collection.band_view(row, band)  # raises, naming the scene and the band
    return [v for v in views if v is not None]


def choose_grid(
    views: Sequence[BandView],
    geometry: shapely.Geometry,
    geometry_crs: CRS,
    *,
    target_crs: CRSLike | None = None,
    resolution: Resolution | None = None,
) -> GridSpec:
    """The output grid for ``geometry`` over the scenes of ``views``: native when
    possible, snapped to the pixel grid of the first scene in the chosen CRS (the most
    common CRS of the views unless ``target_crs`` is given)."""
    crs = CRS.from_user_input(target_crs) if target_crs is not None else most_common_crs(views)
    reference = native_view(views, crs)
    # Snap to the first native scene's pixel grid so its pixels are read unresampled.
    origin = ((reference.transform.c, reference.transform.f)
              if reference is not None and reference.transform is not None else (0.0, 0.0))
    if resolution is not None:
        xres, yres = (resolution, resolution) if isinstance(resolution, (int, float)) \
            else resolution
    else:
        xres, yres = native_resolution(views, crs)
    shape = reproject_geometry(geometry, geometry_crs, crs)
    minx, miny, maxx, maxy = shape.bounds
    ox, oy = origin
    left = ox + math.floor(round((minx - ox) / xres, 6)) * xres
    right = ox + math.ceil(round((maxx - ox) / xres, 6)) * xres
    top = oy + math.ceil(round((maxy - oy) / yres, 6)) * yres
    bottom = oy + math.floor(round((miny - oy) / yres, 6)) * yres
    width = max(1, round((right - left) / xres))
    height = max(1, round((top - bottom) / yres))
    return GridSpec(crs, Affine(xres, 0.0, left, 0.0, -yres, top), width, height)


def _segment(geometry: shapely.Geometry) -> float:
    minx, miny, maxx, maxy = geometry.bounds
    return float(max(maxx - minx, maxy - miny, 1e-9)) / 20


def covering_rows(collection: Collection, geometry: shapely.Geometry, crs: CRS,
                  date_range: DateRange | None = None) -> list[int]:
    """Rows (oldest first) whose footprint bbox meets ``geometry`` (shared by the eager
    and the lazy reads).

    Raises:
        ConfigurationError: ``geometry`` is not in ``crs`` (degrees out of range).
        NoCoverageError: No scene covers ``geometry``.
    """
    _check_degrees(geometry, crs, collection)
    degrees = reproject_geometry(geometry, crs, CRS.from_epsg(4326), densify=False)
    rows = collection.rows_where(bbox=degrees.bounds, date_range=date_range).tolist()
    if not rows:
        raise NoCoverageError(
            f"no scene of collection {collection.name!r} covers {geometry.bounds} "
            f"({crs.name}); its scenes cover {collection.bounds} in degrees"
        )
    times = collection.column("datetime").to_pylist()
    return sorted(rows, key=lambda r: (times[r] is None, times[r]))


# -- reading --------------------------------------------------------------------------------
async def _read_area(
    collection: Collection, geometry: shapely.Geometry, crs: CRS, bands: list[str], *,
    backend: Backend, options: ReadOptions, bar: ProgressBar | None = None,
) -> AreaResult:
    rows = covering_rows(collection, geometry, crs, options.date_range)
    if bar is not None:
        grow(bar, len(rows))
    views = {b: scene_views(collection, rows, b) for b in bands}
    grid = choose_grid(views[bands[0]], geometry, crs, target_crs=options.target_crs,
                       resolution=options.resolution)
    # No tile memory: each tile of a scene is read once; the caches only let reads
    # of one file (bands of a multi-band COG) share its requests and decodes.
    opener = CogOpener(backend, ChunkCaches(memory_bytes=0, whole_chunks=False),
                       validate=options.validate)
    clip = (reproject_geometry(geometry, crs, grid.crs)
            if options.clip and not isinstance(geometry, shapely.Point) else None)
    scenes = [SceneRead.of([views[b][t] for b in bands]) for t in range(len(rows))]
    plan = plan_pixels(grid, bands, [[scene] for scene in scenes], values=options.values,
                       clip=clip, resampling=options.resampling, on_error=options.on_error)
    # Every scene and band decodes straight into its slice of the result: no per-scene
    # arrays, no stacking copy.
    data = np.empty(plan.shape, plan.out_dtype)
    outcome = await fill_block(plan, data, opener,
                               on_slot=None if bar is None else lambda: bar.update(1))
    if outcome.empty:
        skipped = sorted(outcome.skipped, key=lambda pair: pair[0].row)
        warnings.warn(f"skipped {len(outcome.empty)} scene(s) that failed to read: "
                      f"{[scene.scene_id for scene, _ in skipped]} ({skipped[0][1]})",
                      stacklevel=3)
        empty = set(outcome.empty)
        keep = [t for t in range(len(rows)) if t not in empty]
        if not keep:
            raise NoCoverageError(f"every scene covering {geometry.bounds} failed to read")
        data = keep_slots(data, keep)
        rows = [rows[k] for k in keep]
        views = {b: [views[b][k] for k in keep] for b in bands}
    return AreaResult(data, grid, rows, bands, views, options.values, plan.dtype)


def prepare_read(collection: Collection, geometries: Any, bands: Sequence[str], *,
                 geometry_crs: CRSLike, backend: Backend | None,
                 ) -> tuple[list[str], list[shapely.Geometry], CRS, Backend]:
    """Check a read's arguments and resolve them (shared with :mod:`rasteret.lazy`).

    Returns:
        The bands, the geometries and their CRS, and the backend of the collection.

    Raises:
        ConfigurationError: An unknown band or bad geometries.
        NoCoverageError: The collection is empty.
    """
    _check_collection(collection)
    checked = collection.check_bands(list(bands))
    shapes, crs = to_geometries(geometries, geometry_crs)
    return checked, shapes, crs, backend_for_collection(collection, backend)


def read_areas(collection: Collection, geometries: Any, bands: Sequence[str],
               options: ReadOptions, *, geometry_crs: CRSLike = 4326,
               backend: Backend | None = None, progress: bool = True,
               ) -> tuple[list[AreaResult], list[shapely.Geometry], CRS]:
    """Read every geometry in one concurrent pass (shared by the public functions),
    counting the scenes read on a bar that shows once the read has taken
    :data:`rasteret.progress.DELAY` seconds."""
    bands, shapes, crs, resolved = prepare_read(collection, geometries, bands,
                                                geometry_crs=geometry_crs, backend=backend)
    # Each geometry adds its covering scenes to the total.
    bar = progress_bar(total=0, desc=f"Reading {collection.name}", unit="scene",
                       progress=progress, delayed=True)

    async def read_all() -> list[AreaResult]:
        return list(await asyncio.gather(*(
            _read_area(collection, g, crs, bands, backend=resolved, options=options, bar=bar)
            for g in shapes
        )))

    try:
        return run_sync(read_all()), shapes, crs
    finally:
        bar.close()


def single_geometry(geometries: Any) -> bool:
    """Whether ``geometries`` is one geometry (a bbox, a shapely geometry or GeoJSON
    geometry/Feature), whose read returns one result rather than a list."""
    if isinstance(geometries, (shapely.Geometry, dict)):
        return not (isinstance(geometries, dict) and geometries.get("type") == "FeatureCollection")
    return (isinstance(geometries, (tuple, list)) and len(geometries) == 4
            and all(isinstance(v, (int, float)) for v in geometries))


# -- public functions -----------------------------------------------------------------------
def get_numpy(collection: Collection, geometries: Any, bands: Sequence[str],
              options: ReadOptions | None = None, *, geometry_crs: CRSLike = 4326,
              backend: Backend | None = None, progress: bool = True,
              ) -> np.ndarray | list[np.ndarray]:
    """Pixels of ``bands`` over ``geometries`` as ``(time, band, y, x)`` arrays.

    Args:
        collection: The collection to read.
        geometries: A bbox tuple, shapely geometries, GeoJSON, a GeoSeries/GeoDataFrame
            or an Arrow WKB column.
        bands: Band names in output order.
        options: How tiles become pixels (:class:`~rasteret.options.ReadOptions`:
            target CRS, resolution, resampling, scaling, NaN masking, clipping to the
            geometry, dates, errors, validation).
        geometry_crs: CRS of the geometries (default EPSG:4326; a GeoSeries' own CRS
            wins).
        backend: How to reach the stores (default: the dataset's CloudConfig).
        progress: Show a bar of the scenes read, once the read has taken a few
            seconds (``False`` or ``RASTERET_PROGRESS=0`` hides it; see
            :mod:`rasteret.progress`).

    Returns:
        One array for a single geometry (bbox, shapely geometry or GeoJSON geometry),
        else a list of arrays; time ascending.

    Raises:
        ConfigurationError: Unknown band (the message lists the available ones), or
            projected-looking coordinates with a geographic ``geometry_crs``.
        NoCoverageError: No scene covers a geometry, or the collection is empty.
        ObjectChangedError: An object was replaced after the build (with
            ``on_error="raise"``); the message says how to rebuild.
    """
    results, _, _ = read_areas(collection, geometries, bands, options or ReadOptions(),
                               geometry_crs=geometry_crs, backend=backend, progress=progress)
    arrays = [r.data for r in results]
    return arrays[0] if single_geometry(geometries) else arrays


def _coords(grid: GridSpec) -> tuple[np.ndarray, np.ndarray]:
    t = grid.transform
    return (t.c + (np.arange(grid.width) + 0.5) * t.a,
            t.f + (np.arange(grid.height) + 0.5) * t.e)


def _same_nan(value: Any) -> Any:
    return math.nan if isinstance(value, float) and math.isnan(value) else value


def area_dataset(collection: Collection, result: AreaResult, variables: dict[str, Any]
                 ) -> xr.Dataset:
    """The ``xarray.Dataset`` of one area: ``variables`` (one ``(time, y, x)`` array per
    band: NumPy, or dask in a lazy read) with the coordinates, attributes and CF grid
    mapping of ``result`` (the eager and the lazy reads share it).

    A band's ``nodata``/``_FillValue`` (stored values) and ``scale_factor``/
    ``add_offset`` (unscaled values) are set when its scenes agree on them: CF
    attributes hold one value per variable.
    """
    import pandas as pd
    import xarray as xr

    xs, ys = _coords(result.grid)
    times = pd.to_datetime(
        [collection.column("datetime")[r].as_py() for r in result.rows], utc=True
    ).tz_convert(None)
    t = result.grid.transform
    spatial_ref = xr.DataArray(0, attrs={
        **result.grid.crs.to_cf(),
        "crs_wkt": result.grid.crs.to_wkt(),
        "spatial_ref": result.grid.crs.to_wkt(),
        "GeoTransform": " ".join(str(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e)),
    })
    arrays: dict[str, xr.DataArray] = {}
    for band in result.bands:
        attrs: dict[str, Any] = {"grid_mapping": "spatial_ref"}
        views = result.views[band]
        # NaN as one object, so scenes that all use NaN agree.
        nodata = {_same_nan(nodata_for_dtype(v.nodata, result.dtype).item()) for v in views}
        if result.values == "stored" and len(nodata) == 1:
            attrs["nodata"] = attrs["_FillValue"] = nodata.pop()
        pairs = {(v.scale, v.offset) for v in views}
        if result.values != "scaled" and len(pairs) == 1:
            attrs["scale_factor"], attrs["add_offset"] = pairs.pop()
        arrays[band] = xr.DataArray(variables[band], dims=("time", "y", "x"), attrs=attrs)
    dataset = xr.Dataset(arrays, coords={"time": times, "y": ys, "x": xs,
                                         "spatial_ref": spatial_ref})
    dataset["id"] = ("time", [collection.column("id")[r].as_py() for r in result.rows])
    dataset.attrs["crs"] = f"EPSG:{result.grid.crs.to_epsg()}"
    return dataset


def get_xarray(collection: Collection, geometries: Any, bands: Sequence[str],
               options: ReadOptions | None = None, *, geometry_crs: CRSLike = 4326,
               backend: Backend | None = None, progress: bool = True,
               ) -> xr.Dataset | list[xr.Dataset]:
    """Pixels as an ``xarray.Dataset``: one variable per band, dims ``(time, y, x)``,
    pixel-centre ``x``/``y`` coordinates, a CF ``spatial_ref`` grid mapping (WKT and
    GeoTransform, as rioxarray and odc read it), nodata and scale/offset attributes.

    Args:
        collection: The collection to read.
        geometries: As for :func:`get_numpy`.
        bands: Band names.
        options, geometry_crs, backend, progress: As for :func:`get_numpy`.

    Returns:
        A Dataset for one geometry, else a list of Datasets.
    """
    results, _, _ = read_areas(collection, geometries, bands, options or ReadOptions(),
                               geometry_crs=geometry_crs, backend=backend, progress=progress)
    datasets = [area_dataset(collection, r, {b: r.data[:, i] for i, b in enumerate(r.bands)})
                for r in results]
    return datasets[0] if single_geometry(geometries) else datasets


def get_gdf(collection: Collection, geometries: Any, bands: Sequence[str],
            options: ReadOptions | None = None, *, geometry_crs: CRSLike = 4326,
            backend: Backend | None = None, progress: bool = True) -> gpd.GeoDataFrame:
    """One row per scene x geometry with its arrays and transform.

    Columns: the user's columns (when ``geometries`` is a GeoDataFrame), ``geometry``,
    ``geometry_index``, ``id``, ``datetime``, ``crs``, ``transform`` (6 numbers) and one
    column per band holding a 2-D array (float32 with ``apply_scale`` or ``masked``).
    The arguments are as for :func:`get_numpy`.
    """
    import geopandas as gpd
    import pandas as pd

    results, shapes, crs = read_areas(collection, geometries, bands,
                                      options or ReadOptions(), geometry_crs=geometry_crs,
                                      backend=backend, progress=progress)
    user = geometries.drop(columns=geometries.geometry.name) \
        if isinstance(geometries, gpd.GeoDataFrame) else None
    records = []
    for index, (result, shape) in enumerate(zip(results, shapes)):
        for t, row in enumerate(result.rows):
            entry: dict[str, Any] = {} if user is None else dict(user.iloc[index])
            entry.update({
                "geometry_index": index,
                "id": collection.column("id")[row].as_py(),
                "datetime": collection.column("datetime")[row].as_py(),
                "crs": f"EPSG:{result.grid.crs.to_epsg()}",
                "transform": list(result.grid.transform)[:6],
                "geometry": shape,
            })
            for b, band in enumerate(result.bands):
                entry[band] = result.data[t, b]
            records.append(entry)
    frame = pd.DataFrame.from_records(records)
    return gpd.GeoDataFrame(frame, geometry="geometry", crs=crs)


def sample_points(collection: Collection, points: Any, bands: Sequence[str],
                  options: ReadOptions | None = None, query: PointQuery | None = None, *,
                  dates: Any = None, backend: Backend | None = None, progress: bool = True,
                  ) -> PointValues:
    """Values of ``bands`` at ``points``: the pixel containing each point, in each
    matched scene's own grid (like rasterio's ``sample``), optionally the nearest valid
    pixel around it or the window around it. Each distinct tile is fetched once.

    Args:
        collection: The collection.
        points: A GeoDataFrame, a pandas DataFrame or an Arrow table (coordinates in
            ``xy_columns``, else a ``geometry`` column of shapely points or WKB), a
            dask DataFrame of those (sampled partition by partition, see Returns),
            shapely points, ``(x, y)`` pairs or GeoJSON.
        bands: Band names.
        options: The read options points apply
            (:class:`~rasteret.options.ReadOptions`): ``apply_scale`` and ``masked``
            (float32 values, NaN for nodata), ``date_range``, ``on_error``
            (``"skip"`` drops the rows of scenes that fail to read, with a warning)
            and ``validate``. Points are read on each scene's own grid, so
            ``target_crs``, ``resolution`` and ``resampling`` are refused, and there
            is no polygon to ``clip`` to.
        query: Which scenes and pixels each point takes (:class:`PointQuery`):

            - ``geometry_crs``: CRS of the points (default EPSG:4326; a
              GeoDataFrame's own CRS wins).
            - ``match``: ``"all"`` (default; one row per point and covering scene),
              ``"latest"`` (the newest; with point dates, the newest at or before the
              point's date), or ``"nearest"`` (the scene closest in time to the
              point's date; needs dates).
            - ``date_column``: The column of ``points`` holding each point's date.
            - ``max_days``: With point dates, only scenes at most this many days from
              the point's date.
            - ``quality_band``: A band whose classes mark pixels invalid (e.g.
              Sentinel-2 ``"SCL"``), with ``invalid_values``, those classes (e.g.
              ``(3, 8, 9, 10)``: cloud shadow, cloud medium and high probability,
              cirrus).
            - ``max_distance_pixels``: When the point's pixel is invalid (nodata in a
              requested band, or an ``invalid_values`` class), take the nearest valid
              pixel within this Euclidean distance in pixels (ties: the upper row
              first, then the left column). 0 (default) takes the point's own pixel.
            - ``neighbourhood``: An odd ``k``: return the ``k`` x ``k`` window centred
              on the point's pixel (a 2-D array per band and row; a fixed-size list of
              lists in Arrow). Pixels outside the image hold the nodata value.
            - ``xy_columns``: The coordinate columns of a DataFrame or Arrow table.
        dates: Per-point timestamps (a sequence as long as the points), instead of
            ``date_column``.
        backend: How to reach the stores (default: the dataset's CloudConfig).
        progress: Show a bar of the tiles read, once sampling has taken a few seconds
            (``False`` or ``RASTERET_PROGRESS=0`` hides it; a dask DataFrame's
            partitions show none: watch them with Dask's own diagnostics).

    Returns:
        The points' own kind (:data:`~rasteret.points.PointValues`): an Arrow table,
        GeoDataFrame or pandas DataFrame with every input column (rows repeated per
        matched scene), then ``point_index`` (the point's position in the input),
        ``id`` and ``datetime`` of the scene, ``distance_pixels`` (to the pixel
        sampled; NaN when no valid pixel was found within ``max_distance_pixels``, the
        point's own pixel is then returned), ``distance_days`` (absolute, NaN without
        point dates) and one column per band. Other inputs give a pandas DataFrame.
        Points no scene covers (within ``max_days``) have no row. A dask DataFrame
        gives a lazy dask DataFrame with the same columns (rows ordered by position,
        not by input order; its ``point_index`` is each row's integer index label,
        the position in the input for a frame made by
        ``dask.dataframe.from_pandas`` with a default index).

    Raises:
        ConfigurationError: Unknown band or option, points that are not points, or
            ``match="nearest"`` without dates.
        NoCoverageError: No scene covers any point, the collection is empty, or every
            covering scene failed to read (``on_error="skip"``).
        ObjectChangedError: An object was replaced after the build.
    """
    return sample(collection, points, bands, options, query, dates=dates, backend=backend,
                  progress=progress)
