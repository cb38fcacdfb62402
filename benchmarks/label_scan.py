"""Label scan benchmark: what drawing chips by label content costs, in requests and
seconds.

A ``TileAlignedSampler(positive_fraction=0.5)`` on a dataset of label scenes scans
each label asset once, whole (1024 x 1024 uint8, 256-px tiles, deflate: 16 tiles) and
keeps per-cell class histograms; a second sampler on the same labels reuses them. The
scenes are served by local nginx with ``--latency`` added per request inside nginx;
each row is a fresh set of URLs (hard links of one file), so nothing is cached
between rows. Requests are nginx's own count.

    .venv/bin/python benchmarks/label_scan.py [--scenes 10 100] [--latency 0.02]
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


def label_files(folder: Path, count: int) -> list[str]:
    """One label COG and ``count`` distinct links to it, made once."""
    from testbed.wedges import write_wedge_scenes

    source = folder / "source" / "WEDGE_00_full" / "label.tif"
    if not source.exists():
        write_wedge_scenes(folder / "source", kinds=("full",))
    names = []
    for index in range(count):
        name = f"labels{count}/label{index:04d}.tif"
        target = folder / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, target)
        names.append(name)
    return names


def measure(folder: Path, count: int, nginx, base_url: str, workspace: Path) -> list[str]:
    """One row: scan and reuse for ``count`` label scenes."""
    import datetime as dt

    import pyarrow as pa

    import rasteret
    from rasteret.torch import TileAlignedSampler

    names = label_files(folder, count)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    table = pa.Table.from_pylist([
        {"id": f"s{i:04d}", "datetime": start + dt.timedelta(days=i),
         "label": f"{base_url}/{name}"} for i, name in enumerate(names)])
    collection = rasteret.build_from_table(
        table, name=f"labels{count}", href_columns=["label"], workspace_dir=workspace,
        progress=False, force=True, valid_coverage=None)
    dataset = collection.to_torchgeo_dataset(["label"])
    figures = []
    for _ in range(2):
        nginx.clear_log()
        began = time.perf_counter()
        sampler = TileAlignedSampler(dataset, size=128, length=1000, positive_fraction=0.5,
                                     labels=dataset, seed=0)
        seconds = time.perf_counter() - began
        list(sampler)
        figures += [str(nginx.count("/")), f"{seconds:.2f}"]
    return [str(count), *figures]


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(),
                                                       "rasteret-bench-labels"))
    args = parser.parse_args()
    folder = Path(args.data)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    with latency_server(folder, args.latency) as (nginx, base_url), \
            tempfile.TemporaryDirectory() as workspace:
        measure(folder, 1, nginx, base_url, Path(workspace))  # warm-up: imports, pools
        for count in args.scenes:
            rows.append(measure(folder, count, nginx, base_url, Path(workspace)))
    print_table(
        f"Label scan: TileAlignedSampler(positive_fraction=0.5), 128-px chips, "
        f"+{args.latency * 1000:.0f} ms per request",
        ["label scenes", "scan requests", "scan seconds", "second sampler requests",
         "second sampler seconds"], rows)


if __name__ == "__main__":
    main()
