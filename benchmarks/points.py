"""Point sampling benchmark: 100,000 points over a time series of 20 scenes, 2 bands.

The scenes are stacked (one footprint, 20 dates; synthetic Sentinel-2-like uint16,
deflate + predictor 2, 512-px tiles) on local nginx with ``--latency`` added per
request inside nginx. Readers, on the same files and latency:

- rasteret ``sample_points(match="all")``: every point in every scene (2,000,000
  point-scenes); each distinct tile is fetched and decoded once;
- rasteret ``match="nearest"`` with a date per point (one scene each) and
  ``max_distance_pixels=2`` (the valid-pixel search reads a 5 x 5 window per point);
- rasterio's ``DatasetReader.sample`` with 16 threads (one thread per file, files opened
  through GDAL /vsicurl/), on ``--peer-points`` of the points; its time is shown
  both measured and scaled per 100,000 points.

Each row gives the wall time (median of ``--repeat``), the requests nginx logged, the
distinct tiles the points touch (counted here from the points and the grid), and the
bytes sent. rasteret's requests must not exceed the distinct tiles touched: the script
asserts it. rasterio's values are checked equal to rasteret's on its points.

    .venv/bin/python benchmarks/points.py [--quick] [--points 100000] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from _common import GDAL_ENV, latency_server, print_table, scene_set  # noqa: E402

BANDS = ("B04", "B08")
EPSG = 32633
RES = 10.0
TILE = 512
#: Top-left corner of the stacked scenes (scene_set's origin).
ORIGIN = (500_000.0, 4_500_000.0)
START = dt.datetime(2024, 4, 1, 10, 30, tzinfo=dt.UTC)


def scene_time(index: int) -> dt.datetime:
    """The date of scene ``index``: five days apart."""
    return START + dt.timedelta(days=5 * index)


def random_points(count: int, size: int, scenes: int, seed: int = 0) -> pd.DataFrame:
    """``count`` points spread uniformly over the scenes' footprint, each with an id and
    a date within the series."""
    rng = np.random.default_rng(seed)
    cols, rows = rng.uniform(0, size, count), rng.uniform(0, size, count)
    days = rng.uniform(0, 5 * (scenes - 1), count)
    return pd.DataFrame({
        "point_id": np.arange(count),
        "x": ORIGIN[0] + cols * RES,
        "y": ORIGIN[1] - rows * RES,
        "date": pd.to_datetime(START) + pd.to_timedelta(days, unit="D"),
    })


def tiles_touched(points: pd.DataFrame, radius: int, size: int) -> int:
    """Distinct tiles of one image that the points' ``(2r+1)²`` windows touch."""
    cols = np.floor((points.x.to_numpy() - ORIGIN[0]) / RES).astype(np.int64)
    rows = np.floor((ORIGIN[1] - points.y.to_numpy()) / RES).astype(np.int64)
    keys = set()
    across = -(-size // TILE)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            c, r = cols + dx, rows + dy
            ok = (c >= 0) & (r >= 0) & (c < size) & (r < size)
            keys.update(((r[ok] // TILE) * across + c[ok] // TILE).tolist())
    return len(keys)


def nearest_tiles(points: pd.DataFrame, radius: int, size: int, scenes: int) -> int:
    """Distinct (scene, tile) pairs touched when each point takes its nearest scene."""
    index = np.clip(np.rint((points.date - pd.to_datetime(START)).dt.total_seconds()
                            / 86_400 / 5), 0, scenes - 1).astype(int)
    return sum(tiles_touched(points[index == s], radius, size) for s in range(scenes))


def rasterio_sample(urls: list[str], points: pd.DataFrame, threads: int) -> list[np.ndarray]:
    """rasterio's ``sample`` on every file, one file per thread."""
    import rasterio

    xy = list(zip(points.x, points.y))

    def one(url: str) -> np.ndarray:
        with rasterio.open(f"/vsicurl/{url}") as src:
            return np.array([v[0] for v in src.sample(xy)])

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, urls))


def main() -> None:
    """Run the benchmark and print its table."""
    import rasteret

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--peer-points", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(),
                                                       "rasteret-bench-points"))
    parser.add_argument("--quick", action="store_true",
                        help="10,000 points over 2048-px scenes, one run")
    args = parser.parse_args()
    os.environ.update(GDAL_ENV)  # the rasterio peer's fair /vsicurl/ settings
    if args.quick:
        args.points, args.size, args.repeat, args.peer_points = 10_000, 2048, 1, 100
    folder = Path(args.data) / f"{args.scenes}x{args.size}"
    scenes = scene_set(folder, scenes=args.scenes, size=args.size, bands=BANDS, stacked=True)
    points = random_points(args.points, args.size, args.scenes)
    peer = points.iloc[:args.peer_points]
    rows = []
    with latency_server(folder, args.latency) as (nginx, base_url):
        table = pa.Table.from_pylist([
            {"id": f"s{i:03d}", "datetime": scene_time(i),
             **{b: f"{base_url}/{files[b].name}" for b in BANDS}}
            for i, files in enumerate(scenes)])
        collection = rasteret.build_from_table(
            table, name="points", href_columns=list(BANDS),
            workspace_dir=tempfile.mkdtemp(prefix="bench-points-"), progress=False)
        options = {"geometry_crs": EPSG, "xy_columns": ("x", "y"), "validate": False}
        cases = [
            ("rasteret match='all'", {"match": "all"},
             tiles_touched(points, 0, args.size) * args.scenes * len(BANDS),
             args.points * args.scenes),
            ("rasteret match='nearest', max_distance_pixels=2",
             {"match": "nearest", "date_column": "date", "max_distance_pixels": 2},
             nearest_tiles(points, 2, args.size, args.scenes) * len(BANDS), args.points),
        ]
        reference = None
        for name, extra, tiles, samples in cases:
            times, requests, sent = [], 0, 0
            for _ in range(args.repeat):
                nginx.clear_log()
                start = time.perf_counter()
                out = collection.sample_points(points, list(BANDS), **options, **extra)
                times.append(time.perf_counter() - start)
                requests, sent = nginx.count(), nginx.bytes_sent()
            assert len(out) == samples, (name, len(out), samples)
            assert requests <= tiles, f"{name}: {requests} requests for {tiles} tiles touched"
            if reference is None:
                reference = out
            rows.append([name, f"{len(points):,}", f"{samples:,}",
                         f"{float(np.median(times)):.2f} s", f"{requests:,}", f"{tiles:,}",
                         f"{sent / 1e6:.0f} MB"])
        urls = [f"{base_url}/{files[b].name}" for files in scenes for b in BANDS]
        nginx.clear_log()
        start = time.perf_counter()
        values = rasterio_sample(urls, peer, threads=16)
        took = time.perf_counter() - start
        assert reference is not None
        for index in range(len(urls)):
            scene, band = divmod(index, len(BANDS))
            mine = reference[(reference.id == f"s{scene:03d}")
                             & (reference.point_id < args.peer_points)]
            np.testing.assert_array_equal(mine.sort_values("point_id")[BANDS[band]].to_numpy(),
                                          values[index])
        rows.append([f"rasterio sample, 16 threads ({len(peer):,} points)", f"{len(peer):,}",
                     f"{len(peer) * args.scenes:,}",
                     f"{took:.2f} s ({took * args.points / len(peer):.0f} s per "
                     f"{args.points:,})", f"{nginx.count():,}", "-",
                     f"{nginx.bytes_sent() / 1e6:.0f} MB"])
    load = os.getloadavg()[0]
    print_table(
        f"sample_points: {args.points:,} points, {args.scenes} stacked scenes of "
        f"{args.size} px, {len(BANDS)} bands, +{args.latency * 1000:.0f} ms in nginx "
        f"(load average {load:.1f} on {os.cpu_count()} cores)",
        ["reader", "points", "point-scenes", "time", "requests", "tiles touched", "sent"],
        rows)


if __name__ == "__main__":
    main()
