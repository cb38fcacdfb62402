"""Shared pieces of the benchmarks: scene sets, timing, tables, server counts."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

BANDS = ("B02", "B03", "B04", "B08")

# Timed reads measure the reads: no progress bar draws between them (a caller may
# still set RASTERET_PROGRESS=1 to watch a long set-up).
os.environ.setdefault("RASTERET_PROGRESS", "0")

#: GDAL settings for a fair /vsicurl/ baseline: no directory listing, no caching
#: between measurements, HTTP/2 multiplexing off (nginx here speaks HTTP/1.1).
GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
    "CPL_VSIL_CURL_NON_CACHED": "/vsicurl/",
    "VSI_CACHE": "FALSE",
    "GDAL_HTTP_MULTIPLEX": "NO",
    "GDAL_CACHEMAX": "64",
}


def asset_name(index: int) -> str:
    """The path of link ``index`` of :func:`linked_assets`, relative to its folder."""
    return f"assets/asset{index:05d}.tif"


def linked_assets(folder: Path, count: int) -> list[str]:
    """One real COG (4096 px, 512-px tiles, overviews) and ``count`` hard links to it
    under ``folder/assets`` (distinct URLs, same header), made once and reused.

    Returns:
        The links' paths relative to ``folder``.
    """
    from testbed.scenes import write_scenes

    source = folder / "source" / "S2X_SYN_000" / "B04.tif"
    if not source.exists():
        write_scenes(folder / "source", count=1, size=4096, tile=512, bands=("B04",),
                     label=False)
    assets = folder / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    names = [asset_name(index) for index in range(count)]
    for index, name in enumerate(names):
        if not (folder / name).exists():
            os.link(_link_source(source, index), folder / name)
    return names


#: Hard links per copy of the source (ext4 allows 65,000 links to one file).
LINKS_PER_COPY = 50_000


def _link_source(source: Path, index: int) -> Path:
    """The copy of ``source`` that link ``index`` points to (made when first needed)."""
    block = index // LINKS_PER_COPY
    if not block:
        return source
    copy = source.with_name(f"{source.stem}.copy{block}{source.suffix}")
    if not copy.exists():
        shutil.copyfile(source, copy.with_suffix(".part"))
        os.replace(copy.with_suffix(".part"), copy)
    return copy


def scene_set(folder: Path, *, scenes: int, size: int, tile: int = 512,
              bands: tuple[str, ...] = BANDS, stacked: bool = False) -> list[dict[str, Path]]:
    """Synthetic Sentinel-2-like scenes (uint16, deflate + predictor 2, ``tile``-px
    tiles, overviews), written once and reused: one dict band -> path each.

    Scenes sit on a grid, five per row, so a window or chip touches one scene; with
    ``stacked`` they share one footprint (a time series of the same tile).
    """
    from testbed.scenes import write_scenes

    marker = folder / f"done-{scenes}-{size}-{tile}"
    if not marker.exists():
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(scenes):
            row, col = (0, 0) if stacked else divmod(index, 5)
            origin = (500_000.0 + col * size * 10, 4_500_000.0 - row * size * 10)
            written = write_scenes(folder / f"tmp{index:03d}", count=1, size=size, tile=tile,
                                   bands=bands, label=False, origin=origin, seed=index)
            for band, path in written[0].files.items():
                path.rename(folder / f"scene{index:03d}_{band}.tif")
        marker.write_text("ok")
    return [
        {band: folder / f"scene{index:03d}_{band}.tif" for band in bands}
        for index in range(scenes)
    ]


class OpenDatasets:
    """rasterio's peer "with files opened in advance": a pool of threads, each holding
    its own open GDAL dataset per URL (GDAL handles are not shared across threads)."""

    def __init__(self, urls: list[str], threads: int) -> None:
        import concurrent.futures

        self.pool = concurrent.futures.ThreadPoolExecutor(threads)
        self._local = threading.local()
        barrier = threading.Barrier(threads)

        def warm(_: int) -> None:
            barrier.wait()  # every thread opens every file once, before timing
            for url in urls:
                self.get(url)

        list(self.pool.map(warm, range(threads)))

    def get(self, url: str):
        """This thread's open dataset for ``url``."""
        import rasterio

        cache = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = {}
        if url not in cache:
            cache[url] = rasterio.open(f"/vsicurl/{url}")
        return cache[url]

    def close(self) -> None:
        """Stop the threads."""
        self.pool.shutdown()


#: How the benchmarks add latency: ``nginx`` holds each request on a timer inside
#: nginx (no CPU cost), ``proxy`` sends requests through rasteret's Python loopback
#: proxy (which competes with the readers for the machine's cores).
LATENCY_MODES = ("nginx", "proxy")


@contextlib.contextmanager
def latency_server(root: Path, latency: float, mode: str = "nginx") -> Iterator[tuple]:
    """nginx serving ``root`` with ``latency`` seconds added per request.

    Yields:
        ``(nginx, url)``: the server (its log counts requests and bytes) and the base
        URL readers should use.
    """
    from testbed.servers import LatencyProxy, NginxServer

    if mode == "nginx":
        with NginxServer(root=root, delay=latency) as nginx:
            yield nginx, nginx.url
    else:
        with NginxServer(root=root) as nginx, LatencyProxy(nginx.url, delay=latency) as proxy:
            yield nginx, proxy.url


