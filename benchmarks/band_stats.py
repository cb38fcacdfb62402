"""band_stats benchmark: statistics from each COG's smallest overview against exact
full-resolution statistics of the same files.

Synthetic Sentinel-2-like COGs (uint16, deflate + predictor 2, 512-px tiles, GDAL's
overviews) served by local nginx adding a fixed delay per request. Prints one table:
seconds, requests and MB for ``collection.band_stats(bands)`` (smallest overview)
and ``band_stats(bands, exact=True)`` (every tile at full resolution), then each
band's statistics from the overview as a percentage of the exact ones' (the mean, std
and percentiles as relative differences; the issue's target is within 1%).

    .venv/bin/python benchmarks/band_stats.py            # 20 scenes of 4096 px
    .venv/bin/python benchmarks/band_stats.py --quick    # 4 scenes of 2048 px
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import BANDS as BAND_TUPLE  # noqa: E402
from _common import latency_server, scene_set  # noqa: E402

BANDS = list(BAND_TUPLE)
COMPARED = ("mean", "std", "p1", "p2", "p98", "p99")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 scenes of 2048 px")
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--latency", type=float, default=0.020, help="seconds per request")
    parser.add_argument("--data", default=".cache/bench/scenes", help="scene cache folder")
    return parser.parse_args()


def build(files: list[dict[str, Path]], base_url: str, folder: Path, workspace: Path):
    """A collection of the scenes' http hrefs."""
    import pyarrow as pa

    import rasteret

    rows = []
    for index, scene in enumerate(files):
        row = {"id": f"scene{index:03d}", "datetime": f"2024-05-{index % 28 + 1:02d}"}
        for band, path in scene.items():
            row[band] = f"{base_url}/{path.relative_to(folder).as_posix()}"
        rows.append(row)
    return rasteret.build_from_table(pa.Table.from_pylist(rows), name="bench-stats",
                                     href_columns=BANDS, workspace_dir=workspace,
                                     progress=False)


def measure(collection, nginx, *, exact: bool) -> tuple[object, float, int, float]:
    """``(frame, seconds, requests, MB)`` of one band_stats call."""
    nginx.clear_log()
    start = time.perf_counter()
    frame = collection.band_stats(BANDS, refresh=True, exact=exact)
    seconds = time.perf_counter() - start
    records = nginx.requests()
    return frame, seconds, len(records), sum(r.body_bytes for r in records) / 1e6


def main() -> None:
    args = parse_args()
    scenes, size = (4, 2048) if args.quick else (args.scenes, args.size)
    folder = Path(args.data)
    files = scene_set(folder, scenes=scenes, size=size)
    with tempfile.TemporaryDirectory() as workspace, \
            latency_server(folder, args.latency) as (nginx, base_url):
        collection = build(files, base_url, folder, Path(workspace))
        rows = {}
        for name, exact in (("smallest overview", False), ("exact, full resolution", True)):
            rows[name] = measure(collection, nginx, exact=exact)
    print(f"\n{scenes} scenes x {len(BANDS)} bands of {size} px, +{args.latency * 1000:.0f} ms "
          "per request\n")
    print("| statistics from | seconds | requests | MB |")
    print("|---|---|---|---|")
    for name, (_, seconds, requests, megabytes) in rows.items():
        print(f"| {name} | {seconds:.2f} | {requests} | {megabytes:.1f} |")
    overview, exact = rows["smallest overview"][0], rows["exact, full resolution"][0]
    print("\nOverview statistics relative to exact ones (%): "
          "(overview - exact) / exact, std and percentiles as for the mean\n")
    print("| band | " + " | ".join(COMPARED) + " |")
    print("|---|" + "---|" * len(COMPARED))
    for band in BANDS:
        cells = [100 * (overview.loc[band, k] - exact.loc[band, k]) / exact.loc[band, k]
                 for k in COMPARED]
        print(f"| {band} | " + " | ".join(f"{c:+.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
