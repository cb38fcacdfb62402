"""TorchGeo and Lightning integration: datasets, samplers, loaders, datamodule, chips.

Importing this package imports torch, torchgeo and lightning (the ``torch`` extra);
``import rasteret`` alone does not.
"""

from typing import Any

from rasteret.torch.dataset import RasteretDataset
from rasteret.torch.distributed import DistributedGeoSampler
from rasteret.torch.loader import dataloader
from rasteret.torch.samplers import TileAlignedSampler

__all__ = [
    "DistributedGeoSampler",
    "RasteretDataModule",
    "RasteretDataset",
    "TileAlignedSampler",
    "dataloader",
]


def __getattr__(name: str) -> Any:
    # Lightning is imported only when the datamodule is asked for.
    if name == "RasteretDataModule":
        from rasteret.torch.datamodule import RasteretDataModule

        return RasteretDataModule
    raise AttributeError(name)
