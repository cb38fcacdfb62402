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
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import shapely
import torch

from rasteret.analysis import reproject_geometry, to_geometries
from rasteret.collection import Collection, DateRange
from rasteret.errors import ConfigurationError
from rasteret.io.backend import Backend
from rasteret.options import check_option
from rasteret.torch.blend import Blend, TileRow, TileRowBlender, blend_window
from rasteret.torch.dataset import RasteretDataset
from rasteret.torch.loader import dataloader
from rasteret.torch.sweep import Sweep, SweepSampler, plan_sweep, resumed, time_slice
from rasteret.write import CogWriter, check_output, finished_rows

#: What a prediction map holds: the model's outputs as they are, class scores
#: (softmax over channels), or the most likely class.
Output = Literal["values", "scores", "classes"]
OUTPUTS = ("values", "scores", "classes")

#: A model, or any callable from a batch of images ``[B, C, H, W]`` to ``[B, K, H, W]``.
Model = Callable[[torch.Tensor], torch.Tensor]


def _dataset(source: Collection | RasteretDataset, bands: Sequence[str] | None,
             backend: Backend | None, options: Mapping[str, Any]) -> RasteretDataset:
    """The dataset chips are read from (the one place predict builds one)."""
    if isinstance(source, RasteretDataset):
        if options or bands is not None:
            raise ConfigurationError(
                f"bands and dataset options ({', '.join(options)}) belong to a collection; "
                "a dataset has its own")
        dataset = source
    elif isinstance(source, Collection):
        if not bands:
            raise ConfigurationError("give bands= (the model's input bands, in order)")
        dataset = source.to_torchgeo_dataset(list(bands), backend=backend, **options)
    else:
        raise ConfigurationError(
            f"predict reads a Collection or a RasteretDataset, not {type(source).__name__}")
    if dataset.time_series:
        raise ConfigurationError("predict reads mosaics; a time-series dataset is not "
                                 "supported yet")
    return dataset


def _area(dataset: RasteretDataset, roi: Any, geometry_crs: Any) -> shapely.Geometry:
    """The roi as one geometry in the dataset's CRS (the dataset's extent without one)."""
    if roi is None:
        x, y, _ = dataset.bounds
        return shapely.box(x.start, y.start, x.stop, y.stop)
    geometries, crs = to_geometries(roi, geometry_crs)
    return reproject_geometry(shapely.union_all(geometries), crs, dataset.crs)


def _input_nodata(dataset: RasteretDataset) -> list[float | None]:
    """Each input band's nodata value (the first scene's)."""
    row = int(dataset.index["row"].iloc[0])
    return [dataset.view(row, band).nodata for band in dataset.bands]


def _valid(image: np.ndarray, nodata: Sequence[float | None]) -> np.ndarray:
    """``(B, H, W)``: where any band of a chip holds data."""
    valid = np.zeros((image.shape[0], *image.shape[2:]), bool)
    for channel, value in enumerate(nodata):
        band = image[:, channel]
        ok = ~np.isnan(band) if band.dtype.kind == "f" else np.ones(band.shape, bool)
        if value is not None and not np.isnan(value):
            ok &= band != value
        valid |= ok
    return valid


