"""The main job, end to end on the embedded demo world (``make demo``).

1. Write synthetic Sentinel-2-like COG scenes and serve them from a local S3 (moto)
   with credentials, listed by a local STAC API (rustac).
2. Build the collection through the STAC API with a credentialed backend.
3. Train a small U-Net (TorchGeo's SemanticSegmentation task) with Lightning for a
   few steps on tile-aligned chips, through forkserver DataLoader workers.
4. Measure samples/s, requests and bytes per chip; write a PNG of chips with
   predictions (``RasteretDataset.plot``), a map of the chips the sampler draws
   (``rasteret.torch.plot_chips``) and a map of a block split
   (``RasteretDataModule.plot_splits``).
5. Predict the map of the demo area (``rasteret.torch.predict``): a class COG and a
   PNG of it; stop every server.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import imagecodecs
import numpy as np
import torch
from matplotlib.figure import Figure


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--chip-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="demo-output", help="folder for the PNG")
    return parser.parse_args()


def figure_rows(figures: list[Figure]) -> np.ndarray:
    """Render figures (``RasteretDataset.plot``) and stack them into one RGB image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rows = []
    for figure in figures:
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        rows.append(np.asarray(canvas.buffer_rgba())[..., :3])
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)
              for r in rows]
    return np.ascontiguousarray(np.concatenate(padded, axis=0))


# -- the predicted map of the demo area (issue 22) -------------------------------------
#: The demo's classes (its label band's quartiles of a smooth field) and their colours.
CLASS_NAMES = ["water", "trees", "crops", "built"]
CLASS_COLORS = {0: (31, 120, 180), 1: (51, 160, 44), 2: (255, 221, 87), 3: (227, 26, 28)}


