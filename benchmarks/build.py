"""Collection build benchmark: indexing 2,000 COG headers on local nginx.

Every asset is a link to one synthetic Sentinel-2-like COG (4096 px, 512-px tiles,
overviews), served by nginx adding 0 or 20 ms per request (inside nginx by default;
``--latency-by proxy`` uses the Python loopback proxy).
rasteret's build (``build_from_table``) runs next to rasterio opening the same URLs
with 16 threads (GDAL /vsicurl/). A second table times building from static STAC
catalogs of 500 and 5,000 items (one COG each) served by the same nginx: the crawl of
catalog, collection and item JSON plus the headers (target: 500 items/s at +20 ms).
A third times loading and filtering a 100,000-row collection.

    .venv/bin/python benchmarks/build.py [--assets 2000] [--quick]
    .venv/bin/python benchmarks/build.py --static-only [--static-items 500,5000]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from _common import LATENCY_MODES, latency_server, linked_assets  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=2000)
    parser.add_argument("--latencies", default="0,0.02", help="seconds per request")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-by", choices=LATENCY_MODES, default="nginx")
    parser.add_argument("--quick", action="store_true", help="400 assets, 1 repetition")
    parser.add_argument("--data", default=".cache/bench/build")
    parser.add_argument("--static-items", default="500,5000",
                        help="items of the static catalogs (comma-separated; empty: none)")
    parser.add_argument("--static-only", action="store_true",
                        help="only the static catalog rows")
    return parser.parse_args()


def make_static_catalog(folder: Path, asset_names: list[str], items: int) -> str:
    """A static catalog (catalog -> collection -> ``items`` item JSONs, relative links)
    whose items each point at one of ``asset_names`` by a relative href; written once.

    Returns:
        The catalog's path relative to ``folder``.
    """
    from testbed.stac import write_static_catalog

    name = f"static-{items}"
    root = folder / name
    if not (root / "catalog.json").exists():
        start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        features = []
        for index in range(items):
            x, y = -180 + (index % 360), -60 + (index // 360) % 120
            ring = [[x, y], [x + 0.9, y], [x + 0.9, y + 0.9], [x, y + 0.9], [x, y]]
            features.append({
                "type": "Feature", "stac_version": "1.0.0", "id": f"item{index:05d}",
                "bbox": [x, y, x + 0.9, y + 0.9],
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"datetime": (start + dt.timedelta(hours=index)).isoformat()},
                # From <root>/<collection>/<item>/ up to <folder>/assets/.
                "assets": {"B04": {"href": f"../../../{asset_names[index % len(asset_names)]}",
                                   "type": "image/tiff; application=geotiff; "
                                           "profile=cloud-optimized"}},
            })
        write_static_catalog(root, {"bench": features})
    return f"{name}/catalog.json"


def build_static_once(catalog_url: str, workspace: str) -> float:
    import rasteret

    start = time.perf_counter()
    rasteret.build_from_stac(name="bench-static", stac_api=catalog_url, collection=None,
                             band_map={"B04": "B04"}, workspace_dir=workspace, force=True,
                             progress=False)
    return time.perf_counter() - start


def static_catalog_rows(args: argparse.Namespace, data: Path, workspace: str) -> list[tuple]:
    """Build from static catalogs of each size at each latency: seconds, items/s and
    requests per item (JSON and header requests, from the nginx log). Every item has
    its own asset URL, so no header is shared."""
    sizes = [int(v) for v in args.static_items.split(",") if v.strip()]
    if not sizes:
        return []
    names = linked_assets(data, max(sizes))
    catalogs = {size: make_static_catalog(data, names, size) for size in sizes}
    rows = []
    for latency in [float(v) for v in args.latencies.split(",")]:
        with latency_server(data, latency, args.latency_by) as (nginx, base_url):
            for size, path in catalogs.items():
                times, requests = [], []
                for _ in range(args.repeat):
                    nginx.clear_log()
                    times.append(build_static_once(f"{base_url}/{path}", workspace))
                    requests.append(len(nginx.requests()))
                rows.append((latency, size, median(times), median(requests)))
    return rows


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def rasterio_open_all(urls: list[str]) -> None:
    import rasterio

    def open_one(url: str) -> tuple:
        with rasterio.open(f"/vsicurl/{url}") as src:
            return src.profile["blockxsize"], src.overviews(1)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(open_one, urls))


def build_once(urls: list[str], workspace: str) -> tuple[float, int, float]:
    import rasteret

    table = pa.Table.from_pylist([{"id": f"a{i}", "B04": u} for i, u in enumerate(urls)])
    stats = rasteret.FetchStats()
    start = time.perf_counter()
    rasteret.build_from_table(table, name="bench", href_columns=["B04"],
                              workspace_dir=workspace, force=True, progress=False, stats=stats)
    seconds = time.perf_counter() - start
    return seconds, stats.requests, peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_and_filter_table(rows: int) -> list[tuple[str, float]]:
    """Time loading and filtering a ``rows``-row collection built from a real one."""
    import pyarrow.compute as pc

    import rasteret
    from rasteret.storage import write_parts

    workspace = Path(tempfile.mkdtemp(prefix="bench-100k-"))
    base = rasteret.load("bench", workspace_dir=os.environ["BENCH_WORKSPACE"]).table
    repeats = -(-rows // base.num_rows)
    table = pa.concat_tables([base] * repeats).slice(0, rows)
    # Spread ids, times and footprints so filters select a realistic share.
    ids = pa.array([f"scene{i:06d}" for i in range(rows)])
    table = table.set_column(table.schema.get_field_index("id"), "id", ids)
    bbox = table["bbox"].combine_chunks()
    shift = pa.array([(i % 360) - 180.0 for i in range(rows)])
    shifted = pa.StructArray.from_arrays(
        [pc.add(bbox.field("xmin"), shift), bbox.field("ymin"),
         pc.add(bbox.field("xmax"), shift), bbox.field("ymax")],
        names=["xmin", "ymin", "xmax", "ymax"],
    )
    table = table.set_column(table.schema.get_field_index("bbox"), "bbox", shifted)
    folder = workspace / "big"
    write_parts(table, folder, {"name": "big"})
    timings = []
    start = time.perf_counter()
    big = rasteret.load("big", workspace_dir=workspace)
    timings.append(("load", time.perf_counter() - start))
    start = time.perf_counter()
    subset = big.subset(bbox=(10, 30, 20, 40))
    timings.append((f"subset bbox ({len(subset)} rows)", time.perf_counter() - start))
    start = time.perf_counter()
    big.filter(pc.field("id") == "scene050000")
    timings.append(("filter expression", time.perf_counter() - start))
    shutil.rmtree(workspace, ignore_errors=True)
    return timings


def print_static_rows(rows: list[tuple], repeat: int) -> None:
    print(f"\nBuild from a static STAC catalog (catalog -> collection -> items, relative "
          f"links; one 4096 px COG per item), local nginx, medians of {repeat}")
    print("latency | items | seconds | items/s | requests/item")
    print("--- | --- | --- | --- | ---")
    for latency, size, seconds, requests in rows:
        print(f"{latency * 1000:.0f} ms | {size} | {seconds:.2f} | {size / seconds:.0f} | "
              f"{requests / size:.2f}")


def main() -> None:
    args = parse_args()
    if args.quick:
        args.assets, args.repeat = 400, 1

    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    names = linked_assets(data, args.assets)
    os.environ.update({"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "VSI_CACHE": "FALSE",
                       "CPL_VSIL_CURL_NON_CACHED": "/vsicurl/"})
    workspace = tempfile.mkdtemp(prefix="bench-build-")
    os.environ["BENCH_WORKSPACE"] = workspace
    static_rows = static_catalog_rows(args, data, workspace)
    if static_rows:
        print_static_rows(static_rows, args.repeat)
    if args.static_only:
        return
    rows = []
    for latency in [float(v) for v in args.latencies.split(",")]:
        with latency_server(data, latency, args.latency_by) as (nginx, base_url):
            urls = [f"{base_url}/{name}" for name in names]
            ours, requests, peaks = [], [], []
            for _ in range(args.repeat):
                nginx.clear_log()
                seconds, _, peak = build_once(urls, workspace)
                ours.append(seconds)
                requests.append(len(nginx.requests()))
                peaks.append(peak)
            theirs, their_requests = [], []
            for _ in range(args.repeat):
                nginx.clear_log()
                start = time.perf_counter()
                rasterio_open_all(urls)
                theirs.append(time.perf_counter() - start)
                their_requests.append(len(nginx.requests()))
            rows.append((latency, "rasteret build", median(ours), median(requests),
                         max(peaks)))
            # rasterio runs after ours, so the process peak below is ours alone.
            rows.append((latency, "rasterio open, 16 threads", median(theirs),
                         median(their_requests), float("nan")))
    print(f"\nBuild: {args.assets} assets (4096 px COG, 512-px tiles, overviews), local nginx, "
          f"medians of {args.repeat}")
    print("latency | reader | seconds | assets/s | requests/asset | process peak RSS MB")
    print("--- | --- | --- | --- | --- | ---")
    for latency, reader, seconds, requests, peak in rows:
        print(f"{latency * 1000:.0f} ms | {reader} | {seconds:.2f} | {args.assets / seconds:.0f} | "
              f"{requests / args.assets:.2f} | {peak:.0f}")
    print("\nCollection of 100,000 rows")
    print("operation | seconds")
    print("--- | ---")
    for name, seconds in load_and_filter_table(100_000):
        print(f"{name} | {seconds:.3f}")


if __name__ == "__main__":
    main()
