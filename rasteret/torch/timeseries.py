"""Time series that batch: a fixed number of time steps per sample.

A :class:`TimeSeries` says how a :class:`~rasteret.torch.RasteretDataset` turns the
scenes of a query's time slice into time steps: every scene (today's stacking, whose
length varies from chip to chip), ``steps`` scenes chosen by ``select``, or one step
per calendar bin (``bins``, a pandas frequency) mosaicking the bin's scenes first
valid pixel first. Scenes of one day can first merge into one step (``group_by``).
:func:`plan_steps` turns the scenes a query found into :class:`Steps`: the rows of
each step (read by the read core as one multi-scene slot), the step's date, and which
steps are padding. :class:`SeriesSampler` gives any TorchGeo sampler's chips a time
window, so a time series sees every scene of that window and not the one scene whose
time stamp the chip carries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler

from rasteret.errors import ConfigurationError
from rasteret.options import check_option

#: Which ``time_steps`` scenes (or days) of a query's time slice a sample keeps: the
#: latest, the earliest, those nearest to evenly spaced times over the slice, or the
#: least cloudy (``eo:cloud_cover``); kept steps are in time order.
TimeSelect = Literal["latest", "earliest", "even", "least_cloudy"]
TIME_SELECT: tuple[TimeSelect, ...] = get_args(TimeSelect)

#: What one time step holds before selection: one scene, or every scene of one
#: (solar) day mosaicked, as odc-stac's ``groupby="solar_day"``.
GroupBy = Literal["scene", "day"]
GROUP_BY: tuple[GroupBy, ...] = get_args(GroupBy)

#: The axis order of a time series sample: ``[T, C, H, W]`` (TorchGeo's) or
#: ``[C, T, H, W]`` (TerraTorch's and Prithvi's).
Layout = Literal["TCHW", "CTHW"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)

#: The date of a padded time step: int64 nanoseconds, as ``numpy.datetime64("NaT")``.
NAT = int(np.iinfo(np.int64).min)

_DAY_NS = 86_400 * 10**9
_HOUR_NS = 3_600 * 10**9


@dataclass(frozen=True)
class TimeSeries:
    """How a time series sample is cut into time steps.

    Attributes:
        steps: Time steps per sample (``time_steps``); missing steps are padded.
        select: Which scenes the ``steps`` steps take (``time_select``).
        bins: A pandas frequency (``time_bins``, e.g. ``"1MS"``): one step per bin
            over the query's time slice, the bin's scenes mosaicked.
        group_by: ``"scene"`` or ``"day"`` (scenes of one solar day are one step).
        layout: ``"TCHW"`` or ``"CTHW"``.

    Raises:
        ConfigurationError: A mode outside its choices, ``steps`` not a positive
            integer, ``steps`` and ``bins`` both given, or a frequency pandas does
            not know.
    """

    steps: int | None = None
    select: TimeSelect = "even"
    bins: str | None = None
    group_by: GroupBy = "scene"
    layout: Layout = "TCHW"

    def __post_init__(self) -> None:
        check_option("time_select", self.select, TIME_SELECT)
        check_option("group_by", self.group_by, GROUP_BY)
        check_option("layout", self.layout, LAYOUTS)
        if self.steps is not None and (isinstance(self.steps, bool)
                                       or not isinstance(self.steps, int) or self.steps < 1):
            raise ConfigurationError(
                f"time_steps={self.steps!r}: give a positive number of time steps")
        if self.steps is not None and self.bins is not None:
            raise ConfigurationError(
                "give time_steps= (with time_select=) or time_bins=, not both: the bins "
                "decide the number of steps")
        if self.bins is not None:
            try:
                pd.tseries.frequencies.to_offset(self.bins)
            except (ValueError, TypeError) as error:
                raise ConfigurationError(
                    f"time_bins={self.bins!r} is not a pandas frequency (e.g. '1MS' for "
                    f"months, '10D', 'W'): {error}") from error

    @property
    def fixed(self) -> bool:
        """Whether every sample over one time slice has the same number of steps (and
        so batches): ``steps`` or ``bins`` given."""
        return self.steps is not None or self.bins is not None


@dataclass(frozen=True)
class Steps:
    """The time steps of one sample.

    Attributes:
        slots: The collection rows of each step, in mosaic order (empty: padded).
        dates: Each step's date as int64 nanoseconds (:data:`NAT` when padded): the
            scene's time, a day's first scene's time, or a bin's pandas label.
    """

    slots: list[list[int]]
    dates: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """Which steps hold scenes (False: padded)."""
        return np.array([bool(slot) for slot in self.slots], dtype=bool)


def solar_days(stamps: np.ndarray, longitudes: np.ndarray) -> np.ndarray:
    """The day number of each time stamp (ns) in local solar time, shifted by the
    longitude (15 degrees an hour); where the longitude is NaN, the UTC day."""
    shift = np.where(np.isnan(longitudes), 0.0, longitudes / 15.0 * _HOUR_NS)
    days: np.ndarray = np.floor_divide(stamps + shift.astype(np.int64), _DAY_NS)
    return days


def _groups(series: TimeSeries, rows: np.ndarray, stamps: np.ndarray,
            longitudes: np.ndarray) -> list[np.ndarray]:
    """``rows`` (in time order) as candidate steps: one per scene, or per solar day."""
    if series.group_by == "scene" or not len(rows):
        return [rows[i : i + 1] for i in range(len(rows))]
    days = solar_days(stamps[rows], longitudes[rows])
    cuts = np.flatnonzero(np.diff(days)) + 1
    return list(np.split(rows, cuts))


def _even(times: np.ndarray, start: int, stop: int, count: int) -> np.ndarray:
    """Positions of the ``count`` times nearest to ``count`` evenly spaced targets (the
    centres of equal parts of ``[start, stop]``), each time taken once."""
    targets = start + (np.arange(count) + 0.5) * ((stop - start) / count)
    distance = np.abs(times[None, :].astype(np.float64) - targets[:, None])
    taken_target, taken_time = np.zeros(count, bool), np.zeros(len(times), bool)
    picked: list[int] = []
    for flat in np.argsort(distance, axis=None, kind="stable"):
        target, time = divmod(int(flat), len(times))
        if taken_target[target] or taken_time[time]:
            continue
        taken_target[target] = taken_time[time] = True
        picked.append(time)
        if len(picked) == count:
            break
    return np.sort(np.array(picked, dtype=np.int64))


def _chosen(series: TimeSeries, times: np.ndarray, clouds: np.ndarray, start: int,
            stop: int) -> np.ndarray:
    """Positions (ascending) of the candidate steps ``time_select`` keeps."""
    count = len(times)
    steps = series.steps or count
    if count <= steps:
        return np.arange(count)
    if series.select == "latest":
        return np.arange(count - steps, count)
    if series.select == "earliest":
        return np.arange(steps)
    if series.select == "least_cloudy":
        return np.sort(np.argsort(clouds, kind="stable")[:steps])
    return _even(times, start, stop, steps)


def _bins(freq: str, start: int, stop: int, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The labels (ns) of the ``freq`` bins from ``start``'s to ``stop``'s, and the bin
    of each of ``times``. The bins are anchored as pandas ``resample`` anchors them on a
    series starting at ``start``, so every query of one slice has the same bins."""
    # A scene whose interval only overlaps the slice counts in the bin of its edge.
    inside = np.clip(times, start, stop)
    index = pd.DatetimeIndex(np.concatenate([[start, stop], inside]).astype("datetime64[ns]"))
    series = pd.Series(np.arange(len(index)), index=index).sort_index(kind="stable")
    labels = series.resample(freq).size().index.as_unit("ns").asi8
    numbers = series.groupby(pd.Grouper(freq=freq)).ngroup()
    bins = np.empty(len(index), np.int64)
    bins[series.to_numpy()] = numbers.to_numpy()
    return labels, bins[2:]


