"""The read core: one plan of scenes onto a grid, and one function that fills its blocks.

Every path that turns stored tiles into pixels goes through :func:`fill_block`: the
eager reads of :mod:`rasteret.analysis` (one block: the whole area), each chunk of a
lazy read (:mod:`rasteret.lazy`), each TorchGeo sample (``rasteret.torch.dataset``)
and each tile :mod:`rasteret.points` gathers values from. A :class:`PixelPlan` says
what to read: the scenes of each output time step with their band views, the grid,
the dtype, each scene's own nodata, scale and offset, the clip geometry, the
resampling and the error policy. Scale and offset, NaN for nodata, clipping and
first-valid mosaicking are written here once, so every path gives the same pixels
for the same grid.

Reading keeps the read path's properties: all scenes and bands of a block are in
flight at once, tiles decode (in threads) straight into the output when no conversion
is needed, and a mosaic reads its first scene alone, then more only while pixels are
still missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import shapely
from affine import Affine

from rasteret.band import BandView
from rasteret.errors import RasteretError
from rasteret.io.backend import Backend
from rasteret.io.fetch import FetchStats
from rasteret.options import (
    ON_ERROR,
    RESAMPLING,
    VALUES,
    OnError,
    Resampling,
    Values,
    check_option,
)
from rasteret.read.cache import ChunkCaches
from rasteret.read.cog import CogFile
from rasteret.read.warp import GridSpec, read_into_grid
from rasteret.tiff.geo import nodata_for_dtype

#: How a read opens the file of a band view (each path keeps its own caches).
OpenCog = Callable[[BandView], CogFile]

#: Scenes a mosaic reads in its first round (the first usually covers the block, so
#: reading more at once would waste bytes), and in each later round.
FIRST_ROUND = 1
LATER_ROUNDS = 4

#: Rows of a block whose pixel centres are tested against a clip polygon at once.
_CLIP_ROWS = 256


@dataclass(frozen=True)
class SceneBand:
    """One band of one scene as a read uses it.

    Attributes:
        view: Where the band lives and how it is gridded.
        nodata: The scene's own nodata for the band (None: none).
        scale: The scene's own scale (physical = stored x scale + offset).
        offset: The scene's own offset.
    """

    view: BandView
    nodata: float | None
    scale: float
    offset: float

    @classmethod
    def of(cls, view: BandView) -> SceneBand:
        """The band as ``view`` describes it (its effective nodata, scale, offset)."""
        return cls(view, view.nodata, view.scale, view.offset)

    def nodata_in(self, dtype: np.dtype) -> np.generic:
        """The nodata as a value of ``dtype`` (0 when unset or out of its range)."""
        return nodata_for_dtype(self.nodata, dtype)


@dataclass(frozen=True)
class SceneRead:
    """The bands of one scene a plan reads, in the plan's band order (none: a scene
    its caller could not describe and has reported; a read passes it over).

    Attributes:
        row: The scene's row in the collection.
        scene_id: The scene's id.
        bands: One :class:`SceneBand` per band of the plan.
    """

    row: int
    scene_id: str
    bands: tuple[SceneBand, ...]

    @classmethod
    def of(cls, views: Sequence[BandView]) -> SceneRead:
        """The scene whose bands ``views`` are (one per band of the plan)."""
        return cls(views[0].row, views[0].scene_id, tuple(SceneBand.of(v) for v in views))


class LazyScenes(Sequence[SceneRead]):
    """Scenes described only when a read reaches them: a mosaic's first scene usually
    covers its block, so the others' views are never built.

    Args:
        rows: The scenes' rows, in reading order.
        describe: Describes the scene of a row.
    """

    def __init__(self, rows: Sequence[int], describe: Callable[[int], SceneRead]) -> None:
        self.rows = rows
        self.describe = describe
        self.described: dict[int, SceneRead] = {}

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> SceneRead: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[SceneRead]: ...

    def __getitem__(self, index: int | slice) -> SceneRead | Sequence[SceneRead]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        scene = self.described.get(index)
        if scene is None:
            scene = self.described[index] = self.describe(self.rows[index])
        return scene


@dataclass(frozen=True)
class PixelPlan:
    """What a read fills: scenes onto one grid, and how their values are converted.

    The output is ``(time, band, y, x)``: output time step ``t`` is filled from the
    scenes of ``slots[t]``, first valid pixel in their order (a slot of one scene is
    that scene). A slot may be a lazy sequence: a mosaic asks for each scene only when
    it reaches it (the first usually covers the block). Build plans with
    :func:`plan_pixels`.

    Attributes:
        grid: The destination grid.
        bands: Band names, in output order.
        slots: The scenes of each output time step.
        dtype: The stored values' dtype: the result type of every scene's bands.
        values: What each band's output holds (see :data:`Values`).
        clip: Pixels whose centre lies outside this geometry (in the grid's CRS) get
            the nodata of their band (NaN when converted); None: no clipping.
        resampling: How scenes off the grid are resampled.
        on_error: ``"raise"``, or ``"skip"``: a scene that fails to read with a
            :class:`~rasteret.errors.RasteretError` is left out (see
            :class:`BlockOutcome`).
    """

    grid: GridSpec
    bands: tuple[str, ...]
    slots: tuple[Sequence[SceneRead], ...]
    dtype: np.dtype
    values: tuple[Values, ...]
    clip: shapely.Geometry | None = None
    resampling: Resampling = "nearest"
    on_error: OnError = "raise"

    @property
    def out_dtype(self) -> np.dtype:
        """The output's dtype: the stored dtype, float32 once values are converted."""
        if all(v == "stored" for v in self.values):
            return self.dtype
        if all(v != "stored" for v in self.values):
            return np.dtype(np.float32)
        return np.result_type(np.float32, self.dtype)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The whole output's ``(time, band, y, x)`` shape."""
        return len(self.slots), len(self.bands), self.grid.height, self.grid.width

    def fill_value(self, slot: int, band: int) -> Any:
        """What a pixel of ``band`` in time step ``slot`` holds when no scene gives it:
        NaN for converted values, else the nodata of the slot's first scene (0 when
        none is described)."""
        if self.values[band] != "stored":
            return np.nan
        first = next((scene for scene in self.slots[slot] if scene.bands), None)
        return self.dtype.type(0) if first is None else first.bands[band].nodata_in(self.dtype)


def plan_pixels(grid: GridSpec, bands: Sequence[str], slots: Sequence[Sequence[SceneRead]],
                *, dtype: np.dtype | None = None, values: Values | Sequence[Values] = "stored",
                clip: shapely.Geometry | None = None, resampling: Resampling = "nearest",
                on_error: OnError = "raise") -> PixelPlan:
    """The plan of a read.

    Args:
        grid: The destination grid.
        bands: Band names, in output order.
        slots: For each output time step, its scenes (first valid wins).
        dtype: The stored values' dtype (default: the result type of every scene's
            bands; give it for a lazy slot, whose scenes are not all asked for).
        values: What every band holds, or one choice per band.
        clip: The clip geometry in the grid's CRS (None: no clipping).
        resampling: ``"nearest"`` or ``"bilinear"``.
        on_error: ``"raise"`` or ``"skip"``.

    Returns:
        The plan.

    Raises:
        ConfigurationError: An unknown ``values``, ``resampling`` or ``on_error``.
    """
    per_band = (values,) * len(bands) if isinstance(values, str) else tuple(values)
    for value in per_band:
        check_option("values", value, VALUES)
    check_option("resampling", resampling, RESAMPLING)
    check_option("on_error", on_error, ON_ERROR)
    if dtype is None:
        dtype = scenes_dtype(scene for slot in slots for scene in slot)
    return PixelPlan(grid, tuple(bands), tuple(slots), dtype, per_band, clip, resampling,
                     on_error)


def scenes_dtype(scenes: Iterable[SceneRead]) -> np.dtype:
    """The result type of the pixels of every band of ``scenes``."""
    return np.result_type(*(band.view.dtype for scene in scenes for band in scene.bands))


class CogOpener:
    """Opens the file of each band view once per read, from its stored header (no
    request), sharing one set of chunk caches.

    Args:
        backend: How to reach the stores.
        caches: Chunk caches the files share, if any.
        validate: Check each tile against the object version recorded at build time.
    """

    def __init__(self, backend: Backend, caches: ChunkCaches | None = None, *,
                 validate: bool = True) -> None:
        self.backend = backend
        self.caches = caches
        self.validate = validate
        self.files: dict[tuple[int, str, str], CogFile] = {}

    def __call__(self, view: BandView) -> CogFile:
        """The file of ``view``."""
        key = (view.row, view.band, view.href)
        cog = self.files.get(key)
        if cog is None:
            cog = self.files[key] = view.cog(self.backend, self.caches, validate=self.validate)
        return cog


@dataclass(frozen=True)
class Block:
    """A part of a plan's output: some time steps, some bands, a window of the grid.

    Attributes:
        slots: Time steps of the plan, in block order.
        bands: Band positions of the plan, in block order.
        rows: ``(top, bottom)`` rows of the grid.
        cols: ``(left, right)`` columns of the grid.
    """

    slots: tuple[int, ...]
    bands: tuple[int, ...]
    rows: tuple[int, int]
    cols: tuple[int, int]

    @classmethod
    def whole(cls, plan: PixelPlan) -> Block:
        """The plan's whole output."""
        return cls(tuple(range(len(plan.slots))), tuple(range(len(plan.bands))),
                   (0, plan.grid.height), (0, plan.grid.width))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The block's ``(time, band, y, x)`` shape."""
        return (len(self.slots), len(self.bands), self.rows[1] - self.rows[0],
                self.cols[1] - self.cols[0])

    def grid(self, grid: GridSpec) -> GridSpec:
        """The block's window of ``grid`` as a grid of its own."""
        (top, bottom), (left, right) = self.rows, self.cols
        if (top, left, bottom, right) == (0, 0, grid.height, grid.width):
            return grid
        return GridSpec(grid.crs, grid.transform @ Affine.translation(left, top),
                        right - left, bottom - top)


@dataclass
class BlockOutcome:
    """What a block's read left out under ``on_error="skip"``.

    Attributes:
        skipped: Each scene that failed to read, and its error.
        empty: Positions (in the block) of time steps none of whose scenes was read:
            their pixels are undefined.
    """

    skipped: list[tuple[SceneRead, RasteretError]] = field(default_factory=list)
    empty: list[int] = field(default_factory=list)


async def fill_block(plan: PixelPlan, out: np.ndarray, open_cog: OpenCog,
                     block: Block | None = None, *, stats: FetchStats | None = None,
                     on_slot: Callable[[], object] | None = None) -> BlockOutcome:
    """Fill one block of the plan's output: every scene and band in flight at once.

    Each time step takes its scenes first valid pixel first; stored values are decoded
    straight into ``out`` when the step has one scene; converted values are each
    scene's own ``stored x scale + offset`` (float64 arithmetic, so scenes with
    different offsets round alike) with NaN where the pixel is that scene's nodata;
    pixels outside the clip geometry get :meth:`PixelPlan.fill_value`.

    Args:
        plan: The read.
        out: The block's array, shaped :attr:`Block.shape`, of the plan's
            :attr:`~PixelPlan.out_dtype`; every pixel is written.
        open_cog: How to open a view's file.
        block: The part to fill (default: the whole output).
        stats: Counts requests and bytes, if given.
        on_slot: Called as each time step is done (progress bars).

    Returns:
        What was skipped (nothing under ``on_error="raise"``).

    Raises:
        Exception: The first error of a scene, in time order, under
            ``on_error="raise"`` (and any error that is not a ``RasteretError``).
    """
    block = block or Block.whole(plan)
    if out.shape != block.shape:
        raise ValueError(f"out is shaped {out.shape}, the block {block.shape}")
    grid = block.grid(plan.grid)
    outcome = BlockOutcome()

    async def slot(position: int, index: int) -> None:
        try:
            if not await _fill_slot(plan, plan.slots[index], block.bands, grid,
                                    out[position], open_cog, stats, outcome):
                outcome.empty.append(position)
        finally:
            if on_slot is not None:
                on_slot()

    results = await asyncio.gather(*(slot(p, i) for p, i in enumerate(block.slots)),
                                   return_exceptions=True)
    error = next((r for r in results if isinstance(r, BaseException)), None)
    if error is not None:
        raise error
    outcome.empty.sort()
    if plan.clip is not None:
        fills = [[plan.fill_value(i, b) for b in block.bands] for i in block.slots]
        clip_outside(out, grid, plan.clip, fills)
    return outcome


async def _fill_slot(plan: PixelPlan, scenes: Sequence[SceneRead], bands: Sequence[int],
                     grid: GridSpec, out: np.ndarray, open_cog: OpenCog,
                     stats: FetchStats | None, outcome: BlockOutcome) -> bool:
    """Fill one time step ``(band, y, x)`` from ``scenes``, first valid pixel first;
    False when no scene could be read."""
    missing: np.ndarray | None = None  # pixels no scene read so far gives
    position = 0
    while position < len(scenes) and (missing is None or missing.any()):
        size = FIRST_ROUND if position == 0 else LATER_ROUNDS
        group = [scenes[i] for i in range(position, min(position + size, len(scenes)))]
        position += size
        more = position < len(scenes)
        if missing is None and len(group) == 1:
            # Nothing read yet: the scene goes straight into the output.
            invalid = np.zeros(out.shape, bool) if more else None
            if await _read_scene(plan, group[0], bands, grid, out, invalid, open_cog, stats,
                                 outcome):
                if invalid is None:
                    return True
                missing = invalid
            continue
        buffers = [np.empty(out.shape, out.dtype) for _ in group]
        invalids = [np.zeros(out.shape, bool) for _ in group]
        read = await asyncio.gather(*(
            _read_scene(plan, scene, bands, grid, buffer, invalid, open_cog, stats, outcome)
            for scene, buffer, invalid in zip(group, buffers, invalids)))
        for done, buffer, invalid in zip(read, buffers, invalids):
            if not done:
                continue
            if missing is None:
                out[...] = buffer
                missing = invalid
                continue
            take = missing & ~invalid
            out[take] = buffer[take]
            missing &= invalid
    return missing is not None


async def _read_scene(plan: PixelPlan, scene: SceneRead, bands: Sequence[int], grid: GridSpec,
                      out: np.ndarray, invalid: np.ndarray | None, open_cog: OpenCog,
                      stats: FetchStats | None, outcome: BlockOutcome) -> bool:
    """Read ``bands`` of one scene into ``out`` ``(band, y, x)`` (and where its pixels
    are nodata into ``invalid``, when given); False when skipped on error."""
    if not scene.bands:  # its caller could not describe it, and said why
        return False
    results = await asyncio.gather(*(
        _read_band(plan, scene.bands[b], plan.values[b], grid, out[i],
                   None if invalid is None else invalid[i], open_cog, stats)
        for i, b in enumerate(bands)), return_exceptions=True)
    error = next((r for r in results if isinstance(r, BaseException)), None)
    if error is None:
        return True
    if plan.on_error == "raise" or not isinstance(error, RasteretError):
        raise error
    outcome.skipped.append((scene, error))
    return False


async def _read_band(plan: PixelPlan, source: SceneBand, values: Values, grid: GridSpec,
                     out: np.ndarray, invalid: np.ndarray | None, open_cog: OpenCog,
                     stats: FetchStats | None) -> None:
    """One band of one scene onto ``grid`` into ``out`` ``(y, x)``, converted."""
    cog = open_cog(source.view)
    band = [source.view.band_index]
    nodata = source.nodata_in(cog.dtype)
    if values == "stored":
        await read_into_grid(cog, grid, bands=band, resampling=plan.resampling, stats=stats,
                             out=out[None])
        if invalid is not None:
            invalid[...] = nodata_pixels(out, nodata)
        return
    stored = (await read_into_grid(cog, grid, bands=band, resampling=plan.resampling,
                                   stats=stats))[0]
    bad = nodata_pixels(stored, nodata)
    if values == "scaled":
        # float64 arithmetic, so scenes stored with different offsets round alike.
        out[...] = stored.astype(np.float64) * source.scale + source.offset
    else:
        out[...] = stored
    out[bad] = np.nan
    if invalid is not None:
        invalid[...] = bad


def nodata_pixels(values: np.ndarray, nodata: Any) -> np.ndarray:
    """Where ``values`` are ``nodata`` (or NaN, for floats)."""
    bad: np.ndarray = values == nodata
    if values.dtype.kind == "f":
        bad |= np.isnan(values)
    return bad


def keep_slots(data: np.ndarray, keep: Sequence[int]) -> np.ndarray:
    """The time steps ``keep`` (ascending) of ``data``, moved to its front in place (no
    copy of the whole output)."""
    for slot, kept in enumerate(keep):
        if slot != kept:
            data[slot] = data[kept]
    return data[: len(keep)]


def clip_outside(data: np.ndarray, grid: GridSpec, clip: shapely.Geometry,
                 fills: Sequence[Sequence[Any]]) -> None:
    """Set the pixels of ``data`` ``(time, band, y, x)`` on ``grid`` whose centre lies
    outside ``clip`` (in the grid's CRS) to ``fills[time][band]``, in place.

    A block whose pixel centres all lie inside (or all outside) skips the per-pixel
    test; a rectangle is a product of a column and a row range; any other shape is
    tested in blocks of rows, so the working set stays fixed however large the area.
    Centres on the boundary are outside, as in ``shapely.contains_xy``.
    """
    t = grid.transform
    centres = shapely.box(t.c + 0.5 * t.a, t.f + (grid.height - 0.5) * t.e,
                          t.c + (grid.width - 0.5) * t.a, t.f + 0.5 * t.e)
    if not t.b and not t.d and shapely.contains_properly(clip, centres):
        return
    xs = t.c + (np.arange(grid.width) + 0.5) * t.a
    ys = t.f + (np.arange(grid.height) + 0.5) * t.e
    if not t.b and not t.d and shapely.equals(clip, shapely.box(*clip.bounds)):
        minx, miny, maxx, maxy = clip.bounds
        cols = np.flatnonzero((xs > minx) & (xs < maxx))
        lines = np.flatnonzero((ys > miny) & (ys < maxy))
        c0, c1 = (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, 0)
        r0, r1 = (int(lines[0]), int(lines[-1]) + 1) if len(lines) else (0, 0)
        for time, row in enumerate(fills):
            for index, value in enumerate(row):
                band = data[time, index]
                if c0 == c1 or r0 == r1:
                    band[...] = value
                    continue
                band[:r0] = value
                band[r1:] = value
                band[r0:r1, :c0] = value
                band[r0:r1, c1:] = value
        return
    # Prepare a private copy: the caller's geometry may be shared by threads (dask
    # tasks of one lazy read), and preparing changes a geometry in place.
    shape = shapely.from_wkb(shapely.to_wkb(clip))
    shapely.prepare(shape)
    for top in range(0, grid.height, _CLIP_ROWS):
        bottom = min(top + _CLIP_ROWS, grid.height)
        xx, yy = np.meshgrid(xs, ys[top:bottom])
        outside = ~shapely.contains_xy(shape, xx, yy)
        if not outside.any():
            continue
        for time, row in enumerate(fills):
            for index, value in enumerate(row):
                np.copyto(data[time, index, top:bottom], np.asarray(value, dtype=data.dtype),
                          where=outside)
