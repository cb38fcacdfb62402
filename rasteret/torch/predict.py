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
import torch

from rasteret.collection import Collection
from rasteret.dates import DateRange
from rasteret.errors import ConfigurationError
from rasteret.io.backend import Backend
from rasteret.options import MosaicOrder, ReadOptions
from rasteret.torch.blend import Blend, blend_window
from rasteret.torch.dataset import RasteretDataset
from rasteret.torch.loader import dataloader
from rasteret.torch.mapping import MapSpec, Output, PredictionMap, input_nodata
from rasteret.torch.sweep import SweepSampler, plan_sweep, resumed, sweep_area, time_slice
from rasteret.write import check_output, finished_rows

# The module's name is its function's: rasteret.torch.predict is the function.
__all__ = ["predict"]

#: A model, or any callable from a batch of images ``[B, C, H, W]`` to ``[B, K, H, W]``.
Model = Callable[[torch.Tensor], torch.Tensor]


def _dataset(source: Collection | RasteretDataset, bands: Sequence[str] | None,
             backend: Backend | None, options: ReadOptions | None,
             mosaic_order: MosaicOrder) -> RasteretDataset:
    """The dataset chips are read from (the one place predict builds one)."""
    if isinstance(source, RasteretDataset):
        if options is not None or bands is not None or mosaic_order != "latest":
            raise ConfigurationError(
                "bands, options and mosaic_order belong to a collection; a dataset has "
                "its own")
        dataset = source
    elif isinstance(source, Collection):
        if not bands:
            raise ConfigurationError("give bands= (the model's input bands, in order)")
        dataset = source.to_torchgeo_dataset(list(bands), backend=backend, options=options,
                                             mosaic_order=mosaic_order)
    else:
        raise ConfigurationError(
            f"predict reads a Collection or a RasteretDataset, not {type(source).__name__}")
    if dataset.time_series:
        raise ConfigurationError("predict reads mosaics; a time-series dataset is not "
                                 "supported yet")
    return dataset


def _forward(model: Model, image: torch.Tensor, device: torch.device) -> Any:
    """The model's outputs for a batch of images (float32 on ``device``)."""
    return model(image.to(device=device, dtype=torch.float32))


def _register(out: str, name: str, dataset: RasteretDataset, model: Model, output: Output,
              time: slice, workspace_dir: str | os.PathLike[str] | None,
              backend: Backend | None, force: bool) -> Collection:
    """The published map as a one-scene collection: band ``prediction``, the source
    collection's name and the model's in its columns, the newest input scene's time."""
    # Sideways to ingest (a declared edge, see [tool.importlinter]): only a named run
    # builds a collection.
    from rasteret.ingest.api import build_from_table

    frame = dataset.index
    used = frame.index.overlaps(pd.Interval(time.start, time.stop, closed="both"))
    newest = frame.index.right[used].max()
    row = {"id": Path(out.rstrip("/")).stem or name,
           "datetime": newest.tz_localize("UTC").to_pydatetime(), "prediction": out,
           "rasteret:source_collection": dataset.collection.name,
           "rasteret:model": getattr(model, "__name__", None) or type(model).__name__,
           "rasteret:output": output}
    return build_from_table(pa.Table.from_pylist([row]), name=name,
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
) -> Collection:
    """Run ``model`` over an area and write its predictions as a Cloud-Optimized GeoTIFF.

    Chips of ``chip_size`` pixels sweep the roi in rows, ``chip_size - overlap`` apart,
    on the pixel grid of the input COGs; the output map's tiles fall on the inputs'
    tiles. Overlapping outputs are blended with weights, so chip borders leave no
    seams. Each row of output tiles is written as soon as every chip over it is
    blended: memory holds a few rows of tiles and the batches in flight, whatever the
    area. Pixels where no input band held data are nodata.

    Args:
        model: A ``torch.nn.Module`` (put in eval mode and on ``device``) or any
            callable from a float32 image batch ``[B, C, H, W]`` to ``[B, K, H, W]``.
        source: A collection (with ``bands``) or a :class:`RasteretDataset`.
        out: The COG to write: a local path or an ``s3://``, ``az://``, ``gs://`` URL.
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
        name: The name of the collection the map is registered as (default: the
            output file's stem): one scene, band ``prediction``, columns
            ``rasteret:source_collection``, ``rasteret:model`` and ``rasteret:output``,
            the newest input scene's time. It loads, reads and trains again (e.g. as
            labels through ``&``).
        workspace_dir: Where that collection is saved (default: the default
            workspace).
        options: How a collection's chips are read
            (:class:`~rasteret.options.ReadOptions`: ``apply_scale``, ``target_crs``,
            ``resolution``...), as for :class:`RasteretDataset`.
        mosaic_order: Which scene wins where a collection's scenes overlap.

    Returns:
        The collection of the map (see ``name``): it loads, reads and trains again.

    Raises:
        ConfigurationError: An invalid option, or the model returned another shape
            than ``[B, K, chip_size, chip_size]`` (nothing is written).
        NoCoverageError: No scene covers the roi.
        WriteConflictError: ``out`` exists (or another run published it first).
    """
    spec = MapSpec(output, class_names, colors, dtype)
    blend_window(chip_size, overlap, blend)  # checks blend before anything is read
    check_output(out, overwrite=overwrite, backend=backend)
    dataset = _dataset(source, bands, backend, options, mosaic_order)
    sweep = plan_sweep(dataset, sweep_area(dataset, roi, geometry_crs), chip=chip_size,
                       overlap=overlap, time=time_slice(dataset, date_range), tile=tile_size)
    prediction = PredictionMap(
        resumed(sweep, finished_rows(journal)), out, spec, blend=blend,
        input_nodata=input_nodata(dataset), journal=journal, compression=compression,
        overwrite=overwrite, backend=backend)
    target = torch.device(device)
    if isinstance(model, torch.nn.Module):
        model.eval().to(target)
    loader = dataloader(dataset, sampler=SweepSampler(prediction.sweep),
                        batch_size=batch_size, num_workers=num_workers)
    try:
        with torch.no_grad():
            for batch in loader:
                prediction.add(_forward(model, batch["image"], target), batch["image"])
        written = prediction.finish()
    except BaseException:
        prediction.abort()
        raise
    return _register(written, name or _map_name(written), dataset, model, output,
                     sweep.time, workspace_dir, backend, overwrite)


def _map_name(out: str) -> str:
    """A map's collection name when none is given: the output file's stem."""
    return Path(out.rstrip("/")).stem or "prediction"
