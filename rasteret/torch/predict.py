"""``predict``: a model over an area, blended without seams, streamed into a COG.

Chips sweep the area in rows on a grid aligned with the COGs' tiles, overlapping by
``overlap`` pixels; the model runs on batches of them; overlapping outputs are
blended with weights; each row of output tiles goes to a
:class:`~rasteret.write.CogWriter` as soon as no later chip reaches it. Memory holds
the rows of tiles a chip spans and the batches in flight, never the map.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import shapely
import torch

from rasteret.collection import Collection
from rasteret.dates import DateRange
from rasteret.errors import ConfigurationError
from rasteret.io.backend import Backend, default_backend
from rasteret.io.objects import delete_objects
from rasteret.options import MosaicOrder, ReadOptions
from rasteret.storage import is_remote, local_path
from rasteret.torch.blend import Blend, blend_window
from rasteret.torch.dataset import RasteretDataset
from rasteret.torch.loader import dataloader
from rasteret.torch.mapping import MapSpec, Output, PredictionMap, input_nodata
from rasteret.torch.maptimes import (
    MapStep,
    forget_published,
    map_steps,
    mark_published,
    resumed_steps,
    series_name,
    step_windows,
)
from rasteret.torch.sweep import SweepSampler, plan_sweep, resumed, sweep_area, time_slice
from rasteret.torch.timeseries import GroupBy, TimeSelect
from rasteret.write import check_output, finished_rows

# The module's name is its function's: rasteret.torch.predict is the function.
__all__ = ["predict"]

#: A model, or any callable from a batch of images ``[B, C, H, W]`` to ``[B, K, H, W]``.
Model = Callable[[torch.Tensor], torch.Tensor]

#: The time series keywords and their defaults (a mosaic: one map).
SERIES_DEFAULTS: dict[str, Any] = {"time_series": False, "time_steps": None,
                                   "time_select": "even", "time_bins": None,
                                   "group_by": "scene"}


def _datasets(source: Collection | RasteretDataset, bands: Sequence[str] | None,
              backend: Backend | None, options: ReadOptions | None,
              mosaic_order: MosaicOrder, series: dict[str, Any]
              ) -> tuple[RasteretDataset, RasteretDataset | None]:
    """The dataset chips are read from (mosaics) and, for a time series, the dataset
    whose time steps decide the maps (the one place predict builds datasets)."""
    if isinstance(source, RasteretDataset):
        if (options is not None or bands is not None or mosaic_order != "latest"
                or any(value != SERIES_DEFAULTS[key] for key, value in series.items())):
            raise ConfigurationError(
                "bands, options, mosaic_order and the time series options belong to a "
                "collection; a dataset has its own")
        if not source.time_series:
            return source, None
        # The same reads, one mosaic per time step.
        reader = RasteretDataset(
            source.collection, source.bands, backend=source.backend, dtype=source.dtype,
            mosaic_order=source.mosaic_order, transforms=source.transforms,
            cache_bytes=source.cache_bytes, cache_dir=source.cache_dir, options=source.options)
        return reader, source
    if not isinstance(source, Collection):
        raise ConfigurationError(
            f"predict reads a Collection or a RasteretDataset, not {type(source).__name__}")
    if not bands:
        raise ConfigurationError("give bands= (the model's input bands, in order)")
    if not series["time_series"]:  # time series keywords without it raise here
        return source.to_torchgeo_dataset(list(bands), backend=backend, options=options,
                                          mosaic_order=mosaic_order, **series), None
    reader = source.to_torchgeo_dataset(list(bands), backend=backend, options=options,
                                        mosaic_order=mosaic_order)
    planner = source.to_torchgeo_dataset(list(bands), backend=backend, options=options,
                                         mosaic_order=mosaic_order, **series)
    return reader, planner


def _forward(model: Model, image: torch.Tensor, device: torch.device) -> Any:
    """The model's outputs for a batch of images (float32 on ``device``)."""
    return model(image.to(device=device, dtype=torch.float32))


def _steps(planner: RasteretDataset | None, area: shapely.Geometry, time: slice,
           out: str | os.PathLike[str], *, overwrite: bool, backend: Backend | None,
           journal: str | os.PathLike[str] | None) -> list[MapStep]:
    """The maps to write, each checked for an existing output before any work (but
    those the run a journal resumes published)."""
    if planner is None:
        steps = [MapStep(os.fspath(out), time)]
    else:
        steps = resumed_steps(map_steps(out, step_windows(planner, area, time)), journal)
    for step in steps:
        if not step.published:
            check_output(step.out, overwrite=overwrite, backend=backend)
    return steps


def _run_map(model: Model, dataset: RasteretDataset, prediction: PredictionMap,
             batch_size: int, num_workers: int, device: torch.device) -> str:
    """Sweep one map's chips through the model; publish it (nothing on a failure)."""
    loader = dataloader(dataset, sampler=SweepSampler(prediction.sweep),
                        batch_size=batch_size, num_workers=num_workers)
    try:
        with torch.no_grad():
            for batch in loader:
                prediction.add(_forward(model, batch["image"], device), batch["image"])
        return prediction.finish()
    except BaseException:
        prediction.abort()
        raise


