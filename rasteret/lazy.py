"""Lazy, chunked xarray: ``Collection.get_xarray(..., chunks=...)`` on Dask.

The driver does only what needs no pixel: it finds the covering scenes, chooses the
output grid (:func:`rasteret.analysis.choose_grid`), and computes the coordinates
(``time``, ``y``, ``x``), the attributes and the CF grid mapping exactly as the eager
:func:`rasteret.analysis.get_xarray` does. Every variable is a dask array whose tasks
each read one block ``(times, y-chunk, x-chunk)`` of one band, tile-exactly, from the
collection's stored headers (no header request).

What travels in the task graph is small and self-contained: one key per scene holding
the band views of that scene only (its own tile tables, not the collection's), and one
key holding the read's description (its :class:`~rasteret.pixels.PixelPlan` without
the scenes, and the :class:`~rasteret.io.backend.Backend`, which pickles to its
description). Each task fills its block through :func:`rasteret.pixels.fill_block`,
the function that fills the eager read. A worker
process turns that description into one live backend and keeps it (see
:func:`process_backend`), so its object stores, connection pools and credential tokens
are built once per process, not once per task.

This module imports dask only when called (the ``rasteret[dask]`` extra); ``import
rasteret`` never loads it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from pyproj import CRS

from rasteret.analysis import (
    AreaResult,
    area_dataset,
    choose_grid,
    covering_rows,
    prepare_read,
    reproject_geometry,
    scene_views,
    single_geometry,
)
from rasteret.band import BandView
from rasteret.collection import Collection
from rasteret.errors import ConfigurationError
from rasteret.io.backend import Backend
from rasteret.io.runtime import run_sync
from rasteret.options import CRSLike, ReadOptions
from rasteret.pixels import Block, CogOpener, PixelPlan, SceneRead, fill_block, plan_pixels
from rasteret.read.warp import GridSpec

if TYPE_CHECKING:
    import xarray as xr

#: What ``chunks=`` accepts: ``"auto"``, or sizes per dimension (``time``, ``y``,
#: ``x``; ``-1`` or None for the whole dimension, ``"auto"`` for rasteret's choice).
Chunks = str | Mapping[str, int | str | None]

#: Target edge of an automatic spatial chunk in pixels (rounded to whole tiles): 2048²
#: uint16 pixels are 8 MB, a task of a few hundred milliseconds.
AUTO_EDGE = 2048

# -- the per-process backend ----------------------------------------------------------------
_backends: dict[str, Backend] = {}
_backends_lock = threading.Lock()


def backend_token(backend: Backend) -> str:
    """A name for ``backend``'s description (equal descriptions, equal names)."""
    return hashlib.sha256(pickle.dumps(backend)).hexdigest()


def process_backend(token: str, backend: Backend) -> Backend:
    """This process's live backend for the description named ``token``.

    The first task of a worker process to arrive keeps its (unpickled) ``backend``;
    later tasks get that same object back, with the stores, connection pools and
    credential tokens it already built. In the process that built the graph the
    driver's own backend is kept, so a threaded compute reuses its stores too.

    Args:
        token: :func:`backend_token` of ``backend``.
        backend: The backend a task received.

    Returns:
        The backend to read with.
    """
    kept = _backends.get(token)
    if kept is None:
        with _backends_lock:
            kept = _backends.setdefault(token, backend)
    return kept


# -- what a task receives -------------------------------------------------------------------
@dataclass(frozen=True)
class LazyRead:
    """The description shared by every task of one geometry's read.

    Attributes:
        token: :func:`backend_token` of ``backend``.
        backend: How to reach the stores.
        validate: Check each tile against the object version recorded at build time.
        plan: The read's plan without its scenes (each task gets only its own).
    """

    token: str
    backend: Backend
    validate: bool
    plan: PixelPlan


