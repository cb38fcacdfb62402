"""LightningCLI entry point: train TorchGeo tasks on rasteret collections from YAML.

    .venv/bin/python training_examples/cli.py fit --config configs/segmentation.yaml \
        --data.collection my-collection
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI
from torchgeo.tasks import SemanticSegmentation

from rasteret.torch.datamodule import RasteretDataModule


def main(args: list[str] | None = None) -> None:
    """Run LightningCLI with rasteret's datamodule and TorchGeo's segmentation task."""
    LightningCLI(
        SemanticSegmentation,
        RasteretDataModule,
        args=args,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
