"""Spatial splits that cannot leak: square blocks assigned to stages, with a buffer.

Random chips drawn from one area for training and validation sit next to each other
(often overlap), so a validation score measures memory of the place rather than
generalisation. A block split cuts the area into square blocks (``block_size``, in the
CRS's units: metres for a projected CRS), gives each block to one stage (``train``,
``val``, ``test``...) at random by ratio, and removes a strip ``buffer`` wide along
every border between blocks of different stages. A chip that lies inside its stage's
:attr:`BlockSplit.regions` is then at least ``buffer`` away from every chip of every
other stage.

Where the strip goes: for each pair of stages the one with the larger ratio (on a
tie, the one named first) gives it up, so the smallest stages (validation, test) keep
their blocks whole and the training stage, which has the most, pays for the buffer.

Pure geometry (shapely and NumPy): no torch, no I/O. The datamodule
(:class:`rasteret.torch.RasteretDataModule` with ``split_by="blocks"``) turns the
regions into its samplers' regions of interest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from rasteret.errors import ConfigurationError

#: Stage ratios used when none are given.
DEFAULT_SPLITS: dict[str, float] = {"train": 0.7, "val": 0.15, "test": 0.15}
#: More blocks than this is a block size given in the wrong unit (degrees vs metres).
MAX_BLOCKS = 1_000_000
#: Segments per quarter circle of the buffer's rounded corners.
_QUAD_SEGMENTS = 8


@dataclass(frozen=True)
class BlockSplit:
    """An area cut into square blocks, each given to one stage, with a buffer.

    Build it with :func:`block_split`.

    Attributes:
        blocks: The blocks that meet the area, clipped to it (shapely polygons).
        stages: The stage of each block (same order as ``blocks``).
        regions: Per stage, where its chips may lie: its blocks less the buffer
            strips it gives up. Regions of two stages are at least ``buffer`` apart.
        block_size: Side of a block in CRS units.
        buffer: The guaranteed distance between regions of different stages.
        seed: The seed blocks were assigned with.
    """

    blocks: np.ndarray
    stages: np.ndarray
    regions: dict[str, shapely.Geometry]
    block_size: float
    buffer: float
    seed: int

    def region(self, stage: str) -> shapely.Geometry:
        """Where the chips of ``stage`` may lie.

        Raises:
            ConfigurationError: ``stage`` is not one of the split's stages.
        """
        if stage not in self.regions:
            raise ConfigurationError(
                f"no stage {stage!r} in this block split; stages: {list(self.regions)}")
        return self.regions[stage]

    def block_count(self, stage: str) -> int:
        """The number of blocks given to ``stage``."""
        return int(np.count_nonzero(self.stages == stage))

    def area(self, stage: str) -> float:
        """The area (CRS units squared) of the region of ``stage``."""
        return float(shapely.area(self.region(stage)))


def check_ratios(splits: Mapping[str, float]) -> dict[str, float]:
    """Stage ratios normalised to sum to 1, checked.

    Raises:
        ConfigurationError: No stage, or a ratio that is not a positive number.
    """
    if not splits:
        raise ConfigurationError("give splits={stage: ratio}, e.g. "
                                 "{'train': 0.7, 'val': 0.15, 'test': 0.15}")
    ratios: dict[str, float] = {}
    for stage, ratio in splits.items():
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
            raise ConfigurationError(
                f"the ratio of stage {stage!r} must be a positive number, not {ratio!r}")
        ratios[str(stage)] = float(ratio)
    total = sum(ratios.values())
    return {stage: ratio / total for stage, ratio in ratios.items()}


def square_blocks(area: shapely.Geometry, block_size: float) -> np.ndarray:
    """The squares of a grid anchored at multiples of ``block_size`` that meet
    ``area`` (with a positive area), clipped to it, row by row from the bottom left.

    Raises:
        ConfigurationError: ``block_size`` is not positive, or gives more than
            :data:`MAX_BLOCKS` blocks (a size in degrees given for metres?).
    """
    if not block_size > 0 or not math.isfinite(block_size):
        raise ConfigurationError(f"block_size must be a positive length, not {block_size!r}")
    if area is None or shapely.is_empty(area):
        raise ConfigurationError("the area to split is empty (no scene footprint)")
    minx, miny, maxx, maxy = shapely.bounds(area)
    cols = np.arange(math.floor(minx / block_size), math.ceil(maxx / block_size))
    rows = np.arange(math.floor(miny / block_size), math.ceil(maxy / block_size))
    if len(cols) * len(rows) > MAX_BLOCKS:
        raise ConfigurationError(
            f"block_size={block_size} cuts the area into {len(cols) * len(rows)} blocks "
            f"(more than {MAX_BLOCKS}): block_size is in the CRS's units (metres for a "
            "projected CRS)")
    x, y = np.meshgrid(cols * block_size, rows * block_size)
    squares = shapely.box(x.ravel(), y.ravel(), x.ravel() + block_size, y.ravel() + block_size)
    parts = shapely.intersection(squares, area)
    keep = shapely.area(parts) > 0
    return np.asarray(parts[keep])


def assign_blocks(areas: np.ndarray, ratios: Mapping[str, float], seed: int) -> np.ndarray:
    """The stage of each block: the blocks in an order shuffled by ``seed`` are laid
    end to end by area, and a block goes to the stage whose share of the total
    (in ``ratios``' order) holds its middle. Stages then get about their ratio of the
    area, within one block."""
    stages = np.array(list(ratios), dtype=object)
    if not len(areas):
        return np.zeros(0, dtype=object)
    order = np.random.default_rng(seed).permutation(len(areas))
    shuffled = np.asarray(areas, float)[order]
    middle = (np.cumsum(shuffled) - shuffled / 2) / shuffled.sum()
    edges = np.cumsum(list(ratios.values()))[:-1]
    assigned = np.empty(len(areas), dtype=object)
    assigned[order] = stages[np.searchsorted(edges, middle, side="right")]
    return assigned


def widen(geometry: shapely.Geometry, distance: float) -> shapely.Geometry:
    """``geometry`` grown by a little more than ``distance``: a superset of every
    point within ``distance`` of it (the round corners of a buffer are polygons
    inscribed in their arcs, so the radius is raised until they enclose the arcs,
    plus a margin for floating point)."""
    margin = 1e-9 * max(1.0, distance, *np.abs(shapely.bounds(geometry)))
    radius = (distance + margin) / math.cos(math.pi / (4 * _QUAD_SEGMENTS))
    return shapely.buffer(geometry, radius, quad_segs=_QUAD_SEGMENTS)


def stage_regions(blocks: np.ndarray, stages: np.ndarray, ratios: Mapping[str, float],
                  buffer: float) -> dict[str, shapely.Geometry]:
    """Per stage, its blocks less a strip ``buffer`` wide along its borders with the
    stages after it in the order of decreasing ratio (stable): every pair of regions
    ends at least ``buffer`` apart, and each border loses one strip, not two."""
    ranked = sorted(ratios, key=lambda stage: -ratios[stage])
    unions = {stage: shapely.union_all(blocks[stages == stage]) for stage in ranked}
    regions: dict[str, shapely.Geometry] = {}
    for position, stage in enumerate(ranked):
        region = unions[stage]
        later = [unions[s] for s in ranked[position + 1:] if not shapely.is_empty(unions[s])]
        if buffer > 0 and later and not shapely.is_empty(region):
            region = shapely.difference(region, widen(shapely.union_all(later), buffer))
        regions[stage] = region
    return {stage: regions[stage] for stage in ratios}


def block_split(area: shapely.Geometry, *, block_size: float,
                splits: Mapping[str, float] | None = None, seed: int = 0,
                buffer: float = 0.0) -> BlockSplit:
    """Cut ``area`` into square blocks, give them to stages, and keep stages apart.

    Args:
        area: The area to split (e.g. the union of a dataset's scene footprints), in
            a projected CRS.
        block_size: Side of a block, in the CRS's units (metres for UTM).
        splits: Stage -> ratio of the area (normalised; default
            :data:`DEFAULT_SPLITS`).
        seed: Seed of the random assignment (the same seed gives the same split).
        buffer: The minimum distance, in CRS units, between the regions (and so the
            chips) of two stages.

    Returns:
        The split: blocks, their stages and each stage's region.

    Raises:
        ConfigurationError: A bad ratio, block size or buffer; a stage that gets no
            block (fewer blocks than stages: choose a smaller ``block_size``); or a
            stage whose region the buffer removes entirely.
    """
    ratios = check_ratios(DEFAULT_SPLITS if splits is None else splits)
    if not buffer >= 0 or not math.isfinite(buffer):
        raise ConfigurationError(f"buffer must be a length >= 0, not {buffer!r}")
    blocks = square_blocks(area, block_size)
    stages = assign_blocks(shapely.area(blocks), ratios, seed)
    empty = [stage for stage in ratios if not np.any(stages == stage)]
    if empty:
        raise ConfigurationError(
            f"block_size={block_size} cuts the area into {len(blocks)} block(s): stage(s) "
            f"{empty} got none; choose a smaller block_size or another seed")
    regions = stage_regions(blocks, stages, ratios, buffer)
    gone = [stage for stage, region in regions.items() if shapely.is_empty(region)]
    if gone:
        raise ConfigurationError(
            f"buffer={buffer} removes all of stage(s) {gone}: choose a smaller buffer or "
            "larger blocks")
    return BlockSplit(blocks=blocks, stages=stages, regions=regions,
                      block_size=float(block_size), buffer=float(buffer), seed=int(seed))


def nearest_other(boxes: Mapping[str, np.ndarray],
                  spans: Mapping[str, tuple[Any, Any]] | None = None) -> dict[str, float]:
    """Per stage, the distance from its nearest chip to a chip of another stage
    (``inf`` when no other stage has chips).

    Args:
        boxes: Stage -> ``(n, 4)`` array of chip ``minx, miny, maxx, maxy``.
        spans: Stage -> ``(first, last)`` time of its scenes (any comparable values):
            stages whose spans do not overlap are apart in time and not compared
            (a date holdout). None compares every pair.
    """
    shapes = {stage: shapely.box(*np.asarray(b, float).reshape(-1, 4).T)
              for stage, b in boxes.items()}

    def share_time(first: str, second: str) -> bool:
        if spans is None or first not in spans or second not in spans:
            return True
        return not (spans[first][1] < spans[second][0] or spans[second][1] < spans[first][0])

    result: dict[str, float] = {}
    for stage, own in shapes.items():
        others = [shapes[s] for s in shapes
                  if s != stage and len(shapes[s]) and share_time(stage, s)]
        if not len(own) or not others:
            result[stage] = math.inf
            continue
        tree = shapely.STRtree(np.concatenate(others))
        _, distances = tree.query_nearest(own, return_distance=True, all_matches=False)
        result[stage] = float(np.min(distances))
    return result
