"""Distributed data parallel on 2 CPU processes (gloo): each rank trains on a
disjoint share of the tile-aligned chips.

    .venv/bin/python training_examples/ddp_gloo.py --steps 10
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chip-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=1)
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
        # The sampler already gives each rank a disjoint share of the chips, so
        # Lightning must not wrap it in a DistributedSampler.
        trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=2,
                            strategy="ddp_spawn", use_distributed_sampler=False,
                            logger=False, enable_checkpointing=False, limit_val_batches=1,
                            num_sanity_val_steps=0)
        trainer.fit(task, datamodule=datamodule)
        print(f"ddp done: world size {trainer.world_size}, "
              f"steps {trainer.global_step}")


if __name__ == "__main__":
    main()
