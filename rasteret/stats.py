"""Per-band statistics from the index: each COG's smallest overview, nodata excluded.

Normalising a model's inputs needs each band's mean and standard deviation (and
clipping or stretching needs percentiles). Reading every pixel of a collection for
that costs as much as a training epoch; each COG already holds a summary of itself,
its smallest overview (a few hundred pixels a side). :func:`band_statistics` reads
that level of every file, one request per asset and band (its tiles are contiguous:
one merged range), and the full resolution only of files without overviews.

Integers of up to 16 bits are summarised in exact histograms as they arrive (memory
stays at one histogram per band and group, whatever the number of files), so the
mean, standard deviation, extremes and percentiles equal NumPy's on the same pixels.
Other types get exact moments and extremes, and percentiles of their values, exact up
to :data:`MAX_KEPT_VALUES` values per band and group, else of a regular sample of
them (memory stays bounded). Statistics are of
the stored values; each record carries the group's scale and offset (when its files
share one) to turn them into physical values.

Records are plain dicts (JSON in a collection's manifest, see
:meth:`rasteret.collection.Collection.band_stats`); :func:`stats_frame` makes a
pandas DataFrame of them and :func:`mean_std` the lists normalising transforms take.
"""

from __future__ import annotations

import asyncio
import math
import threading
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rasteret.band import BandView
from rasteret.errors import ConfigurationError
from rasteret.io.backend import Backend
from rasteret.io.fetch import FetchStats
from rasteret.io.runtime import run_sync
from rasteret.progress import ProgressBar, progress_bar
from rasteret.read.cog import CogFile

if TYPE_CHECKING:
    import pandas as pd

#: Percentiles reported (as NumPy's ``percentile``, linear interpolation).
PERCENTILES = (1, 2, 98, 99)
#: The statistics of a record, in order.
STATISTICS = ("count", "mean", "std", "min", "max", *(f"p{q}" for q in PERCENTILES))
#: Files read at once (each holds its decoded level in memory until summarised).
FILES_IN_FLIGHT = 16
#: A level larger than this once decoded (a full resolution, mostly) is read with at
#: most :data:`LARGE_IN_FLIGHT` others, so memory stays near a few levels.
LARGE_LEVEL_BYTES = 64 * 1024 * 1024
LARGE_IN_FLIGHT = 2
#: The manifest key the records are stored under.
MANIFEST_KEY = "band_stats"
#: Values (not in a histogram) kept per band and group for the percentiles; beyond,
#: every other kept value is dropped (a regular sample, about 128 MB at most).
MAX_KEPT_VALUES = 1 << 24


class ValueSample:
    """Values summarised as they arrive: exact count, mean, variance (Chan's
    pairwise update), minimum and maximum, and the values themselves for the
    percentiles, thinned to a regular sample (every ``stride``-th value of each
    batch) once more than :data:`MAX_KEPT_VALUES` are kept.

    Attributes:
        count: Values added.
        stride: Every how many values one is kept (1: all; percentiles are exact).
    """

    def __init__(self, cap: int = MAX_KEPT_VALUES) -> None:
        self.cap = cap
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.low, self.high = math.inf, -math.inf
        self.kept: list[np.ndarray] = []
        self.stride = 1

    def add(self, values: np.ndarray) -> None:
        """Add a 1-D array of values."""
        if not len(values):
            return
        values = values.astype(np.float64, copy=False)
        n, mean = len(values), float(np.mean(values))
        m2 = float(np.sum((values - mean) ** 2))
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.low = min(self.low, float(np.min(values)))
        self.high = max(self.high, float(np.max(values)))
        self.kept.append(values[::self.stride])
        while sum(len(k) for k in self.kept) > self.cap:
            self.stride *= 2
            self.kept = [k[::2] for k in self.kept]

    def statistics(self) -> dict[str, float]:
        """The statistics of the values added (see :data:`STATISTICS`)."""
        if not self.count:
            return {name: (0 if name == "count" else math.nan) for name in STATISTICS}
        qs = np.percentile(np.concatenate(self.kept), PERCENTILES)
        return {"count": self.count, "mean": self.mean,
                "std": math.sqrt(self.m2 / self.count), "min": self.low, "max": self.high,
                **{f"p{q}": float(v) for q, v in zip(PERCENTILES, qs)}}


