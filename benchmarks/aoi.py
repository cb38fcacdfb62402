"""Area-over-time benchmark: a 2x2 km area over 20 and 100 scenes, 2 bands.

rasteret's ``get_numpy`` (headers from the collection, every tile of every scene in
flight at once) vs rasterio with 16 threads reading the same windows through GDAL
/vsicurl/, opening each file or with every file opened in advance; local nginx adding
0 and 20 ms per request (inside nginx by default; ``--latency-by proxy`` uses the
Python loopback proxy). Each reader runs once untimed (a warm-up whose requests and
bytes are read from the nginx log), then the median and the CPU per run of
``--repeat`` timed runs. The decode-bound floor is the single-core time to decode the
needed tiles whole, divided by the cores; the floor of decoding them down to the
AOI's last row (what rasteret decodes) is shown too.

    .venv/bin/python benchmarks/aoi.py [--quick] [--scenes 20,100] [--latency-by nginx|proxy]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    GDAL_ENV,
    LATENCY_MODES,
    OpenDatasets,
    cores,
    decode_floors,
    latency_server,
    measure_readers,
    print_table,
    scene_set,
)

BANDS = ("B04", "B08")
# 2 x 2 km inside the stacked scenes (origin 500000, 4500000; 10 m pixels).
AOI = (505_030.0, 4_483_020.0, 507_030.0, 4_485_020.0)
#: File name -> bytes, for measuring the decode floor without the network.
LOCAL: dict[str, bytes] = {}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default="20,100")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--latencies", default="0,0.02")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--latency-by", choices=LATENCY_MODES, default="nginx")
    parser.add_argument("--quick", action="store_true", help="10 scenes, 1 repeat")
    parser.add_argument("--data", default=".cache/bench/aoi")
    return parser.parse_args()


def floor_jobs(collection) -> list[tuple]:
    """``(bytes, level, chunk)`` for every tile the AOI covers, from local bytes."""
    from rasteret.read.plan import Window, covering_chunks

    jobs = []
    for row in range(len(collection)):
        for band in BANDS:
            cog = collection.cog(row, band)
            t = cog.transform
            window = Window(round((AOI[0] - t.c) / t.a), round((AOI[3] - t.f) / t.e), 200, 200)
            level = cog.header.levels[0]
            data = LOCAL[cog.url.rsplit("/", 1)[-1]]
            for chunk in covering_chunks(level, window, (0,)):
                jobs.append((data[chunk.start : chunk.start + chunk.length], level, chunk))
    return jobs


def main() -> None:
    args = parse_args()
    if args.quick:
        args.scenes, args.repeat = "10", 1
    import rasterio
    from rasterio.windows import from_bounds

    import rasteret

    os.environ.update(GDAL_ENV)
    rows = []
    for count in [int(v) for v in args.scenes.split(",")]:
        folder = Path(args.data) / f"{count}x{args.size}"
        scenes = scene_set(folder, scenes=count, size=args.size, bands=BANDS, stacked=True)
        LOCAL.clear()
        for files in scenes:
            for path in files.values():
                LOCAL[path.name] = path.read_bytes()
        for latency in [float(v) for v in args.latencies.split(",")]:
            with latency_server(folder, latency, args.latency_by) as (nginx, base_url):
                table = pa.Table.from_pylist([
                    {"id": f"s{i:03d}", "datetime": "2024-01-01T00:00:00Z",
                     **{b: f"{base_url}/{files[b].name}" for b in BANDS}}
                    for i, files in enumerate(scenes)
                ])
                workspace = tempfile.mkdtemp(prefix="bench-aoi-")
                collection = rasteret.build_from_table(
                    table, name="aoi", href_columns=list(BANDS), workspace_dir=workspace,
                    progress=False)
                floor, rows_floor = decode_floors(floor_jobs(collection))
                urls = [u for row in table.to_pylist() for u in (row["B04"], row["B08"])]

                def ours(collection=collection):
                    return collection.get_numpy(AOI, list(BANDS), geometry_crs=32633)

                def gdal_opening(urls=urls):
                    def one(url):
                        with rasterio.open(f"/vsicurl/{url}") as src:
                            return src.read(1, window=from_bounds(*AOI, src.transform))
                    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
                        return list(pool.map(one, urls))

                opened = OpenDatasets(urls, args.threads)

                def gdal_open(urls=urls, opened=opened):
                    def one(url):
                        src = opened.get(url)
                        return src.read(1, window=from_bounds(*AOI, src.transform))
                    return list(opened.pool.map(one, urls))

                label = f"{latency * 1000:.0f} ms"
                baseline = f"rasterio {args.threads} thr, opening files"
                measured = measure_readers(nginx, [
                    ("rasteret get_numpy", ours), (baseline, gdal_opening),
                    (f"rasterio {args.threads} thr, files open", gdal_open)], args.repeat)
                opened.close()
                base = next(m.seconds for m in measured if m.reader == baseline)
                for m in measured:
                    rows.append([f"{count} scenes", label, m.reader, f"{m.seconds:.3f}",
                                 f"{base / m.seconds:.2f}x", str(m.requests),
                                 f"{m.bytes / 1e6:.1f}", f"{m.cpu:.2f}", f"{m.server_cpu:.2f}",
                                 f"{floor:.3f}", f"{m.seconds / floor:.2f}",
                                 f"{rows_floor:.3f}"])
    print_table(
        f"2x2 km area, 2 bands, stacked {args.size}-px scenes (512-px tiles), local nginx, "
        f"latency by {args.latency_by}, {cores()} cores, medians of {args.repeat}; CPU s per "
        "run of this process and of nginx; floors: decode time of the tiles needed / cores, "
        "whole and down to the last row needed",
        ["scenes", "latency", "reader", "median s", "speed-up vs rasterio opening", "requests",
         "MB", "CPU s", "nginx CPU s", "decode floor s", "x floor", "floor, rows needed s"],
        rows,
    )


if __name__ == "__main__":
    main()
