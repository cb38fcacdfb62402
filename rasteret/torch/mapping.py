"""``PredictionMap``: model outputs of a sweep's chips, blended and streamed to a COG.

Shared by :func:`rasteret.torch.predict` and the Lightning
:class:`~rasteret.torch.callbacks.RasteretPredictionWriter`: batches of chip outputs go
in, in the sweep's order; rows of output tiles go to a
:class:`~rasteret.write.CogWriter` as soon as no later chip reaches them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from rasteret.errors import ConfigurationError
from rasteret.io.backend import Backend
from rasteret.options import check_option
from rasteret.torch.blend import Blend, TileRow, TileRowBlender, blend_window
from rasteret.torch.dataset import RasteretDataset
from rasteret.torch.sweep import Sweep
from rasteret.write import CogWriter

#: What a prediction map holds: the model's outputs as they are, class scores
#: (softmax over channels), or the most likely class.
Output = Literal["values", "scores", "classes"]
OUTPUTS = ("values", "scores", "classes")


def input_nodata(dataset: RasteretDataset, scale: float | None = None) -> list[float | None]:
    """Each input band's nodata value (the first scene's), times ``scale`` when the
    images are scaled before they reach the model."""
    if dataset.apply_scale:
        return [None] * len(dataset.bands)  # scaled images hold NaN where nodata
    row = int(dataset.index["row"].iloc[0])
    values = [dataset.view(row, band).nodata for band in dataset.bands]
    return [v * scale if v is not None and scale is not None else v for v in values]


def valid_pixels(image: np.ndarray, nodata: Sequence[float | None]) -> np.ndarray:
    """``(B, H, W)``: where any band of a batch of chips ``(B, C, H, W)`` holds data
    (a value other than its band's nodata, and not NaN)."""
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
        float_dtype: The dtype of values and scores: ``"float32"`` or ``"float16"``.
    """

    output: Output
    class_names: Sequence[str] | None = None
    colors: Mapping[int, Sequence[int]] | None = None
    float_dtype: str = "float32"

    def __post_init__(self) -> None:
        check_option("output", self.output, OUTPUTS)
        if np.dtype(self.float_dtype) not in (np.dtype("float32"), np.dtype("float16")):
            raise ConfigurationError(
                f"dtype={self.float_dtype!r}: values and scores are float32 or float16")

    def dtype(self, channels: int) -> np.dtype:
        """The map's dtype for a model giving ``channels`` channels."""
        if self.output != "classes":
            return np.dtype(self.float_dtype)
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

    def prepare(self, outputs: torch.Tensor) -> np.ndarray:
        """A batch of model outputs as the values blended: float64 values, or the
        softmax over the channels as float32 for scores and classes."""
        if self.output != "values":
            probabilities = torch.softmax(outputs.float(), dim=1)
            return np.asarray(probabilities.detach().to("cpu", torch.float32).numpy())
        return np.asarray(outputs.detach().to("cpu", torch.float64).numpy())

    def tile(self, row: TileRow, cols: slice) -> np.ndarray:
        """One output tile's pixels, ``(bands, tile, width)``, from a row's sums."""
        total, weight = row.total[:, :, cols], row.weight[:, cols]
        valid = row.valid[:, cols] & (weight > 0)
        if self.output == "classes":
            dtype = self.dtype(total.shape[0])
            classes = np.argmax(total, axis=0).astype(dtype)
            return np.where(valid, classes, dtype.type(self.nodata(total.shape[0])))[None]
        dtype = self.dtype(total.shape[0])
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            values = (total / weight).astype(dtype)
        tile: np.ndarray = np.where(valid, values, dtype.type(np.nan))
        return tile


class PredictionMap:
    """One prediction map in the making: the outputs of a sweep's chips, fed in the
    sweep's order, blended and written row of tiles by row of tiles.

    Nothing is published before :meth:`finish`; :meth:`abort` publishes nothing. The
    writer opens with the first batch, when the model's channel count is known.

    Args:
        sweep: The chips (in order) and the output grid.
        out: The COG to write (local path or object-store URL).
        spec: What the map stores.
        blend: How overlapping outputs are weighted.
        input_nodata: Each input band's nodata (pixels where every band is nodata
            become nodata).
        journal: A folder keeping finished tiles for a resumed run (see
            :class:`~rasteret.write.CogWriter`).
        compression: ``"deflate"`` or ``"zstd"``.
        overwrite: Replace an existing ``out``.
        backend: How to reach an object-store ``out``.
    """

    def __init__(self, sweep: Sweep, out: str | os.PathLike[str], spec: MapSpec, *,
                 blend: Blend = "cosine", input_nodata: Sequence[float | None] = (),
                 journal: str | os.PathLike[str] | None = None, compression: str = "deflate",
                 overwrite: bool = False, backend: Backend | None = None) -> None:
        self.sweep, self.out, self.spec = sweep, out, spec
        self.window = blend_window(sweep.chip, sweep.overlap, blend)
        self.input_nodata = list(input_nodata)
        self.writer_options: dict[str, Any] = {
            "journal": journal, "compression": compression, "overwrite": overwrite,
            "backend": backend}
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
            # Values must come back exactly (float64 sums); probabilities need not.
            sums = "float64" if self.spec.output == "values" else "float32"
            self.blender = TileRowBlender(grid.width, grid.height, self.sweep.tile, channels,
                                          sums)
        elif self.blender.channels != channels:
            raise ConfigurationError(f"the model gave {channels} channels for a batch after "
                                     f"giving {self.blender.channels}")
        return self.writer, self.blender

    def check(self, outputs: Any, images: torch.Tensor) -> torch.Tensor:
        """``outputs`` if they are ``[B, K, chip, chip]`` for ``images`` ``[B, C, ...]``.

        Raises:
            ConfigurationError: Another shape (or not a tensor).
        """
        chip = self.sweep.chip
        if not isinstance(outputs, torch.Tensor) or outputs.ndim != 4 or (
                outputs.shape[0] != images.shape[0] or tuple(outputs.shape[2:]) != (chip, chip)):
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs)
            raise ConfigurationError(
                f"the model returned {shape} for a batch of shape {tuple(images.shape)}; a "
                f"prediction map needs a tensor [B, K, {chip}, {chip}] (one output per pixel "
                "of each chip)")
        return outputs

    def add(self, outputs: Any, images: torch.Tensor) -> None:
        """Blend the outputs of the next batch of chips (``images`` is what the model
        saw); write the rows of tiles no later chip reaches.

        Raises:
            ConfigurationError: The outputs are not ``[B, K, chip, chip]``, or the batch
                runs past the sweep's chips.
        """
        values = self.spec.prepare(self.check(outputs, images))
        if self.done + len(values) > len(self.sweep.chips):
            raise ConfigurationError(f"more chips than the sweep's {len(self.sweep.chips)}")
        valid = valid_pixels(images.detach().cpu().numpy(), self.input_nodata)
        writer, blender = self.open(values.shape[1])
        for chip_values, ok in zip(values, valid):
            top, left = self.sweep.chips[self.done]
            # Rows this chip and the later ones cannot reach go before it starts a new
            # row: the rows in flight are those one chip spans, never one more.
            self.write(writer, blender.finished(top))
            blender.add(chip_values, self.window, ok, top, left)
            self.done += 1
        following = (self.sweep.chips[self.done][0] if self.done < len(self.sweep.chips)
                     else None)
        self.write(writer, blender.finished(following))

    def write(self, writer: CogWriter, rows: list[TileRow]) -> None:
        """Hand the tiles of finished rows to the writer."""
        tile = self.sweep.tile
        for row in rows:
            for col in range(writer.tiles_across):
                if writer.written(row.index, col):
                    continue  # finished by the run this one resumes
                _, _, height, width = writer.tile_window(row.index, col)
                data = self.spec.tile(row, slice(col * tile, col * tile + width))
                writer.write_tile(row.index, col, data[:, :height])

    def finish(self) -> str:
        """Write the last rows and publish the map.

        Returns:
            ``out``.

        Raises:
            ConfigurationError: Not every chip of the sweep was added.
        """
        if self.writer is None or self.blender is None or self.done != len(self.sweep.chips):
            raise ConfigurationError(
                f"{self.done} of the sweep's {len(self.sweep.chips)} chips were predicted")
        self.write(self.writer, self.blender.finished(None))
        return self.writer.close()

    def abort(self) -> None:
        """Publish nothing."""
        if self.writer is not None:
            self.writer.abort()
