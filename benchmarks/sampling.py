"""Half-empty scenes benchmark: chips with and without ``min_valid``.

Scenes side by side (no overlap), half of them cut by a diagonal nodata wedge (as at
an orbit edge: the item geometry outlines the data, wholly empty tiles are sparse)
and half with a nodata margin only their overviews show; uint16 ``B04``, 2048 px,
512-px tiles, deflate; local nginx with ``--latency`` added per request inside nginx.
The collection is built with ``valid_coverage="overview"`` (its extra requests are
reported against a build with the default ``"geometry"``).

Samplers of 256-px chips, read in the main process in batches of 16:

- TorchGeo's ``RandomPatchSampler``, as is;
- the same wrapped in ``ContentSampler(min_valid=0.9)``;
- ``TileAlignedSampler(min_valid=0.9)``.

Each row gives the share of chips with less than 90% valid pixels (counted on the
pixels read), the requests per useful chip (nginx's count; useful: at least 90%
valid) and useful chips per second (sampling included).

    .venv/bin/python benchmarks/sampling.py [--scenes 8] [--chips 320] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import latency_server, print_table  # noqa: E402

SIZE, TILE, RES = 2048, 512, 10.0


def write_scenes(folder: Path, count: int) -> list:
    """``count`` wedge scenes side by side (orbit and margin kinds in turn), made once."""
    from testbed.wedges import write_wedge_scenes

    scenes = []
    for index in range(count):
        kind = ("orbit", "margin")[index % 2]
        root = folder / f"scene{index:03d}"
        origin = (500_000.0 + index * SIZE * RES, 4_100_000.0)
        done = root / f"WEDGE_00_{kind}" / "label.tif"
        scene = write_wedge_scenes(root, kinds=(kind,), size=SIZE, tile=TILE,
                                   origin=origin, seed=index) if not done.exists() else None
        scenes.append((index, kind, root / f"WEDGE_00_{kind}",
                       scene[0].geometry if scene else None, origin))
    return scenes


def build(scenes, base_url: str, workspace: Path, valid_coverage: str):
    import datetime as dt

    import pyarrow as pa
    import shapely
    from shapely.geometry import shape

    import rasteret
    from testbed.wedges import _geometry

    rows = []
    for index, kind, folder, _, origin in scenes:
        geometry = _geometry(kind, origin[0], origin[1], SIZE, RES, 32633)
        relative = folder.relative_to(folder.parents[1])
        rows.append({"id": f"s{index:03d}", "datetime": dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
                     + dt.timedelta(days=index), "geometry": shapely.to_wkb(shape(geometry)),
                     "B04": f"{base_url}/{relative}/B04.tif"})
    return rasteret.build_from_table(
        pa.Table.from_pylist(rows), name=f"wedges-{valid_coverage}", href_columns=["B04"],
        workspace_dir=workspace, progress=False, force=True, valid_coverage=valid_coverage)


def read_all(dataset, make_sampler, nginx) -> list[str]:
    """Make a sampler of ``dataset`` and read every chip of it: a table row."""
    nginx.clear_log()
    began = time.perf_counter()
    chips = list(make_sampler(dataset))
    valid = []
    for start in range(0, len(chips), 16):
        for sample in dataset.__getitems__(chips[start:start + 16]):
            valid.append(float((sample["image"][0] != 0).float().mean()))
    seconds = time.perf_counter() - began
    requests = nginx.count("/")
    useful = sum(v >= 0.9 for v in valid)
    poor = 1 - useful / len(valid)
    return [str(len(valid)), f"{poor:.1%}", f"{requests / max(useful, 1):.2f}",
            f"{useful / seconds:.1f}"]


def main() -> None:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--chips", type=int, default=320)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(),
                                                       "rasteret-bench-wedges"))
    args = parser.parse_args()
    from torchgeo.samplers import RandomPatchSampler

    from rasteret.torch import ContentSampler, TileAlignedSampler

    folder = Path(args.data)
    scenes = write_scenes(folder, args.scenes)
    builds, rows = [], []
    with latency_server(folder, args.latency) as (nginx, base_url), \
            tempfile.TemporaryDirectory() as workspace:
        for mode in ("geometry", "overview"):
            nginx.clear_log()
            began = time.perf_counter()
            collection = build(scenes, base_url, Path(workspace), mode)
            builds.append([mode, str(nginx.count("/")), f"{time.perf_counter() - began:.2f}"])
        def fresh():  # no tile cache: each row's requests are its own
            return collection.to_torchgeo_dataset(["B04"], cache_bytes=0)

        samplers = [
            ("RandomPatchSampler", lambda d: RandomPatchSampler(d, size=256,
                                                                length=args.chips)),
            ("ContentSampler(RandomPatchSampler, min_valid=0.9)", lambda d: ContentSampler(
                RandomPatchSampler(d, size=256, length=args.chips), d, min_valid=0.9,
                seed=0)),
            ("TileAlignedSampler(min_valid=0.9)", lambda d: TileAlignedSampler(
                d, size=256, length=args.chips, min_valid=0.9, seed=0)),
        ]
        for name, make in samplers:
            dataset = fresh()
            rows.append([name, *read_all(dataset, make, nginx)])
    print_table(f"Build of {args.scenes} scenes (1 band), +{args.latency * 1000:.0f} ms",
                ["valid_coverage", "requests", "seconds"], builds)
    print_table(f"Half-empty scenes: {args.scenes} x {SIZE} px, 256-px chips, "
                f"+{args.latency * 1000:.0f} ms per request",
                ["sampler", "chips", "chips < 90% valid", "requests per useful chip",
                 "useful chips/s"], rows)


if __name__ == "__main__":
    main()
