"""The figures of docs/training-data.md (``make docs-figures``), drawn from a small
synthetic world on the local disk: six overlapping Sentinel-2-like scenes in two rows
(UTM 33N, 10 m, 512-px tiles of 128 px), a few days apart.

    .venv/bin/python docs/figures/make_figures.py [--out docs/figures]

Writes ``collection.png`` (``Collection.plot``), ``chips.png`` (``plot_chips`` of a
TileAlignedSampler), ``chips_random.png`` (of TorchGeo's RandomPatchSampler) and
``split.png`` (``RasteretDataModule.plot_splits``). Nothing is read but the files'
headers (the build); the pictures come from the index.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RASTERET_PROGRESS", "0")
# The docs' figures need no DataLoader workers: no fork server.
os.environ.setdefault("RASTERET_EARLY_FORKSERVER", "0")

#: Dots per inch of the PNGs (small files in the repository).
DPI = 72


def build_world(folder: Path):
    """Six scenes in two rows of three, each shifted half a scene east; a collection."""
    import pyarrow as pa

    import rasteret
    from testbed.scenes import write_scenes

    rows = []
    start = dt.datetime(2024, 4, 3, 10, tzinfo=dt.UTC)
    for row, north in enumerate((4_100_000.0, 4_096_800.0)):
        scenes = write_scenes(folder / f"row{row}", count=3, size=512, tile=128,
                              bands=("B02", "B03", "B04", "B08"), label=False,
                              origin=(500_000.0 + 1280.0 * row, north), shift=256,
                              start=start + dt.timedelta(days=17 * row), days_between=12,
                              seed=row)
        rows += [{"id": f"{s.id}_{row}", "datetime": s.datetime, "eo:cloud_cover": s.cloud_cover,
                  **{band: str(path) for band, path in s.files.items()}} for s in scenes]
    return rasteret.build_from_table(pa.Table.from_pylist(rows), name="docs-world",
                                     href_columns=["B02", "B03", "B04", "B08"],
                                     workspace_dir=folder / "ws", progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from torchgeo.samplers import RandomPatchSampler

    from rasteret.torch import RasteretDataModule, TileAlignedSampler, plot_chips

    collection = build_world(Path(tempfile.mkdtemp(prefix="rasteret-docs-figures-")))
    aoi = (501_500.0, 4_094_800.0, 504_500.0, 4_097_500.0)
    figures = {"collection.png": collection.plot(geometries=aoi, geometry_crs=32633)}

    dataset = collection.to_torchgeo_dataset(["B04", "B03", "B02"], chip_size=128)
    tiles = TileAlignedSampler(dataset, size=128, mode="grid")
    figures["chips.png"] = plot_chips(tiles, dataset, title="TileAlignedSampler (grid)")
    random = RandomPatchSampler(dataset, size=128, length=60, generator=0)
    figures["chips_random.png"] = plot_chips(random, dataset,
                                             title="RandomPatchSampler (60 chips)")

    module = RasteretDataModule(collection, ["B04", "B03", "B02"], chip_size=64,
                                batch_size=8, num_workers=0, sampler="tile_aligned",
                                split_by="blocks", block_size=2560, buffer=640, seed=4)
    figures["split.png"] = module.plot_splits()
    for name, figure in figures.items():
        figure.savefig(out / name, dpi=DPI)
        print(f"wrote {out / name} ({(out / name).stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