def render_classes(cog: Path, png: Path, *, max_size: int = 1024) -> tuple[int, int]:
    """A class COG as an RGB PNG in its colours (nodata white), at most ``max_size``
    pixels wide (read from its overviews); returns the PNG's ``(height, width)``."""
    import rasterio

    with rasterio.open(cog) as src:
        factor = max(1, -(-src.width // max_size))
        classes = src.read(1, out_shape=(src.height // factor, src.width // factor),
                           resampling=rasterio.enums.Resampling.nearest)
        colormap, nodata = src.colormap(1), src.nodata
    palette = np.full((256, 3), 255, np.uint8)
    for value, rgba in colormap.items():
        if value < 256 and value != nodata:
            palette[value] = rgba[:3]
    png.write_bytes(imagecodecs.png_encode(np.ascontiguousarray(palette[classes])))
    return classes.shape


def predict_map(task: torch.nn.Module, collection: object, bands: list[str], backend: object,
                out: Path, chip_size: int) -> Path:
    """Predict the demo area's classes with the trained ``task`` into
    ``out/predicted_map.tif`` (a COG) and ``out/predicted_map.png``."""
    from rasteret.torch import predict

    cog = out / "predicted_map.tif"
    started = time.perf_counter()
    maps = predict(lambda image: task(image * 1e-4), collection, bands=bands,
                   out=cog, backend=backend, chip_size=chip_size * 2, overlap=32,
                   batch_size=8, output="classes", class_names=CLASS_NAMES,
                   colors=CLASS_COLORS, overwrite=True, name="demo-map",
                   workspace_dir=out / "workspace")
    seconds = time.perf_counter() - started
    height, width = render_classes(cog, out / "predicted_map.png")
    print(f"[demo] predicted the demo area in {seconds:.1f} s: {cog} "
          f"({cog.stat().st_size / 1e6:.2f} MB COG, registered as {maps.name!r}) and "
          f"{out / 'predicted_map.png'} ({width} x {height} px)")
    return cog

# -- end of the predicted map ------------------------------------------------------------


def main() -> None:
    args = parse_args()
    import lightning as L
    from torchgeo.tasks import SemanticSegmentation

    from rasteret.torch import RasteretDataModule, TileAlignedSampler, plot_chips
    from testbed.demo_env import BANDS, LABEL, demo_world

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*Checkpoint directory.*")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with demo_world(scenes=args.scenes, size=args.size) as world:
        collection = world.collection
        print(f"[demo] local S3 {world.s3_endpoint}, STAC API {world.stac_url}")
        print(f"[demo] built {collection!r}")
        print(f"[demo] indexing: {world.build_stats.requests} requests for "
              f"{len(collection) * (len(BANDS) + 1)} assets in {world.build_seconds:.2f} s")

        datamodule = RasteretDataModule(
            collection, BANDS, mask_bands=[LABEL], chip_size=args.chip_size,
            batch_size=args.batch_size, sampler="tile_aligned",
            length=args.steps * args.batch_size, num_workers=args.workers,
            backend=world.backend, image_scale=1e-4,
            split_by="date", splits={"train": ("2024-05-01", "2024-06-15"),
                                     "val": ("2024-06-16", "2024-12-31")},
        )
        task = SemanticSegmentation(model="unet", backbone="resnet18", weights=None,
                                    in_channels=len(BANDS), num_classes=4, lr=3e-3)
        trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=1,
                            limit_val_batches=2, log_every_n_steps=5, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            num_sanity_val_steps=0)
        fit_start = time.perf_counter()
        trainer.fit(task, datamodule=datamodule)
        fit_seconds = time.perf_counter() - fit_start
        samples = args.steps * args.batch_size
        print(f"[demo] trained {args.steps} steps x {args.batch_size} chips of "
              f"{args.chip_size}px with {args.workers} forkserver workers in {fit_seconds:.1f} s "
              f"({samples / fit_seconds:.1f} samples/s including worker start-up)")
        loss = trainer.callback_metrics.get("train_loss")
        if loss is not None:
            print(f"[demo] last training loss {float(loss):.3f}")

        # Measure the read path alone in this process: samples/s, requests and bytes.
        dataset = datamodule.datasets["val"]
        sampler = TileAlignedSampler(dataset, size=args.chip_size, length=64, seed=1)
        slices = list(sampler)
        read_start = time.perf_counter()
        batches = [dataset.__getitems__(slices[i:i + 16]) for i in range(0, len(slices), 16)]
        read_seconds = time.perf_counter() - read_start
        stats = dataset.stats
        print(f"[demo] reads: {len(slices) / read_seconds:.1f} samples/s in one process, "
              f"{stats.requests / len(slices):.2f} requests and "
              f"{stats.bytes / len(slices) / 1024:.1f} KiB per chip "
              f"({len(BANDS) + 1} bands)")

        chips = batches[0][:6]
        images = torch.stack([c["image"] for c in chips])
        masks = torch.stack([c["mask"] for c in chips])
        task.eval()
        with torch.no_grad():
            predictions = task(images.float() * 1e-4).argmax(dim=1)
        accuracy = float((predictions == masks).float().mean())
        # One row per chip, drawn by the dataset's own plot (TorchGeo style).
        figures = [
            dataset.plot({**chip, "prediction": prediction}, suptitle=f"validation chip {i}")
            for i, (chip, prediction) in enumerate(zip(chips, predictions))
        ]
        png = out / "chips_with_predictions.png"
        png.write_bytes(imagecodecs.png_encode(figure_rows(figures)))
        print(f"[demo] pixel accuracy on 6 validation chips: {accuracy:.2f}")
        print(f"[demo] wrote {png} (RasteretDataset.plot per chip: RGB | mask | prediction)")

        # Pictures of where chips come from (no pixel is read): every chip the training
        # sampler can draw over the footprints, and a block split of the whole area.
        chip_map = out / "chip_map.png"
        train = datamodule.datasets["train"]
        plot_chips(TileAlignedSampler(train, size=args.chip_size, seed=0), train,
                   title="training chips (TileAlignedSampler)").savefig(chip_map, dpi=80)
        blocks = RasteretDataModule(
            collection, BANDS, mask_bands=[LABEL], chip_size=args.chip_size,
            batch_size=args.batch_size, sampler="tile_aligned", num_workers=0,
            backend=world.backend, split_by="blocks", block_size=2560, buffer=640, seed=0)
        split_map = out / "split_map.png"
        blocks.plot_splits().savefig(split_map, dpi=80)
        print(f"[demo] wrote {chip_map} (plot_chips) and {split_map} (plot_splits: "
              f"{', '.join(f'{s} {n} chips' for s, n in blocks.split_report()['chips'].items())})")
        predict_map(task, collection, BANDS, world.backend, out, args.chip_size)
    print(f"[demo] all servers stopped; total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