def read_block(read: LazyRead, scenes: Sequence[SceneRead], band: int,
               rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Read one block of one band (one dask task), filled by
    :func:`rasteret.pixels.fill_block` as the eager call fills it.

    Args:
        read: The read's description.
        scenes: The block's scenes, one per time step.
        band: The band's position in the plan.
        rows: ``(top, bottom)`` rows of the output grid.
        cols: ``(left, right)`` columns of the output grid.

    Returns:
        The block, ``(len(scenes), bottom - top, right - left)``.
    """
    opener = CogOpener(process_backend(read.token, read.backend), validate=read.validate)
    plan = dataclasses.replace(read.plan, slots=tuple((scene,) for scene in scenes))
    block = Block(tuple(range(len(scenes))), (band,), rows, cols)
    out = np.empty(block.shape, plan.out_dtype)
    run_sync(fill_block(plan, out, opener, block))
    return out[:, 0]


# -- chunk layout ---------------------------------------------------------------------------
def _edges(size: int, step: int, first: int = 0) -> tuple[int, ...]:
    """Chunk sizes along a dimension of ``size``: a first chunk of ``first`` (when
    positive, to reach an aligned edge), then ``step`` each."""
    sizes: list[int] = []
    if 0 < first < size:
        sizes.append(first)
    done = sum(sizes)
    while done < size:
        sizes.append(min(step, size - done))
        done += sizes[-1]
    return tuple(sizes)


def _aligned(size: int, tile: int, offset: float) -> tuple[int, ...]:
    """Chunks of about :data:`AUTO_EDGE` whose edges fall on the native tile grid
    (``offset``: the output's first pixel in the reference image's pixels), so no tile
    is read by two tasks.

    The edges sit where the image's pixel index is a multiple of the step (a whole
    number of tiles); a first or last piece shorter than half a step joins its
    neighbour, so chunks stay between half a step and one and a half.
    """
    step = tile * max(1, round(AUTO_EDGE / tile))
    start = round(offset)
    if abs(offset - start) > 1e-6:  # not on the native pixel grid: nothing to align to
        return _edges(size, step)
    edges = [0, *range((-start) % step or step, size, step), size]
    if len(edges) > 2 and edges[1] < step // 2:
        del edges[1]
    if len(edges) > 2 and edges[-1] - edges[-2] < step // 2:
        del edges[-2]
    return tuple(b - a for a, b in zip(edges, edges[1:]))


def chunk_layout(chunks: Chunks, grid: GridSpec, times: int, reference: BandView | None
                 ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The ``(time, y, x)`` chunk sizes for ``chunks`` over ``grid``.

    ``"auto"`` (for all dimensions or one) takes one scene per time chunk and spatial
    chunks of about :data:`AUTO_EDGE` pixels (half to one and a half times that) whose
    edges fall on the tile grid of ``reference`` (the first scene on the output grid),
    so no tile is read twice.

    Raises:
        ConfigurationError: An unknown dimension or a size that is not a positive
            integer, -1, None or ``"auto"``.
    """
    spec: Mapping[str, int | str | None]
    if isinstance(chunks, str):
        if chunks != "auto":
            raise ConfigurationError(
                f"chunks={chunks!r}: pass 'auto' or a dict such as "
                "{'time': 1, 'y': 2048, 'x': 2048}")
        spec = {}
    elif isinstance(chunks, Mapping):
        spec = chunks
    else:
        raise ConfigurationError(
            f"chunks={chunks!r}: pass 'auto' or a dict such as {{'time': 1, 'y': 2048, 'x': 2048}}")
    unknown = set(spec) - {"time", "y", "x", "band"}
    if unknown:
        raise ConfigurationError(
            f"chunks names unknown dimension(s) {sorted(unknown)}: use 'time', 'y' and 'x'")
    aligned: dict[str, tuple[int, ...]] = {}
    native = (reference is not None and reference.transform is not None
              and reference.crs.equals(grid.crs)
              and np.isclose(reference.transform.a, grid.transform.a)
              and np.isclose(reference.transform.e, grid.transform.e))
    if native:
        assert reference is not None and reference.transform is not None
        col, row = ~reference.transform @ (grid.transform.c, grid.transform.f)
        aligned["x"] = _aligned(grid.width, reference.tile_width, col)
        aligned["y"] = _aligned(grid.height, reference.tile_height, row)
    else:
        aligned["x"] = _edges(grid.width, AUTO_EDGE)
        aligned["y"] = _edges(grid.height, AUTO_EDGE)
    aligned["time"] = _edges(times, 1)
    sizes = {"time": times, "y": grid.height, "x": grid.width}
    layout: dict[str, tuple[int, ...]] = {}
    for dim, size in sizes.items():
        value = spec.get(dim, "auto")
        if value == "auto":
            layout[dim] = aligned[dim]
        elif value is None or value == -1:
            layout[dim] = (size,)
        elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
            layout[dim] = _edges(size, value)
        else:
            raise ConfigurationError(
                f"chunks[{dim!r}]={value!r}: pass a positive number of pixels (or scenes), "
                "-1 for the whole dimension, or 'auto'")
    return layout["time"], layout["y"], layout["x"]


# -- the public entry point -----------------------------------------------------------------
def _import_dask() -> Any:
    try:
        import dask.array
    except ImportError as exc:
        raise ImportError(
            "get_xarray(chunks=...) needs dask: pip install 'rasteret[dask]'") from exc
    return dask.array