def run_times(run: Callable[[], object], repeat: int,
              before: Callable[[], None] | None = None) -> list[float]:
    """Wall times of ``repeat`` runs of ``run`` (``before`` runs untimed first)."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def median_time(run: Callable[[], object], repeat: int, before: Callable[[], None] | None = None
                ) -> float:
    """Median wall time of ``run`` over ``repeat`` runs (``before`` runs untimed first)."""
    return statistics.median(run_times(run, repeat, before))


def best_time(run: Callable[[], object], repeat: int = 3) -> float:
    """Shortest wall time of ``run`` over ``repeat`` runs (for floors: the machine's
    speed without the noise of other work)."""
    return min(run_times(run, repeat))


def decode_floors(jobs: list[tuple]) -> tuple[float, float]:
    """Single-core seconds to decode ``(bytes, level, chunk)`` jobs, divided by the cores
    (best of three runs): decoding each chunk whole (the decode-bound floor), and only
    down to the last row its window needs (what rasteret decodes)."""
    from rasteret.tiff.codecs import decode_chunk

    def decode_all(partial: bool) -> None:
        for raw, level, chunk in jobs:
            decode_chunk(raw, level, "<", chunk.rows,
                         max_rows=chunk.needed_rows if partial else None)

    return (best_time(lambda: decode_all(False)) / cores(),
            best_time(lambda: decode_all(True)) / cores())


@dataclass
class Measurement:
    """One reader's figures: median wall time, the server-side requests and bytes of one
    run, and the CPU seconds per run of this process (all its threads) and of nginx."""

    reader: str
    seconds: float
    requests: int
    bytes: int
    cpu: float
    server_cpu: float


def process_cpu() -> float:
    """CPU seconds this process has used (user + system, every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_readers(nginx, readers: list[tuple[str, Callable[[], object]]], repeat: int
                    ) -> list[Measurement]:
    """Run each reader once untimed (a warm-up whose requests and bytes are read from
    the nginx log; ``nginx`` None: no server, nothing counted), then ``repeat`` timed
    runs (median wall time, mean CPU)."""
    def server_cpu() -> float:
        return nginx.cpu_seconds() if nginx is not None else 0.0

    measured = []
    for name, run in readers:
        if nginx is not None:
            nginx.clear_log()
        run()
        records = nginx.requests() if nginx is not None else []
        cpu, server = process_cpu(), server_cpu()
        seconds = median_time(run, repeat)
        measured.append(Measurement(
            name, seconds, len(records), sum(r.body_bytes for r in records),
            (process_cpu() - cpu) / repeat, (server_cpu() - server) / repeat))
    return measured


def measure_interleaved(nginx, readers: list[tuple[str, Callable[[], object]]], repeat: int
                        ) -> list[Measurement]:
    """Like :func:`measure_readers`, but the timed runs take turns (ABC, CBA, ...), so
    that readers differing by a few percent are compared under the same load."""
    def server_cpu() -> float:
        return nginx.cpu_seconds() if nginx is not None else 0.0

    counts = []
    for _, run in readers:
        if nginx is not None:
            nginx.clear_log()
        run()
        records = nginx.requests() if nginx is not None else []
        counts.append((len(records), sum(r.body_bytes for r in records)))
    times: list[list[float]] = [[] for _ in readers]
    cpu = [0.0] * len(readers)
    server = [0.0] * len(readers)
    for turn in range(repeat):
        order = list(range(len(readers)))
        for index in order if turn % 2 == 0 else order[::-1]:
            before, before_server = process_cpu(), server_cpu()
            start = time.perf_counter()
            readers[index][1]()
            times[index].append(time.perf_counter() - start)
            cpu[index] += process_cpu() - before
            server[index] += server_cpu() - before_server
    return [Measurement(name, statistics.median(times[i]), *counts[i], cpu[i] / repeat,
                        server[i] / repeat) for i, (name, _) in enumerate(readers)]


def proc_status(pid: int | str, field: str) -> int:
    """A memory field of ``/proc/<pid>/status`` (``pid`` may be ``"self"``) in bytes,
    e.g. ``VmRSS`` (resident now) or ``VmHWM`` (peak resident)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak() -> None:
    """Reset this process's peak resident set (VmHWM) to its current one."""
    Path("/proc/self/clear_refs").write_text("5")


def slope(sizes: list[int], values: list[float | None], per: int = 100_000) -> float | None:
    """Least-squares growth of ``values`` per ``per`` of ``sizes``, over the sizes with
    a value (None with fewer than two)."""
    import numpy as np

    points = [(s, v) for s, v in zip(sizes, values) if v is not None]
    if len(points) < 2:
        return None
    xs, ys = zip(*points)
    return float(np.polyfit(np.array(xs, float), np.array(ys, float), 1)[0]) * per


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """Print a Markdown table."""
    print(f"\n{title}")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
