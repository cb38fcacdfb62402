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
from collections.abc import Iterator, Mapping, Sized
from typing import Any, Literal, cast, get_args

import numpy as np
import pandas as pd
import shapely
from torch.utils.data import Sampler
from torchgeo.samplers import GeoSampler

from rasteret.band import crs_of
from rasteret.errors import ConfigurationError
from rasteret.options import check_option
from rasteret.torch.content import ChipContent, check_content_options, take_boxes
from rasteret.torch.dataset import RasteretDataset
from rasteret.torch.distributed import distributed_share

#: How a :class:`TileAlignedSampler` draws chips: at random, or every chip once.
ChipMode = Literal["random", "grid"]
MODES: tuple[ChipMode, ...] = get_args(ChipMode)


def _chip_offsets(extent: int, tile: int, chip: int) -> np.ndarray:
    """Pixel offsets of aligned chips along one axis of an image."""
    if chip <= tile:
        step = chip if tile % chip == 0 else tile
    else:
        step = tile * math.ceil(chip / tile)
    return np.arange(0, extent - chip + 1, step, dtype=np.int64)


class _Chips:
    """The aligned chips of a sampler, enumerated without being stored: chip ``j`` of
    scene entry ``n`` is the ``j``-th offset pair of its layout (rows of chips, then
    columns, as ``numpy.meshgrid(...).ravel()``), scenes in index order. A share keeps
    every ``step``-th chip from ``first``, the order extended cyclically so that every
    share of a split has the same length (see
    :func:`~rasteret.torch.distributed.share_positions`). Tens of millions of chips
    cost a few arrays per scene, not per chip."""

    def __init__(self, layouts: list[tuple[np.ndarray, np.ndarray]], layout_of: np.ndarray,
                 counts: np.ndarray, terms: dict[str, np.ndarray], t0: np.ndarray,
                 t1: np.ndarray, *, first: int = 0, step: int = 1,
                 explicit: dict[str, np.ndarray] | None = None) -> None:
        self.layouts, self.layout_of, self.counts = layouts, layout_of, counts
        self.terms, self.t0, self.t1 = terms, t0, t1
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.first, self.step = first, step
        # Chips listed one by one (after an roi filter), else None.
        self.explicit = explicit

    def _total(self) -> int:
        return len(self.explicit["xmin"]) if self.explicit is not None else int(self.starts[-1])

    def __len__(self) -> int:
        total = self._total()
        if self.step == 1:
            return max(0, total - self.first)
        return -(-total // self.step) if total else 0  # padded: equal on every share

    @property
    def own(self) -> int:
        """Chips of this share before padding (distinct from the other shares')."""
        return len(range(self.first, self._total(), self.step))

    def _global(self, j: np.ndarray) -> tuple[np.ndarray, ...]:
        """``xmin, ymax, t0, t1`` of the chips at positions ``j`` before sharing."""
        if self.explicit is not None:
            return tuple(self.explicit[k][j] for k in ("xmin", "ymax", "t0", "t1"))
        entry = np.searchsorted(self.starts, j, side="right") - 1
        k = j - self.starts[entry]
        xmin, ymax = np.empty(len(j)), np.empty(len(j))
        for number, (cols, rows) in enumerate(self.layouts):
            here = np.flatnonzero(self.layout_of[entry] == number)
            if not len(here):
                continue
            row, col = np.divmod(k[here], len(cols))
            e = entry[here]
            xmin[here] = self.terms["c"][e] + cols[col] * self.terms["a"][e]
            ymax[here] = self.terms["f"][e] + rows[row] * self.terms["e"][e]
        return xmin, ymax, self.t0[entry], self.t1[entry]

    def chip(self, i: int) -> tuple[float, float, int, int]:
        """``xmin, ymax, t0, t1`` (ns) of chip ``i`` of this share."""
        position = (self.first + i * self.step) % self._total()
        xmin, ymax, t0, t1 = self._global(np.array([position]))
        return float(xmin[0]), float(ymax[0]), int(t0[0]), int(t1[0])

    def materialized(self) -> _Chips:
        """The same chips listed one by one."""
        every = np.arange(self._total(), dtype=np.int64)
        xmin, ymax, t0, t1 = self._global(every)
        # The index entry of each chip (its scene), for filters by content.
        entry = (np.searchsorted(self.starts, every, side="right") - 1
                 if self.explicit is None else self.explicit["entry"])
        return self.only(np.ones(len(every), bool), {"xmin": xmin, "ymax": ymax,
                                                     "t0": t0, "t1": t1, "entry": entry})

    def own_weights(self) -> np.ndarray | None:
        """Draw probabilities of this share's own chips (None: uniform)."""
        if self.explicit is None or "weight" not in self.explicit:
            return None
        weights = self.explicit["weight"][self.first::self.step]
        total = float(weights.sum())
        return weights / total if total > 0 else None

    @property
    def xmin(self) -> np.ndarray:
        """Left edges of listed chips."""
        assert self.explicit is not None
        return self.explicit["xmin"]

    @property
    def ymax(self) -> np.ndarray:
        """Top edges of listed chips."""
        assert self.explicit is not None
        return self.explicit["ymax"]

    def only(self, keep: np.ndarray, explicit: dict[str, np.ndarray] | None = None
             ) -> _Chips:
        """The listed chips where ``keep`` is true."""
        chips = explicit if explicit is not None else self.explicit
        assert chips is not None
        return _Chips([], self.layout_of[:0], self.counts[:0], {}, self.t0[:0], self.t1[:0],
                      explicit={k: v[keep] for k, v in chips.items()})

    def share(self, rank: int, world_size: int) -> _Chips:
        """Every ``world_size``-th chip from ``rank``."""
        return _Chips(self.layouts, self.layout_of, self.counts, self.terms, self.t0, self.t1,
                      first=rank, step=world_size, explicit=self.explicit)


def _series_chips(chips: _Chips, dataset: RasteretDataset,
                  time_range: tuple[Any, Any] | None) -> _Chips:
    """The chips of a time series dataset whose samples batch (``time_steps`` or
    ``time_bins``): each location once, with one time window (``time_range``, else the
    dataset's), so every chip's time steps come from the same slice. Scenes on one
    grid (a tile's revisits) have the same chips: one scene per grid is listed."""
    grid = np.column_stack([chips.layout_of, *(chips.terms[k] for k in ("a", "c", "e", "f"))])
    _, first = np.unique(grid, axis=0, return_index=True)
    first = np.sort(first)
    chips = _Chips(chips.layouts, chips.layout_of[first], chips.counts[first],
                   {k: v[first] for k, v in chips.terms.items()}, chips.t0[first],
                   chips.t1[first]).materialized()
    if time_range is None:
        window = dataset.bounds[2]
        time_range = (window.start, window.stop)
    start, stop = (pd.Timestamp(v).as_unit("ns").value for v in time_range)
    places = np.column_stack([chips.xmin, chips.ymax]).round(6)
    _, first = np.unique(places, axis=0, return_index=True)
    keep = np.zeros(len(places), bool)
    keep[first] = True
    return chips.only(keep, {"xmin": chips.xmin, "ymax": chips.ymax,
                             "t0": np.full(len(places), start, np.int64),
                             "t1": np.full(len(places), stop, np.int64)})


class TileAlignedSampler(GeoSampler):
    """Sample chips aligned to the internal tiles of each scene's COGs.

    Chips of ``size`` pixels start on tile boundaries (or on sub-multiples of the
    tile when ``size`` divides the tile size), so every chip reads exactly the tiles
    it covers. Each chip carries its scene's time stamp: the dataset reads that
    scene only. For a time series dataset whose samples batch (``time_steps`` or
    ``time_bins``), each chip location is yielded once (not once per scene) with the
    time window ``time_range`` (default: the dataset's whole time range), so every
    sample has the same number of time steps.

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
        time_range: Keep scenes within ``(start, end)``; for a time series dataset
            that batches, also every chip's time window.
        seed: Seed of the random draws (random mode; default: a fresh one).
        rank: This process's rank; default from ``torch.distributed`` when it is
            initialised, else 0.
        world_size: The number of ranks; default from ``torch.distributed`` when it
            is initialised, else 1.
        min_valid: Keep only chips whose share of valid pixels is at least this, by
            the collection's ``valid_coverage`` (item geometry, sparse tiles and,
            when built with ``valid_coverage="overview"``, the smallest overview; see
            :mod:`rasteret.coverage`). No request is made.
        positive_fraction: In random mode, draw this share of chips among those
            holding a label other than ``background`` and the rest among those holding
            none (labels: the dataset's first mask band, or ``labels``).
        class_balance: In random mode, ``{class value: weight}``: draw chips holding
            each class in proportion to its weight.
        labels: A dataset whose first mask band (else first band) holds the labels,
            when they are not the dataset's own ``mask_bands``.
        background: The class value that is not positive (default 0).

        The label filters scan the label tiles once (per process and asset version,
        kept in the label dataset's ``cache_dir`` when it has one; see
        :mod:`rasteret.labelstats`); the chips are then listed one by one.

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
        mode: ChipMode = "random",
        length: int | None = None,
        roi: shapely.Geometry | None = None,
        time_range: tuple[Any, Any] | None = None,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        min_valid: float | None = None,
        positive_fraction: float | None = None,
        class_balance: Mapping[float, float] | None = None,
        labels: RasteretDataset | None = None,
        background: float = 0,
    ) -> None:
        check_option("mode", mode, MODES)
        # Chips by content (rasteret.torch.content): valid data and labels.
        check_content_options(min_valid, positive_fraction, class_balance)
        if mode == "grid" and (positive_fraction is not None or class_balance is not None):
            raise ConfigurationError(
                "positive_fraction= and class_balance= weight random draws: use mode='random'")
        self.min_valid, self.positive_fraction = min_valid, positive_fraction
        self.class_balance = dict(class_balance) if class_balance is not None else None
        self.content = ChipContent(dataset, labels=labels, background=background)
        size = size or dataset.chip_size
        if not size or size <= 0:
            raise ConfigurationError("give size= (chip size in pixels) or the dataset's chip_size")
        self.rank, self.world_size = distributed_share(rank, world_size)
        self.size = int(size)
        self.mode = mode
        self.res = dataset.res
        self.seed = secrets.randbits(63) if seed is None else int(seed)
        self.epoch = 0
        self._chips = self._candidates(dataset, roi, time_range)
        if not len(self._chips):
            raise ConfigurationError(
                f"no {self.size}-pixel chip aligned to the tile grid fits the dataset's scenes "
                "(inside the roi and time range, with min_valid valid data)"
            )
        self._length = length if (length and mode == "random") else len(self._chips)

    def _candidates(
        self, dataset: RasteretDataset, roi: shapely.Geometry | None,
        time_range: tuple[Any, Any] | None,
    ) -> _Chips:
        # Vectorised over the index: one array operation per distinct image layout,
        # not a Python step per scene.
        frame = dataset.index
        rows = frame["row"].to_numpy(np.int64)
        lefts = frame.index.left.as_unit("ns").asi8
        rights = frame.index.right.as_unit("ns").asi8
        grids = {k: v[rows] for k, v in dataset.grids().items()}
        keep = grids["valid"] & ~np.isnan(grids["a"]) & (grids["crs_epsg"] >= 0)
        if time_range is not None:
            start = pd.Timestamp(time_range[0]).as_unit("ns").value
            stop = pd.Timestamp(time_range[1]).as_unit("ns").value
            keep &= ~((rights < start) | (lefts > stop))
        for code in np.unique(grids["crs_epsg"][keep]):
            if not crs_of(int(code)).equals(dataset.crs):
                keep &= grids["crs_epsg"] != code
        xres, yres = np.abs(grids["a"]), np.abs(grids["e"])
        with np.errstate(invalid="ignore"):
            keep &= (np.abs(xres - dataset.res[0]) <= 1e-6 * np.maximum(xres, dataset.res[0]))
            keep &= (np.abs(yres - dataset.res[1]) <= 1e-6 * np.maximum(yres, dataset.res[1]))
        kept = np.flatnonzero(keep)
        layout = np.column_stack([grids[k][kept] for k in (
            "width", "height", "tile_width", "tile_height")])
        layouts: list[tuple[np.ndarray, np.ndarray]] = []
        layout_of = np.zeros(len(kept), np.int64)
        counts = np.zeros(len(kept), np.int64)
        if len(kept):
            shapes, which = np.unique(layout, axis=0, return_inverse=True)
            which = which.reshape(-1)
            for number, (width, height, tile_width, tile_height) in enumerate(shapes):
                cols = _chip_offsets(int(width), int(tile_width), self.size)
                offsets_y = _chip_offsets(int(height), int(tile_height), self.size)
                layouts.append((cols, offsets_y))
                layout_of[which == number] = number
                counts[which == number] = cols.size * offsets_y.size
        chips = _Chips(
            layouts, layout_of, counts,
            {k: grids[k][kept] for k in ("a", "c", "e", "f")},
            lefts[kept], rights[kept],
        )
        if dataset.series is not None and dataset.series.fixed:
            chips = _series_chips(chips, dataset, time_range)
        if roi is not None:
            chips = chips.materialized()
            width = self.size * dataset.res[0]
            height = self.size * dataset.res[1]
            boxes = shapely.box(chips.xmin, chips.ymax - height, chips.xmin + width, chips.ymax)
            chips = chips.only(shapely.contains(roi, boxes))
        chips = self._by_content(chips, rows[kept], dataset)
        # Disjoint shares per rank: every world_size-th chip in a fixed order.
        return chips.share(self.rank, self.world_size)

    def _by_content(self, chips: _Chips, rows: np.ndarray, dataset: RasteretDataset
                    ) -> _Chips:
        """The chips with ``min_valid``, weighted by label content (``rows``: the scene
        row of each index entry)."""
        if (self.min_valid is None and self.positive_fraction is None
                and self.class_balance is None) or not len(chips):
            return chips
        listed = chips.materialized()
        explicit = dict(listed.explicit or {})
        scene_rows = rows[explicit["entry"]]
        width, height = self.size * dataset.res[0], self.size * dataset.res[1]
        boxes = (explicit["xmin"], explicit["ymax"] - height, explicit["xmin"] + width,
                 explicit["ymax"])
        keep = np.ones(len(scene_rows), bool)
        if self.min_valid is not None:
            keep = self.content.valid(scene_rows, boxes) >= self.min_valid - 1e-9
        if self.positive_fraction is not None or self.class_balance is not None:
            weights = np.zeros(len(scene_rows))
            weights[keep] = self.content.weights(
                scene_rows[keep], take_boxes(boxes, keep),
                positive_fraction=self.positive_fraction, class_balance=self.class_balance)
            explicit["weight"] = weights
            keep &= weights > 0
        return listed.only(keep, explicit)

    def _slice(self, i: int) -> tuple[slice, slice, slice]:
        xres, yres = self.res
        xmin, ymax, t0, t1 = self._chips.chip(i)
        return (
            slice(xmin, xmin + self.size * xres, xres),
            slice(ymax - self.size * yres, ymax, yres),
            slice(pd.Timestamp(t0), pd.Timestamp(t1), 1),
        )

    def set_epoch(self, epoch: int) -> None:
        """Draw the chips of epoch ``epoch`` on the next pass (random mode)."""
        self.epoch = epoch

    def chip_bounds(self) -> np.ndarray:
        """Every chip this sampler can yield, on all ranks: an ``(n, 4)`` array of
        ``minx, miny, maxx, maxy`` in the dataset's CRS (a random epoch draws from
        these; a grid epoch yields this rank's share of them). Nothing is read."""
        chips = self._chips if self._chips.explicit is not None else self._chips.materialized()
        xres, yres = self.res
        xmin, ymax = chips.xmin, chips.ymax
        return np.column_stack([xmin, ymax - self.size * yres, xmin + self.size * xres, ymax])

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        """Yield ``[xmin:xmax:xres, ymin:ymax:yres, t0:t1]`` slices of this rank's
        aligned chips, then advance the epoch."""
        if self.mode == "grid":
            order = np.arange(len(self._chips))
        else:
            # The share's own chips only (the padding repeats other shares').
            generator = np.random.default_rng((self.seed, self.rank, self.epoch))
            weights = self._chips.own_weights()
            if weights is not None:  # by label content (positive_fraction, class_balance)
                order = generator.choice(len(weights), size=len(self), p=weights)
            else:
                order = generator.integers(0, self._chips.own or len(self._chips),
                                           size=len(self))
        self.epoch += 1
        for i in order:
            yield self._slice(int(i))

    def __len__(self) -> int:
        """Chips per epoch."""
        return self._length


class RegionSampler(GeoSampler):
    """The chips of another sampler that lie wholly inside a region.

    TorchGeo's samplers take a region of interest but do not keep their chips inside
    it: ``GriddedPatchSampler`` yields every grid chip that meets the region, and
    ``RandomPatchSampler`` snaps chips to the pixel grid after drawing them inside.
    Wrapped, only chips inside ``region`` (boundary included) are yielded, which is
    what a split needs to keep stages apart (see :mod:`rasteret.splits`). Give the
    wrapped sampler the region as its ``roi`` too, so that it draws few chips the
    wrapper drops (a random sampler drops none when its ``roi`` is the region shrunk
    by one pixel).

    Args:
        sampler: The sampler whose chips are filtered (yielding ``x`` and ``y``
            slices first).
        region: Where chips may lie (dataset CRS).
    """

    def __init__(self, sampler: Sampler[Any], region: shapely.Geometry) -> None:
        self.sampler = sampler
        self.region = region
        shapely.prepare(self.region)

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch on to the wrapped sampler, if it takes one."""
        inner = getattr(self.sampler, "set_epoch", None)
        if callable(inner):
            inner(epoch)

    def __iter__(self) -> Iterator[Any]:
        """Yield the wrapped sampler's chips that lie inside the region."""
        for index in self.sampler:
            x, y = index[0], index[1]
            if shapely.contains(self.region, shapely.box(x.start, y.start, x.stop, y.stop)):
                yield index

    def __len__(self) -> int:
        """Chips per epoch: counted exactly for a sequential (grid) sampler, else the
        wrapped sampler's length (an upper bound)."""
        if getattr(self.sampler, "strategy", None) == "sequential":
            if not hasattr(self, "_length"):
                self._length = sum(1 for _ in self)
            return self._length
        return len(cast(Sized, self.sampler))
