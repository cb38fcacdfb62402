"""What a chip holds, known before it is read: valid data and label classes.

Samplers ask :class:`ChipContent` for bounds on the share of valid pixels of a chip
(from the collection's ``valid_coverage`` column, see :mod:`rasteret.coverage`) and on
its label content (from class histograms, see :mod:`rasteret.labelstats`), and
:class:`ContentSampler` wraps any TorchGeo sampler with the same filters. Nothing here
makes a request, except the one scan of the label tiles a label filter needs the
first time (cached for the process, and in the dataset's ``cache_dir``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import shapely
from torchgeo.datasets.utils import GeoSlice
from torchgeo.samplers import (
    GeoSampler,
    GriddedPatchSampler,
    GridGeoSampler,
    PreChippedGeoSampler,
)

from rasteret.band import crs_of
from rasteret.coverage import CoverageGrid, chip_fractions, scene_coverage
from rasteret.errors import ConfigurationError
from rasteret.labelstats import LabelHistogram, label_histograms
from rasteret.read.warp import transformer
from rasteret.schema import COVERAGE_COLUMN
from rasteret.torch.dataset import RasteretDataset

#: Boxes as four arrays: ``xmin, ymin, xmax, ymax``.
Boxes = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def check_content_options(min_valid: float | None, positive_fraction: float | None,
                          class_balance: Mapping[float, float] | None) -> None:
    """Raise :class:`ConfigurationError` for options out of range."""
    for name, value in (("min_valid", min_valid), ("positive_fraction", positive_fraction)):
        if value is not None and not 0 <= value <= 1:
            raise ConfigurationError(f"{name}={value!r}: give a fraction between 0 and 1")
    if positive_fraction is not None and class_balance is not None:
        raise ConfigurationError("give positive_fraction= or class_balance=, not both")
    if class_balance is not None and (not class_balance or any(
            w < 0 for w in class_balance.values()) or sum(class_balance.values()) <= 0):
        raise ConfigurationError(
            f"class_balance={dict(class_balance)!r}: give {{class value: weight}} with "
            "weights >= 0 and at least one > 0")


class SceneGrids:
    """Each collection row's coverage, decoded when asked for (a few kilobytes per
    scene stay in Arrow until then): the stored ``valid_coverage`` column, else
    (collections built without it) computed from the geometry and the tile tables of
    the dataset's bands, without a request.

    Args:
        dataset: The dataset whose collection's rows are asked for.
        keep: Grids kept decoded at most (the most recent).
    """

    def __init__(self, dataset: RasteretDataset, *, keep: int = 1024) -> None:
        collection = dataset.collection
        self.collection = collection
        self.bands = list(dict.fromkeys(dataset.bands + dataset.mask_bands))
        self.column = (collection.column(COVERAGE_COLUMN)
                       if COVERAGE_COLUMN in collection.column_names else None)
        self.keep = keep
        self._decoded: dict[int, CoverageGrid | None] = {}

    def __getitem__(self, row: int) -> CoverageGrid | None:
        """The coverage of collection row ``row`` (None: no georeferenced band)."""
        if row in self._decoded:
            return self._decoded[row]
        stored = None if self.column is None else self.column[row].as_py()
        if stored is not None:
            grid: CoverageGrid | None = CoverageGrid.from_record(stored)
        else:
            geometry = self.collection.column("geometry")[row].as_py()
            views = [self.collection.band_views(band, [row])[0] for band in self.bands]
            grid = scene_coverage(views, geometry=geometry)
        if len(self._decoded) >= self.keep:
            self._decoded.pop(next(iter(self._decoded)))
        self._decoded[row] = grid
        return grid


def take_boxes(boxes: Boxes, keep: np.ndarray) -> Boxes:
    """The boxes where ``keep`` is true (or at positions ``keep``)."""
    xmin, ymin, xmax, ymax = boxes
    return xmin[keep], ymin[keep], xmax[keep], ymax[keep]


def _in_crs(boxes: Boxes, crs: Any, epsg: int) -> Boxes:
    """``boxes`` (in ``crs``) as boxes in ``epsg`` (the bounds of their corners)."""
    target = crs_of(epsg)
    if crs.equals(target):
        return boxes
    xmin, ymin, xmax, ymax = boxes
    to = transformer(crs, target)
    xs, ys = [], []
    for x, y in ((xmin, ymin), (xmin, ymax), (xmax, ymin), (xmax, ymax)):
        tx, ty = to.transform(x, y)
        xs.append(np.asarray(tx))
        ys.append(np.asarray(ty))
    return (np.min(xs, axis=0), np.min(ys, axis=0), np.max(xs, axis=0), np.max(ys, axis=0))


def _bound_by_row(grids: Callable[[int], CoverageGrid | None], rows: np.ndarray,
                  boxes: Boxes, crs: Any, bound: str) -> np.ndarray:
    """Per box, a bound of the fraction ``grids[rows]`` give it (0 without a grid)."""
    out = np.zeros(len(rows))
    for row in np.unique(rows):
        grid = grids(int(row))
        if grid is None:
            continue
        here = rows == row
        part = _in_crs(take_boxes(boxes, here), crs, grid.epsg)
        out[here] = chip_fractions(grid, *part, bound="upper" if bound == "upper" else "lower")
    return out


class ChipContent:
    """Bounds on what chips hold, from a dataset's coverage and label histograms.

    Args:
        dataset: The dataset the chips are read from.
        labels: Where the labels are: None (the dataset's first mask band, if any), or
            a dataset whose first mask band (else its first band) holds them.
        background: The class value that is not "positive" for ``positive_fraction``.
    """

    def __init__(self, dataset: RasteretDataset, *, labels: RasteretDataset | None = None,
                 background: float = 0) -> None:
        self.dataset = dataset
        self.crs = dataset.crs
        self.background = background
        self._grids: SceneGrids | None = None
        self.labels = labels if labels is not None else dataset
        names = self.labels.mask_bands or (self.labels.bands if labels is not None else [])
        self.label_band: str | None = names[0] if names else None
        self._histograms: list[LabelHistogram | None] | None = None

    def valid(self, rows: np.ndarray, boxes: Boxes) -> np.ndarray:
        """Lower bounds of the valid share of each box (dataset CRS) in scene ``rows``."""
        if self._grids is None:
            self._grids = SceneGrids(self.dataset)
        return _bound_by_row(self._grids.__getitem__, rows, boxes, self.crs, "lower")

    def histograms(self) -> list[LabelHistogram | None]:
        """The label histogram of every row of the label dataset's collection (the
        label tiles are scanned once per process and asset version)."""
        if self._histograms is None:
            if self.label_band is None:
                raise ConfigurationError(
                    "positive_fraction= and class_balance= need labels: give the dataset "
                    "mask_bands=, or labels= a dataset of label bands")
            views = self.labels.collection.band_views(self.label_band)
            present = [v for v in views if v is not None]
            scanned = iter(label_histograms(present, backend=self.labels.backend,
                                            cache_dir=self.labels.cache_dir))
            self._histograms = [None if v is None else next(scanned) for v in views]
        return self._histograms

    def label_rows(self, rows: np.ndarray, boxes: Boxes) -> np.ndarray:
        """The label scene of each box: its own row with the dataset's own mask band,
        else the first label scene whose footprint contains the box's centre (-1:
        none)."""
        if self.labels is self.dataset:
            return rows
        index = self.labels.index.to_crs(self.crs) if not self.labels.crs.equals(
            self.crs) else self.labels.index
        centres = shapely.points((boxes[0] + boxes[2]) / 2, (boxes[1] + boxes[3]) / 2)
        found = np.full(len(rows), -1, np.int64)
        hits, where = index.sindex.query(centres, predicate="within")
        rows_of = index["row"].to_numpy(np.int64)
        for chip, at in zip(hits[::-1], where[::-1]):  # the first hit of each chip wins
            found[chip] = rows_of[at]
        return found

    def class_bound(self, rows: np.ndarray, boxes: Boxes, value: float | None, *,
                    bound: str = "lower") -> np.ndarray:
        """A bound on the share of each box holding class ``value`` (None: any class
        but the background)."""
        histograms = self.histograms()
        label_rows = self.label_rows(rows, boxes)

        def grid_of(row: int) -> CoverageGrid | None:
            histogram = histograms[row]
            if histogram is None:
                return None
            return (histogram.not_grid([self.background]) if value is None
                    else histogram.class_grid(value))

        out = np.zeros(len(rows))
        known = label_rows >= 0
        out[known] = _bound_by_row(grid_of, label_rows[known], take_boxes(boxes, known),
                                   self.crs, bound)
        return out

    def weights(self, rows: np.ndarray, boxes: Boxes, *, positive_fraction: float | None,
                class_balance: Mapping[float, float] | None) -> np.ndarray:
        """Draw weights of the boxes (summing to 1) so that a share
        ``positive_fraction`` of draws holds a positive pixel (the rest none), or so
        that class ``c`` is present in draws in proportion to ``class_balance[c]``.

        Raises:
            ConfigurationError: A class (or positive or negative chips) asked for
                has no chip.
        """
        groups: list[tuple[str, float, np.ndarray]] = []
        if positive_fraction is not None:
            positive = self.class_bound(rows, boxes, None) > 0
            negative = self.class_bound(rows, boxes, None, bound="upper") <= 0
            groups = [("positive", positive_fraction, positive),
                      ("negative", 1 - positive_fraction, negative)]
        elif class_balance is not None:
            total = sum(class_balance.values())
            groups = [(f"class {value!r}", weight / total,
                       self.class_bound(rows, boxes, value) > 0)
                      for value, weight in class_balance.items()]
        weights = np.zeros(len(rows))
        for name, share, members in groups:
            if share <= 0:
                continue
            if not members.any():
                raise ConfigurationError(
                    f"no chip holds {name} labels (band {self.label_band!r}): drop it from "
                    "the balance or change the chip size")
            weights[members] += share / members.sum()
        normalized: np.ndarray = weights / weights.sum()
        return normalized


#: TorchGeo's samplers that list every chip once (filtered, not drawn from again).
_GRID_SAMPLERS = (GridGeoSampler, GriddedPatchSampler, PreChippedGeoSampler)

def chip_boxes(index: GeoSlice) -> tuple[Boxes, pd.Interval | None]:
    """The box and time interval (None: any time) of one sampler slice: ``(x, y)``
    (TorchGeo's spatial samplers: every time, mosaicked) or ``(x, y, t)``."""
    if isinstance(index, slice) or len(index) < 2:
        raise ConfigurationError(f"a chip needs x and y slices, not {index!r}")
    x, y = index[0], index[1]
    box = (np.array([x.start], float), np.array([y.start], float),
           np.array([x.stop], float), np.array([y.stop], float))
    if len(index) < 3 or index[2].start is None:
        return box, None
    t = index[2]
    return box, pd.Interval(pd.Timestamp(t.start), pd.Timestamp(t.stop), closed="both")


class ContentSampler(GeoSampler):
    """Any TorchGeo sampler, keeping only chips with enough valid data, or drawing
    them by label content.

    Wraps a sampler of ``dataset`` (``RandomGeoSampler``, ``RandomPatchSampler``,
    ``GridGeoSampler``, ``GriddedPatchSampler``...). A chip may mosaic several
    scenes: its valid share is bounded by that of the best scene covering it.

    - A grid sampler's chips are filtered: each chip whose valid share may be below
      ``min_valid`` is skipped (an epoch is shorter).
    - A random sampler is drawn from until ``len(sampler)`` chips passed; with
      ``positive_fraction`` or ``class_balance`` each draw first picks what the chip
      must hold (positive or not; which class), then takes the sampler's next chip
      that surely holds it.

    No request is made, except the one scan of the label tiles a label filter needs
    the first time (see :mod:`rasteret.labelstats`).

    Args:
        sampler: The sampler to wrap.
        dataset: The dataset it samples.
        min_valid: Skip chips whose share of valid pixels may be below this.
        positive_fraction: The share of chips holding a label other than
            ``background`` (the rest hold none).
        class_balance: ``{class value: weight}``: draw chips holding each class in
            proportion to its weight.
        labels: A dataset of labels (default: the dataset's mask bands).
        background: The class that is not positive.
        seed: Seed of the label draws (default: a fresh one).
        max_tries: Draws from ``sampler`` to find one chip before giving up.

    Raises:
        ConfigurationError: Options out of range, no labels for a label filter, or no
            chip found within ``max_tries`` draws.
    """

    def __init__(self, sampler: GeoSampler, dataset: RasteretDataset, *,
                 min_valid: float | None = None, positive_fraction: float | None = None,
                 class_balance: Mapping[float, float] | None = None,
                 labels: RasteretDataset | None = None, background: float = 0,
                 seed: int | None = None, max_tries: int = 10_000) -> None:
        check_content_options(min_valid, positive_fraction, class_balance)
        self.sampler = sampler
        self.dataset = dataset
        self.index = dataset.index
        self.res = dataset.res
        self.min_valid = min_valid
        self.positive_fraction = positive_fraction
        self.class_balance = dict(class_balance) if class_balance is not None else None
        self.content = ChipContent(dataset, labels=labels, background=background)
        self.seed = secrets.randbits(63) if seed is None else int(seed)
        self.max_tries = max_tries
        self.epoch = 0
        self.refill = not isinstance(sampler, _GRID_SAMPLERS)
        if not self.refill and (positive_fraction is not None or class_balance is not None):
            raise ConfigurationError(
                "positive_fraction= and class_balance= draw chips: wrap a random sampler")

    def _rows(self, box: Boxes, when: pd.Interval | None) -> np.ndarray:
        """Rows of the scenes the chip may read."""
        geometry = shapely.box(box[0][0], box[1][0], box[2][0], box[3][0])
        hits = self.index.sindex.query(geometry, predicate="intersects")
        frame = self.index.iloc[hits]
        rows: np.ndarray = frame["row"].to_numpy(np.int64)
        if when is not None:
            rows = rows[np.asarray(frame.index.overlaps(when), bool)]
        return rows

    def _best(self, rows: np.ndarray, box: Boxes, measure: str, value: float | None
              ) -> float:
        if not len(rows):
            return 0.0
        boxes = take_boxes(box, np.zeros(len(rows), np.int64))  # the box once per scene
        if measure == "valid":
            return float(self.content.valid(rows, boxes).max())
        return float(self.content.class_bound(rows, boxes, value, bound=measure).max())

    def accepts(self, index: GeoSlice, want: str | None = None,
                value: float | None = None) -> bool:
        """Whether the chip at ``index`` passes ``min_valid`` and holds what is wanted
        (``"positive"``, ``"negative"`` or ``"class"`` ``value``; None: anything)."""
        box, when = chip_boxes(index)
        rows = self._rows(box, when)
        if self.min_valid is not None and self._best(rows, box, "valid", None) < self.min_valid:
            return False
        if want == "positive":
            return self._best(rows, box, "lower", None) > 0
        if want == "negative":
            return self._best(rows, box, "upper", None) <= 0
        if want == "class":
            return self._best(rows, box, "lower", value) > 0
        return True

    def _wants(self, generator: np.random.Generator) -> tuple[str | None, float | None]:
        if self.positive_fraction is not None:
            positive = generator.random() < self.positive_fraction
            return ("positive" if positive else "negative"), None
        if self.class_balance is not None:
            values = list(self.class_balance)
            weights = np.array([self.class_balance[v] for v in values], float)
            return "class", values[int(generator.choice(len(values), p=weights / weights.sum()))]
        return None, None

    def _draws(self) -> Iterator[GeoSlice]:
        """The inner sampler's chips, epoch after epoch."""
        while True:
            empty = True
            for index in self.sampler:
                empty = False
                yield index
            if empty:
                return

    def __iter__(self) -> Iterator[GeoSlice]:
        """Yield the slices of the chips that pass."""
        if not self.refill:
            for index in self.sampler:
                if self.accepts(index):
                    yield index
            return
        generator = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        draws = self._draws()
        for _ in range(len(self)):
            want, value = self._wants(generator)
            for _attempt in range(self.max_tries):
                drawn = next(draws, None)
                if drawn is None:
                    return
                index = drawn
                if self.accepts(index, want, value):
                    yield index
                    break
            else:
                raise ConfigurationError(
                    f"no chip with {want or 'enough valid data'}"
                    f"{'' if value is None else f' {value!r}'} in {self.max_tries} draws of "
                    f"{type(self.sampler).__name__}: lower min_valid or change the balance")

    def __len__(self) -> int:
        """Chips per epoch (at most, for a grid sampler)."""
        return len(self.sampler)
