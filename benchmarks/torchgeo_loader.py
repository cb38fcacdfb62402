"""TorchGeo loader benchmark: RasteretDataset vs TorchGeo's RasterDataset over GDAL.

Both read the same synthetic Sentinel-2-like COGs (non-overlapping scenes, 4 bands,
uint16, deflate + predictor 2, 512-px tiles) from local nginx adding a fixed delay
per request (inside nginx by default; ``--latency-by proxy`` uses the Python proxy).
256-px chips of 4 bands, batch 16, ``num_workers=2`` (spawn for GDAL, forkserver for
rasteret), same sampler seeds.

    .venv/bin/python benchmarks/torchgeo_loader.py            # full run
    .venv/bin/python benchmarks/torchgeo_loader.py --quick    # smaller data

Prints one table: samples/s, requests and MB per chip (from the nginx log), read
amplification (bytes fetched / bytes of the tiles the chips cover), peak RSS per
worker, worker start-up time.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import BANDS as BAND_TUPLE  # noqa: E402
from _common import LATENCY_MODES, latency_server, scene_set  # noqa: E402

BANDS = list(BAND_TUPLE)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 scenes of 2048 px")
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--chips", type=int, default=160, help="chips per measurement")
    parser.add_argument("--latency", type=float, default=0.020, help="seconds per request")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency-by", choices=LATENCY_MODES, default="nginx")
    parser.add_argument("--data", default=".cache/bench/scenes", help="scene cache folder")
    return parser.parse_args()


def _make_dataset_class():
    """TorchGeo's RasterDataset for the benchmark files (one file per band), bound at
    module level so spawn workers can unpickle it."""
    from torchgeo.datasets import RasterDataset

    class SyntheticS2(RasterDataset):
        filename_glob = "scene*_B02.tif"
        filename_regex = r"^(?P<scene>scene\d+)_(?P<band>B\d\d)\.tif$"
        separate_files = True
        all_bands = tuple(BANDS)
        rgb_bands = ("B04", "B03", "B02")

    SyntheticS2.__qualname__ = "SyntheticS2"
    return SyntheticS2


def peak_rss_mb() -> float:
    """Peak resident memory of the calling process in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _record_worker_memory(path: str, worker_id: int) -> None:
    # Workers are terminated, not exited, so write the peak RSS as it grows.
    import threading

    def loop() -> None:
        while True:
            Path(path, f"{os.getpid()}.txt").write_text(f"{peak_rss_mb():.1f}")
            time.sleep(0.2)

    threading.Thread(target=loop, daemon=True).start()


def run_loader(dataset, sampler, workers: int, context: str, chips: int) -> dict[str, float]:
    """Iterate a DataLoader over ``chips`` samples; time the first batch separately."""
    import functools

    from torch.utils.data import DataLoader
    from torchgeo.datasets import stack_samples

    memory_dir = tempfile.mkdtemp(prefix="bench-mem-")
    loader = DataLoader(dataset, sampler=sampler, batch_size=16, num_workers=workers,
                        multiprocessing_context=context, collate_fn=stack_samples,
                        worker_init_fn=functools.partial(_record_worker_memory, memory_dir))
    start = time.perf_counter()
    first = None
    count = 0
    for batch in loader:
        if first is None:
            first = time.perf_counter() - start
            steady_start = time.perf_counter()
        count += batch["image"].shape[0]
    total = time.perf_counter() - start
    steady = time.perf_counter() - steady_start
    del loader  # workers exit and write their peak memory
    time.sleep(1.0)
    peaks = [float(p.read_text()) for p in Path(memory_dir).glob("*.txt")]
    return {
        "samples_per_s": (count - 16) / steady if count > 16 else count / total,
        "startup_s": first or 0.0,
        "worker_peak_mb": max(peaks) if peaks else float("nan"),
        "samples": count,
    }


