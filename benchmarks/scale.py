"""Collection-size benchmark: the cost of a collection of 1k, 20k and 200k scenes.

A small collection is built from synthetic scenes on local nginx (4 scenes, 4 bands,
4096 px, 512-px tiles, uint16, deflate + predictor 2; latency added inside nginx), then
its Arrow table is replicated to each size (unique ids, datetimes shifted by one hour
per copy; the copies point at the same few files) and written with the library's own
writer (``rasteret.storage.write_parts``).

For each size, a fresh subprocess measures, in order:

- ``rasteret.load``: wall time, and the process's RSS after it (VmRSS);
- ``to_torchgeo_dataset``: wall time (torch and torchgeo are imported before, untimed)
  and the peak RSS of the process during it (VmHWM, reset after the import);
- ``TileAlignedSampler`` construction (256-px chips): wall time;
- ``pickle.dumps(dataset)``: size (what every DataLoader worker is sent);
- the first batch of ``rasteret.torch.dataloader(..., num_workers=2)`` (forkserver,
  batch 16): wall time from creating the iterator, each worker's RSS and peak RSS
  (VmRSS and VmHWM read from ``/proc/<pid>/status`` of the worker pids by the main
  process once the batch arrived), and the main process's peak RSS.

Each step is reported as soon as it is done, so a size that runs out of time or memory
still shows how far it got. A watchdog stops the subprocess (its process group: the
forkserver and workers too) when the group's RSS passes ``--max-gb`` or the machine's
available memory drops under 2 GB. The last table row is the slope per 100k scenes
(least squares over the sizes that completed the step).

    .venv/bin/python benchmarks/scale.py [--sizes 1000,20000,200000] [--quick]
    .venv/bin/python benchmarks/scale.py --sizes 2000000 --max-gb 22   # by hand

The other scaling measurements have scripts of their own, which ``--part`` runs (any
further options go to them):

- ``--part builds``: ``benchmarks/build_scale.py``, builds of 2,000 and 20,000 assets
  (or ``--assets``) in one process and on a 2-worker Dask ``LocalCluster``, with the
  driver's peak memory;
- ``--part chunked``: ``benchmarks/aoi.py`` with the lazy chunked readers, rasteret
  ``get_xarray(chunks=...)`` next to odc-stac ``load(chunks=...)`` and stackstac, at
  20 and 50 km with +20 ms per request.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    BANDS,
    cores,
    latency_server,
    print_table,
    proc_status,
    reset_peak,
    scene_set,
    slope,
)

TAG = "@@scale "
#: (key, column title, unit divisor, format) of the reported metrics, in order.
METRICS = (
    ("load_s", "load s", 1, ".2f"),
    ("load_rss", "RSS after load GB", 1e9, ".2f"),
    ("dataset_s", "to_torchgeo_dataset s", 1, ".2f"),
    ("dataset_peak", "peak RSS GB", 1e9, ".2f"),
    ("sampler_s", "TileAlignedSampler s", 1, ".2f"),
    ("pickle_bytes", "pickled dataset MB", 1e6, ".1f"),
    ("first_batch_s", "first batch s (2 workers)", 1, ".1f"),
    ("worker_rss", "worker RSS GB (each)", 1e9, ".2f"),
    ("worker_peak", "worker peak RSS GB (max)", 1e9, ".2f"),
    ("main_peak", "main peak RSS GB", 1e9, ".2f"),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,20000,200000",
                        help="scenes per collection (try 2000000 by hand)")
    parser.add_argument("--base-scenes", type=int, default=4)
    parser.add_argument("--size", type=int, default=4096, help="scene size in px")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per request")
    parser.add_argument("--chips", type=int, default=160, help="sampler length")
    parser.add_argument("--max-gb", type=float, default=20.0,
                        help="stop a size when its processes hold more than this")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per size")
    parser.add_argument("--quick", action="store_true", help="sizes 1000,5000")
    parser.add_argument("--data", default=".cache/bench/scale")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=("collections", *PARTS), default="collections",
                        help="what to measure: collection sizes (here), or another "
                             "script's part (see the module's docstring)")
    args, rest = parser.parse_known_args()
    if rest and args.part == "collections":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    return args


#: The scaling parts measured by other scripts: the script and its default options.
PARTS = {
    "builds": ("build_scale.py", []),
    # The eager reference (pixels checked against it) and odc-stac eager (the ratios'
    # base) run too.
    "chunked": ("aoi.py", ["--aois", "20,50", "--latencies", "0.02", "--floor-max-km", "0",
                           "--readers", "rasteret get_numpy,odc-stac eager,stackstac dask,"
                           "rasteret get_xarray chunked,odc-stac dask"]),
}


def part_command(part: str, rest: list[str]) -> list[str]:
    """The command running the script of ``part`` with its defaults, overridden by
    the options in ``rest``."""
    script, defaults = PARTS[part]
    given = {option.split("=")[0] for option in rest if option.startswith("--")}
    options = []
    for index in range(0, len(defaults), 2):
        if defaults[index] not in given:
            options += defaults[index:index + 2]
    return [sys.executable, str(Path(__file__).parent / script), *options, *rest]


def replicate(table: pa.Table, scenes: int) -> pa.Table:
    """``scenes`` rows made of copies of ``table``'s rows: ids made unique, datetimes
    shifted by one hour per copy. Copies share the buffers of one block of rows."""
    block = pa.concat_tables([table] * -(-5000 // table.num_rows)).combine_chunks()
    big = pa.concat_tables([block] * -(-scenes // block.num_rows)).slice(0, scenes)
    copy = pa.array([i // table.num_rows for i in range(scenes)], pa.int64())
    ids = pc.binary_join_element_wise(
        big["id"], pc.cast(copy, pa.string()), pa.scalar("-r", pa.string()))
    when = big["datetime"]
    per_hour = 3600 * {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[when.type.unit]
    shift = pc.multiply(copy, pa.scalar(per_hour, pa.int64()))
    shifted = pc.cast(pc.add(pc.cast(when, pa.int64()), shift), when.type)
    big = big.set_column(big.schema.get_field_index("id"), "id", ids)
    return big.set_column(big.schema.get_field_index("datetime"), "datetime", shifted)


def write_collection(base, scenes: int, folder: Path) -> Path:
    """Write the replicated collection of ``scenes`` rows as a collection folder."""
    from rasteret.storage import write_parts

    table = replicate(base.table, scenes)
    write_parts(table, folder, {**base.manifest, "name": folder.name}, base.failures)
    return folder


# -- measuring subprocess ------------------------------------------------------------
def child(folder: str, chips: int) -> None:
    """Measure one collection, reporting each figure as soon as it is known."""

    def report(**values: Any) -> None:
        print(TAG + json.dumps(values), flush=True)

    import rasteret

    start = time.perf_counter()
    collection = rasteret.load(folder)
    report(load_s=time.perf_counter() - start, load_rss=proc_status("self", "VmRSS"),
           rows=len(collection))

    import rasteret.torch  # torch, torchgeo: a fixed cost, kept out of the timings

    reset_peak()
    start = time.perf_counter()
    dataset = collection.to_torchgeo_dataset(list(BANDS), chip_size=256)
    report(dataset_s=time.perf_counter() - start, dataset_peak=proc_status("self", "VmHWM"))

    start = time.perf_counter()
    sampler = rasteret.torch.TileAlignedSampler(dataset, size=256, length=chips, seed=0)
    report(sampler_s=time.perf_counter() - start)

    report(pickle_bytes=len(pickle.dumps(dataset)))

    loader = rasteret.torch.dataloader(dataset, sampler=sampler, batch_size=16, num_workers=2)
    start = time.perf_counter()
    batches = iter(loader)
    next(batches)
    first = time.perf_counter() - start
    # torch keeps the worker processes of a multi-process iterator in ``_workers``.
    pids = [worker.pid for worker in batches._workers]
    rss = [proc_status(pid, "VmRSS") for pid in pids]
    peaks = [proc_status(pid, "VmHWM") for pid in pids]
    report(first_batch_s=first, worker_rss=max(rss), worker_peak=max(peaks),
           worker_rss_all=rss, main_peak=proc_status("self", "VmHWM"))
    del batches, loader


class Watchdog:
    """Memory of a process group, and whether it must be stopped."""

    def __init__(self, pgid: int, max_bytes: float) -> None:
        self.pgid = pgid
        self.max_bytes = max_bytes
        self.peak = 0

    def group_rss(self) -> int:
        """Sum of the RSS of every process in the group."""
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                pgrp = int(stat.rsplit(")", 1)[1].split()[2])
                if pgrp == self.pgid:
                    total += proc_status(entry.name, "VmRSS")
            except (OSError, KeyError, ValueError, IndexError):
                continue  # the process ended meanwhile, or is a kernel thread
        return total

    def reason(self) -> str | None:
        """Why the group must stop now, or None."""
        rss = self.group_rss()
        self.peak = max(self.peak, rss)
        if rss > self.max_bytes:
            return f"stopped: its processes held {rss / 1e9:.1f} GB (> --max-gb)"
        available = next(int(line.split()[1]) * 1024
                         for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemAvailable:"))
        if available < 2e9:
            return f"stopped: the machine had {available / 1e9:.1f} GB left"
        return None


def measure(folder: Path, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """Run the measuring subprocess on ``folder``: its figures, and how it ended."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", str(folder), "--chips", str(args.chips)],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    figures: dict[str, Any] = {}
    lines: list[str] = []

    import threading

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    watchdog = Watchdog(proc.pid, args.max_gb * 1e9)
    deadline = time.monotonic() + args.timeout
    outcome = "ok"
    while proc.poll() is None:
        why = watchdog.reason()
        if why is None and time.monotonic() > deadline:
            why = f"stopped after {args.timeout:.0f} s"
        if why:
            outcome = why
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.2)
    reader.join(timeout=5)
    for line in lines:
        if line.startswith(TAG):
            figures.update(json.loads(line[len(TAG):]))
        else:
            sys.stdout.write(line)
    if outcome == "ok" and proc.returncode != 0:
        outcome = f"failed (exit {proc.returncode})"
    figures["group_peak"] = watchdog.peak
    return figures, outcome


