"""TorchGeo loader benchmark: RasteretDataset vs TorchGeo's RasterDataset over GDAL.

Both read the same synthetic Sentinel-2-like COGs (non-overlapping scenes, 4 bands,
uint16, deflate + predictor 2, 512-px tiles) from local nginx adding a fixed delay
per request (inside nginx by default; ``--latency-by proxy`` uses the Python proxy).
256-px chips of 4 bands, batch 16, ``num_workers=2`` (spawn for GDAL, forkserver for
rasteret), same sampler seeds.

    .venv/bin/python benchmarks/torchgeo_loader.py            # full run
    .venv/bin/python benchmarks/torchgeo_loader.py --quick    # smaller data

Prints one table: samples/s, requests and MB per chip (from the nginx log), read
amplification (bytes fetched / bytes of the tiles the chips cover), each worker's
memory and the time to the first batch. rasteret's rows use
``rasteret.torch.dataloader`` as a user would (its defaults: forkserver workers from a
preloading server, decode threads sized per worker), each with the default
``cache_bytes="auto"``, ``cache_bytes=0`` and a big cache (1 GiB), for TorchGeo's
``RandomPatchSampler`` and for ``TileAlignedSampler``; one row reads with no workers
(``num_workers=0``), and one measures the first batch of a 1,000-scene collection
(the scenes' rows replicated, as in ``benchmarks/scale.py``).

Time series (issue 21): the first scene's files hard-linked once per month (distinct
URLs, so no cache sees a repeat), T=12 and T=24 monthly steps at one place, 4 bands,
256-px chips, batch 8: rasteret's ``time_series=True, time_bins="1MS"`` with
TileAlignedSampler, beside TorchGeo 0.10's own path, ``RasterDataset(time_series=True)``
(it stacks every file of the chip's time slice into ``[T, C, H, W]``; it has no fixed
``T``, padding or per-step dates) with RandomPatchSampler.

    .venv/bin/python benchmarks/torchgeo_loader.py --quick --rows time-series

Worker memory is read from ``/proc/<pid>`` of each worker once the last batch
arrived: RSS (what ``top`` shows; it counts the pages shared with the forkserver
that preloaded torch), PSS (shared pages divided among their sharers) and USS (the
worker's private pages: what one more worker costs).
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
    parser.add_argument("--large", type=int, default=1000,
                        help="scenes of the first-batch row (0: skip it)")
    parser.add_argument("--latency-by", choices=LATENCY_MODES, default="nginx")
    parser.add_argument("--data", default=".cache/bench/scenes", help="scene cache folder")
    parser.add_argument("--rows", choices=("all", "loader", "time-series"), default="all",
                        help="which tables to measure")
    parser.add_argument("--steps", type=int, nargs="+", default=[12, 24],
                        help="monthly time steps of the time series rows")
    parser.add_argument("--series-chips", type=int, default=48,
                        help="chips per time series row")
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


def _make_series_class():
    """TorchGeo's RasterDataset for the time series files (``m<YYYYMMDD>_<band>.tif``),
    stacking the files of a chip's time slice (``time_series=True``)."""
    from torchgeo.datasets import RasterDataset

    class SyntheticSeries(RasterDataset):
        filename_glob = "m*_B02.tif"
        filename_regex = r"^m(?P<date>\d{8})_(?P<band>B\d\d)\.tif$"
        date_format = "%Y%m%d"
        separate_files = True
        all_bands = tuple(BANDS)
        rgb_bands = ("B04", "B03", "B02")

    SyntheticSeries.__qualname__ = "SyntheticSeries"
    return SyntheticSeries