class Summary:
    """The valid pixels of one band of one group, summarised as files arrive: an
    exact histogram while every file holds integers of up to 16 bits, else a
    :class:`ValueSample`.

    Attributes:
        files: Files summarised.
        full_resolution: Of those, files read at full resolution (no overview).
        scales: The distinct ``(scale, offset)`` pairs of those files.
    """

    def __init__(self) -> None:
        self.histogram: np.ndarray | None = None
        self.shift = 0  # histogram index = value + shift
        self.values: ValueSample | None = None
        self.files = 0
        self.full_resolution = 0
        self.scales: set[tuple[float, float]] = set()
        self.lock = threading.Lock()  # files of one summary are added from threads

    def add(self, valid: np.ndarray, *, full_resolution: bool, scale: float,
            offset: float) -> None:
        """Add one file's valid pixels (a 1-D array); thread-safe."""
        with self.lock:
            self.files += 1
            self.full_resolution += int(full_resolution)
            self.scales.add((float(scale), float(offset)))
            shift = histogram_shift(valid.dtype)
            if shift is not None and self.values is None and (
                    self.histogram is None or shift == self.shift):
                counts = histogram_of(valid, shift)
                self.histogram = counts if self.histogram is None else self.histogram + counts
                self.shift = shift
                return
            if self.values is None:  # a file of another type: values from now on
                self.values = ValueSample()
                if self.histogram is not None:
                    self.values.add(values_of(self.histogram, self.shift))
                    self.histogram = None
            self.values.add(valid)

    def statistics(self) -> dict[str, float]:
        """``count``, ``mean``, ``std`` (population), ``min``, ``max`` and the
        percentiles; NaN (count 0) without a valid pixel."""
        if self.histogram is not None:
            return histogram_statistics(self.histogram, self.shift)
        return (self.values or ValueSample()).statistics()


def histogram_shift(dtype: np.dtype) -> int | None:
    """What to add to values of ``dtype`` to index a 65536-bin histogram (None: not
    an integer type of at most 16 bits)."""
    if dtype.kind in "ub" and dtype.itemsize <= 2:
        return 0
    if dtype.kind == "i" and dtype.itemsize <= 2:
        return 32768
    return None


def histogram_of(valid: np.ndarray, shift: int) -> np.ndarray:
    """Counts of each value of an integer array of at most 16 bits, in 65536 bins
    (bin = value + ``shift``)."""
    return np.bincount(valid.astype(np.int64) + shift, minlength=65536).astype(np.int64)


def values_of(histogram: np.ndarray, shift: int) -> np.ndarray:
    """The values a histogram of :func:`histogram_of` counts, sorted."""
    return np.repeat(np.arange(len(histogram), dtype=np.float64) - shift, histogram)


def histogram_statistics(histogram: np.ndarray, shift: int = 0) -> dict[str, float]:
    """The statistics of the values a histogram of :func:`histogram_of` counts, as
    NumPy computes them on the values themselves (population std; percentiles by
    linear interpolation)."""
    count = int(histogram.sum())
    if not count:
        return {name: (0 if name == "count" else math.nan) for name in STATISTICS}
    present = np.flatnonzero(histogram)
    values = present.astype(np.float64) - shift
    weights = histogram[present].astype(np.float64)
    mean = float(np.dot(weights, values) / count)
    std = math.sqrt(float(np.dot(weights, (values - mean) ** 2) / count))
    cumulative = np.cumsum(histogram[present])

    def nth(k: int) -> float:  # the k-th smallest value (0-based)
        return float(values[np.searchsorted(cumulative, k, side="right")])

    result = {"count": count, "mean": mean, "std": std, "min": float(values[0]),
              "max": float(values[-1])}
    for q in PERCENTILES:
        position = (count - 1) * q / 100
        low = math.floor(position)
        below, above = nth(low), nth(min(low + 1, count - 1))
        result[f"p{q}"] = below + (above - below) * (position - low)
    return result