def plan_steps(series: TimeSeries, rows: Sequence[int], *, stamps: np.ndarray,
               clouds: np.ndarray, longitudes: np.ndarray, start: int, stop: int,
               mosaic: Callable[[np.ndarray], list[int]]) -> Steps:
    """The time steps of a sample from the scenes its query found.

    Args:
        series: How steps are cut.
        rows: The collection rows the query found.
        stamps: Every row's time stamp (ns).
        clouds: Every row's cloud cover (100 where unknown).
        longitudes: Every row's footprint centre longitude (NaN: unknown, UTC days).
        start: The query's time slice start (ns).
        stop: The query's time slice stop (ns).
        mosaic: Orders the rows of one step for mosaicking (first valid pixel wins).

    Returns:
        The steps: every candidate step (``steps`` and ``bins`` unset), ``steps``
        steps (chosen ones first in time order, then padding), or one per bin.
    """
    found = np.asarray(rows, dtype=np.int64)
    found = found[np.argsort(stamps[found], kind="stable")]
    groups = _groups(series, found, stamps, longitudes)
    times = np.array([stamps[g].min() for g in groups], dtype=np.int64)
    if series.bins is not None:
        labels, bins = _bins(series.bins, start, stop, times)
        slots: list[list[int]] = [[] for _ in labels]
        for group, number in zip(groups, bins):
            slots[int(number)].extend(int(r) for r in group)
        dates = np.where([bool(s) for s in slots], labels, NAT).astype(np.int64)
        return Steps([mosaic(np.array(s, np.int64)) if s else [] for s in slots], dates)
    clouds_of = np.array([clouds[g].mean() for g in groups], dtype=np.float64)
    kept = _chosen(series, times, clouds_of, start, stop)
    total = series.steps or len(kept)
    slots = [mosaic(groups[k]) for k in kept] + [[] for _ in range(total - len(kept))]
    dates = np.full(total, NAT, np.int64)
    dates[: len(kept)] = times[kept]
    return Steps(slots, dates)