def peak_rss_mb() -> float:
    """Peak resident memory of the calling process in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_memory_mb(pid: int) -> dict[str, float]:
    """RSS, peak RSS, PSS and USS (private pages) of process ``pid`` in MB."""
    status = {line.split(":")[0]: int(line.split()[1]) / 1024
              for line in Path(f"/proc/{pid}/status").read_text().splitlines()
              if line.startswith(("VmRSS", "VmHWM"))}
    rollup = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        rollup[name] = int(value.split()[0]) / 1024
    return {"rss": status["VmRSS"], "peak": status["VmHWM"], "pss": rollup["Pss"],
            "uss": rollup["Private_Clean"] + rollup["Private_Dirty"]}


def run_loader(dataset, sampler, workers: int, chips: int, *, gdal: bool = False,
               batch_size: int = 16) -> dict[str, float]:
    """Iterate a DataLoader over ``chips`` samples; time the first batch from the
    loader's creation (rasteret's ``dataloader`` starts the forkserver then)."""
    from rasteret.torch import dataloader

    start = time.perf_counter()
    shape: tuple[int, ...] = ()
    if gdal:  # TorchGeo's own set-up: a plain DataLoader with spawn workers
        from torch.utils.data import DataLoader
        from torchgeo.datasets import stack_samples

        loader = DataLoader(dataset, sampler=sampler, batch_size=batch_size,
                            num_workers=workers,
                            multiprocessing_context="spawn" if workers else None,
                            collate_fn=stack_samples)
    else:
        loader = dataloader(dataset, sampler=sampler, batch_size=batch_size,
                            num_workers=workers)
    batches = iter(loader)
    first = None
    count = 0
    for batch in batches:
        if first is None:
            first = time.perf_counter() - start
            shape = tuple(batch["image"].shape)
            steady_start = time.perf_counter()
        count += batch["image"].shape[0]
        if count >= chips:
            break
    total = time.perf_counter() - start
    steady = time.perf_counter() - steady_start
    pids = [w.pid for w in getattr(batches, "_workers", [])]
    memory = [process_memory_mb(pid) for pid in pids] or [
        {"rss": float("nan"), "peak": float("nan"), "pss": float("nan"), "uss": float("nan")}]
    del batches, loader
    worst = max(memory, key=lambda m: m["peak"])
    return {
        "samples_per_s": ((count - batch_size) / steady if count > batch_size
                          else count / total),
        "startup_s": first or 0.0,
        **{f"worker_{k}": v for k, v in worst.items()},
        "samples": count,
        "shape": shape,
    }


def first_batch_large(base, scenes: int, workers: int) -> dict[str, float]:
    """First batch (and worker memory) of the default loader over ``scenes`` rows
    replicated from ``base`` (TileAlignedSampler, 256-px chips)."""
    from scale import write_collection

    import rasteret
    from rasteret.torch import TileAlignedSampler

    folder = Path(tempfile.mkdtemp(prefix="bench-large-")) / f"loader{scenes}"
    write_collection(base, scenes, folder)
    dataset = rasteret.load(folder).to_torchgeo_dataset(BANDS, chip_size=256)
    sampler = TileAlignedSampler(dataset, size=256, length=64, seed=0)
    return run_loader(dataset, sampler, workers, 64)


# -- time series (issue 21, item 1) ---------------------------------------------------------
def series_links(data: Path, months: int) -> Path:
    """The first scene's files hard-linked once a month (the 15th, from January 2023) under
    ``data/ts<months>``: ``months`` distinct URLs per band at one place."""
    import pandas as pd

    folder = data / f"ts{months}"
    folder.mkdir(exist_ok=True)
    for month in range(months):
        date = pd.Timestamp("2023-01-15") + pd.DateOffset(months=month)
        for band in BANDS:
            link = folder / f"m{date:%Y%m%d}_{band}.tif"
            if not link.exists():
                os.link(data / f"scene000_{band}.tif", link)
    return folder


def series_cases(args, base: str, folder: Path, steps: int) -> list[tuple]:
    """``(reader, sampler name, dataset, make sampler, gdal)`` of one time series row
    pair: rasteret's monthly bins with TileAlignedSampler, TorchGeo's own stacking."""
    import datetime as dt

    import pyarrow as pa
    from torchgeo.samplers import RandomPatchSampler

    import rasteret
    from rasteret.torch import TileAlignedSampler

    files = sorted(folder.glob("m*_B02.tif"))
    stems = [f.name.split("_")[0] for f in files]
    table = [{"id": stem, "datetime": dt.datetime.strptime(stem[1:], "%Y%m%d").replace(
        hour=10, tzinfo=dt.UTC), **{b: f"{base}/{folder.name}/{stem}_{b}.tif" for b in BANDS}}
        for stem in stems]
    collection = rasteret.build_from_table(
        pa.Table.from_pylist(table), name=f"series{steps}", href_columns=BANDS,
        workspace_dir=tempfile.mkdtemp(prefix="bench-series-"), progress=False)
    ours = collection.to_torchgeo_dataset(BANDS, chip_size=256, time_series=True,
                                          time_bins="1MS")
    gdal = SyntheticSeries(paths=[f"/vsicurl/{base}/{folder.name}/{f.name}" for f in files],
                           bands=BANDS, cache=True, time_series=True)
    chips = args.series_chips
    return [
        ('rasteret, time_bins="1MS"', "tile-aligned", ours,
         lambda: TileAlignedSampler(ours, size=256, length=chips, seed=0), False),
        ("torchgeo+GDAL, time_series=True", "RandomPatch", gdal,
         lambda: RandomPatchSampler(gdal, size=256, length=chips, generator=0), True),
    ]


def series_table(args) -> None:
    """Measure and print the time series rows: T monthly steps (``--steps``), 4 bands,
    256-px chips, batch 8, ``--workers`` workers, ``--latency`` per request."""
    data = Path(args.data) / f"{args.scenes}x{args.size}"
    scene_set(data, scenes=args.scenes, size=args.size)
    folders = {steps: series_links(data, steps) for steps in args.steps}
    rows = []
    with latency_server(data, args.latency, args.latency_by) as (nginx, base):
        os.environ.update({"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
                           "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
                           "GDAL_HTTP_MULTIPLEX": "YES", "VSI_CACHE": "FALSE"})
        for steps, folder in folders.items():
            for reader, sampler_name, dataset, make_sampler, gdal in series_cases(
                    args, base, folder, steps):
                nginx.clear_log()
                result = run_loader(dataset, make_sampler(), args.workers, args.series_chips,
                                    gdal=gdal, batch_size=8)
                records = nginx.requests()
                rows.append((reader, sampler_name, steps, result, len(records),
                             sum(r.body_bytes for r in records)))
    print(f"\nTime series: T monthly steps at one place ({args.size} px scenes, 512-px "
          f"tiles), 4 bands, 256-px chips, batch 8, {args.workers} workers, "
          f"{args.series_chips} chips per row, +{args.latency * 1000:.0f} ms, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    header = ("reader", "sampler", "T", "batch shape", "samples/s", "req/sample",
              "MB/sample", "first batch s", "worker RSS MB")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for reader, sampler_name, steps, result, requests, fetched in rows:
        samples = result["samples"]
        print("| " + " | ".join([
            reader, sampler_name, str(steps), "x".join(map(str, result["shape"])),
            f"{result['samples_per_s']:.2f}", f"{requests / samples:.1f}",
            f"{fetched / samples / 1e6:.2f}", f"{result['startup_s']:.1f}",
            f"{result['worker_rss']:.0f}"]) + " |")
    print("(TorchGeo 0.10.1's own time series path: RasterDataset(time_series=True) stacks "
          "every file in the chip's time slice, so T is the number of scenes there: no "
          "fixed T, no padding, no dates or time mask; its temporal samplers choose the "
          "slice. Requests from the nginx log, GDAL's header reads included.)")


def main() -> None:
    args = parse_args()
    if args.quick:
        args.scenes, args.size, args.chips = 4, 2048, 96
    if args.rows != "loader":
        series_table(args)
    if args.rows == "time-series":
        return
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
        ours = collection.to_torchgeo_dataset(BANDS, chip_size=256)  # cache_bytes="auto"
        # Without a tile cache, each chip decodes its tiles only down to its last row.
        uncached = collection.to_torchgeo_dataset(BANDS, chip_size=256, cache_bytes=0)
        # A cache that keeps whole tiles, big enough for a worker's share of the tiles.
        big = collection.to_torchgeo_dataset(BANDS, chip_size=256, cache_bytes=2**30)

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

        def tile_aligned(dataset):
            return lambda: TileAlignedSampler(dataset, size=256, length=args.chips, seed=0)

        def random_patch(dataset):
            return lambda: RandomPatchSampler(dataset, size=256, length=args.chips,
                                              generator=0)

        cases = [
            ("rasteret (default: auto)", "tile-aligned", ours, tile_aligned(ours), args.workers),
            ("rasteret, cache_bytes=0", "tile-aligned", uncached, tile_aligned(uncached),
             args.workers),
            ("rasteret, cache_bytes=1 GiB", "tile-aligned", big, tile_aligned(big), args.workers),
            ("rasteret (default: auto)", "RandomPatch", ours, random_patch(ours), args.workers),
            ("rasteret, cache_bytes=0", "RandomPatch", uncached, random_patch(uncached),
             args.workers),
            ("rasteret, cache_bytes=1 GiB", "RandomPatch", big, random_patch(big), args.workers),
            ("rasteret (default: auto)", "RandomPatch", ours, random_patch(ours), 0),
            ("torchgeo+GDAL", "RandomPatch", gdal, random_patch(gdal), args.workers),
        ]
        for reader, sampler_name, dataset, make_sampler, workers in cases:
            nginx.clear_log()
            result = run_loader(dataset, make_sampler(), workers, args.chips,
                                gdal=dataset is gdal)
            records = nginx.requests()
            fetched = sum(r.body_bytes for r in records)
            covering = tile_bytes(list(make_sampler()))
            rows.append((reader, sampler_name, workers, result, len(records), fetched,
                         covering))
        large = first_batch_large(collection, args.large, args.workers) if args.large else None

    baseline = rows[-1][3]["samples_per_s"]
    print(f"\nTorchGeo loader: {args.scenes} scenes x 4 bands, {args.size} px, 512-px tiles, "
          f"256-px chips, batch 16, {args.chips} chips per row, +{args.latency * 1000:.0f} ms, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    header = ("reader", "sampler", "workers", "samples/s", "x torchgeo", "req/chip",
              "MB/chip", "read ampl.", "first batch s", "worker RSS MB", "peak RSS MB",
              "PSS MB", "USS MB")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for reader, sampler_name, workers, result, requests, fetched, covering in rows:
        samples = result["samples"]
        print("| " + " | ".join([
            reader, sampler_name, str(workers), f"{result['samples_per_s']:.1f}",
            f"{result['samples_per_s'] / baseline:.2f}", f"{requests / samples:.2f}",
            f"{fetched / samples / 1e6:.2f}", f"{fetched / covering:.2f}" if covering else "-",
            f"{result['startup_s']:.1f}", f"{result['worker_rss']:.0f}",
            f"{result['worker_peak']:.0f}", f"{result['worker_pss']:.0f}",
            f"{result['worker_uss']:.0f}",
        ]) + " |")
    if large is not None:
        print(f"\nFirst batch, {args.large:,}-scene collection (replicated rows), default "
              f"loader, TileAlignedSampler, {args.workers} workers: "
              f"{large['startup_s']:.1f} s; worker RSS {large['worker_rss']:.0f} MB "
              f"(peak {large['worker_peak']:.0f}), PSS {large['worker_pss']:.0f} MB, "
              f"USS {large['worker_uss']:.0f} MB")
    print(f"(peak RSS of this process: {peak_rss_mb():.0f} MB; requests and bytes from the "
          "nginx log, including headers GDAL reads; first batch: from creating the loader)")


SyntheticS2 = _make_dataset_class()
SyntheticSeries = _make_series_class()

if __name__ == "__main__":
    main()
