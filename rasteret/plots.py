"""Pictures of a collection (issue 21, item 6): where its scenes are and when.

:func:`plot_collection` (``Collection.plot``) draws every scene's footprint coloured
by its date, shades the valid data where the collection records it, and outlines an
area of interest. The drawing helpers here (polygons with holes, footprints by date,
chip boxes, a legend of proxies) are shared with the torch layer's chip and split maps
(:mod:`rasteret.torch.plots`).

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot: no
global figure state, no window, nothing shown. It draws headless (``fig.savefig``
renders it with Agg) and is shown inline by Jupyter. matplotlib is needed only here
(``pip install 'rasteret[plot]'``; the ``torch`` extra has it too): ``import
rasteret`` does not import it, ``Collection.plot`` imports this module when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError
from shapely.geometry.polygon import orient

from rasteret.analysis import reproject_geometry, to_geometries
from rasteret.errors import ConfigurationError
from rasteret.options import CRSLike

try:
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import PatchCollection, PolyCollection
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, PathPatch
    from matplotlib.path import Path
except ImportError as error:  # the core install without matplotlib
    raise ImportError(
        "rasteret's plots need matplotlib: pip install 'rasteret[plot]' (the torch extra "
        "installs it too)") from error

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from rasteret.collection import Collection

#: The Collection method the valid coverage of a build (issue 21, item 2) provides for
#: pictures: called with no argument, it returns one shapely geometry per scene (in
#: collection row order, EPSG:4326, None where unknown), or None when the collection
#: records no coverage. :func:`valid_coverage` is the one place that asks for it.
COVERAGE_ACCESSOR = "valid_geometries"
#: Colours of the valid-data shading, the area of interest and chips.
COVERAGE_COLOR = "#2ca02c"
AREA_COLOR = "#d62728"
CHIP_COLOR = "#111111"
DEGREES = CRS.from_epsg(4326)
NS_PER_DAY = 86_400 * 10**9


# -- the hook for valid coverage ----------------------------------------------------------
def valid_coverage(collection: Collection) -> np.ndarray | None:
    """The valid data of each scene, where the collection records it: an object array
    of shapely geometries (EPSG:4326, one per row, None where unknown), or None when
    the collection records no valid coverage (then nothing is shaded).

    The hook valid coverage plugs into: it asks the collection for
    :data:`COVERAGE_ACCESSOR` and returns None when the collection has no such method.
    """
    accessor = getattr(collection, COVERAGE_ACCESSOR, None)
    if not callable(accessor):
        return None
    geometries = accessor()
    if geometries is None:
        return None
    values = np.empty(len(collection), dtype=object)
    values[:] = list(geometries)
    return values


# -- drawing helpers --------------------------------------------------------------------------
def new_figure(size: tuple[float, float] = (7.5, 6.0)) -> tuple[Figure, Axes]:
    """A pyplot-free Figure with one map axes (equal aspect)."""
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.add_subplot()
    axes.set_aspect("equal", adjustable="datalim")
    return figure, axes


def geometry_path(geometry: shapely.Geometry) -> Path:
    """A matplotlib path of the polygons of ``geometry`` (their holes stay holes);
    lines and points are left out. An empty path for no polygon."""
    vertices: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    for part in shapely.get_parts(geometry):
        if isinstance(part, shapely.GeometryCollection | shapely.MultiPolygon):
            inner = geometry_path(part)
            if len(np.asarray(inner.vertices)):
                vertices.append(np.asarray(inner.vertices))
                codes.append(np.asarray(inner.codes))
            continue
        if not isinstance(part, shapely.Polygon) or part.is_empty:
            continue
        part = orient(part, 1.0)  # exterior counter-clockwise, holes clockwise
        for ring in (part.exterior, *part.interiors):
            coords = np.asarray(ring.coords)[:, :2]
            if len(coords) < 4:
                continue
            ring_codes = np.full(len(coords), Path.LINETO, dtype=Path.code_type)
            ring_codes[0], ring_codes[-1] = Path.MOVETO, Path.CLOSEPOLY
            vertices.append(coords)
            codes.append(ring_codes)
    if not vertices:
        return Path(np.zeros((0, 2)))
    return Path(np.concatenate(vertices), np.concatenate(codes))


def draw_polygons(axes: Axes, geometries: Sequence[Any] | np.ndarray, *, label: str,
                  zorder: float = 1.0, **style: Any) -> PatchCollection:
    """Add one patch per non-empty polygonal geometry to ``axes`` (``style``: the
    PatchCollection's ``facecolors``, ``edgecolors``, ``linewidths``, ``hatch``...)."""
    paths = [geometry_path(g) for g in geometries if g is not None]
    patches = [PathPatch(p) for p in paths if len(np.asarray(p.vertices))]
    collection = PatchCollection(patches, label=label, zorder=zorder, **style)
    axes.add_collection(collection, autolim=True)
    return collection


def draw_boxes(axes: Axes, boxes: np.ndarray, *, label: str, color: str = CHIP_COLOR,
               linewidth: float = 0.6, zorder: float = 4.0) -> PolyCollection:
    """Add ``(n, 4)`` boxes (``minx, miny, maxx, maxy``) as unfilled rectangles."""
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    xmin, ymin, xmax, ymax = boxes.T
    corners = np.stack([np.column_stack([xmin, ymin]), np.column_stack([xmax, ymin]),
                        np.column_stack([xmax, ymax]), np.column_stack([xmin, ymax])], axis=1)
    collection = PolyCollection(list(corners), facecolors="none", edgecolors=color,
                                linewidths=linewidth, label=label, zorder=zorder)
    axes.add_collection(collection, autolim=True)
    return collection


def draw_footprints(figure: Figure, axes: Axes, footprints: Sequence[Any] | np.ndarray,
                    times: np.ndarray, *, cmap: str = "viridis") -> PatchCollection:
    """Scene footprints filled lightly and outlined in the colour of their date, with a
    date colorbar (scenes without a date are grey)."""
    stamps = np.asarray(times, "datetime64[ns]")
    known = ~np.isnat(stamps)
    numbers = np.full(len(stamps), np.nan)
    numbers[known] = stamps[known].astype(np.int64) / NS_PER_DAY  # days since 1970
    low, high = ((float(np.nanmin(numbers)), float(np.nanmax(numbers))) if known.any()
                 else (0.0, 1.0))
    if high <= low:  # one date: a day either side
        low, high = low - 1.0, high + 1.0
    mappable = ScalarMappable(Normalize(low, high), cmap)
    colors = mappable.to_rgba(numbers)
    colors[~known] = (0.5, 0.5, 0.5, 1.0)
    keep = [g is not None and not shapely.is_empty(g) for g in footprints]
    shown = [g for g, k in zip(footprints, keep) if k]
    edges = colors[np.asarray(keep, bool)] if len(keep) else colors
    faces = edges.copy()
    faces[:, 3] = 0.18
    collection = draw_polygons(axes, shown, label="footprints", facecolors=faces,
                               edgecolors=edges, linewidths=1.2, zorder=2.0)
    bar = figure.colorbar(mappable, ax=axes, shrink=0.8, label="scene date")
    ticks = np.linspace(low, high, 5)
    labels = (np.round(ticks * NS_PER_DAY).astype("datetime64[ns]")
              .astype("datetime64[D]").astype(str))
    _, first = np.unique(labels, return_index=True)  # a short span: each day once
    first = np.sort(first)
    bar.set_ticks(list(ticks[first]), labels=list(labels[first]))
    return collection


def finish_map(axes: Axes, crs: CRS | None, handles: list[Patch], title: str | None) -> None:
    """Axis labels in the CRS's units, the limits, a legend of ``handles``, a title."""
    axes.autoscale_view()
    unit = crs.axis_info[0].unit_name if crs is not None and crs.axis_info else ""
    if crs is not None and crs.is_geographic:
        axes.set_xlabel("longitude (°)")
        axes.set_ylabel("latitude (°)")
    else:
        axes.set_xlabel(f"x ({unit})" if unit else "x")
        axes.set_ylabel(f"y ({unit})" if unit else "y")
    axes.ticklabel_format(useOffset=False, style="plain")
    axes.tick_params(labelsize=8)
    if handles:
        axes.legend(handles=handles, loc="best", fontsize=8, framealpha=0.85)
    if title:
        axes.set_title(title)


def plot_crs(target_crs: CRSLike | None, fallback: CRS | None) -> CRS:
    """The CRS a map is drawn in: ``target_crs``, else ``fallback``, else EPSG:4326.

    Raises:
        ConfigurationError: ``target_crs`` is not a CRS.
    """
    if target_crs is None:
        return fallback if fallback is not None else DEGREES
    try:
        return CRS.from_user_input(target_crs)
    except CRSError as error:
        raise ConfigurationError(f"target_crs={target_crs!r} is not a CRS: {error}") from error


def area_of_interest(geometries: Any, geometry_crs: CRSLike, crs: CRS) -> shapely.Geometry:
    """The union of ``geometries`` (any input the readers take) in ``crs``.

    Raises:
        ConfigurationError: Geometries that cannot be read, or an empty area.
    """
    try:
        source = CRS.from_user_input(geometry_crs)
    except CRSError as error:
        raise ConfigurationError(f"geometry_crs={geometry_crs!r} is not a CRS: {error}") from error
    shapes, source = to_geometries(geometries, source)
    area = shapely.union_all(np.asarray(shapes, dtype=object))
    if area is None or shapely.is_empty(area):
        raise ConfigurationError("the area of interest (geometries=) is empty")
    return reproject_geometry(area, source, crs)


def in_crs(geometries: np.ndarray, crs: CRS) -> np.ndarray:
    """Geometries in EPSG:4326 (None kept) reprojected to ``crs``."""
    out = np.empty(len(geometries), dtype=object)
    out[:] = [None if g is None else reproject_geometry(g, DEGREES, crs) for g in geometries]
    return out


# -- the collection's map ---------------------------------------------------------------------
def scene_footprints(collection: Collection, crs: CRS) -> tuple[np.ndarray, np.ndarray]:
    """Each scene's footprint in ``crs`` (object array of shapely geometries) and its
    date (``datetime64[ns]``, NaT where missing), in row order. Nothing is read."""
    wkb = collection.column("geometry").to_numpy(zero_copy_only=False)
    footprints = in_crs(shapely.from_wkb(wkb), crs)
    times = collection.column("datetime").cast(pa.timestamp("ns", tz="UTC"))
    stamps = np.asarray(times.to_numpy(zero_copy_only=False)).astype("datetime64[ns]")
    return footprints, stamps


def plot_collection(collection: Collection, *, geometries: Any = None,
                    geometry_crs: CRSLike = 4326, target_crs: CRSLike | None = None,
                    coverage: bool = True, title: str | None = None) -> Figure:
    """Draw a collection's scene footprints coloured by date, the valid data shaded
    where the collection records it, and an area of interest.

    See :meth:`rasteret.collection.Collection.plot` for the arguments.

    Raises:
        ConfigurationError: An empty collection, a bad CRS or unreadable geometries.
    """
    if not len(collection):
        raise ConfigurationError(
            f"collection {collection.name!r} is empty: no footprint to plot")
    crs = plot_crs(target_crs, collection.crs)
    footprints, stamps = scene_footprints(collection, crs)
    figure, axes = new_figure()
    draw_footprints(figure, axes, footprints, stamps)
    handles = [Patch(facecolor="none", edgecolor="0.3",
                     label=f"scene footprints ({len(collection)})")]
    valid = valid_coverage(collection) if coverage else None
    if valid is not None:
        draw_polygons(axes, in_crs(valid, crs), label="valid data", facecolors=COVERAGE_COLOR,
                      edgecolors="none", alpha=0.35, zorder=3.0)
        handles.append(Patch(facecolor=COVERAGE_COLOR, alpha=0.35, label="valid data"))
    if geometries is not None:
        area = area_of_interest(geometries, geometry_crs, crs)
        draw_polygons(axes, [area], label="area of interest", facecolors="none",
                      edgecolors=AREA_COLOR, linewidths=2.0, zorder=5.0)
        handles.append(Patch(facecolor="none", edgecolor=AREA_COLOR, linewidth=2.0,
                             label="area of interest"))
    name = collection.name or "collection"
    finish_map(axes, crs, handles, title if title is not None
               else f"{name}: {len(collection)} scenes ({crs.name})")
    return figure