@dataclass(frozen=True)
class MapSpec:
    """What a prediction map stores, from the model's outputs.

    Attributes:
        output: ``"values"``, ``"scores"`` or ``"classes"``.
        class_names: The classes' names (scores: band descriptions; classes: metadata).
        colors: The class map's colour table (classes only).
    """

    output: Output
    class_names: Sequence[str] | None = None
    colors: Mapping[int, Sequence[int]] | None = None

    def dtype(self, channels: int) -> np.dtype:
        """The map's dtype for a model giving ``channels`` channels."""
        if self.output != "classes":
            return np.dtype("float32")
        return np.dtype("uint8") if channels < 255 else np.dtype("uint16")

    def nodata(self, channels: int) -> float:
        """The map's nodata: NaN, or the class dtype's largest value."""
        if self.output != "classes":
            return float("nan")
        return float(np.iinfo(self.dtype(channels)).max)

    def writer_options(self, channels: int) -> dict[str, Any]:
        """The :class:`CogWriter` options of the map's pixels.

        Raises:
            ConfigurationError: ``class_names`` does not name one class per channel.
        """
        names = list(self.class_names) if self.class_names is not None else None
        if names is not None and len(names) != channels and self.output != "values":
            raise ConfigurationError(
                f"{len(names)} class_names for a model giving {channels} channels")
        classes = self.output == "classes"
        return {"dtype": self.dtype(channels), "bands": 1 if classes else channels,
                "nodata": self.nodata(channels),
                "resampling": "nearest" if classes else "mean",
                "colors": self.colors if classes else None,
                "class_names": names if classes else None,
                "descriptions": names if self.output == "scores" else None}

    def tile(self, row: TileRow, cols: slice) -> np.ndarray:
        """One output tile's pixels, ``(bands, tile, width)``, from a row's sums."""
        total, weight = row.total[:, :, cols], row.weight[:, cols]
        valid = row.valid[:, cols] & (weight > 0)
        if self.output == "classes":
            dtype = self.dtype(total.shape[0])
            classes = np.argmax(total, axis=0).astype(dtype)
            return np.where(valid, classes, dtype.type(self.nodata(total.shape[0])))[None]
        with np.errstate(invalid="ignore", divide="ignore"):
            values = (total / weight).astype(np.float32)
        return np.where(valid, values, np.float32(np.nan))


class _Run:
    """One prediction: the sweep, the blender and the writer (opened on the first
    batch, when the model's channel count is known)."""

    def __init__(self, sweep: Sweep, out: str | os.PathLike[str], spec: MapSpec,
                 window: np.ndarray, writer_options: dict[str, Any]) -> None:
        self.sweep, self.out, self.spec = sweep, out, spec
        self.window, self.writer_options = window, writer_options
        self.writer: CogWriter | None = None
        self.blender: TileRowBlender | None = None
        self.done = 0

    def open(self, channels: int) -> tuple[CogWriter, TileRowBlender]:
        """The writer and blender for a model giving ``channels`` channels."""
        if self.writer is None or self.blender is None:
            grid = self.sweep.grid
            self.writer = CogWriter(
                self.out, width=grid.width, height=grid.height, crs=grid.crs,
                transform=grid.transform, tile_size=self.sweep.tile,
                **self.spec.writer_options(channels), **self.writer_options)
            self.blender = TileRowBlender(grid.width, grid.height, self.sweep.tile, channels)
        elif self.blender.channels != channels:
            raise ConfigurationError(f"the model gave {channels} channels for a batch after "
                                     f"giving {self.blender.channels}")
        return self.writer, self.blender

    def add(self, outputs: np.ndarray, valid: np.ndarray) -> None:
        """Blend one batch's outputs ``(B, K, chip, chip)``; write the rows it finished."""
        writer, blender = self.open(outputs.shape[1])
        for values, ok in zip(outputs, valid):
            top, left = self.sweep.chips[self.done]
            blender.add(values, self.window, ok, top, left)
            self.done += 1
        following = (self.sweep.chips[self.done][0] if self.done < len(self.sweep.chips)
                     else None)
        self.write(writer, blender.finished(following))

    def write(self, writer: CogWriter, rows: list[TileRow]) -> None:
        """Hand the tiles of finished rows to the writer."""
        tile = self.sweep.tile
        for row in rows:
            for col in range(writer.tiles_across):
                _, _, height, width = writer.tile_window(row.index, col)
                if writer.written(row.index, col):
                    continue  # finished by the run this one resumes
                data = self.spec.tile(row, slice(col * tile, col * tile + width))
                writer.write_tile(row.index, col, data[:, :height])

    def finish(self) -> str:
        """Write the last rows and publish the map."""
        if self.writer is None or self.blender is None:
            raise ConfigurationError("no chip of the sweep was read")
        self.write(self.writer, self.blender.finished(None))
        return self.writer.close()

    def abort(self) -> None:
        """Publish nothing."""
        if self.writer is not None:
            self.writer.abort()


