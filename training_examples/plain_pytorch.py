"""Plain PyTorch: a training loop over tile-aligned chips from a rasteret collection.

Runs on the embedded demo world (local S3 + STAC API, synthetic scenes):

    .venv/bin/python training_examples/plain_pytorch.py --steps 20
"""

from __future__ import annotations

import time

import torch
from _common import example_args
from torch import nn


def small_segmenter(in_channels: int, classes: int) -> nn.Module:
    """A tiny fully convolutional network (enough to learn the demo's classes)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, classes, 1),
    )


def main() -> None:
    args = example_args(__doc__.splitlines()[0], steps=20, batch_size=16, workers=2)

    from rasteret.torch import TileAlignedSampler, dataloader
    from testbed.demo_env import BANDS, LABEL, demo_world

    with demo_world(scenes=4, size=512) as world:
        dataset = world.collection.to_torchgeo_dataset(
            BANDS, mask_bands=[LABEL], backend=world.backend, dtype=torch.float32
        )
        sampler = TileAlignedSampler(dataset, size=args.chip_size,
                                     length=args.steps * args.batch_size, seed=0)
        loader = dataloader(dataset, sampler=sampler, batch_size=args.batch_size,
                            num_workers=args.workers)
        model = small_segmenter(len(BANDS), 4)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        loss_fn = nn.CrossEntropyLoss()
        start = time.perf_counter()
        for step, batch in enumerate(loader, 1):
            logits = model(batch["image"] * 1e-4)
            loss = loss_fn(logits, batch["mask"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 5 == 0 or step == 1:
                print(f"step {step:3d}  loss {loss.item():.3f}")
        seconds = time.perf_counter() - start
        print(f"{args.steps * args.batch_size / seconds:.1f} samples/s "
              f"({args.workers} forkserver workers, start-up included)")


if __name__ == "__main__":
    main()
