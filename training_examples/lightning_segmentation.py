"""TorchGeo's SemanticSegmentation task trained with Lightning on RasteretDataModule.

    .venv/bin/python training_examples/lightning_segmentation.py --steps 20
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chip-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import lightning as L
    from torchgeo.tasks import SemanticSegmentation

    from rasteret.testing.demo_env import BANDS, LABEL, demo_world
    from rasteret.torch import RasteretDataModule

    with demo_world(scenes=4, size=512) as world:
        datamodule = RasteretDataModule(
            world.collection, BANDS, mask_bands=[LABEL], chip_size=args.chip_size,
            batch_size=args.batch_size, length=args.steps * args.batch_size,
            num_workers=args.workers, backend=world.backend, image_scale=1e-4,
            split_by="date",
            splits={"train": ("2024-05-01", "2024-05-25"), "val": ("2024-05-26", "2024-12-31")},
        )
        task = SemanticSegmentation(model="unet", backbone="resnet18", weights=None,
                                    in_channels=len(BANDS), num_classes=4, lr=3e-3)
        trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=1, logger=False,
                            enable_checkpointing=False, limit_val_batches=2,
                            num_sanity_val_steps=0, log_every_n_steps=5)
        trainer.fit(task, datamodule=datamodule)
        print({k: round(float(v), 4) for k, v in trainer.callback_metrics.items()})


if __name__ == "__main__":
    main()