class SeriesSampler(Sampler[tuple[slice, slice, slice]]):
    """A GeoSampler's chips with one time window, for time series datasets.

    TorchGeo's samplers give each chip the time stamp of the scene it was drawn
    from, so a time series sample would see that scene only. This wrapper replaces
    every chip's time slice with ``window`` (default: the dataset's whole time
    range), and with ``unique=True`` yields each location once (a grid sampler
    yields a location once per scene covering it).

    Args:
        sampler: The sampler whose chips are wrapped (any ``GeoSampler``).
        window: The ``(start, end)`` time window of every chip.
        unique: Yield each ``(x, y)`` location once (the length is then counted by
            one pass over ``sampler``, which reads nothing).
    """

    def __init__(self, sampler: Sampler[Any], window: tuple[Any, Any], *,
                 unique: bool = False) -> None:
        self.sampler = sampler
        self.window = slice(pd.Timestamp(window[0]), pd.Timestamp(window[1]))
        self.unique = unique
        self._length: int | None = None

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        """Yield the wrapped sampler's ``x`` and ``y`` slices with the window."""
        seen: set[tuple[float, float, float, float]] = set()
        for query in self.sampler:
            x, y = query[0], query[1]
            if self.unique:
                key = (float(x.start), float(x.stop), float(y.start), float(y.stop))
                if key in seen:
                    continue
                seen.add(key)
            yield x, y, self.window

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch on to the wrapped sampler, when it takes one."""
        setter = getattr(self.sampler, "set_epoch", None)
        if setter is not None:
            setter(epoch)

    def __len__(self) -> int:
        """Chips per epoch."""
        if not self.unique:
            return len(cast(Sized, self.sampler))
        if self._length is None:
            self._length = sum(1 for _ in self)
        return self._length


def time_series_of(time_series: bool, *, steps: int | None = None,
                   select: TimeSelect = "even", bins: str | None = None,
                   group_by: GroupBy = "scene", layout: Layout = "TCHW"
                   ) -> TimeSeries | None:
    """The time series a dataset's keywords describe (None: samples are mosaics).

    Raises:
        ConfigurationError: A bad value (see :class:`TimeSeries`), or a time series
            keyword given without ``time_series=True``.
    """
    series = TimeSeries(steps=steps, select=select, bins=bins, group_by=group_by,
                        layout=layout)
    if time_series:
        return series
    given = {name: value for name, value, default in (
        ("time_steps", steps, None), ("time_select", select, "even"),
        ("time_bins", bins, None), ("group_by", group_by, "scene"),
        ("layout", layout, "TCHW")) if value != default}
    if given:
        raise ConfigurationError(
            f"{sorted(given)} apply to time series: give time_series=True as well")
    return None


def arrange_steps(tensor: torch.Tensor, layout: Layout) -> torch.Tensor:
    """A ``[T, C, H, W]`` sample in ``layout`` (``[C, T, H, W]`` for ``"CTHW"``); a
    mosaic ``[C, H, W]`` or a squeezed ``[T, H, W]`` is returned as it is."""
    if layout == "CTHW" and tensor.ndim == 4:
        return tensor.permute(1, 0, 2, 3).contiguous()
    return tensor


def shown_step(array: np.ndarray, layout: Layout,
               time_mask: torch.Tensor | np.ndarray | None) -> np.ndarray:
    """The time step a plot shows of a ``[T, C, H, W]`` (or ``[C, T, H, W]``) sample:
    the latest one read (per ``time_mask``), else the last."""
    steps = np.moveaxis(array, 1, 0) if layout == "CTHW" else array
    if isinstance(time_mask, torch.Tensor):
        time_mask = time_mask.detach().cpu().numpy()
    read = np.flatnonzero(time_mask) if time_mask is not None else np.empty(0, np.int64)
    shown: np.ndarray = steps[int(read[-1]) if len(read) else -1]
    return shown
