"""Build at scale: 2,000 to 200,000 assets in one process and on a 2-worker Dask
cluster, with the driver's memory.

Every asset is a hard link to one synthetic COG (4096 px, 512-px tiles, overviews;
distinct URLs, so every header is requested), served by local nginx adding
``--latency`` (20 ms) per request inside nginx. Scenes have four bands, so 20,000
assets are 5,000 scenes. Each build is ``rasteret.build_from_table`` over a table of
hrefs, in a fresh subprocess (the driver), either in that one process or with
``executor=client.get_executor()`` of a ``distributed.LocalCluster(n_workers=2,
processes=True, threads_per_worker=1)`` started before the timing, once per
``--batch-sizes`` value (assets per task).

Reported per build: wall time, assets/s, requests and bytes per asset (from the nginx
log), the driver's resident set before the build, its peak growth up to the moment the
build loads the collection it published to return it (the build's own cost), its peak
during the whole call (VmHWM, reset just before the build, so imports and the cluster's
start are not counted) and that peak's growth, the returned collection's table in memory
and the peak growth of loading it in a fresh process, and with Dask each worker's peak.
The last rows are slopes per 10,000 assets.

Both are one engine: in one process the tasks run on an in-process executor (a few
at once, in threads sharing the process's I/O loop). The driver writes each task's
scenes to the task area and submits only the task's key and size; per finished task
it keeps its key, row count and failures. In one process the driver's growth is
therefore also the working set of the tasks running at once. What Dask keeps
on the driver is bounded: its batched streams (client to scheduler, and, on a
LocalCluster whose scheduler runs in the driver, scheduler to each worker) each keep
their last ``distributed.admin.low-level-log-length`` (1,000) batches of messages for
debugging,
so the driver's growth levels off after about a thousand tasks.

Chunked reads next to odc-stac ``load(..., chunks=...)`` and stackstac are rows of
``benchmarks/aoi.py`` (``rasteret get_xarray chunked``, ``odc-stac dask``,
``stackstac dask``).

    .venv/bin/python benchmarks/build_scale.py [--assets 2000,20000] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    BANDS,
    asset_name,
    cores,
    latency_server,
    linked_assets,
    print_table,
    proc_status,
    reset_peak,
    slope,
)

TAG = "@@build-scale "
ONE = "one process"
PER = 10_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", default="2000,20000", help="assets per build (comma-separated)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per request")
    parser.add_argument("--batch-sizes", default="500,100",
                        help="assets per Dask task, one Dask build each (comma-separated)")
    parser.add_argument("--batch-size", type=int, default=500, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per build")
    parser.add_argument("--quick", action="store_true",
                        help="400 and 2,000 assets, Dask at 100 per task: a smoke run (its "
                             "slopes still carry first-use costs; use the defaults for them)")
    parser.add_argument("--data", default=".cache/bench/build")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS,
                        metavar=("MODE", "URL", "ASSETS", "WORKSPACE"))
    parser.add_argument("--load", help=argparse.SUPPRESS)
    return parser.parse_args()


def href_table(base_url: str, names: list[str], assets: int):
    """The build's input: one row per scene of ``len(BANDS)`` bands, each band a
    distinct link (``assets`` hrefs in all, whole scenes)."""
    import pyarrow as pa

    scenes = assets // len(BANDS)
    return pa.table({
        "id": [f"scene{i:05d}" for i in range(scenes)],
        **{band: [f"{base_url}/{names[i * len(BANDS) + b]}" for i in range(scenes)]
           for b, band in enumerate(BANDS)},
    })


def _worker_peak() -> int:
    """A Dask worker's peak resident set (run on each worker by ``Client.run``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def watch_result_load(peaks: list[int]) -> None:
    """Record in ``peaks`` the driver's peak (VmHWM) when the build, having published
    the collection, loads it to return it: the build's own peak, without its result."""
    from rasteret.ingest import builder

    def load(*args: Any, _load: Any = builder.load, **kwargs: Any) -> Any:
        peaks.append(proc_status("self", "VmHWM"))
        return _load(*args, **kwargs)

    builder.load = load  # type: ignore[assignment]


