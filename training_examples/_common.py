"""Set-up shared by the training examples: arguments and the demo datamodule."""

from __future__ import annotations

import argparse
from typing import Any


def example_args(description: str, *, steps: int, batch_size: int, workers: int,
                 argv: list[str] | None = None) -> argparse.Namespace:
    """The examples' command line: steps, batch size, chip size, workers."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--chip-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=workers)
    return parser.parse_args(argv)


def demo_datamodule(world: Any, args: argparse.Namespace, **options: Any):
    """A RasteretDataModule over the demo world: 4 bands in, land-cover labels out,
    split by date (train until May 25, validate after)."""
    from rasteret.torch import RasteretDataModule
    from testbed.demo_env import BANDS, LABEL

    settings: dict[str, Any] = dict(
        mask_bands=[LABEL], chip_size=args.chip_size, batch_size=args.batch_size,
        length=args.steps * args.batch_size, num_workers=args.workers,
        backend=world.backend, image_scale=1e-4, split_by="date",
        splits={"train": ("2024-05-01", "2024-05-25"), "val": ("2024-05-26", "2024-12-31")},
    )
    settings.update(options)
    return RasteretDataModule(world.collection, BANDS, **settings)


def segmentation_task():
    """TorchGeo's U-Net segmentation task for the demo's 4 bands and 4 classes."""
    from torchgeo.tasks import SemanticSegmentation

    from testbed.demo_env import BANDS

    return SemanticSegmentation(model="unet", backbone="resnet18", weights=None,
                                in_channels=len(BANDS), num_classes=4, lr=3e-3)
