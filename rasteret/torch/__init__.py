"""TorchGeo and Lightning integration: datasets, samplers, loaders, datamodule, chips.

Importing this package imports torch, torchgeo and lightning (the ``torch`` extra);
``import rasteret`` alone does not. In a program's main process it also starts the
fork server DataLoader workers are forked from, preloaded with torch and torchgeo
(:mod:`rasteret.torch.forkserver`; ``RASTERET_EARLY_FORKSERVER=0`` leaves it to the
first loader).
"""

from typing import TYPE_CHECKING, Any

from rasteret.torch import forkserver as _forkserver

if TYPE_CHECKING:  # imported on first use by __getattr__ below
    from rasteret.torch.callbacks import RasteretPredictionWriter
    from rasteret.torch.datamodule import RasteretDataModule

# Before torchgeo is imported below: the worker server's own imports run beside it.
_forkserver.start_early()

from rasteret.torch.content import ContentSampler  # noqa: E402
from rasteret.torch.dataset import RasteretDataset  # noqa: E402
from rasteret.torch.distributed import DistributedGeoSampler  # noqa: E402
from rasteret.torch.loader import dataloader  # noqa: E402
from rasteret.torch.plots import plot_chips  # noqa: E402
from rasteret.torch.predict import predict  # noqa: E402
from rasteret.torch.samplers import RegionSampler, TileAlignedSampler  # noqa: E402

__all__ = [
    "ContentSampler",
    "DistributedGeoSampler",
    "RasteretDataModule",
    "RasteretDataset",
    "RasteretPredictionWriter",
    "RegionSampler",
    "TileAlignedSampler",
    "dataloader",
    "plot_chips",
    "predict",
]


def __getattr__(name: str) -> Any:
    # Lightning is imported only when the datamodule or the callback is asked for.
    if name == "RasteretDataModule":
        from rasteret.torch.datamodule import RasteretDataModule

        return RasteretDataModule
    if name == "RasteretPredictionWriter":
        from rasteret.torch.callbacks import RasteretPredictionWriter

        return RasteretPredictionWriter
    raise AttributeError(name)