def _remove(paths: list[str], backend: Backend | None) -> None:
    """Remove the maps a failed run published before the step that failed."""
    remote = [path for path in paths if is_remote(path)]
    for path in paths:
        if not is_remote(path):
            local_path(path).unlink(missing_ok=True)
    if remote:
        delete_objects(backend or default_backend(), remote)


def _register(steps: list[MapStep], name: str, dataset: RasteretDataset, model: Model,
              output: Output, workspace_dir: str | os.PathLike[str] | None,
              backend: Backend | None, force: bool) -> Collection:
    """The published maps as a collection, one scene per map: band ``prediction``, the
    source collection's name and the model's in its columns; a step's date, or for a
    mosaic the newest input scene's time."""
    # Sideways to ingest (a declared edge, see [tool.importlinter]): only a named run
    # builds a collection.
    from rasteret.ingest.api import build_from_table

    frame = dataset.index
    rows = []
    for step in steps:
        if step.date is None:
            used = frame.index.overlaps(pd.Interval(step.time.start, step.time.stop,
                                                    closed="both"))
            when = frame.index.right[used].max()
        else:
            when = step.date
        rows.append({
            "id": Path(step.out.rstrip("/")).stem or name,
            "datetime": pd.Timestamp(when).tz_localize("UTC").to_pydatetime(),
            "prediction": step.out, "rasteret:source_collection": dataset.collection.name,
            "rasteret:model": getattr(model, "__name__", None) or type(model).__name__,
            "rasteret:output": output})
    return build_from_table(pa.Table.from_pylist(rows), name=name,
                            href_columns=["prediction"], backend=backend,
                            workspace_dir=workspace_dir, force=force, progress=False)


