"""The maps of a prediction over time: one per date, per ``time_bins`` bin, or one
mosaic, as the dataset's time series options say.

A mosaic dataset gives one map of every scene in the time slice. A time series
(``time_series=True``) gives one map per time step its options cut the roi's scenes
into (:func:`rasteret.torch.timeseries.plan_steps`): each date (``group_by="scene"``)
or solar day (``"day"``), the ``time_steps`` steps ``time_select`` keeps, or one step
per ``time_bins`` bin. Each step's map mosaics the scenes of that step, read over the
step's time span; steps without a scene get no map.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from rasteret.errors import ConfigurationError, NoCoverageError
from rasteret.storage import is_remote, local_path
from rasteret.torch.dataset import RasteretDataset

#: The placeholder of a map's date in ``out`` (a pattern such as ``"ndvi-{date}.tif"``).
DATE_FIELD = "{date}"


@dataclass(frozen=True)
class MapStep:
    """One map of a prediction.

    Attributes:
        out: Where the map is written.
        time: The time slice its chips read (naive UTC, end inclusive).
        date: The step's date (naive UTC): the scene's time, the day's first scene's,
            or the bin's label; None for a mosaic of the whole time slice.
        label: The date as the map's name shows it (``""`` for a mosaic).
        published: Published by the run a journal resumes (its map is not written
            again).
    """

    out: str
    time: slice
    date: pd.Timestamp | None = None
    label: str = ""
    published: bool = False


def step_windows(planner: RasteretDataset, area: shapely.Geometry, time: slice
                 ) -> list[tuple[pd.Timestamp, slice]]:
    """The date and time span of each time step of the scenes under ``area`` in
    ``time`` (steps without a scene left out), in time order.

    Raises:
        NoCoverageError: No scene of the dataset covers the area in ``time``.
    """
    frame = planner.index
    frame = frame.iloc[frame.index.overlaps(pd.Interval(time.start, time.stop, closed="both"))]
    under = frame.iloc[np.sort(frame.sindex.query(area, predicate="intersects"))]
    if not len(under):
        raise NoCoverageError(
            f"no scene of {planner.collection.name!r} from {time.start} to {time.stop} "
            f"covers the roi {area.bounds}; the scenes cover "
            f"{tuple(planner.index.total_bounds)}")
    rows = under["row"].to_numpy(np.int64)
    starts = dict(zip(rows.tolist(), under.index.left))
    stops = dict(zip(rows.tolist(), under.index.right))
    steps = planner.steps(rows.tolist(), time)
    windows = []
    for slot, date in zip(steps.slots, steps.dates):
        if slot:
            window = slice(min(starts[r] for r in slot), max(stops[r] for r in slot), 1)
            windows.append((pd.Timestamp(int(date)), window))
    return windows


def _labels(dates: list[pd.Timestamp]) -> list[str]:
    """Dates as names: days, or to the second when two steps share a day."""
    days = [d.strftime("%Y-%m-%d") for d in dates]
    if len(set(days)) == len(days):
        return days
    seconds = [d.strftime("%Y-%m-%dT%H%M%S") for d in dates]
    if len(set(seconds)) != len(seconds):
        raise ConfigurationError(
            f"two time steps share the second {seconds}: their maps would have one name")
    return seconds


def map_steps(out: str | os.PathLike[str], windows: list[tuple[pd.Timestamp, slice]]
              ) -> list[MapStep]:
    """One map per time step, written where ``out`` says.

    Args:
        out: A pattern holding ``{date}`` (``"maps/ndvi-{date}.tif"``,
            ``"s3://bucket/ndvi/{date}.tif"``), or a folder (a local one that exists,
            or a path or URL ending in ``/``) that takes ``<date>.tif`` files.
        windows: Each step's date and time span (:func:`step_windows`).

    Raises:
        ConfigurationError: ``out`` is one file (a time series writes several maps).
    """
    text = os.fspath(out)
    labels = _labels([date for date, _ in windows])
    if DATE_FIELD in text:
        places = [text.replace(DATE_FIELD, label) for label in labels]
    elif text.endswith("/") or (not is_remote(text) and local_path(text).is_dir()):
        places = [f"{text.rstrip('/')}/{label}.tif" for label in labels]
    else:
        raise ConfigurationError(
            f"out={text!r} names one file, and a time series writes one map per time step "
            f"({len(windows)} here): give a pattern with {DATE_FIELD} (e.g. "
            f"'maps/ndvi-{DATE_FIELD}.tif') or a folder ending in '/'")
    return [MapStep(place, window, date, label)
            for place, (date, window), label in zip(places, windows, labels)]


def series_name(out: str | os.PathLike[str]) -> str:
    """The collection name of a time series' maps when none is given: the pattern's
    file name without ``{date}`` (``"ndvi-{date}.tif"`` -> ``"ndvi"``), or the folder's
    name."""
    text = os.fspath(out)
    if DATE_FIELD in text:
        stem = Path(text.rstrip("/")).name.replace(DATE_FIELD, "")
        stem = Path(stem).stem.strip("-_. ")
        if stem:
            return stem
        text = str(Path(text.rstrip("/")).parent)
    return Path(text.rstrip("/")).name or "prediction"


def _marker(journal: str | os.PathLike[str], step: MapStep) -> Path:
    """The file saying a time step's map was published (in the run's journal)."""
    return Path(journal) / f"{step.label}.published"


def resumed_steps(steps: list[MapStep], journal: str | os.PathLike[str] | None
                  ) -> list[MapStep]:
    """``steps``, those whose maps the run a journal resumes published marked so: its
    marker names the same output."""
    if journal is None:
        return steps
    done = []
    for step in steps:
        marker = _marker(journal, step)
        published = marker.exists() and marker.read_text() == step.out
        done.append(replace(step, published=published))
    return done


def mark_published(journal: str | os.PathLike[str] | None, step: MapStep) -> None:
    """Note in the journal that a time step's map is published (nothing for a mosaic,
    whose journal goes with its publishing)."""
    if journal is not None and step.label:
        Path(journal).mkdir(parents=True, exist_ok=True)
        _marker(journal, step).write_text(step.out)


def forget_published(journal: str | os.PathLike[str] | None, steps: list[MapStep]) -> None:
    """Remove the journal's markers once every map is published (and the journal,
    when nothing else is left in it)."""
    if journal is None:
        return
    for step in steps:
        if step.label:
            _marker(journal, step).unlink(missing_ok=True)
    folder = Path(journal)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
