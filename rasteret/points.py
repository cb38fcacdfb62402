"""Values at points: time matching, valid-pixel search, neighbourhoods, Dask partitions.

:func:`sample_points` is the work behind ``Collection.sample_points`` and
:func:`rasteret.analysis.sample_points`. It is vectorised over points: each point is
matched to its scenes (all, the latest, or the nearest in time to the point's own
date), every pixel a point needs (its own, the pixels searched around it for a valid
one, its neighbourhood) is mapped to the tile holding it, and each distinct tile is
fetched once and decoded once (one request per tile touched), all tiles of all scenes
in flight at once. A dask DataFrame of points is sorted by a space-filling-curve key,
so each partition covers a compact area and touches few tiles, and every partition is
sampled in its task with the process's own store.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

import numpy as np
import pyarrow as pa
import shapely
import shapely.geometry
from pyproj import CRS

from rasteret.band import BandView
from rasteret.collection import Collection
from rasteret.dates import DateRange
from rasteret.errors import ConfigurationError, NoCoverageError
from rasteret.io.backend import Backend
from rasteret.io.cloud_config import backend_for_collection
from rasteret.io.runtime import run_sync
from rasteret.options import MATCH, Match, ReadOptions, check_option
from rasteret.pixels import Block, CogOpener, OpenCog, PixelPlan, SceneRead, fill_block, plan_pixels
from rasteret.progress import ProgressBar, grow, progress_bar
from rasteret.read.warp import transformer
from rasteret.tiff.geo import nodata_for_dtype

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pandas as pd

#: What sampling returns, in the points' own kind: an Arrow table for an Arrow table,
#: a GeoDataFrame for a GeoDataFrame (a pandas DataFrame subclass), a lazy dask
#: DataFrame for a dask DataFrame, else a pandas DataFrame.
PointValues: TypeAlias = "pa.Table | pd.DataFrame | dd.DataFrame"

#: The columns :func:`sample_points` adds before the band columns.
ADDED_COLUMNS = ("point_index", "id", "datetime", "distance_pixels", "distance_days")

#: Tiles fetched and decoded at once: bounds the memory of decoded tiles in flight.
_TILES_IN_FLIGHT = 256
_US_PER_DAY = 86_400 * 1_000_000
#: Bits per axis of the Morton key that orders points of a dask DataFrame.
_MORTON_BITS = 16


@dataclass(frozen=True)
class PointQuery:
    """Which scenes each point takes and which of its pixels: the settings of
    ``Collection.sample_points`` that are not read options (see
    :func:`rasteret.analysis.sample_points` for each one).

    Raises:
        ConfigurationError: An unknown ``match``, a search distance that is not a
            whole number of pixels, or a window side that is not odd.
    """

    geometry_crs: Any = 4326
    match: Match = "all"
    date_column: str | None = None
    max_days: float | None = None
    quality_band: str | None = None
    invalid_values: tuple[float, ...] | None = None
    max_distance_pixels: int = 0
    neighbourhood: int | None = None
    xy_columns: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        check_option("match", self.match, MATCH)
        _check_window(self.max_distance_pixels, self.neighbourhood)

    @property
    def radius(self) -> int:
        """Pixels read on each side of a point's own pixel."""
        return max(self.max_distance_pixels, (self.neighbourhood or 1) // 2)


@dataclass
class _Points:
    """The parsed input: coordinates in ``crs``, dates (us since the epoch, UTC) and
    the user's table in its own kind."""

    xs: np.ndarray
    ys: np.ndarray
    crs: CRS
    times: np.ndarray | None
    kind: Literal["arrow", "pandas", "geopandas", "plain"]
    frame: Any


# -- inputs ---------------------------------------------------------------------------------
def _apply(t: Any, xs: Any, ys: Any) -> tuple[np.ndarray, np.ndarray]:
    """An affine transform applied to coordinate arrays."""
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    return t.a * xs + t.b * ys + t.c, t.d * xs + t.e * ys + t.f


def _is_dask(points: Any) -> bool:
    return type(points).__module__.split(".")[0] in ("dask", "dask_geopandas", "dask_expr")


def _geometry_xy(values: Sequence[Any], where: str) -> tuple[np.ndarray, np.ndarray]:
    """x and y of shapely points or WKB values."""
    geoms = np.array([shapely.from_wkb(v) if isinstance(v, (bytes, bytearray, memoryview))
                      else v for v in values], dtype=object)
    if len(geoms) and not np.all(shapely.get_type_id(geoms) == 0):
        raise ConfigurationError(
            f"{where} holds geometries other than points: pass points (use .centroid or "
            ".representative_point() for polygons)")
    return shapely.get_x(geoms).astype(np.float64), shapely.get_y(geoms).astype(np.float64)


def _parse_times(values: Any, where: str) -> np.ndarray:
    """Timestamps (strings, datetimes, numpy or pandas values) as int64 microseconds
    since the epoch in UTC; naive values are UTC."""
    import pandas as pd

    try:
        stamps = pd.to_datetime(pd.Series(list(values) if not hasattr(values, "dtype")
                                          else values), utc=True)
    except (ValueError, TypeError) as error:
        raise ConfigurationError(f"{where} does not hold timestamps: {error}") from error
    if stamps.isna().any():
        raise ConfigurationError(f"{where} has missing dates: give every point a date")
    result: np.ndarray = stamps.dt.tz_convert(None).astype("datetime64[us]").to_numpy().astype(
        np.int64)
    return result


def _plain_points(points: Any) -> list[Any]:
    """Shapely points from a point, ``(x, y)`` pairs, GeoJSON or a list of these."""
    if isinstance(points, shapely.Geometry):
        return [points]
    if isinstance(points, dict):
        if points.get("type") == "FeatureCollection":
            return [shapely.geometry.shape(f["geometry"]) for f in points["features"]]
        if points.get("type") == "Feature":
            return [shapely.geometry.shape(points["geometry"])]
        return [shapely.geometry.shape(points)]
    if isinstance(points, (list, tuple)):
        if len(points) in (2, 3) and all(isinstance(v, (int, float)) for v in points):
            return [shapely.Point(*points)]
        out: list[Any] = []
        for item in points:
            out.extend(_plain_points(item))
        return out
    raise ConfigurationError(
        f"cannot read points from {type(points).__name__}: pass shapely points, (x, y) "
        "pairs, GeoJSON, a GeoDataFrame, a pandas DataFrame or an Arrow table (with "
        "xy_columns= or a 'geometry' column), or a dask DataFrame")


def _read_points(points: Any, geometry_crs: Any, xy_columns: tuple[str, str] | None,
                 date_column: str | None, dates: Any) -> _Points:
    """Normalise every accepted form of points (see :func:`sample_points`)."""
    import pandas as pd

    crs = CRS.from_user_input(geometry_crs)
    kind: Literal["arrow", "pandas", "geopandas", "plain"]
    columns: list[str] | None
    if isinstance(points, pa.Table):
        kind, frame, columns = "arrow", points, points.column_names
    elif isinstance(points, pd.DataFrame):
        is_geo = hasattr(points, "geometry") and hasattr(points, "crs") \
            and type(points).__name__ == "GeoDataFrame"
        kind, frame, columns = ("geopandas" if is_geo else "pandas"), points, list(points.columns)
    else:
        kind, frame, columns = "plain", None, None
    if kind == "plain":
        if hasattr(points, "crs") and hasattr(points, "values"):  # GeoSeries: its CRS wins
            if points.crs is not None:
                crs = CRS.from_user_input(points.crs)
            points = list(points.values)
        xs, ys = _geometry_xy(_plain_points(points), "points")
    elif xy_columns is not None:
        missing = [c for c in xy_columns if c not in (columns or [])]
        if missing:
            raise ConfigurationError(f"xy_columns {missing} are not columns of the points; "
                                     f"columns are {columns}")
        xs = np.asarray(frame[xy_columns[0]], dtype=np.float64)
        ys = np.asarray(frame[xy_columns[1]], dtype=np.float64)
    elif kind == "geopandas":
        if frame.crs is not None:
            crs = CRS.from_user_input(frame.crs)
        xs, ys = _geometry_xy(list(frame.geometry.values), "the GeoDataFrame's geometry")
    elif "geometry" in (columns or []):
        values = frame["geometry"].to_pylist() if kind == "arrow" else list(frame["geometry"])
        xs, ys = _geometry_xy(values, "the 'geometry' column")
    else:
        raise ConfigurationError(
            f"cannot find the points' coordinates in columns {columns}: pass "
            "xy_columns=('x', 'y') naming the coordinate columns, or a 'geometry' column "
            "of shapely points or WKB")
    if len(xs) and crs.is_geographic and (
            np.nanmin(xs) < -180 or np.nanmax(xs) > 360 or np.nanmin(ys) < -90
            or np.nanmax(ys) > 90):
        raise ConfigurationError(
            f"point coordinates look projected but geometry_crs is {crs.name} (degrees): pass "
            "geometry_crs= the points' CRS (an EPSG code such as the collection's)")
    times: np.ndarray | None = None
    if date_column is not None and dates is not None:
        raise ConfigurationError("pass date_column= or dates=, not both")
    if date_column is not None:
        if columns is None or date_column not in columns:
            raise ConfigurationError(
                f"date_column {date_column!r} is not a column of the points; columns are "
                f"{columns} (plain points take per-point timestamps through dates=)")
        column = frame[date_column]
        times = _parse_times(column.to_pandas() if kind == "arrow" else column,
                             f"date_column {date_column!r}")
    elif dates is not None:
        times = _parse_times(dates, "dates")
        if len(times) != len(xs):
            raise ConfigurationError(f"dates has {len(times)} values for {len(xs)} points")
    if columns is not None:
        clash = [c for c in ADDED_COLUMNS if c in columns]
        if clash:
            raise ConfigurationError(
                f"the points already have column(s) {clash}, which sample_points adds: "
                "rename them first")
    return _Points(xs, ys, crs, times, kind, frame)


# -- matching points to scenes --------------------------------------------------------------
def _candidate_rows(collection: Collection, date_range: DateRange | None) -> list[int]:
    """Rows within ``date_range``, oldest first (undated scenes last)."""
    rows = collection.rows_where(date_range=date_range).tolist()
    times = collection.column("datetime").to_pylist()
    return sorted(rows, key=lambda r: (times[r] is None, times[r], r))


def _pixels(view: BandView, points: _Points) -> tuple[np.ndarray, np.ndarray]:
    """``(col, row)`` of the full-resolution pixel holding each point in ``view``."""
    transform = view.grid.transform
    xs, ys = points.xs, points.ys
    if not points.crs.equals(view.crs):
        xs, ys = transformer(points.crs, view.crs).transform(xs, ys)
    cols, rows = _apply(~transform, xs, ys)
    return np.floor(cols).astype(np.int64), np.floor(rows).astype(np.int64)


def _match(points: _Points, covered: np.ndarray, scene_times: np.ndarray, match: Match,
           max_days: float | None) -> tuple[np.ndarray, np.ndarray]:
    """``(point, scene)`` index pairs (scenes are columns of ``covered``, oldest first),
    ordered by point, then time."""
    eligible = covered.copy()
    if points.times is not None:
        days = (scene_times[None, :] - points.times[:, None]) / _US_PER_DAY
        if max_days is not None:
            eligible &= np.abs(days) <= max_days
        if match == "latest":
            eligible &= days <= 0
    if match == "all":
        pairs = np.nonzero(eligible)
        return pairs[0], pairs[1]
    if match == "latest":  # the last eligible column: columns are oldest first
        last = eligible.shape[1] - 1 - np.argmax(eligible[:, ::-1], axis=1)
        keep = eligible.any(axis=1)
        return np.nonzero(keep)[0], last[keep]
    assert points.times is not None
    gap = np.where(eligible, np.abs(scene_times[None, :] - points.times[:, None]), np.inf)
    best = np.argmin(gap, axis=1)  # ties: the earlier scene
    keep = eligible.any(axis=1)
    return np.nonzero(keep)[0], best[keep]


# -- reading the pixels ---------------------------------------------------------------------
def _offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets of the ``(2r+1)²`` window, row-major."""
    d = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    return dy.ravel(), dx.ravel()


async def _gather(plan: PixelPlan, open_cog: OpenCog, cols: np.ndarray, rows: np.ndarray,
                  out: np.ndarray, limit: asyncio.Semaphore, bar: ProgressBar
                  ) -> Exception | None:
    """Fill ``out`` (same shape as ``cols``) with the pixels at ``(cols, rows)`` of the
    plan's one scene and band (on its own grid), reading each tile they touch once as
    a block of the plan (down to the last row needed); pixels outside the image keep
    ``out``'s fill. Returns the first error a tile met under ``on_error="skip"``."""
    view = plan.slots[0][0].bands[0].view
    tw, th = view.tile_width, view.tile_height
    inside = (cols >= 0) & (rows >= 0) & (cols < view.width) & (rows < view.height)
    across = -(-view.width // tw)
    flat = np.flatnonzero(inside)
    if not len(flat):
        return None
    c, r = cols.ravel()[flat], rows.ravel()[flat]
    keys = (r // th) * across + c // tw
    order = np.argsort(keys, kind="stable")
    keys, flat, c, r = keys[order], flat[order], c[order], r[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    target = out.reshape(-1)
    grow(bar, len(starts))

    async def tile(start: int, end: int) -> Exception | None:
        ty, tx = divmod(int(keys[start]), across)
        top, left = ty * th, tx * tw
        block = Block((0,), (0,), (top, int(r[start:end].max()) + 1),
                      (left, min(left + tw, view.width)))
        async with limit:  # bounds the decoded tiles held at once
            pixels = np.empty(block.shape, plan.out_dtype)
            outcome = await fill_block(plan, pixels, open_cog, block)
            target[flat[start:end]] = pixels[0, 0, r[start:end] - top, c[start:end] - left]
        bar.update(1)
        return outcome.skipped[0][1] if outcome.skipped else None

    errors = await asyncio.gather(*(tile(int(s), int(e)) for s, e in zip(starts, ends)))
    return next((error for error in errors if error is not None), None)


def _band_dtype(views: Sequence[BandView], kind: str = "stored") -> np.dtype:
    if kind != "stored":
        return np.dtype(np.float32)  # converted values: float32 with NaN, as every read
    return np.result_type(*(v.dtype for v in views)) if views \
        else np.dtype(np.float64)


def _invalid(values: np.ndarray, nodata: Any) -> np.ndarray:
    if values.dtype.kind == "f":
        bad: np.ndarray = np.isnan(values)
        return bad if nodata is None or np.isnan(nodata) else bad | (values == nodata)
    return values == nodata if nodata is not None else np.zeros(values.shape, bool)


# -- the public function --------------------------------------------------------------------
def sample_points(collection: Collection, points: Any, bands: Sequence[str],
                  options: ReadOptions | None = None, query: PointQuery | None = None, *,
                  dates: Any = None, backend: Backend | None = None, progress: bool = True,
                  ) -> PointValues:
    """Values of ``bands`` at ``points``: see :func:`rasteret.analysis.sample_points`,
    which documents every argument (this is its implementation).

    Raises:
        ConfigurationError: A read option points cannot apply (``target_crs``,
            ``resolution``, ``resampling``: each point is read on its scenes' own grid).
    """
    options, query = options or ReadOptions(), query or PointQuery()
    options.refuse("sample_points (points are read on each scene's own grid)",
                   ("target_crs", "resolution", "resampling"))
    if _is_dask(points):
        # Lazy: nothing is read here, and the partitions show no bars (Dask's own
        # diagnostics follow them).
        return _sample_dask(collection, points, bands, options, query, dates=dates,
                            backend=backend)
    return _sample(collection, points, bands, options, query, dates=dates, backend=backend,
                   progress=progress, allow_empty=False)


def _sample(collection: Collection, points: Any, bands: Sequence[str], options: ReadOptions,
            query: PointQuery, *, dates: Any, backend: Backend | None, progress: bool,
            allow_empty: bool) -> Any:
    """Sample one frame of points (the whole input, or one dask partition, which may
    come out empty)."""
    if not len(collection):
        raise NoCoverageError(
            f"collection {collection.name!r} is empty (built from "
            f"{collection.manifest.get('source')}); rebuild it with a wider bbox or date range")
    bands = _checked_bands(collection, bands, query.quality_band, query.invalid_values)
    parsed = _read_points(points, query.geometry_crs, query.xy_columns, query.date_column,
                          dates)
    if query.match == "nearest" and parsed.times is None:
        raise ConfigurationError(
            "match='nearest' needs the points' dates: pass date_column= (a column of the "
            "points) or dates= (one timestamp per point)")

    candidates = _candidate_rows(collection, options.date_range)
    reference = dict(zip(candidates, collection.band_views(bands[0], candidates)))
    candidates = [r for r in candidates if reference[r] is not None]
    scene_times = _scene_times(collection, candidates)
    covered, centre_cols, centre_rows = _coverage(candidates, reference, parsed)
    point_of, scene_of = _match(parsed, covered, scene_times, query.match, query.max_days)

    quality = query.quality_band
    read_bands = bands + ([quality] if quality is not None and quality not in bands else [])
    views = {b: dict(zip(candidates, collection.band_views(b, candidates))) for b in read_bands}
    # The quality band keeps its stored classes; the bands are what the options ask.
    kinds = {b: "stored" if b not in bands else options.values for b in read_bands}
    dtypes = {b: _band_dtype([v for v in views[b].values() if v is not None], kinds[b])
              for b in read_bands}
    dy, dx = _offsets(query.radius)
    values = {b: np.empty((len(point_of), len(dy)), dtypes[b]) for b in read_bands}
    nodata = {b: _fill_value(views[b].values(), dtypes[b], kinds[b]) for b in read_bands}
    if len(point_of):
        failed = _read_all(collection, candidates, views, reference, read_bands, point_of,
                           scene_of, centre_cols, centre_rows, dy, dx, values, nodata, kinds,
                           backend_for_collection(collection, backend), options, progress)
        point_of, scene_of, values = _without_failed(collection, candidates, failed, point_of,
                                                     scene_of, values)

    invalid = _nodata_pixels(values, bands, views, candidates, scene_of, dtypes, nodata,
                             kinds)
    if quality is not None:
        invalid |= np.isin(values[quality], np.asarray(query.invalid_values))
    chosen, distance_pixels = _nearest_valid(invalid, dy, dx, query.max_distance_pixels)
    distance_days = (np.abs(scene_times[scene_of] - parsed.times[point_of]) / _US_PER_DAY
                     if parsed.times is not None else np.full(len(point_of), np.nan))
    band_values = _band_values(values, bands, chosen, dy, dx, query.neighbourhood)
    if not len(point_of) and not allow_empty:
        raise NoCoverageError(
            f"no scene of collection {collection.name!r} covers the points"
            + (" within max_days" if query.max_days is not None else ""))
    rows_taken = pa.array([candidates[s] for s in scene_of], pa.int64())
    added = {
        "point_index": point_of.astype(np.int64),
        "id": collection.column("id").take(rows_taken),
        "datetime": collection.column("datetime").take(rows_taken),
        "distance_pixels": distance_pixels,
        "distance_days": distance_days,
    }
    return _output(parsed, point_of, added, band_values, bands, query.neighbourhood)


def _fill_value(views: Any, dtype: np.dtype, kind: str) -> Any:
    """What a band holds outside an image: NaN for converted values, else the first
    scene's nodata (or the dtype's own fill)."""
    if kind != "stored":
        return np.nan
    return nodata_for_dtype(next((v.nodata for v in views if v is not None), None), dtype)


def _without_failed(collection: Collection, candidates: list[int], failed: dict[int, Any],
                    point_of: np.ndarray, scene_of: np.ndarray,
                    values: dict[str, np.ndarray]
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Drop the rows of the scenes that failed to read (``on_error="skip"``), warning
    with their ids and the first error."""
    if not failed:
        return point_of, scene_of, values
    ids = collection.column("id")
    names = [ids[candidates[s]].as_py() for s in sorted(failed)]
    warnings.warn(f"skipped {len(failed)} scene(s) that failed to read: {names} "
                  f"({failed[min(failed)]})", stacklevel=4)
    keep = ~np.isin(scene_of, np.fromiter(failed, np.int64))
    if not keep.any():
        raise NoCoverageError(f"every scene of collection {collection.name!r} covering the "
                              f"points failed to read: {names}")
    return point_of[keep], scene_of[keep], {b: v[keep] for b, v in values.items()}


def _checked_bands(collection: Collection, bands: Sequence[str], quality_band: str | None,
                   invalid_values: Sequence[float] | None) -> list[str]:
    """``bands`` checked against the collection, with the quality band and its values.

    Raises:
        ConfigurationError: A band is unknown, or only one of ``quality_band`` and
            ``invalid_values`` is given.
    """
    checked = collection.check_bands(list(bands))
    if quality_band is not None:
        collection.check_bands([quality_band])
        if not invalid_values:
            raise ConfigurationError(
                f"quality_band={quality_band!r} needs invalid_values=, the classes to treat "
                "as invalid (e.g. Sentinel-2 SCL invalid_values=[3, 8, 9, 10])")
    elif invalid_values:
        raise ConfigurationError(
            "invalid_values= needs quality_band=, the band holding the classes")
    return checked


def _check_window(max_distance_pixels: Any, neighbourhood: Any) -> None:
    """Refuse a search distance or a window side that is not a pixel count.

    Raises:
        ConfigurationError: ``max_distance_pixels`` is not a whole number >= 0, or
            ``neighbourhood`` is not an odd number >= 1.
    """
    if not isinstance(max_distance_pixels, int) or max_distance_pixels < 0:
        raise ConfigurationError(
            f"max_distance_pixels must be a whole number of pixels >= 0; got "
            f"{max_distance_pixels!r}")
    if neighbourhood is not None and (not isinstance(neighbourhood, int) or neighbourhood < 1
                                      or neighbourhood % 2 == 0):
        raise ConfigurationError(
            f"neighbourhood must be an odd number of pixels (1, 3, 5...), the side of the "
            f"window centred on each point's pixel; got {neighbourhood!r}")


def _scene_times(collection: Collection, rows: list[int]) -> np.ndarray:
    """The scenes' times in microseconds (int64; far in the past where unknown)."""
    return np.array([
        np.datetime64(t.replace(tzinfo=None), "us").astype(np.int64) if t is not None
        else np.iinfo(np.int64).min // 2
        for t in collection.column("datetime").take(pa.array(rows, pa.int64())).to_pylist()
    ], dtype=np.int64)


def _coverage(candidates: list[int], reference: dict[int, BandView | None],
              parsed: _Points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per point and candidate scene: whether the scene covers it, and the column and
    row of its pixel there (``[points, scenes]`` each)."""
    n = len(parsed.xs)
    covered = np.zeros((n, len(candidates)), bool)
    centre_cols = np.zeros((n, len(candidates)), np.int64)
    centre_rows = np.zeros((n, len(candidates)), np.int64)
    for k, row in enumerate(candidates):
        view = reference[row]
        assert view is not None
        cols, lines = _pixels(view, parsed)
        centre_cols[:, k], centre_rows[:, k] = cols, lines
        covered[:, k] = (cols >= 0) & (lines >= 0) & (cols < view.width) & (lines < view.height)
    return covered, centre_cols, centre_rows


def _nearest_valid(invalid: np.ndarray, dy: np.ndarray, dx: np.ndarray,
                   max_distance_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per job, the window offset of the valid pixel nearest the centre (the centre
    where none is within ``max_distance_pixels``) and its distance (NaN: none)."""
    # Offsets in order of distance, then row, then column.
    distance = np.hypot(dy, dx)
    search = np.lexsort((dx, dy, distance))
    search = search[distance[search] <= max_distance_pixels]
    candidates_ok = ~invalid[:, search]
    found = candidates_ok.any(axis=1)
    chosen = np.where(found, search[np.argmax(candidates_ok, axis=1)], len(dy) // 2)
    return chosen, np.where(found, distance[chosen], np.nan)


def _nodata_pixels(values: dict[str, np.ndarray], bands: list[str],
                   views: dict[str, dict[int, BandView | None]], candidates: list[int],
                   scene_of: np.ndarray, dtypes: dict[str, np.dtype],
                   nodata: dict[str, Any], kinds: Mapping[str, str]) -> np.ndarray:
    """Per job and window offset, whether any band's pixel is its scene's own nodata
    (NaN, for values the read core converted)."""
    jobs, offsets = next(iter(values.values())).shape
    invalid = np.zeros((jobs, offsets), bool)
    for b in bands:
        if kinds[b] != "stored":
            invalid |= np.isnan(values[b])
            continue
        for s in np.unique(scene_of):
            view = views[b][candidates[int(s)]]
            own = nodata_for_dtype(view.nodata, dtypes[b]) if view is not None else nodata[b]
            rows_s = scene_of == s
            invalid[rows_s] |= _invalid(values[b][rows_s], own)
    return invalid


def _band_values(values: dict[str, np.ndarray], bands: list[str], chosen: np.ndarray,
                 dy: np.ndarray, dx: np.ndarray, neighbourhood: int | None
                 ) -> dict[str, np.ndarray]:
    """Each band's value at the chosen pixel of each job, or its window of
    ``neighbourhood`` pixels a side."""
    jobs = len(chosen)
    if neighbourhood is None:
        return {b: values[b][np.arange(jobs), chosen] for b in bands}
    half = neighbourhood // 2
    window = (np.abs(dy) <= half) & (np.abs(dx) <= half)
    return {b: values[b][:, window].reshape(jobs, neighbourhood, neighbourhood) for b in bands}


def _read_all(collection: Collection, candidates: list[int],
              views: dict[str, dict[int, BandView | None]],
              reference: dict[int, BandView | None], read_bands: list[str],
              point_of: np.ndarray, scene_of: np.ndarray, centre_cols: np.ndarray,
              centre_rows: np.ndarray, dy: np.ndarray, dx: np.ndarray,
              values: dict[str, np.ndarray], nodata: dict[str, Any], kinds: dict[str, Any],
              backend: Backend, options: ReadOptions, progress: bool) -> dict[int, Any]:
    """Read every pixel of every job's window, one request per distinct tile, counted
    on a bar that shows once the read has taken :data:`rasteret.progress.DELAY` s.

    Returns:
        The scenes (positions in ``candidates``) that failed to read under
        ``on_error="skip"``, with their first error.
    """
    limit: asyncio.Semaphore | None = None
    opener = CogOpener(backend, validate=options.validate)
    tasks = []
    for s in np.unique(scene_of):
        row = candidates[int(s)]
        ref = reference[row]
        assert ref is not None
        jobs = np.flatnonzero(scene_of == s)
        cols = centre_cols[point_of[jobs], s][:, None] + dx[None, :]
        lines = centre_rows[point_of[jobs], s][:, None] + dy[None, :]
        for b in read_bands:
            view = views[b][row]
            if view is None:
                collection.band_view(row, b)  # raises, naming the scene and the band
                continue
            out = np.full((len(jobs), len(dy)), nodata[b], values[b].dtype)
            c, r = cols, lines
            assert view.transform is not None and ref.transform is not None
            if view.transform != ref.transform or view.epsg != ref.epsg:
                # Another grid (e.g. a 20 m mask band beside 10 m bands): the pixel of
                # this band holding each window pixel's centre.
                x, y = _apply(ref.transform, cols + 0.5, lines + 0.5)
                if view.epsg != ref.epsg:
                    x, y = transformer(ref.crs, view.crs).transform(x, y)
                fc, fr = _apply(~view.transform, x, y)
                c, r = np.floor(fc).astype(np.int64), np.floor(fr).astype(np.int64)
            plan = plan_pixels(view.grid, [b], [[SceneRead.of([view])]], values=kinds[b],
                               on_error=options.on_error)
            tasks.append((plan, c, r, out, b, jobs, int(s)))

    # Each scene and band adds its distinct tiles to the total.
    bar = progress_bar(total=0, desc=f"Sampling {collection.name}", unit="tile",
                       progress=progress, delayed=True)

    async def run() -> list[Exception | None]:
        nonlocal limit
        limit = asyncio.Semaphore(_TILES_IN_FLIGHT)
        return list(await asyncio.gather(*(_gather(plan, opener, c, r, out, limit, bar)
                                           for plan, c, r, out, _, _, _ in tasks)))

    try:
        errors = run_sync(run())
    finally:
        bar.close()
    failed: dict[int, Any] = {}
    for (_, _, _, out, b, jobs, scene), error in zip(tasks, errors):
        values[b][jobs] = out
        if error is not None:
            failed.setdefault(scene, error)
    return failed


# -- output ---------------------------------------------------------------------------------
def _arrow_values(data: np.ndarray, neighbourhood: int | None) -> pa.Array:
    if neighbourhood is None:
        return pa.array(data)
    flat = pa.array(data.reshape(-1))
    inner = pa.FixedSizeListArray.from_arrays(flat, neighbourhood)
    return pa.FixedSizeListArray.from_arrays(inner, neighbourhood)


def _output(parsed: _Points, point_of: np.ndarray, added: dict[str, Any],
            band_values: dict[str, Any], bands: list[str], neighbourhood: int | None) -> Any:
    """The result in the input's own kind: the user's columns, the added ones, bands."""
    import pandas as pd

    if parsed.kind == "arrow":
        table = parsed.frame.take(pa.array(point_of, pa.int64()))
        for name, column in added.items():
            table = table.append_column(name, column if isinstance(
                column, (pa.Array, pa.ChunkedArray)) else pa.array(column))
        for b in bands:
            table = table.append_column(b, _arrow_values(band_values[b], neighbourhood))
        return table
    columns: dict[str, Any] = {}
    for name, column in added.items():
        columns[name] = column.to_pandas() if isinstance(column, (pa.Array, pa.ChunkedArray)) \
            else column
    for b in bands:
        columns[b] = band_values[b] if neighbourhood is None else list(band_values[b])
    extra = pd.DataFrame(columns)
    if parsed.kind == "plain":
        return extra
    user = parsed.frame.iloc[point_of].reset_index(drop=True)
    for name in extra.columns:
        user[name] = extra[name].array  # both indexes run 0..n-1; dtypes kept
    return user


# -- dask -----------------------------------------------------------------------------------
def _morton(points: _Points) -> np.ndarray:
    """A Z-order key of each point's position in degrees: nearby points get nearby
    keys, so sorting by it makes each partition cover a compact area."""
    xs, ys = points.xs, points.ys
    degrees = CRS.from_epsg(4326)
    if not points.crs.equals(degrees):
        xs, ys = transformer(points.crs, degrees).transform(xs, ys)
    scale = (1 << _MORTON_BITS) - 1
    qx = np.clip((np.asarray(xs) + 180) / 360 * scale, 0, scale).astype(np.uint64)
    qy = np.clip((np.asarray(ys) + 90) / 180 * scale, 0, scale).astype(np.uint64)
    key = np.zeros(len(qx), np.uint64)
    for bit in range(_MORTON_BITS):
        key |= ((qx >> np.uint64(bit)) & np.uint64(1)) << np.uint64(2 * bit)
        key |= ((qy >> np.uint64(bit)) & np.uint64(1)) << np.uint64(2 * bit + 1)
    return key.astype(np.int64)


def _key_partition(frame: pd.DataFrame, geometry_crs: Any, xy_columns: tuple[str, str] | None,
                   name: str) -> pd.DataFrame:
    parsed = _read_points(frame, geometry_crs, xy_columns, None, None)
    return frame.assign(**{name: _morton(parsed)})


def _sample_partition(frame: pd.DataFrame, collection: Collection, bands: Sequence[str],
                      key: str, options: ReadOptions, query: PointQuery,
                      backend: Backend | None) -> Any:
    labels = frame.index.to_numpy()
    frame = frame.drop(columns=[key]).reset_index(drop=True)
    out = _sample(collection, frame, bands, options, query, dates=None, backend=backend,
                  progress=False, allow_empty=True)
    if labels.dtype.kind in "iu":  # the row's own index label: its position in the input
        out["point_index"] = labels[out["point_index"].to_numpy()].astype(np.int64)
    return out


def _sample_dask(collection: Collection, points: Any, bands: Sequence[str],
                 options: ReadOptions, query: PointQuery, *, dates: Any,
                 backend: Backend | None) -> Any:
    """Sample a dask DataFrame partition by partition, after sorting it by a Morton key."""
    from dask.dataframe.dispatch import make_meta as dask_make_meta
    from dask.delayed import delayed

    # A dask collection's empty frame (its columns and dtypes), through dask's public
    # dispatch rather than its _meta; dask ships no types for it.
    make_meta = cast("Callable[[Any], pd.DataFrame]", dask_make_meta)

    if dates is not None:
        raise ConfigurationError(
            "a dask DataFrame of points takes its dates through date_column=, not dates=")
    key = "_rasteret_point_key"
    keyed = points.map_partitions(_key_partition, query.geometry_crs, query.xy_columns, key,
                                  meta=make_meta(points).assign(**{key: np.int64(0)}))
    ordered = keyed.sort_values(key)
    # Computed on the empty frame: the columns and dtypes, without reading a pixel.
    meta = _sample_partition(make_meta(ordered), collection, bands, key, options, query,
                             backend)
    shared = delayed(collection, pure=True)
    return ordered.map_partitions(_sample_partition, shared, list(bands), key, options,
                                  query, backend, meta=meta, align_dataframes=False)


__all__ = ["PointQuery", "PointValues", "sample_points"]