# -- the driver: one build in a fresh process ------------------------------------------------
def child(mode: str, base_url: str, assets: int, workspace: str, batch_size: int) -> None:
    """Build ``assets`` assets as the driver in ``mode``, reporting its figures."""

    def report(**values: Any) -> None:
        print(TAG + json.dumps(values), flush=True)

    import rasteret

    names = [asset_name(i) for i in range(assets)]
    table = href_table(base_url, names, assets)
    executor, client, cluster = None, None, None
    if mode == "dask":
        import distributed

        start = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                           dashboard_address=None, silence_logs=logging.ERROR)
        client = distributed.Client(cluster)
        executor = client.get_executor()
        report(cluster_s=time.perf_counter() - start)
    gc.collect()
    peak_before_result: list[int] = []
    watch_result_load(peak_before_result)
    before = proc_status("self", "VmRSS")
    reset_peak()
    # In one process (batch_size 0 here) the build's tasks have the default size.
    task_size = {"batch_size": batch_size} if batch_size else {}
    start = time.perf_counter()
    collection = rasteret.build_from_table(
        table, name="scale", href_columns=list(BANDS), workspace_dir=workspace,
        progress=False, executor=executor, **task_size)
    seconds = time.perf_counter() - start
    report(build_s=seconds, rss_before=before, driver_peak=proc_status("self", "VmHWM"),
           build_peak=peak_before_result[0],
           scenes=len(collection), collection_bytes=collection.table.nbytes,
           input_bytes=table.nbytes)
    if client is not None and cluster is not None:
        peaks = client.run(_worker_peak)
        report(worker_peak=max(peaks.values()))
        client.close()
        cluster.close()


def load_child(workspace: str) -> None:
    """Load the collection a build wrote, in a fresh process: what the build's last
    step (loading it) costs the driver on its own."""
    import rasteret

    before = proc_status("self", "VmRSS")
    reset_peak()
    rasteret.load("scale", workspace_dir=workspace)
    print(TAG + json.dumps({"load_growth": proc_status("self", "VmHWM") - before}), flush=True)


def run_child(command: list[str], figures: dict[str, Any], timeout: float) -> str:
    """Run a measuring subprocess, adding the figures it reported to ``figures``.

    Returns:
        How it ended: ``ok``, or why not.
    """
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        outcome = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
        output = done.stdout
        if done.returncode:
            sys.stderr.write(done.stderr[-3000:])
    except subprocess.TimeoutExpired as exc:
        outcome = f"stopped after {timeout:.0f} s"
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
    for line in output.splitlines():
        if line.startswith(TAG):
            figures.update(json.loads(line[len(TAG):]))
    return outcome


