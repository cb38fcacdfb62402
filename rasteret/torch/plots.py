"""Pictures of what a sampler draws (issue 21, item 6): chip maps and split maps.

:func:`plot_chips` draws a sampler's chips over the dataset's scene footprints
(coloured by date); :func:`plot_split` draws a block split (:mod:`rasteret.splits`):
each stage's region in its colour, the buffer strips between stages hatched, and the
chips of each stage. :meth:`RasteretDataModule.plot_splits
<rasteret.torch.datamodule.RasteretDataModule.plot_splits>` draws its own split.
Both return a :class:`matplotlib.figure.Figure` built without pyplot (headless; no
global figure state). Nothing is read: chips come from the sampler, footprints from
the index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import shapely
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from pyproj import CRS
from torch.utils.data import Sampler

from rasteret.errors import ConfigurationError
from rasteret.plots import (
    COVERAGE_COLOR,
    draw_boxes,
    draw_footprints,
    draw_polygons,
    finish_map,
    in_crs,
    new_figure,
    valid_coverage,
)
from rasteret.splits import BlockSplit
from rasteret.torch.dataset import RasteretDataset
from rasteret.torch.samplers import TileAlignedSampler

#: Chips drawn at most per map (evenly spaced through the sampler's chips beyond it).
MAX_CHIPS = 20_000
#: Stage colours, in the order of the split's stages.
STAGE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf", "#d62728")


def chip_bounds_of(chips: Sampler[Any] | np.ndarray | Sequence[Sequence[float]]
                   ) -> np.ndarray:
    """``(n, 4)`` ``minx, miny, maxx, maxy`` of chips: given as such an array, every
    chip a :class:`TileAlignedSampler` can draw (:meth:`~TileAlignedSampler.chip_bounds`),
    else one epoch of any sampler yielding ``[x, y, t]`` slices (TorchGeo's). Nothing is
    read.

    Raises:
        ConfigurationError: Neither a sampler nor ``(n, 4)`` bounds.
    """
    if isinstance(chips, TileAlignedSampler):
        return chips.chip_bounds()
    if isinstance(chips, Sampler):
        boxes = [(index[0].start, index[1].start, index[0].stop, index[1].stop)
                 for index in chips]
        return np.asarray(boxes, float).reshape(-1, 4)
    try:
        bounds = np.asarray(chips, float)
    except (TypeError, ValueError) as error:
        raise ConfigurationError(
            f"chips must be a sampler or (n, 4) bounds, not {type(chips).__name__}") from error
    if bounds.ndim != 2 or bounds.shape[1] != 4:
        raise ConfigurationError(
            f"chips must be a sampler or (n, 4) minx, miny, maxx, maxy bounds, not an array "
            f"of shape {bounds.shape}")
    return bounds


def thinned(boxes: np.ndarray, limit: int = MAX_CHIPS) -> np.ndarray:
    """At most ``limit`` of ``boxes``, evenly spaced through them."""
    if len(boxes) <= limit:
        return boxes
    return boxes[np.linspace(0, len(boxes) - 1, limit).astype(np.int64)]


def dataset_footprints(dataset: RasteretDataset) -> tuple[np.ndarray, np.ndarray]:
    """The footprints (dataset CRS) and start times of the dataset's index entries."""
    frame = dataset.index
    footprints = np.asarray(frame.geometry.array, dtype=object)
    starts = np.asarray(frame.index.left.as_unit("ns").asi8).astype("datetime64[ns]")
    return footprints, starts


def dataset_coverage(dataset: RasteretDataset) -> np.ndarray | None:
    """The valid data of the dataset's scenes in its CRS, when the collection records
    it (see :func:`rasteret.plots.valid_coverage`), else None."""
    valid = valid_coverage(dataset.collection)
    if valid is None:
        return None
    rows = dataset.index["row"].to_numpy(np.int64)
    return in_crs(valid[rows], dataset.crs)


def plot_chips(chips: Sampler[Any] | np.ndarray | Sequence[Sequence[float]],
               dataset: RasteretDataset, *, coverage: bool = True,
               title: str | None = None) -> Figure:
    """A sampler's chips over the dataset's scene footprints (coloured by date).

    Args:
        chips: A :class:`TileAlignedSampler` (every chip it can draw), any TorchGeo
            sampler over ``dataset`` (one epoch's chips), or ``(n, 4)`` bounds
            ``minx, miny, maxx, maxy`` in the dataset CRS. Beyond :data:`MAX_CHIPS`
            an evenly spaced subset is drawn (the legend gives both counts).
        dataset: The dataset the chips are drawn from.
        coverage: Shade the scenes' valid data where the collection records it.
        title: The axes' title.

    Returns:
        A matplotlib ``Figure`` (no pyplot state; ``fig.savefig(...)`` writes it).

    Raises:
        ConfigurationError: ``chips`` is neither a sampler nor ``(n, 4)`` bounds, or
            holds no chip.
    """
    boxes = chip_bounds_of(chips)
    if not len(boxes):
        raise ConfigurationError("no chip to plot: the sampler yields none")
    figure, axes = new_figure()
    footprints, starts = dataset_footprints(dataset)
    draw_footprints(figure, axes, footprints, starts)
    handles = [Patch(facecolor="none", edgecolor="0.3",
                     label=f"scene footprints ({len(footprints)})")]
    valid = dataset_coverage(dataset) if coverage else None
    if valid is not None:
        draw_polygons(axes, valid, label="valid data", facecolors=COVERAGE_COLOR,
                      edgecolors="none", alpha=0.35, zorder=3.0)
        handles.append(Patch(facecolor=COVERAGE_COLOR, alpha=0.35, label="valid data"))
    shown = thinned(boxes)
    count = f"{len(boxes)}" if len(shown) == len(boxes) else f"{len(shown)} of {len(boxes)}"
    draw_boxes(axes, shown, label="chips")
    handles.append(Patch(facecolor="none", edgecolor="#111111", label=f"chips ({count})"))
    finish_map(axes, dataset.crs, handles, title if title is not None
               else f"{type(chips).__name__}: {len(boxes)} chips")
    return figure


def plot_split(split: BlockSplit, chips: Mapping[str, np.ndarray] | None = None, *,
               crs: CRS | None = None, footprints: Sequence[Any] | np.ndarray | None = None,
               title: str | None = None) -> Figure:
    """A block split: each stage's region in its colour, the buffer strips hatched
    grey, the blocks outlined, and each stage's chips in a darker edge.

    Args:
        split: The split (:func:`rasteret.splits.block_split`).
        chips: Per stage, ``(n, 4)`` chip bounds (see :func:`chip_bounds_of`).
        crs: The split's CRS (axis labels).
        footprints: Scene footprints to outline (same CRS).
        title: The axes' title.

    Returns:
        A matplotlib ``Figure``; its legend has one entry per stage.
    """
    figure, axes = new_figure()
    handles: list[Patch] = []
    if footprints is not None:
        draw_polygons(axes, footprints, label="footprints", facecolors="none",
                      edgecolors="0.55", linewidths=0.8, linestyles="dotted", zorder=1.0)
        handles.append(Patch(facecolor="none", edgecolor="0.55", linestyle="dotted",
                             label="scene footprints"))
    draw_polygons(axes, list(split.blocks), label="blocks", facecolors="none",
                  edgecolors="0.35", linewidths=0.5, zorder=2.5)
    buffer = shapely.difference(shapely.union_all(split.blocks),
                                shapely.union_all(list(split.regions.values())))
    for number, stage in enumerate(split.regions):
        color = STAGE_COLORS[number % len(STAGE_COLORS)]
        draw_polygons(axes, [split.region(stage)], label=f"region {stage}", facecolors=color,
                      edgecolors="none", alpha=0.4, zorder=2.0)
        boxes = None if chips is None else chips.get(stage)
        count = ""
        if boxes is not None and len(boxes):
            draw_boxes(axes, thinned(np.asarray(boxes, float)), label=f"chips {stage}",
                       color=color, linewidth=0.8)
            count = f", {len(boxes)} chips"
        handles.append(Patch(facecolor=color, alpha=0.6, edgecolor=color,
                             label=f"{stage} ({split.block_count(stage)} blocks{count})"))
    if not shapely.is_empty(buffer):
        draw_polygons(axes, [buffer], label="buffer", facecolors="none", edgecolors="0.4",
                      hatch="////", linewidths=0.0, zorder=3.0)
        handles.append(Patch(facecolor="none", edgecolor="0.4", hatch="////",
                             label=f"buffer ({split.buffer:g})"))
    finish_map(axes, crs, handles,
               title if title is not None else
               f"block split: {len(split.blocks)} blocks of {split.block_size:g}, "
               f"seed {split.seed}")
    return figure
