"""COG engine benchmark: headers and windows, rasteret vs rasterio (GDAL) with 16 threads.

Synthetic Sentinel-2-like scenes (20 scenes x 4 bands, 4096 px, uint16, deflate +
predictor 2, 512-px tiles, overviews) on local nginx adding 0 and 20 ms per request
(inside nginx by default; ``--latency-by proxy`` uses the Python loopback proxy):

(a) open all 80 headers;
(b) 200 random 256-px windows x 2 bands (the same seeded windows for every reader),
    by rasteret with the object-version check on (its default: ``If-Match`` with the
    ETag on every tile request, size and ETag compared on every response) and off
    (``validate=False``), one row each, their runs taking turns (at least 5 each);
    the line under the table gives the check's cost at each latency.

Each reader runs once untimed (a warm-up whose requests and bytes are read from the
nginx log), then ``--repeat`` timed runs give the median and the CPU per run. The
decode-bound floor is the single-core time to decode the needed tiles whole, divided
by the cores; rasteret stops decoding a tile at the window's last row in it, whose
own floor is shown too. A last row reads the same windows from local files: the read
engine's own overhead, without any transport.

    .venv/bin/python benchmarks/cog_read.py [--quick] [--repeat 3] [--latencies 0,0.02]
        [--latency-by nginx|proxy]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    GDAL_ENV,
    LATENCY_MODES,
    OpenDatasets,
    cores,
    decode_floors,
    latency_server,
    measure_interleaved,
    measure_readers,
    print_table,
    scene_set,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latencies", default="0,0.02")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--latency-by", choices=LATENCY_MODES, default="nginx")
    parser.add_argument("--quick", action="store_true", help="5 scenes of 2048 px, 1 repeat")
    parser.add_argument("--data", default=".cache/bench/scenes")
    return parser.parse_args()


def random_windows(count: int, size: int, scenes: int, seed: int = 0):
    """``(scene, band pair, window)`` triples: 256-px windows anywhere in a scene."""
    rng = np.random.default_rng(seed)
    pairs = [("B04", "B08"), ("B02", "B03")]
    out = []
    for _ in range(count):
        scene = int(rng.integers(0, scenes))
        col, row = (int(v) for v in rng.integers(0, size - 256, 2))
        out.append((scene, pairs[int(rng.integers(0, 2))], (col, row, 256, 256)))
    return out


def floor_jobs(cogs, windows) -> list[tuple]:
    """``(bytes, level, chunk)`` for every tile each window covers, from local bytes."""
    from rasteret.read.plan import Window, covering_chunks

    jobs = []
    for scene, bands, window in windows:
        for band in bands:
            cog, data = cogs[(scene, band)]
            level = cog.header.levels[0]
            for chunk in covering_chunks(level, Window(*window), (0,)):
                jobs.append((data[chunk.start : chunk.start + chunk.length], level, chunk))
    return jobs


def main() -> None:
    args = parse_args()
    if args.quick:
        args.scenes, args.size, args.repeat, args.windows = 5, 2048, 1, 100
    import rasterio
    from rasterio.windows import Window

    import rasteret
    from rasteret.io.runtime import run_sync

    data = Path(args.data) / f"{args.scenes}x{args.size}"
    scenes = scene_set(data, scenes=args.scenes, size=args.size)
    names = [(i, band, path.name) for i, files in enumerate(scenes) for band, path in files.items()]
    windows = random_windows(args.windows, args.size, args.scenes)
    os.environ.update(GDAL_ENV)

    # The floor, measured on local bytes.
    local = {}
    for index, band, _ in names:
        path = scenes[index][band]
        local[(index, band)] = (rasteret.open_cog(path), path.read_bytes())
    floor, rows_floor = decode_floors(floor_jobs(local, windows))

    def table_rows(operation: str, label: str, measured: list, baseline: str,
                   floors: bool) -> list[list[str]]:
        base = next(m.seconds for m in measured if m.reader == baseline)
        return [[operation, label, m.reader, f"{m.seconds:.3f}", f"{base / m.seconds:.2f}x",
                 str(m.requests), f"{m.bytes / 1e6:.1f}", f"{m.cpu:.2f}", f"{m.server_cpu:.2f}",
                 *([f"{floor:.3f}", f"{m.seconds / floor:.2f}", f"{rows_floor:.3f}"]
                   if floors else ["-", "-", "-"])] for m in measured]

    def measure(latency: float) -> list[list[str]]:
        label = f"{latency * 1000:.0f} ms"
        with latency_server(data, latency, args.latency_by) as (nginx, base_url):
            urls = {(i, b): f"{base_url}/{name}" for i, b, name in names}

            # (a) headers
            async def open_all():
                return await asyncio.gather(
                    *(rasteret.open_cog_async(u) for u in urls.values()))

            def gdal_open_all():
                def one(url):
                    with rasterio.open(f"/vsicurl/{url}") as src:
                        return src.profile
                with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
                    list(pool.map(one, urls.values()))

            gdal = f"rasterio {args.threads} threads"
            rows = table_rows(f"headers ({len(urls)} files)", label, measure_readers(nginx, [
                ("rasteret", lambda: run_sync(open_all())), (gdal, gdal_open_all)],
                args.repeat), gdal, floors=False)

            # (b) windows: ours from parsed headers, everything in flight at once
            cogs = dict(zip(urls, run_sync(open_all())))
            jobs = [(s, b, w) for s, bands, w in windows for b in bands]

            async def read_windows():
                return await asyncio.gather(*(
                    cogs[(scene, band)].read_async(window) for scene, band, window in jobs))

            def rasteret_windows(validate: bool):
                def run():
                    for cog in cogs.values():
                        cog.validate = validate
                    return run_sync(read_windows())
                return run

            def gdal_windows_opening():
                def one(job):
                    scene, band, window = job
                    with rasterio.open(f"/vsicurl/{urls[(scene, band)]}") as src:
                        return src.read(1, window=Window(*window))
                with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
                    list(pool.map(one, jobs))

            opened = OpenDatasets(list(urls.values()), args.threads)

            def gdal_windows_open():
                def one(job):
                    scene, band, window = job
                    return opened.get(urls[(scene, band)]).read(1, window=Window(*window))
                list(opened.pool.map(one, jobs))

            gdal_opening = f"rasterio {args.threads} thr, opening files"
            checked, unchecked = "rasteret (headers indexed)", "rasteret, validate=False"
            # The check's cost is a few percent at most: both take turns, under one load.
            measured = measure_interleaved(nginx, [
                (checked, rasteret_windows(True)),
                (unchecked, rasteret_windows(False))], max(args.repeat, 5))
            measured += measure_readers(nginx, [
                (gdal_opening, gdal_windows_opening),
                (f"rasterio {args.threads} thr, files open", gdal_windows_open),
            ], args.repeat)
            opened.close()
            times = {m.reader: m for m in measured}
            ratio = times[checked].seconds / times[unchecked].seconds
            extra = times[checked].requests - times[unchecked].requests
            costs.append(f"{label}: {ratio - 1:+.1%} wall time, {extra:+d} requests")
            rows += table_rows(f"{args.windows} windows x 2 bands", label, measured, gdal_opening,
                               floors=True)
        return rows

    def local_files() -> list[str]:
        """The same windows from local files: the read engine without any transport."""
        jobs = [(local[(s, b)][0], w) for s, bands, w in windows for b in bands]

        async def read_windows():
            return await asyncio.gather(*(cog.read_async(w) for cog, w in jobs))

        (m,) = measure_readers(None, [("rasteret (no server)", lambda: run_sync(
            read_windows()))], args.repeat)
        return [f"{args.windows} windows x 2 bands", "local files", m.reader,
                f"{m.seconds:.3f}", "-", "0", "-", f"{m.cpu:.2f}", "-", f"{floor:.3f}",
                f"{m.seconds / floor:.2f}", f"{rows_floor:.3f}"]

    rows = []
    costs: list[str] = []
    for latency in [float(v) for v in args.latencies.split(",")]:
        rows += measure(latency)
    rows.append(local_files())
    print_table(
        f"COG reads: {args.scenes} scenes x 4 bands, {args.size} px, uint16 deflate+pred2, "
        f"512-px tiles, local nginx, latency by {args.latency_by}, {cores()} cores, "
        f"medians of {args.repeat}; CPU s per run of this process and of nginx; floors: "
        "decode time of the tiles needed / cores, whole and down to the last row needed",
        ["operation", "latency", "reader", "median s", "speed-up vs rasterio", "requests", "MB",
         "CPU s", "nginx CPU s", "decode floor s", "x floor", "floor, rows needed s"],
        rows,
    )
    print("\nObject-version check (windows, rasteret default vs validate=False): "
          + "; ".join(costs))


if __name__ == "__main__":
    main()
