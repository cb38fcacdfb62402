"""``TileAlignedSampler``: chips aligned to the COGs' internal tile grid.

A chip that never straddles a tile boundary (or spans whole tiles) reads exactly
the tiles it covers: read amplification 1. Each chip is tied to one scene's time
stamp, so a mosaic reads one scene per chip instead of every overlapping one. Under
DDP each rank samples its own disjoint share of the chips
(:mod:`rasteret.torch.distributed`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import shapely
from torchgeo.samplers import GeoSampler

from rasteret.errors import ConfigurationError
from rasteret.options import check_option
from rasteret.torch.dataset import RasteretDataset
from rasteret.torch.distributed import distributed_share, share_positions

MODES = ("random", "grid")


def _chip_offsets(extent: int, tile: int, chip: int) -> np.ndarray:
    """Pixel offsets of aligned chips along one axis of an image."""
    if chip <= tile:
        step = chip if tile % chip == 0 else tile
    else:
        step = tile * math.ceil(chip / tile)
    return np.arange(0, extent - chip + 1, step, dtype=np.int64)


class TileAlignedSampler(GeoSampler):
    """Sample chips aligned to the internal tiles of each scene's COGs.

    Chips of ``size`` pixels start on tile boundaries (or on sub-multiples of the
    tile when ``size`` divides the tile size), so every chip reads exactly the tiles
    it covers. Each chip carries its scene's time stamp: the dataset reads that
    scene only.

    Under distributed training (DDP) every rank builds the same sampler and keeps
    its own share: every ``world_size``-th chip of the dataset's chips, starting at
    its rank. Shares are disjoint and together hold every chip. Every rank yields
    the same number of chips per epoch, so none waits at a gradient all-reduce for a
    batch another rank never makes: in grid mode a short share is padded with chips
    from the start of the order (read twice per epoch; see
    :func:`~rasteret.torch.distributed.share_positions`), in random mode each rank
    draws ``length`` chips from its own share.

    Random epochs are reproducible: epoch ``e`` of rank ``r`` draws from a generator
    seeded with ``(seed, r, e)``. The epoch advances after each pass and can be set
    with :meth:`set_epoch` (Lightning does so before each epoch, so a resumed run
    draws the chips the interrupted one would have).

    Args:
        dataset: The dataset to sample from (its scenes must be on their native grid:
            same CRS and resolution as the dataset).
        size: Chip size in pixels (default: the dataset's ``chip_size``).
        mode: ``"random"`` (chips drawn with replacement) or ``"grid"`` (every chip
            once, in order).
        length: Chips per epoch and rank in random mode (default: the size of the
            largest rank's share, i.e. ``ceil(chips / world_size)``).
        roi: Keep chips inside this polygon (dataset CRS).
        time_range: Keep scenes within ``(start, end)``.
        seed: Seed of the random draws (random mode; default: a fresh one).
        rank: This process's rank; default from ``torch.distributed`` when it is
            initialised, else 0.
        world_size: The number of ranks; default from ``torch.distributed`` when it
            is initialised, else 1.

    Raises:
        ConfigurationError: No aligned chip fits (a chip larger than the scenes, or
            scenes not on their native grid), or ``rank`` and ``world_size`` do not
            fit together.
    """

    def __init__(
        self,
        dataset: RasteretDataset,
        *,
        size: int | None = None,
        mode: str = "random",
        length: int | None = None,
        roi: shapely.Geometry | None = None,
        time_range: tuple[Any, Any] | None = None,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        check_option("mode", mode, MODES)
        size = size or dataset.chip_size
        if not size or size <= 0:
            raise ConfigurationError("give size= (chip size in pixels) or the dataset's chip_size")
        self.rank, self.world_size = distributed_share(rank, world_size)
        self.size = int(size)
        self.mode = mode
        self.res = dataset.res
        self.seed = secrets.randbits(63) if seed is None else int(seed)
        self.epoch = 0
        chips = self._candidates(dataset, roi, time_range)
        count = len(chips["xmin"])
        if not count:
            raise ConfigurationError(
                f"no {self.size}-pixel chip aligned to the tile grid fits the dataset's scenes "
                "(inside the roi and time range)"
            )
        positions = share_positions(count, self.rank, self.world_size)
        # The share's own chips first, then (grid mode) the padding repeated from
        # other shares; random draws take only the former.
        self._own = len(range(self.rank, count, self.world_size))
        self._chips = {k: v[positions] for k, v in chips.items()}
        self._length = length if (length and mode == "random") else len(positions)

    def _candidates(
        self, dataset: RasteretDataset, roi: shapely.Geometry | None,
        time_range: tuple[Any, Any] | None,
    ) -> dict[str, np.ndarray]:
        band = dataset.bands[0]
        xs, ys, starts, stops = [], [], [], []
        window = None
        if time_range is not None:
            window = (pd.Timestamp(time_range[0]), pd.Timestamp(time_range[1]))
        for (interval, entry) in zip(dataset.index.index, dataset.index.itertuples()):
            if window and (interval.right < window[0] or interval.left > window[1]):
                continue
            view = dataset.view(int(entry.row), band)
            transform = view.transform
            if transform is None or view.epsg is None or not view.crs.equals(dataset.crs):
                continue
            xres, yres = view.resolution()
            if not (math.isclose(xres, dataset.res[0], rel_tol=1e-6)
                    and math.isclose(yres, dataset.res[1], rel_tol=1e-6)):
                continue
            cols = _chip_offsets(view.width, view.tile_width, self.size)
            rows = _chip_offsets(view.height, view.tile_height, self.size)
            grid_cols, grid_rows = np.meshgrid(cols, rows)
            xs.append(transform.c + grid_cols.ravel() * transform.a)
            ys.append(transform.f + grid_rows.ravel() * transform.e)
            count = grid_cols.size
            starts.append(np.full(count, interval.left.value, dtype=np.int64))
            stops.append(np.full(count, interval.right.value, dtype=np.int64))
        if not xs:
            return {"xmin": np.empty(0), "ymax": np.empty(0), "t0": np.empty(0), "t1": np.empty(0)}
        chips = {
            "xmin": np.concatenate(xs),
            "ymax": np.concatenate(ys),
            "t0": np.concatenate(starts),
            "t1": np.concatenate(stops),
        }
        width = self.size * dataset.res[0]
        height = self.size * dataset.res[1]
        if roi is not None:
            boxes = shapely.box(chips["xmin"], chips["ymax"] - height,
                                chips["xmin"] + width, chips["ymax"])
            keep = shapely.contains(roi, boxes)
            chips = {k: v[keep] for k, v in chips.items()}
        return chips

    def _slice(self, i: int) -> tuple[slice, slice, slice]:
        xres, yres = self.res
        xmin = float(self._chips["xmin"][i])
        ymax = float(self._chips["ymax"][i])
        return (
            slice(xmin, xmin + self.size * xres, xres),
            slice(ymax - self.size * yres, ymax, yres),
            slice(pd.Timestamp(int(self._chips["t0"][i])),
                  pd.Timestamp(int(self._chips["t1"][i])), 1),
        )

    def set_epoch(self, epoch: int) -> None:
        """Draw the chips of epoch ``epoch`` on the next pass (random mode)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        """Yield ``[xmin:xmax:xres, ymin:ymax:yres, t0:t1]`` slices of this rank's
        aligned chips, then advance the epoch."""
        if self.mode == "grid":
            order = np.arange(len(self._chips["xmin"]))
        else:
            generator = np.random.default_rng((self.seed, self.rank, self.epoch))
            order = generator.integers(0, self._own or len(self._chips["xmin"]), size=len(self))
        self.epoch += 1
        for i in order:
            yield self._slice(int(i))

    def __len__(self) -> int:
        """Chips per epoch."""
        return self._length
