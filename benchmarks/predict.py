"""Prediction benchmark: rasteret.torch.predict vs the loop TorchGeo users write.

One synthetic Sentinel-2-like scene (4 bands, uint16, 512-px deflate tiles, 10 m) of
``--size`` pixels a side (2,000: a 20 km area) served by local nginx with a fixed delay
per request; a small CPU convolutional model (4 bands in, 4 class scores out) on
256-px chips:

- rasteret: ``rasteret.torch.predict`` (cosine blend, 64-px overlap, class scores
  written as a float32 COG, streamed row of tiles by row of tiles), with the dataset's
  default decoded-tile cache (up to 256 MB) and without one (``cache_bytes=0``);
- TorchGeo by hand: ``GridGeoSampler`` (same chips and stride) over a
  ``RasterDataset`` through GDAL's ``/vsicurl/``, outputs pasted into one NumPy array
  of the whole area, then one rasterio write of a tiled GeoTIFF.

Each runs in its own process, so its peak RSS (VmHWM) is its own: the imports, the
model, and what the loop holds. Both run at every ``--sizes`` (default 200, 2,000
and 5,000 px: 2, 20 and 50 km), side by side, so the table shows which one grows
with the area: rasteret's rows of tiles in flight grow with the width only, the
hand-written loop holds the whole map.

    .venv/bin/python benchmarks/predict.py                 # 2, 20 and 50 km
    .venv/bin/python benchmarks/predict.py --quick         # 2 km and 10 km
    .venv/bin/python benchmarks/predict.py --sizes 2000    # 20 km only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import BANDS as BAND_TUPLE  # noqa: E402
from _common import latency_server, print_table, scene_set  # noqa: E402

BANDS = list(BAND_TUPLE)
CHIP, OVERLAP, BATCH, CLASSES = 256, 64, 8, 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 and 1,000 px only")
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000, 5000],
                        help="pixels a side (10 m) of each area")
    parser.add_argument("--latency", type=float, default=0.020, help="seconds per request")
    parser.add_argument("--data", default=".cache/bench/predict", help="scene cache folder")
    # Internal: run one side in this process and print its JSON figures.
    parser.add_argument("--run", choices=("rasteret", "rasteret-nocache", "torchgeo"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def small_model():
    """A small CPU convolutional network: 4 bands -> 4 class scores, fixed weights."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(len(BANDS), 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, CLASSES, 1))


def scaled(model):
    """``model`` on reflectance (the stored values times 1e-4)."""
    return lambda image: model(image.float() * 1e-4)