def valid_pixels(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """The pixels of ``data`` that are not nodata (nor NaN), as a 1-D array."""
    flat = data.ravel()
    keep = np.ones(flat.shape, bool)
    if flat.dtype.kind == "f":
        keep &= ~np.isnan(flat)
    if nodata is not None and not math.isnan(nodata) and representable(nodata, flat.dtype):
        keep &= flat != flat.dtype.type(nodata)
    return flat[keep]


def representable(value: float, dtype: np.dtype) -> bool:
    """Whether pixels of ``dtype`` can equal ``value`` (a nodata of -9999 never
    matches uint16 pixels, and must not be wrapped around into a valid value)."""
    if dtype.kind == "f":
        return True
    if dtype.kind == "b":
        return value in (0, 1)
    info = np.iinfo(dtype)
    return math.isfinite(value) and float(value).is_integer() and info.min <= value <= info.max


def summary_level(cog: CogFile, *, exact: bool = False) -> int | None:
    """The level statistics read from ``cog``: its smallest overview (an index into
    :attr:`~rasteret.read.cog.CogFile.overviews`), or None (full resolution) when it
    has none or with ``exact``."""
    return len(cog.overviews) - 1 if cog.overviews and not exact else None


async def add_file(summary: Summary, view: BandView, backend: Backend, *,
                   limits: tuple[asyncio.Semaphore, asyncio.Semaphore],
                   stats: FetchStats | None = None, exact: bool = False) -> None:
    """Read ``view``'s :func:`summary_level` and add its valid pixels to ``summary``:
    one merged request for a COG's overview, no header request (the header is the
    stored one). ``limits`` bound the reads in flight: the first for small levels, the
    second for levels over :data:`LARGE_LEVEL_BYTES` (decoded, each stays in memory
    until summarised)."""
    cog = view.cog(backend)
    overview = summary_level(cog, exact=exact)
    level = cog.level(overview)
    size = level.width * level.height * level.dtype.itemsize
    async with limits[1] if size > LARGE_LEVEL_BYTES else limits[0]:
        data = await cog.read_async(overview=overview, bands=view.band_index, stats=stats)
        # Off the event loop: a full-resolution level takes a while to summarise.
        await asyncio.to_thread(
            lambda: summary.add(valid_pixels(data[0], view.nodata),
                                full_resolution=overview is None, scale=view.scale,
                                offset=view.offset))


def band_statistics(views: Mapping[str, Sequence[BandView | None]],
                    groups: Sequence[Any], *, backend: Backend,
                    stats: FetchStats | None = None, exact: bool = False,
                    progress: bool = True) -> list[dict[str, Any]]:
    """Statistics of each band (and group) from each file's smallest overview.

    Args:
        views: Band name -> one view per scene (None where the band was not indexed).
        groups: One group value per scene (the same value everywhere for one group).
        backend: How to reach the files.
        stats: Optional counter of requests and bytes.
        exact: Read every file at full resolution instead (exact statistics, at the
            cost of every tile of every file).
        progress: Show a bar counting files (after a moment; see
            :mod:`rasteret.progress`).

    Returns:
        One record per band and group (bands in ``views``' order, groups in order of
        first appearance): ``band``, ``group``, :data:`STATISTICS`, ``files``,
        ``full_resolution`` (files without an overview) and the ``scale`` and
        ``offset`` the group's files share (NaN when they differ).

    Raises:
        ConfigurationError: ``groups`` is not one value per scene.
        BackendError: A file could not be read (typed: not found, access denied...).
    """
    for band, band_views in views.items():
        if len(band_views) != len(groups):
            raise ConfigurationError(
                f"{len(groups)} group values for {len(band_views)} scenes of band {band!r}")
    files = sum(view is not None for band_views in views.values() for view in band_views)
    bar = progress_bar(total=files, desc="Band statistics", unit="file", progress=progress,
                       delayed=True)
    try:
        summaries = run_sync(_summarise(views, groups, backend, stats, exact, bar))
    finally:
        bar.close()
    records = []
    for (band, group), summary in summaries.items():
        scale, offset = (next(iter(summary.scales)) if len(summary.scales) == 1
                         else (math.nan, math.nan))
        records.append({"band": band, "group": group, **summary.statistics(),
                        "files": summary.files, "full_resolution": summary.full_resolution,
                        "scale": scale, "offset": offset, "exact": exact})
    return records


async def _summarise(views: Mapping[str, Sequence[BandView | None]], groups: Sequence[Any],
                     backend: Backend, stats: FetchStats | None, exact: bool,
                     bar: ProgressBar) -> dict[tuple[str, Any], Summary]:
    summaries: dict[tuple[str, Any], Summary] = {}
    for band, band_views in views.items():
        for group, view in zip(groups, band_views):
            if view is not None:
                summaries.setdefault((band, group), Summary())
    limits = (asyncio.Semaphore(FILES_IN_FLIGHT), asyncio.Semaphore(LARGE_IN_FLIGHT))

    async def one(band: str, group: Any, view: BandView) -> None:
        await add_file(summaries[(band, group)], view, backend, limits=limits, stats=stats,
                       exact=exact)
        bar.update(1)

    await asyncio.gather(*(one(band, group, view) for band, band_views in views.items()
                           for group, view in zip(groups, band_views) if view is not None))
    return summaries


def stats_frame(records: Sequence[Mapping[str, Any]], by: str | None = None) -> pd.DataFrame:
    """The records as a DataFrame: one row per band (and group, in a column named
    ``by``), the statistics as columns."""
    import pandas as pd

    frame = pd.DataFrame.from_records(list(records))
    if by is None:
        return frame.drop(columns=["group"], errors="ignore").set_index("band")
    return frame.rename(columns={"group": by}).set_index([by, "band"])


def scenes_key(ids: Sequence[str]) -> str:
    """A short key of a collection's scenes (their number and a CRC of their ids):
    stored statistics hold for the scenes they were computed on, not for a subset
    that inherited the manifest."""
    return f"{len(ids)}:{zlib.crc32(chr(0).join(ids).encode()):08x}"


def stored_records(manifest: Mapping[str, Any], bands: Sequence[str],
                   by: str | None = None, scenes: str | None = None, *,
                   exact: bool = False) -> list[dict[str, Any]] | None:
    """The stored records of ``bands`` (grouped ``by``) in a collection's manifest,
    in band order; None unless every band has them for the scenes ``scenes`` (a
    :func:`scenes_key`; None: any scenes), and exact ones when ``exact``."""
    stored = (manifest.get(MANIFEST_KEY) or {}).get(by or "")
    if not isinstance(stored, dict) or (scenes is not None and stored.get("scenes") != scenes):
        return None
    records = [r for band in bands for r in stored.get("records", []) if r.get("band") == band]
    if {r["band"] for r in records} != set(bands) or (
            exact and not all(r.get("exact") for r in records)):
        return None
    return records


def store_records(manifest: dict[str, Any], records: Sequence[Mapping[str, Any]],
                  by: str | None = None, scenes: str | None = None) -> None:
    """Put ``records`` of the scenes ``scenes`` (a :func:`scenes_key`) in a
    collection's manifest, replacing the stored records of their bands for the same
    grouping and keeping the other bands' when they are of the same scenes."""
    table = manifest.setdefault(MANIFEST_KEY, {})
    previous = table.get(by or "")
    bands = {r["band"] for r in records}
    kept = ([r for r in previous.get("records", []) if r.get("band") not in bands]
            if isinstance(previous, dict) and previous.get("scenes") == scenes else [])
    table[by or ""] = {"scenes": scenes, "records": kept + [dict(r) for r in records]}


def mean_std(records: Sequence[Mapping[str, Any]], bands: Sequence[str], *,
             apply_scale: bool = False) -> tuple[list[float], list[float]]:
    """Per band, in ``bands``' order, the mean and standard deviation of ungrouped
    records: the lists ``kornia.augmentation.Normalize(mean, std)`` and TorchGeo's
    transforms take.

    Args:
        records: Records of :func:`band_statistics` without grouping.
        bands: The bands, in channel order.
        apply_scale: Give them for physical values (``stored x scale + offset``), as
            a dataset with ``apply_scale=True`` returns.

    Raises:
        ConfigurationError: A band without a record, grouped records, a standard
            deviation of 0 or NaN (a constant or empty band), or ``apply_scale``
            where the band's files do not share one scale and offset.
    """
    by_band = {r["band"]: r for r in records}
    means: list[float] = []
    stds: list[float] = []
    for band in bands:
        summary = by_band.get(band)
        if summary is None or summary.get("group") is not None:
            raise ConfigurationError(
                f"no ungrouped statistics of band {band!r}: run collection.band_stats("
                f"{list(bands)!r}) first")
        mean, std = float(summary["mean"]), float(summary["std"])
        if apply_scale:
            scale, offset = float(summary["scale"]), float(summary["offset"])
            if math.isnan(scale):
                raise ConfigurationError(
                    f"band {band!r}'s files have different scales or offsets: compute "
                    "statistics per group (band_stats(..., by=...)) or use stored values")
            mean, std = mean * scale + offset, std * abs(scale)
        if not std > 0:
            raise ConfigurationError(
                f"band {band!r} has a standard deviation of {std} (constant or no valid "
                "pixel): it cannot be normalised")
        means.append(mean)
        stds.append(std)
    return means, stds