def main() -> None:
    args = parse_args()
    if args.quick:
        args.scenes, args.size, args.chips = 4, 2048, 96
    import torch  # noqa: F401 - fail early without the torch extra
    from torchgeo.samplers import RandomPatchSampler

    import rasteret
    from rasteret.torch import TileAlignedSampler

    data = Path(args.data) / f"{args.scenes}x{args.size}"
    scene_set(data, scenes=args.scenes, size=args.size)
    rows = []
    with latency_server(data, args.latency, args.latency_by) as (nginx, base):
        table_rows = []
        for path in sorted(data.glob("scene*_B02.tif")):
            scene = path.name.split("_")[0]
            table_rows.append({"id": scene, **{b: f"{base}/{scene}_{b}.tif" for b in BANDS}})
        import pyarrow as pa

        workspace = tempfile.mkdtemp(prefix="bench-ws-")
        collection = rasteret.build_from_table(pa.Table.from_pylist(table_rows), name="bench",
                                               href_columns=BANDS, workspace_dir=workspace,
                                               progress=False)
        ours = collection.to_torchgeo_dataset(BANDS, chip_size=256)
        # Without a tile cache, each chip decodes its tiles only down to its last row.
        uncached = collection.to_torchgeo_dataset(BANDS, chip_size=256, cache_bytes=0)

        os.environ.update({"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
                           "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
                           "GDAL_HTTP_MULTIPLEX": "YES", "VSI_CACHE": "FALSE"})
        paths = [f"/vsicurl/{base}/{p.name}" for p in sorted(data.glob("scene*_B02.tif"))]
        gdal = SyntheticS2(paths=paths, bands=BANDS, cache=True)

        def tile_bytes(slices) -> int:
            """Bytes of the tiles the chips cover, in every scene they touch."""
            from rasteret.read.plan import Window, covering_chunks

            total = 0
            for chip in slices:
                x, y, _ = ours.resolve_slice(chip)
                for row in ours.scene_rows(chip):
                    for band in BANDS:
                        cog = ours.cog(row, band)
                        tr = cog.transform
                        window = Window(round((x.start - tr.c) / tr.a),
                                        round((y.stop - tr.f) / tr.e), 256, 256)
                        chunks = covering_chunks(cog.header.levels[0], window, (0,))
                        total += sum(c.length for c in chunks)
            return total

        cases = [
            ("rasteret", "tile-aligned", ours,
             lambda: TileAlignedSampler(ours, size=256, length=args.chips, seed=0),
             "forkserver"),
            ("rasteret, cache_bytes=0", "tile-aligned", uncached,
             lambda: TileAlignedSampler(uncached, size=256, length=args.chips, seed=0),
             "forkserver"),
            ("rasteret", "RandomPatch", ours,
             lambda: RandomPatchSampler(ours, size=256, length=args.chips, generator=0),
             "forkserver"),
            ("rasteret, cache_bytes=0", "RandomPatch", uncached,
             lambda: RandomPatchSampler(uncached, size=256, length=args.chips, generator=0),
             "forkserver"),
            ("torchgeo+GDAL", "RandomPatch", gdal,
             lambda: RandomPatchSampler(gdal, size=256, length=args.chips, generator=0),
             "spawn"),
        ]
        for reader, sampler_name, dataset, make_sampler, context in cases:
            nginx.clear_log()
            result = run_loader(dataset, make_sampler(), args.workers, context, args.chips)
            records = nginx.requests()
            fetched = sum(r.body_bytes for r in records)
            covering = tile_bytes(list(make_sampler()))
            rows.append((reader, sampler_name, result, len(records), fetched, covering))

    baseline = rows[-1][2]["samples_per_s"]
    print(f"\nTorchGeo loader: {args.scenes} scenes x 4 bands, {args.size} px, 512-px tiles, "
          f"256-px chips, batch 16, {args.workers} workers, +{args.latency * 1000:.0f} ms")
    header = ("reader", "sampler", "samples/s", "x torchgeo", "req/chip", "MB/chip",
              "read ampl.", "worker MB", "start s")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for reader, sampler_name, result, requests, fetched, covering in rows:
        samples = result["samples"]
        print(" | ".join([
            reader, sampler_name, f"{result['samples_per_s']:.1f}",
            f"{result['samples_per_s'] / baseline:.2f}", f"{requests / samples:.2f}",
            f"{fetched / samples / 1e6:.2f}", f"{fetched / covering:.2f}" if covering else "-",
            f"{result['worker_peak_mb']:.0f}", f"{result['startup_s']:.1f}",
        ]))
    print(f"(peak RSS of this process: {peak_rss_mb():.0f} MB; requests and bytes from the "
          "nginx log, including headers GDAL reads)")


SyntheticS2 = _make_dataset_class()

if __name__ == "__main__":
    main()