def predict(
    model: Model, source: Collection | RasteretDataset, *, out: str | os.PathLike[str],
    bands: Sequence[str] | None = None, roi: Any = None, geometry_crs: Any = 4326,
    date_range: DateRange | None = None, chip_size: int = 256, overlap: int = 64,
    batch_size: int = 8, num_workers: int = 0, device: str | torch.device = "cpu",
    backend: Backend | None = None, blend: Blend = "cosine", output: Output = "values",
    class_names: Sequence[str] | None = None,
    colors: Mapping[int, Sequence[int]] | None = None, tile_size: int | None = None,
    compression: str = "deflate", dtype: str = "float32", overwrite: bool = False,
    journal: str | os.PathLike[str] | None = None, name: str | None = None,
    workspace_dir: str | os.PathLike[str] | None = None,
    options: ReadOptions | None = None, mosaic_order: MosaicOrder = "latest",
    time_series: bool = False, time_steps: int | None = None,
    time_select: TimeSelect = "even", time_bins: str | None = None,
    group_by: GroupBy = "scene",
) -> Collection:
    """Run ``model`` over an area and write its predictions as a Cloud-Optimized GeoTIFF.

    Chips of ``chip_size`` pixels sweep the roi in rows, ``chip_size - overlap`` apart,
    on the pixel grid of the input COGs; the output map's tiles fall on the inputs'
    tiles. Overlapping outputs are blended with weights, so chip borders leave no
    seams. Each row of output tiles is written as soon as every chip over it is
    blended: memory holds a few rows of tiles and the batches in flight, whatever the
    area. Pixels where no input band held data are nodata.

    A mosaic of the scenes in the time slice gives one map. A time series
    (``time_series=True`` here with a collection, or a time series dataset) gives one
    map per time step, as the dataset's options cut the roi's scenes into steps: each
    date (``group_by="scene"``) or solar day (``"day"``), the ``time_steps`` steps
    ``time_select`` keeps, or one step per ``time_bins`` bin; each map mosaics its
    step's scenes (in ``mosaic_order``), steps without a scene get none, and ``out``
    is a pattern with ``{date}`` or a folder.

    Args:
        model: A ``torch.nn.Module`` (put in eval mode and on ``device``) or any
            callable from a float32 image batch ``[B, C, H, W]`` to ``[B, K, H, W]``.
        source: A collection (with ``bands``) or a :class:`RasteretDataset`.
        out: The COG to write: a local path or an ``s3://``, ``az://``, ``gs://`` URL.
            For a time series, a pattern holding ``{date}`` (``"maps/ndvi-{date}.tif"``)
            or a folder (an existing one, or ending in ``/``) of ``<date>.tif`` maps;
            dates are days (``2024-05-01``), to the second when two steps share a day.
        bands: The model's input bands, in order (for a collection).
        roi: The area: a bbox tuple, shapely geometry or GeoJSON (default: all the
            scenes' extent).
        geometry_crs: The roi's CRS (default EPSG:4326).
        date_range: Only scenes within ``(start, end)`` (inclusive).
        chip_size: Chip size in pixels.
        overlap: Pixels neighbouring chips share.
        batch_size: Chips per model call.
        num_workers: DataLoader workers reading chips (0: the main process).
        device: Where the model runs.
        backend: How to reach the stores (reads and an object-store ``out``).
        blend: ``"cosine"`` (default), ``"mean"`` or ``"center"``.
        output: ``"values"`` (the model's outputs as they are, one band per channel,
            NaN nodata), ``"scores"`` (softmax over channels, one band per class) or
            ``"classes"`` (the most likely class as uint8, or uint16 for 255 classes or
            more; nodata the dtype's largest value).
        class_names: The classes' names (band descriptions of scores, GDAL metadata of
            classes).
        colors: Class value -> 8-bit RGB(A): the class map's colour table.
        tile_size: The output's tile size (default: the input COGs' tile width).
        compression: ``"deflate"`` or ``"zstd"``.
        dtype: The dtype of ``"values"`` and ``"scores"`` maps: ``"float32"`` or
            ``"float16"`` (half the size).
        overwrite: Replace an existing ``out``; by default an existing one raises.
        journal: A local folder keeping the finished output tiles: a run that is
            killed or fails resumes, given the same folder and arguments, from the
            rows of tiles it finished, and writes the same file as a run that was never
            interrupted (a deterministic model). Removed once the map is published.
            A time series keeps each step's tiles in a subfolder named by its date
            and notes each published map: a rerun skips those.
        name: The name of the collection the maps are registered as (default: the
            output file's stem; for a time series, the pattern's without ``{date}``,
            or the folder's name): one scene per map, band ``prediction``, columns
            ``rasteret:source_collection``, ``rasteret:model`` and ``rasteret:output``,
            the step's date (a mosaic: the newest input scene's time). It loads, reads
            and trains again (e.g. as labels through ``&``).
        workspace_dir: Where that collection is saved (default: the default
            workspace).
        options: How a collection's chips are read
            (:class:`~rasteret.options.ReadOptions`: ``apply_scale``, ``target_crs``,
            ``resolution``...), as for :class:`RasteretDataset`.
        mosaic_order: Which scene wins where a collection's scenes overlap.
        time_series: One map per time step of a collection's scenes (see above).
        time_steps: The number of steps (maps) ``time_select`` keeps.
        time_select: ``"even"`` (default), ``"latest"``, ``"earliest"`` or
            ``"least_cloudy"``, as for :class:`RasteretDataset`.
        time_bins: A pandas frequency (e.g. ``"1MS"``): one map per bin, mosaicking
            the bin's scenes; the map's date is the bin's label.
        group_by: ``"scene"`` (default: a map per date) or ``"day"`` (a map per solar
            day).

    Returns:
        The collection of the maps (see ``name``): it loads, reads and trains again.

    Raises:
        ConfigurationError: An invalid option, a time series ``out`` naming one file,
            or the model returned another shape than ``[B, K, chip_size, chip_size]``
            (nothing is written; the maps of earlier steps are removed, unless a
            ``journal`` keeps them for a rerun).
        NoCoverageError: No scene covers the roi.
        WriteConflictError: ``out`` exists (or another run published it first).
    """
    spec = MapSpec(output, class_names, colors, dtype)
    blend_window(chip_size, overlap, blend)  # checks blend before anything is read
    series = {"time_series": time_series, "time_steps": time_steps,
              "time_select": time_select, "time_bins": time_bins, "group_by": group_by}
    reader, planner = _datasets(source, bands, backend, options, mosaic_order, series)
    area = sweep_area(reader, roi, geometry_crs)
    steps = _steps(planner, area, time_slice(reader, date_range), out, overwrite=overwrite,
                   backend=backend, journal=journal)
    target = torch.device(device)
    if isinstance(model, torch.nn.Module):
        model.eval().to(target)
    written: list[str] = []
    try:
        for step in steps:
            if step.published:
                continue  # by the run this one resumes
            step_journal = None if journal is None else Path(journal, step.label)
            sweep = plan_sweep(reader, area, chip=chip_size, overlap=overlap, time=step.time,
                               tile=tile_size)
            prediction = PredictionMap(
                resumed(sweep, finished_rows(step_journal)), step.out, spec, blend=blend,
                input_nodata=input_nodata(reader), journal=step_journal,
                compression=compression, overwrite=overwrite, backend=backend)
            written.append(_run_map(model, reader, prediction, batch_size, num_workers,
                                    target))
            mark_published(journal, step)
    except BaseException:
        if journal is None:  # a journal keeps them for the run that resumes
            _remove(written, backend)
        raise
    forget_published(journal, steps)
    default = _map_name(steps[0].out) if planner is None else series_name(out)
    return _register(steps, name or default, reader, model, output, workspace_dir, backend,
                     overwrite)


def _map_name(out: str) -> str:
    """A map's collection name when none is given: the output file's stem."""
    return Path(out.rstrip("/")).stem or "prediction"
