"""TorchGeo's SemanticSegmentation task trained with Lightning on RasteretDataModule.

    .venv/bin/python training_examples/lightning_segmentation.py --steps 20
"""

from __future__ import annotations

from _common import demo_datamodule, example_args, segmentation_task


def main() -> None:
    args = example_args(__doc__.splitlines()[0], steps=20, batch_size=16, workers=2)
    import lightning as L

    from testbed.demo_env import demo_world

    with demo_world(scenes=4, size=512) as world:
        trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=1, logger=False,
                            enable_checkpointing=False, limit_val_batches=2,
                            num_sanity_val_steps=0, log_every_n_steps=5)
        trainer.fit(segmentation_task(), datamodule=demo_datamodule(world, args))
        print({k: round(float(v), 4) for k, v in trainer.callback_metrics.items()})


if __name__ == "__main__":
    main()