def rss_mb() -> float:
    """This process's resident memory now (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_rasteret(base: str, size: int, out: Path, cache: bool = True) -> dict[str, float]:
    """rasteret.torch.predict over the whole scene; its figures. ``cache=False`` reads
    through a dataset without a decoded-tile cache (``cache_bytes=0``)."""
    import pyarrow as pa
    import torch

    import rasteret
    from rasteret.torch import RasteretDataset, predict

    table = pa.Table.from_pylist([{"id": "scene000",
                                   **{b: f"{base}/scene000_{b}.tif" for b in BANDS}}])
    collection = rasteret.build_from_table(table, name="bench-predict", href_columns=BANDS,
                                           workspace_dir=tempfile.mkdtemp(), progress=False)
    model = small_model().eval()
    chips = 0

    def counted(image):
        nonlocal chips
        chips += len(image)
        return scaled(model)(image)

    ready = rss_mb()
    start = time.perf_counter()
    with torch.no_grad():
        source = collection if cache else RasteretDataset(collection, BANDS, cache_bytes=0)
        predict(counted, source, bands=BANDS if cache else None, out=out, chip_size=CHIP,
                overlap=OVERLAP, batch_size=BATCH, output="scores", overwrite=True)
    return {"seconds": time.perf_counter() - start, "chips": chips, "ready_mb": ready}


def run_torchgeo(base: str, size: int, out: Path) -> dict[str, float]:
    """The hand-written loop: GridGeoSampler, a map-sized array, one rasterio write."""
    import numpy as np
    import rasterio
    import torch
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    os.environ.update({"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
                       "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
                       "GDAL_HTTP_MULTIPLEX": "YES"})

    class Scene(RasterDataset):
        filename_glob = "scene*_B02.tif"
        filename_regex = r"^(?P<scene>scene\d+)_(?P<band>B\d\d)\.tif$"
        separate_files = True
        all_bands = tuple(BANDS)

    dataset = Scene(paths=[f"/vsicurl/{base}/scene000_B02.tif"], bands=BANDS)
    model = small_model().eval()
    ready = rss_mb()
    start = time.perf_counter()
    # An area smaller than a chip gets one chip of the area (GridGeoSampler yields none).
    chip = min(CHIP, size)
    sampler = GridGeoSampler(dataset, size=chip, stride=max(chip - OVERLAP, 1))
    loader = DataLoader(dataset, sampler=sampler, batch_size=BATCH, collate_fn=stack_samples)
    xmin, ymax = dataset.bounds[0].start, dataset.bounds[1].stop
    xres, yres = dataset.res
    scores = np.zeros((CLASSES, size, size), np.float32)  # the whole map in memory
    chips = 0
    with torch.no_grad():
        for batch in loader:
            output = torch.softmax(scaled(model)(batch["image"]), dim=1).numpy()
            for sample, bounds in zip(output, batch["bounds"]):
                col = round((float(bounds[0]) - xmin) / xres)
                row = round((ymax - float(bounds[4])) / yres)
                rows, cols = scores[:, row:row + chip, col:col + chip].shape[1:]
                scores[:, row:row + rows, col:col + cols] = sample[:, :rows, :cols]
            chips += len(output)
    transform = rasterio.transform.from_origin(xmin, ymax, xres, yres)
    with rasterio.open(out, "w", driver="GTiff", width=size, height=size, count=CLASSES,
                       dtype="float32", crs=dataset.crs, transform=transform, tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", predictor=3) as dst:
        dst.write(scores)
    return {"seconds": time.perf_counter() - start, "chips": chips, "ready_mb": ready}


def child(args: argparse.Namespace) -> None:
    """Run one side here and print its figures as JSON."""
    if args.run == "torchgeo":
        figures = run_torchgeo(args.base, args.size, Path(args.out))
    else:
        figures = run_rasteret(args.base, args.size, Path(args.out),
                               cache=args.run == "rasteret")
    figures["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["out_mb"] = Path(args.out).stat().st_size / 1e6
    print(json.dumps(figures))


def measure(side: str, base: str, size: int, out: Path) -> list[str]:
    """A table row for one side, run in its own process."""
    done = subprocess.run(
        [sys.executable, __file__, "--run", side, "--base", base, "--size", str(size),
         "--out", str(out)], check=True, capture_output=True, text=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    seconds = figures["seconds"]
    name = {"rasteret": "rasteret.torch.predict",
            "rasteret-nocache": "rasteret.torch.predict, cache_bytes=0",
            "torchgeo": "TorchGeo by hand"}[side]
    return [name, f"{size * 10 / 1000:g} km", f"{figures['chips'] / seconds:.1f}",
            f"{figures['out_mb'] / seconds:.2f}", f"{seconds:.1f}", f"{figures['rss_mb']:.0f}",
            f"{figures['rss_mb'] - figures['ready_mb']:.0f}"]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.run:
        child(args)
        return
    sizes = [200, 1000] if args.quick else args.sizes
    rows = []
    for size in sizes:
        data = Path(args.data) / str(size)
        scene_set(data, scenes=1, size=size)
        with latency_server(data, args.latency) as (_, base), \
                tempfile.TemporaryDirectory() as folder:
            rows.append(measure("rasteret", base, size, Path(folder) / "ours.tif"))
            rows.append(measure("rasteret-nocache", base, size, Path(folder) / "ours0.tif"))
            rows.append(measure("torchgeo", base, size, Path(folder) / "theirs.tif"))
    print_table(f"Prediction over a scene, {CHIP}-px chips, {OVERLAP}-px overlap, batch "
                f"{BATCH}, +{args.latency * 1000:g} ms per request",
                ["loop", "area", "chips/s", "output MB/s", "seconds", "peak RSS MB",
                 "peak over ready MB"], rows)


if __name__ == "__main__":
    main()
