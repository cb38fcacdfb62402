"""``RasteretPredictionWriter``: Lightning's ``trainer.predict`` writes a blended map.

The datamodule's ``predict_dataloader`` sweeps its roi with overlapping chips
(:class:`~rasteret.torch.RasteretDataModule`, ``roi=`` and ``overlap=``); this callback
blends each batch's predictions into rows of output tiles and streams them into a
Cloud-Optimized GeoTIFF, as :func:`rasteret.torch.predict` does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from rasteret.errors import ConfigurationError
from rasteret.io.backend import Backend
from rasteret.torch.blend import Blend, blend_window
from rasteret.torch.datamodule import RasteretDataModule
from rasteret.torch.mapping import MapSpec, Output, PredictionMap, input_nodata
from rasteret.write import check_output


class RasteretPredictionWriter(BasePredictionWriter):
    """Write ``trainer.predict``'s outputs as one blended Cloud-Optimized GeoTIFF.

    The module's ``predict_step`` returns a tensor ``[B, K, H, W]`` for the batch's
    ``image`` (e.g. ``return self(batch["image"])``). Run it with
    ``trainer.predict(model, datamodule=datamodule, return_predictions=False)`` so that
    Lightning keeps no prediction in memory, on one device.

    Example::

        datamodule = RasteretDataModule(collection, bands, chip_size=256, roi=bbox,
                                        overlap=64, num_workers=2)
        writer = RasteretPredictionWriter("map.tif", output="classes")
        trainer = L.Trainer(callbacks=[writer], devices=1)
        trainer.predict(model, datamodule=datamodule, return_predictions=False)
        writer.path  # "map.tif"

    Args:
        out: The COG to write: a local path or an ``s3://``, ``az://``, ``gs://`` URL.
        blend: ``"cosine"`` (default), ``"mean"`` or ``"center"``.
        output: ``"values"``, ``"scores"`` or ``"classes"`` (see
            :func:`rasteret.torch.predict`).
        class_names: The classes' names.
        colors: Class value -> 8-bit RGB(A): the class map's colour table.
        compression: ``"deflate"`` or ``"zstd"``.
        dtype: The dtype of values and scores maps: ``"float32"`` or ``"float16"``.
        overwrite: Replace an existing ``out``.
        backend: How to reach an object-store ``out``.

    Raises:
        ConfigurationError: An invalid option.
        WriteConflictError: ``out`` exists and ``overwrite`` is False.
    """

    def __init__(self, out: str | os.PathLike[str], *, blend: Blend = "cosine",
                 output: Output = "values", class_names: Sequence[str] | None = None,
                 colors: Mapping[int, Sequence[int]] | None = None,
                 compression: str = "deflate", dtype: str = "float32",
                 overwrite: bool = False, backend: Backend | None = None) -> None:
        super().__init__(write_interval="batch")
        blend_window(2, 0, blend)  # checks blend now
        check_output(out, overwrite=overwrite, backend=backend)
        self.out, self.blend, self.spec = out, blend, MapSpec(output, class_names, colors, dtype)
        self.options: dict[str, Any] = {"compression": compression, "overwrite": overwrite,
                                        "backend": backend}
        self.map: PredictionMap | None = None
        #: ``out`` once the map is published.
        self.path: str | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start a map on the datamodule's sweep."""
        datamodule = getattr(trainer, "datamodule", None)
        if not isinstance(datamodule, RasteretDataModule) or datamodule.predict_sweep is None:
            raise ConfigurationError(
                "RasteretPredictionWriter needs trainer.predict(datamodule=) a "
                "RasteretDataModule (its predict_dataloader sweeps the roi)")
        dataset = datamodule.datasets["predict"]
        self.map = PredictionMap(
            datamodule.predict_sweep, self.out, self.spec, blend=self.blend,
            input_nodata=input_nodata(dataset, datamodule.image_scale), **self.options)

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           prediction: Any, batch_indices: Sequence[int] | None, batch: Any,
                           batch_idx: int, dataloader_idx: int) -> None:
        """Blend one batch's predictions; write the rows of tiles it finished."""
        assert self.map is not None  # on_predict_start ran
        image: torch.Tensor = batch["image"]
        self.map.add(prediction, image)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Publish the map."""
        assert self.map is not None
        self.path = self.map.finish()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        """Publish nothing."""
        if self.map is not None:
            self.map.abort()