def measure(nginx, batch_size: int | None, base_url: str, assets: int,
            args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """One build in a fresh driver process, in one process (``batch_size`` None) or on
    Dask with ``batch_size`` assets per task: its figures (with the requests and bytes
    nginx served during it), and how it ended."""
    workspace = tempfile.mkdtemp(prefix="bench-build-scale-", dir=args.data)
    nginx.clear_log()
    command = [sys.executable, __file__, "--batch-size", str(batch_size or 0), "--child",
               "one" if batch_size is None else "dask", base_url, str(assets), workspace]
    figures: dict[str, Any] = {}
    try:
        outcome = run_child(command, figures, args.timeout)
        records = nginx.requests()
        figures.update(requests=len(records), bytes=sum(r.body_bytes for r in records))
        if outcome == "ok":
            run_child([sys.executable, __file__, "--load", workspace], figures, args.timeout)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    if "driver_peak" in figures:
        figures["growth"] = figures["driver_peak"] - figures["rss_before"]
        figures["build_growth"] = figures["build_peak"] - figures["rss_before"]
    return figures, outcome


def rows_of(results: list[tuple[int, str, dict[str, Any], str]]) -> list[list[str]]:
    """Table rows: one per build, then the slopes per PER assets of each mode."""
    def mb(value: float | None) -> str:
        return "-" if value is None else f"{value / 1e6:.0f}"

    rows = []
    for assets, mode, f, outcome in results:
        seconds = f.get("build_s")
        rows.append([
            f"{assets:,}", mode, "-" if seconds is None else f"{seconds:.2f}",
            "-" if seconds is None else f"{assets / seconds:.0f}",
            f"{f['requests'] / assets:.2f}", f"{f['bytes'] / assets / 1e3:.1f}",
            mb(f.get("rss_before")), mb(f.get("build_growth")), mb(f.get("driver_peak")),
            mb(f.get("growth")),
            mb(f.get("collection_bytes")), mb(f.get("load_growth")), mb(f.get("worker_peak")),
            outcome])
    for mode in dict.fromkeys(mode for _, mode, _, _ in results):
        runs = [(assets, f) for assets, m, f, _ in results if m == mode]
        sizes = [assets for assets, _ in runs]

        def per(key: str, unit: float = 1e6, digits: int = 0, runs: list = runs,
                sizes: list = sizes) -> str:
            value = slope(sizes, [f.get(key) for _, f in runs], per=PER)
            # Adding 0.0 turns a rounded -0.0 into 0.0.
            return "-" if value is None else f"{round(value / unit, digits) + 0.0:+.{digits}f}"

        rows.append([f"slope per {PER:,}", mode, per("build_s", 1, 2),
                     "-", "-", "-", "-", per("build_growth"), per("driver_peak"), per("growth"),
                     per("collection_bytes"), per("load_growth"), per("worker_peak"), "-"])
    return rows


def main() -> None:
    args = parse_args()
    if args.child:
        mode, url, assets, workspace = args.child
        child(mode, url, int(assets), workspace, args.batch_size)
        return
    if args.load:
        load_child(args.load)
        return
    if args.quick:
        args.assets, args.batch_sizes = "400,2000", "100"
    sizes = [int(v) for v in args.assets.split(",")]
    if any(size % len(BANDS) for size in sizes):
        raise SystemExit(f"--assets must be multiples of {len(BANDS)} (whole scenes)")
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    linked_assets(data, max(sizes))
    from rasteret.ingest.builder import TASKS_IN_FLIGHT

    builds: list[tuple[str, int | None]] = [(ONE, None)] + [
        (f"dask 2 workers, {int(b)}/task", int(b)) for b in args.batch_sizes.split(",") if b]
    results = []
    with latency_server(data, args.latency) as (nginx, base_url):
        for assets in sizes:
            for mode, batch_size in builds:
                figures, outcome = measure(nginx, batch_size, base_url, assets, args)
                results.append((assets, mode, figures, outcome))
                print(f"{assets} assets, {mode}: {outcome}; {json.dumps(figures)}", flush=True)
    print_table(
        f"Builds from a table of hrefs ({len(BANDS)} bands per scene; one 4096 px COG, 512-px "
        f"tiles, behind distinct links; +{args.latency * 1000:.0f} ms per request inside nginx), "
        f"{cores()} cores shared with the workers and nginx; one fresh driver process per "
        f"build; Dask: LocalCluster(n_workers=2, processes=True, threads_per_worker=1), at "
        f"most {TASKS_IN_FLIGHT} tasks in flight, cluster start not timed; memory in MB from "
        "/proc (driver peak = VmHWM reset just before the build)",
        ["assets", "build", "seconds", "assets/s", "requests/asset", "KB/asset",
         "driver RSS before", "driver peak growth before loading the result",
         "driver peak", "driver peak growth", "collection in memory",
         "peak growth of loading it", "worker peak (max)", "outcome"],
        rows_of(results))


if __name__ == "__main__":
    main()
