"""Distributed data parallel on 2 CPU processes (gloo): each rank trains on a
disjoint share of the tile-aligned chips.

    .venv/bin/python training_examples/ddp_gloo.py --steps 10
"""

from __future__ import annotations

from _common import demo_datamodule, example_args, segmentation_task


def main() -> None:
    args = example_args(__doc__.splitlines()[0], steps=10, batch_size=8, workers=1)
    import lightning as L

    from testbed.demo_env import demo_world

    with demo_world(scenes=4, size=512) as world:
        # The sampler already gives each rank a disjoint share of the chips, so
        # Lightning must not wrap it in a DistributedSampler.
        trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=2,
                            strategy="ddp_spawn", use_distributed_sampler=False,
                            logger=False, enable_checkpointing=False, limit_val_batches=1,
                            num_sanity_val_steps=0)
        trainer.fit(segmentation_task(), datamodule=demo_datamodule(world, args))
        print(f"ddp done: world size {trainer.world_size}, steps {trainer.global_step}")


if __name__ == "__main__":
    main()