def main() -> None:
    args = parse_args()
    if args.part != "collections":
        raise SystemExit(subprocess.call(part_command(args.part, args.rest)))
    if args.child:
        child(args.child, args.chips)
        return
    if args.quick:
        args.sizes = "1000,5000"
    import rasteret

    sizes = [int(v) for v in args.sizes.split(",")]
    data = Path(args.data)
    scenes_dir = data / f"{args.base_scenes}x{args.size}"
    scene_set(scenes_dir, scenes=args.base_scenes, size=args.size)
    results = []
    with latency_server(scenes_dir, args.latency) as (_nginx, base_url):
        names = sorted(p.name.split("_")[0] for p in scenes_dir.glob("scene*_B02.tif"))
        table = pa.Table.from_pylist([
            {"id": name, "datetime": "2024-01-01T00:00:00Z",
             **{b: f"{base_url}/{name}_{b}.tif" for b in BANDS}} for name in names])
        workspace = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=data))
        try:
            base = rasteret.build_from_table(table, name="base", href_columns=list(BANDS),
                                             workspace_dir=workspace, progress=False)
            for size in sizes:
                folder = workspace / f"scale-{size}"
                start = time.perf_counter()
                write_collection(base, size, folder)
                written = time.perf_counter() - start
                disk = sum(p.stat().st_size for p in folder.iterdir())
                figures, outcome = measure(folder, args)
                figures.update(write_s=written, disk=disk)
                results.append((size, figures, outcome))
                print(f"{size} scenes: {outcome}; " + json.dumps(figures), flush=True)
                shutil.rmtree(folder)
        finally:
            shutil.rmtree(workspace, ignore_errors=True)

    def cell(value: float | None, divisor: float, fmt: str) -> str:
        return "-" if value is None else format(value / divisor, fmt)

    rows = []
    for size, figures, outcome in results:
        rows.append([f"{size:,}", *(cell(figures.get(key), div, fmt)
                                    for key, _, div, fmt in METRICS),
                     f"{figures['disk'] / 1e6:.0f}", outcome])
    rows.append(["slope per 100k", *(
        cell(slope([s for s, _, _ in results], [f.get(key) for _, f, _ in results]), div, fmt)
        for key, _, div, fmt in METRICS), "-", "-"])
    print_table(
        f"Collections of replicated rows ({args.base_scenes} scenes x 4 bands, {args.size} px, "
        f"512-px tiles; +{args.latency * 1000:.0f} ms inside nginx), {cores()} cores; one fresh "
        "process per size; RSS from /proc/<pid>/status (VmRSS, peaks VmHWM), workers read "
        "by the main process; torch import kept out of the timings",
        ["scenes", *(title for _, title, _, _ in METRICS), "on disk MB", "outcome"], rows)


if __name__ == "__main__":
    main()