def _forward(model: Model, image: torch.Tensor, device: torch.device, chip: int,
             output: Output) -> np.ndarray:
    """The model's outputs for a batch, checked, as float64 ``(B, K, chip, chip)``."""
    result = model(image.to(device=device, dtype=torch.float32))
    if not isinstance(result, torch.Tensor) or result.ndim != 4 or (
            result.shape[0] != image.shape[0] or tuple(result.shape[2:]) != (chip, chip)):
        shape = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result)
        raise ConfigurationError(
            f"the model returned {shape} for a batch of shape {tuple(image.shape)}; predict "
            f"needs a tensor [B, K, {chip}, {chip}] (one output per pixel of each chip)")
    if output != "values":
        result = torch.softmax(result.float(), dim=1)
    return np.asarray(result.detach().to("cpu", torch.float64).numpy())


def predict(
    model: Model, source: Collection | RasteretDataset, *, out: str | os.PathLike[str],
    bands: Sequence[str] | None = None, roi: Any = None, geometry_crs: Any = 4326,
    date_range: DateRange | None = None, chip_size: int = 256, overlap: int = 64,
    batch_size: int = 8, num_workers: int = 0, device: str | torch.device = "cpu",
    backend: Backend | None = None, blend: Blend = "cosine", output: Output = "values",
    class_names: Sequence[str] | None = None,
    colors: Mapping[int, Sequence[int]] | None = None, tile_size: int | None = None,
    compression: str = "deflate", overwrite: bool = False,
    journal: str | os.PathLike[str] | None = None, **dataset_options: Any,
) -> str:
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
        output: ``"values"`` (the model's outputs as they are, one float32 band per
            channel, NaN nodata), ``"scores"`` (softmax over channels, one float32 band
            per class) or ``"classes"`` (the most likely class as uint8, or uint16 for
            255 classes or more; nodata the dtype's largest value).
        class_names: The classes' names (band descriptions of scores, GDAL metadata of
            classes).
        colors: Class value -> 8-bit RGB(A): the class map's colour table.
        tile_size: The output's tile size (default: the input COGs' tile width).
        compression: ``"deflate"`` or ``"zstd"``.
        overwrite: Replace an existing ``out``; by default an existing one raises.
        journal: A local folder keeping the finished output tiles: a run that is
            killed or fails resumes, given the same folder and arguments, from the
            rows of tiles it finished, and writes the same file as a run that was never
            interrupted (a deterministic model). Removed once the map is published.
        **dataset_options: More options of the dataset read from a collection (see
            :class:`RasteretDataset`: ``mosaic_order``, ``apply_scale``,
            ``target_crs``, ...).

    Returns:
        ``out``.

    Raises:
        ConfigurationError: An invalid option, or the model returned another shape
            than ``[B, K, chip_size, chip_size]`` (nothing is written).
        NoCoverageError: No scene covers the roi.
        WriteConflictError: ``out`` exists (or another run published it first).
    """
    check_option("output", output, OUTPUTS)
    window = blend_window(chip_size, overlap, blend)
    check_output(out, overwrite=overwrite)
    dataset = _dataset(source, bands, backend, dataset_options)
    sweep = plan_sweep(dataset, _area(dataset, roi, geometry_crs), chip=chip_size,
                       overlap=overlap, time=time_slice(dataset, date_range), tile=tile_size)
    nodata = _input_nodata(dataset)
    sweep = resumed(sweep, finished_rows(journal))
    run = _Run(sweep, out, MapSpec(output, class_names, colors), window,
               {"compression": compression, "overwrite": overwrite, "backend": backend,
                "journal": journal})
    target = torch.device(device)
    if isinstance(model, torch.nn.Module):
        model.eval().to(target)
    loader = dataloader(dataset, sampler=SweepSampler(sweep), batch_size=batch_size,
                        num_workers=num_workers)
    try:
        with torch.no_grad():
            for batch in loader:
                image = batch["image"]
                outputs = _forward(model, image, target, chip_size, output)
                run.add(outputs, _valid(image.numpy(), nodata))
        return run.finish()
    except BaseException:
        run.abort()
        raise