def _lazy_dataset(collection: Collection, geometry: shapely.Geometry, crs: CRS,
                  bands: list[str], chunks: Chunks, options: ReadOptions, *,
                  backend: Backend) -> xr.Dataset:
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    array = _import_dask()
    rows = covering_rows(collection, geometry, crs, options.date_range)
    views = {band: scene_views(collection, rows, band) for band in bands}
    grid = choose_grid(views[bands[0]], geometry, crs, target_crs=options.target_crs,
                       resolution=options.resolution)
    clip = (reproject_geometry(geometry, crs, grid.crs)
            if options.clip and not isinstance(geometry, shapely.Point) else None)
    # The eager call's plan; the graph holds it without its scenes (one key), and each
    # scene's views (each holding only its own record) under a key of their own.
    values = options.values
    described = [SceneRead.of([views[b][t] for b in bands]) for t in range(len(rows))]
    plan = plan_pixels(grid, bands, [[scene] for scene in described], values=values, clip=clip,
                       resampling=options.resampling)
    reference = next((v for v in views[bands[0]]
                      if v.georeferenced and v.crs.equals(grid.crs)), None)
    time_chunks, y_chunks, x_chunks = chunk_layout(chunks, grid, len(rows), reference)

    token = backend_token(backend)
    read = LazyRead(token, backend, options.validate, dataclasses.replace(plan, slots=()))
    name = tokenize(token, collection.name, rows, bands, grid, geometry.wkb, crs.to_wkt(),
                    options.clip, values, options.resampling, options.validate, time_chunks,
                    y_chunks, x_chunks)
    read_key = f"rasteret-read-{name}"
    scene_name = f"rasteret-scene-{name}"
    graph: dict[Any, Any] = {read_key: read}
    for t in range(len(rows)):
        graph[(scene_name, t)] = SceneRead.of([views[b][t].detached() for b in bands])
    out_dtype = plan.out_dtype
    y_edges = np.cumsum((0, *y_chunks))
    x_edges = np.cumsum((0, *x_chunks))
    t_edges = np.cumsum((0, *time_chunks))
    shared = f"rasteret-shared-{name}"
    data: dict[str, Any] = {}
    for index, band in enumerate(bands):
        layer_name = f"rasteret-{band}-{name}"
        layer: dict[Any, Any] = {}
        for i in range(len(time_chunks)):
            scenes = [(scene_name, t) for t in range(t_edges[i], t_edges[i + 1])]
            for j in range(len(y_chunks)):
                for k in range(len(x_chunks)):
                    layer[(layer_name, i, j, k)] = (
                        read_block, read_key, scenes, index,
                        (int(y_edges[j]), int(y_edges[j + 1])),
                        (int(x_edges[k]), int(x_edges[k + 1])))
        hlg = HighLevelGraph({layer_name: layer, shared: graph},
                             {layer_name: {shared}, shared: set()})
        data[band] = array.Array(hlg, layer_name, (time_chunks, y_chunks, x_chunks),
                                 dtype=out_dtype, meta=np.empty((0, 0, 0), out_dtype))
    # The eager call's coordinates and attributes, on a result whose pixels are lazy.
    result = AreaResult(None, grid, rows, bands, views, values, plan.dtype)
    return area_dataset(collection, result, data)


def get_xarray(collection: Collection, geometries: Any, bands: Sequence[str],
               options: ReadOptions | None = None, *, chunks: Chunks = "auto",
               geometry_crs: CRSLike = 4326, backend: Backend | None = None,
               ) -> xr.Dataset | list[xr.Dataset]:
    """Pixels as an ``xarray.Dataset`` of dask arrays: nothing is read until computed.

    The coordinates, attributes and values equal :func:`rasteret.analysis.get_xarray`'s;
    each chunk is read by one task (one band, one block of ``(time, y, x)``) through
    its process's backend. Compute with any Dask scheduler: the local threads, or a
    ``distributed.Client`` (``.to_zarr()`` streams results larger than memory).

    Args:
        collection: The collection to read.
        geometries: As for :func:`rasteret.analysis.get_numpy`.
        bands: Band names.
        options: As for :func:`rasteret.analysis.get_numpy`, but ``on_error`` must be
            ``"raise"``: a lazy read fixes its scenes (the ``time`` coordinate)
            before any is read, so it cannot leave failed ones out.
        chunks: ``"auto"`` (one scene per time chunk and about 2048² pixels per
            spatial chunk, with edges on the native tile grid so no tile is read by
            two tasks), or sizes per dimension such as ``{"time": 1, "y": 2048,
            "x": 2048}`` (``-1`` for a whole dimension, ``"auto"`` for one).
        geometry_crs, backend: As for :func:`rasteret.analysis.get_numpy`.

    Returns:
        A Dataset for one geometry, else a list of Datasets.

    Raises:
        ConfigurationError: Bad ``chunks``, unknown band, or ``on_error="skip"``.
        NoCoverageError: No scene covers a geometry, or the collection is empty.
        ImportError: dask is not installed (``pip install 'rasteret[dask]'``).
    """
    options = options or ReadOptions()
    if options.on_error == "skip":
        raise ConfigurationError(
            f"get_xarray(chunks=..., on_error={options.on_error!r}): a lazy read cannot "
            "leave out "
            "scenes that fail (its time coordinate is fixed before reading); use "
            "on_error='raise', or read eagerly (chunks=None) to skip failed scenes")
    _import_dask()
    bands, shapes, crs, resolved = prepare_read(collection, geometries, bands,
                                                geometry_crs=geometry_crs, backend=backend)
    datasets = [_lazy_dataset(collection, shape, crs, bands, chunks, options,
                              backend=resolved)
                for shape in shapes]
    return datasets[0] if single_geometry(geometries) else datasets
