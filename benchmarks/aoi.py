"""Area-over-time benchmark: 2, 20 and 50 km areas over a time series of 20 scenes, 2 bands.

Readers, on the same files and the same latency: rasteret's ``get_numpy`` and
``get_xarray`` (headers from the collection, every tile of every scene in flight at
once); odc-stac eager (``pool=16`` threads); stackstac (dask, 16 threads, uint16 with
nodata 0, chunks of up to 2048 px whose edges fall on the files' 512-px tile edges, so
no tile is read twice); rasterio with 16 threads
reading the same windows through GDAL /vsicurl/, opening each file or with every file
opened in advance. The peers get ``raster:bands`` (uint16, nodata 0) in their STAC items
and ``dtype="uint16"``, so every reader returns the same uint16 pixels: before timing,
each reader's array is checked equal to rasteret's ``get_numpy`` (a hash per scene and
band). A peer that is not installed is skipped with a line saying so (``make
bench-deps`` installs them).

The scenes are stacked (one footprint, 20 dates), written on local nginx, their size
following the largest AOI (50 km at 10 m: 5000 px, so 5632-px scenes). nginx adds
``--latencies`` per request inside nginx (``--latency-by proxy`` uses the Python
loopback proxy instead).

Each reader runs in a fresh subprocess: set-up (imports, opening the collection or the
items), one untimed warm-up read (its requests and bytes are read from the nginx log,
and its pixels are checked), then ``--repeat`` timed reads (median, CPU per run of the
reader process and of nginx). Memory: the process's peak resident set (VmHWM) during
the reads, reset after set-up (``/proc/self/clear_refs``), and its resident set before
the first read (imports and set-up). The decode-bound floor is the single-core time to
decode the needed tiles whole, divided by the cores; the floor of decoding them down to
the AOI's last row (what rasteret decodes) is shown too; both only for AOIs up to
``--floor-max-km`` (they take minutes beyond).

    .venv/bin/python benchmarks/aoi.py [--quick] [--aois 2,20,50] [--latencies 0,0.02]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    GDAL_ENV,
    LATENCY_MODES,
    cores,
    decode_floors,
    latency_server,
    print_table,
    proc_status,
    process_cpu,
    reset_peak,
    scene_set,
)

BANDS = ("B04", "B08")
EPSG = 32633
RES = 10.0
#: Top-left corner of the stacked scenes.
ORIGIN = (500_000.0, 4_500_000.0)
#: The 2 km AOI's top-left corner sits 503 px east and 1498 px south of the scenes'
#: (not on a tile edge); larger AOIs are centred on the 2 km one's centre, clamped
#: into the scene.
AOI_2KM = (505_030.0, 4_483_020.0, 507_030.0, 4_485_020.0)
#: Pixels kept free around the largest AOI when sizing the scenes.
MARGIN = 300
TILE = 512
#: Protocol lines between this script and its reader subprocesses.
TAG = "@@aoi "
#: Readers in table order; the first is the pixel reference, ratios are vs odc-stac.
READERS = ("rasteret get_numpy", "rasteret get_xarray", "odc-stac eager", "stackstac dask",
           "rasterio opening files", "rasterio files open",
           # Lazy, chunked reads computed by Dask's threaded scheduler (issue 14, item 3):
           # rasteret with chunks="auto" (edges on the tile grid), odc-stac with chunks=.
           "rasteret get_xarray chunked", "odc-stac dask")
REFERENCE, PEER_BASELINE = READERS[0], "odc-stac eager"
#: Readers needing a package outside the project's dependencies.
NEEDS = {"odc-stac eager": "odc.stac", "stackstac dask": "stackstac",
         "odc-stac dask": "odc.stac"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aois", default="2,20,50", help="AOI sides in km")
    parser.add_argument("--scenes", default="20")
    parser.add_argument("--size", type=int, default=0,
                        help="scene size in px (default: fits the largest AOI)")
    parser.add_argument("--latencies", default="0,0.02")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--chunks", type=int, default=2048,
                        help="stackstac chunk size (px), a multiple of the tile size")
    parser.add_argument("--readers", default=",".join(READERS))
    parser.add_argument("--floor-max-km", type=float, default=20.0)
    parser.add_argument("--latency-by", choices=LATENCY_MODES, default="nginx")
    parser.add_argument("--quick", action="store_true", help="2 km, 10 scenes, 1 repeat")
    parser.add_argument("--data", default=".cache/bench/aoi")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def aoi_bounds(km: float, scene_px: int) -> tuple[float, float, float, float]:
    """A ``km`` x ``km`` box on the 10 m pixel grid, centred on the 2 km AOI's centre and
    moved inside the scene if it would stick out."""
    side = round(km * 1000 / RES)
    cx = round((AOI_2KM[0] + AOI_2KM[2]) / 2 / RES - ORIGIN[0] / RES)
    cy = round(ORIGIN[1] / RES - (AOI_2KM[1] + AOI_2KM[3]) / 2 / RES)
    col = min(max(cx - side // 2, 0), scene_px - side)
    row = min(max(cy - side // 2, 0), scene_px - side)
    if col < 0 or row < 0:
        raise SystemExit(f"a {km} km AOI does not fit {scene_px}-px scenes: pass a larger --size")
    minx, maxy = ORIGIN[0] + col * RES, ORIGIN[1] - row * RES
    return minx, maxy - side * RES, minx + side * RES, maxy


def scene_size(kms: list[float]) -> int:
    """The smallest multiple of the tile size holding the largest AOI plus margins."""
    largest = round(max(kms) * 1000 / RES)
    return max(4096, math.ceil((largest + 2 * MARGIN) / TILE) * TILE)


def scene_time(index: int) -> dt.datetime:
    """One date per scene (a time series, never grouped into one time step)."""
    return dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC) + dt.timedelta(days=5 * index)


def stac_items(scenes: list[dict[str, Path]], base_url: str, size: int) -> list[dict]:
    """STAC items for the peers, with ``raster:bands`` (uint16, nodata 0)."""
    from testbed.scenes import Scene, stac_item

    items = []
    for index, files in enumerate(scenes):
        scene = Scene(id=f"s{index:03d}", datetime=scene_time(index), epsg=EPSG,
                      transform=(RES, 0.0, ORIGIN[0], 0.0, -RES, ORIGIN[1]), width=size,
                      height=size, cloud_cover=0.0, files=dict(files))
        item = stac_item(scene, lambda _s, _b, path: f"{base_url}/{path.name}", style="planetary")
        item["properties"]["proj:epsg"] = EPSG
        item["stac_extensions"] = [
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        ]
        for asset in item["assets"].values():
            asset["raster:bands"] = [
                {"data_type": "uint16", "nodata": 0, "spatial_resolution": RES}]
        items.append(item)
    return items


def aligned_chunks(offset: int, length: int, step: int) -> tuple[int, ...]:
    """Chunk sizes along an output axis starting ``offset`` px into the scenes, with
    edges on the scenes' multiples of ``step`` (a multiple of the tile size), so no chunk
    edge cuts through a tile."""
    edges = [0, *range(step - offset % step, length, step), length]
    return tuple(b - a for a, b in zip(edges, edges[1:]) if b > a)


# -- reader subprocess ---------------------------------------------------------------
def slices(reader: str, result: Any) -> list:
    """The reader's pixels as 2-D arrays in (time, band) order."""
    if reader == "rasteret get_numpy":
        return [result[t, b] for t in range(result.shape[0]) for b in range(result.shape[1])]
    if reader in ("rasteret get_xarray", "odc-stac eager", "rasteret get_xarray chunked",
                  "odc-stac dask"):
        arrays = [result[band].values for band in BANDS]
        return [a[t] for t in range(arrays[0].shape[0]) for a in arrays]
    if reader == "stackstac dask":
        return [result[t, b] for t in range(result.shape[0]) for b in range(result.shape[1])]
    return result  # rasterio: one array per (scene, band), scenes in time order


def digest(reader: str, result: Any) -> dict[str, Any]:
    """A hash per (time, band) slice, the slices' shape and dtype, the output's bytes."""
    import numpy as np

    parts = slices(reader, result)
    hashes = []
    for part in parts:
        h = hashlib.blake2b(digest_size=16)
        h.update(np.ascontiguousarray(part))
        hashes.append(h.hexdigest())
    return {"hashes": hashes, "shape": list(parts[0].shape), "dtype": str(parts[0].dtype),
            "nbytes": sum(p.nbytes for p in parts)}


def make_reader(spec: dict[str, Any]) -> Callable[[], Any]:
    """Set up the named reader (imports, collection, items, open files): a callable
    reading the AOI once."""
    reader, aoi, threads = spec["reader"], tuple(spec["aoi"]), spec["threads"]
    if reader == "rasteret get_xarray chunked":
        import dask

        import rasteret

        collection = rasteret.load("aoi", workspace_dir=spec["workspace"])

        def chunked():
            data = collection.get_xarray(aoi, list(BANDS), geometry_crs=EPSG, chunks="auto")
            with dask.config.set(scheduler="threads", num_workers=threads):
                return data.compute()
        return chunked
    if reader == "odc-stac dask":
        import dask
        import odc.stac
        import pystac

        items = [pystac.Item.from_dict(i) for i in spec["items"]]

        def odc_chunked():
            data = odc.stac.load(items, bands=list(BANDS), crs=f"EPSG:{EPSG}",
                                 resolution=RES, x=(aoi[0], aoi[2]), y=(aoi[1], aoi[3]),
                                 dtype="uint16",
                                 chunks={"time": 1, "x": spec["chunks"], "y": spec["chunks"]})
            with dask.config.set(scheduler="threads", num_workers=threads):
                return data.compute()
        return odc_chunked
    if reader.startswith("rasteret"):
        import rasteret

        collection = rasteret.load("aoi", workspace_dir=spec["workspace"])
        method = collection.get_numpy if reader.endswith("numpy") else collection.get_xarray
        return lambda: method(aoi, list(BANDS), geometry_crs=EPSG)
    if reader == "odc-stac eager":
        import odc.stac
        import pystac

        items = [pystac.Item.from_dict(i) for i in spec["items"]]
        return lambda: odc.stac.load(items, bands=list(BANDS), crs=f"EPSG:{EPSG}",
                                     resolution=RES, x=(aoi[0], aoi[2]), y=(aoi[1], aoi[3]),
                                     dtype="uint16", pool=threads)
    if reader == "stackstac dask":
        import dask
        import numpy as np
        import pystac
        import stackstac

        items = [pystac.Item.from_dict(i) for i in spec["items"]]
        side = round((aoi[2] - aoi[0]) / RES)

        def run():
            chunks = (aligned_chunks(round((ORIGIN[1] - aoi[3]) / RES), side, spec["chunks"]),
                      aligned_chunks(round((aoi[0] - ORIGIN[0]) / RES), side, spec["chunks"]))
            array = stackstac.stack(items, assets=list(BANDS), epsg=EPSG, resolution=RES,
                                    bounds=aoi, chunksize=chunks, dtype=np.uint16,
                                    fill_value=np.uint16(0), rescale=False)
            with dask.config.set(scheduler="threads", num_workers=threads):
                return array.compute().values
        return run
    import rasterio
    from _common import OpenDatasets
    from rasterio.windows import from_bounds

    urls = spec["urls"]
    if reader == "rasterio files open":
        opened = OpenDatasets(urls, threads)

        def one_open(url):
            src = opened.get(url)
            return src.read(1, window=from_bounds(*aoi, src.transform))
        return lambda: list(opened.pool.map(one_open, urls))

    def one(url):
        with rasterio.open(f"/vsicurl/{url}") as src:
            return src.read(1, window=from_bounds(*aoi, src.transform))

    def opening():
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, urls))
    return opening


def child(spec_path: str) -> None:
    """Run one reader: set up, warm up (report its digest), then the timed reads."""
    spec = json.loads(Path(spec_path).read_text())
    os.environ.update(GDAL_ENV)

    def send(kind: str, payload: dict) -> None:
        print(TAG + json.dumps({"kind": kind, **payload}), flush=True)

    run = make_reader(spec)
    send("ready", {"rss": proc_status("self", "VmRSS")})
    if sys.stdin.readline().strip() != "go":
        return
    reset_peak()
    result = run()
    summary = digest(spec["reader"], result)
    del result
    send("warm", summary)
    if sys.stdin.readline().strip() != "go":
        return
    cpu = process_cpu()
    times = []
    for _ in range(spec["repeat"]):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    send("done", {"times": times, "cpu": (process_cpu() - cpu) / spec["repeat"],
                  "peak": proc_status("self", "VmHWM")})


# -- driver --------------------------------------------------------------------------
class ReaderProcess:
    """One reader's subprocess, driven line by line."""

    def __init__(self, spec: dict[str, Any]) -> None:
        handle = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        with handle:
            json.dump(spec, handle)
        self.spec_path = handle.name
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", handle.name], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)

    def receive(self, kind: str) -> dict[str, Any]:
        """The next protocol message (other output is passed through)."""
        for line in self.proc.stdout:
            if line.startswith(TAG):
                message = json.loads(line[len(TAG):])
                assert message["kind"] == kind, message
                return message
            sys.stdout.write(line)
        raise RuntimeError(f"reader process ended early (exit {self.proc.wait()})")

    def send(self, word: str) -> None:
        """Tell the process to go on (``go``) or stop."""
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        """Wait for the process and remove its spec."""
        if self.proc.poll() is None:
            self.send("stop")
        self.proc.wait()
        os.unlink(self.spec_path)


def measure(spec: dict[str, Any], nginx, reference: dict | None) -> dict[str, Any]:
    """Run one reader in a fresh process; check its pixels against ``reference``."""
    process = ReaderProcess(spec)
    try:
        ready = process.receive("ready")
        nginx.clear_log()
        process.send("go")
        warm = process.receive("warm")
        records = nginx.requests()
        if reference is not None:
            same = (warm["shape"] == reference["shape"] and warm["dtype"] == reference["dtype"]
                    and warm["hashes"] == reference["hashes"])
            if not same:
                differing = sum(a != b for a, b in zip(warm["hashes"], reference["hashes"]))
                raise AssertionError(
                    f"{spec['reader']} returned other pixels than {REFERENCE}: shape "
                    f"{warm['shape']} {warm['dtype']} vs {reference['shape']} "
                    f"{reference['dtype']}, {differing} of {len(warm['hashes'])} slices differ")
        server = nginx.cpu_seconds()
        process.send("go")
        done = process.receive("done")
        server = (nginx.cpu_seconds() - server) / spec["repeat"]
    finally:
        process.close()
    times = sorted(done["times"])
    return {**warm, "seconds": times[len(times) // 2], "cpu": done["cpu"],
            "server_cpu": server, "peak": done["peak"], "rss_before": ready["rss"],
            "requests": len(records), "bytes": sum(r.body_bytes for r in records)}


def floor_jobs(collection, folder: Path, aoi: tuple[float, ...]) -> list[tuple]:
    """``(bytes, level, chunk)`` for every tile the AOI covers, read from the files."""
    from rasteret.read.plan import Window, covering_chunks

    jobs = []
    side = round((aoi[2] - aoi[0]) / RES)
    for row in range(len(collection)):
        for band in BANDS:
            cog = collection.cog(row, band)
            t = cog.transform
            window = Window(round((aoi[0] - t.c) / t.a), round((aoi[3] - t.f) / t.e), side, side)
            level = cog.header.levels[0]
            with open(folder / cog.url.rsplit("/", 1)[-1], "rb") as handle:
                for chunk in covering_chunks(level, window, (0,)):
                    handle.seek(chunk.start)
                    jobs.append((handle.read(chunk.length), level, chunk))
    return jobs


def main() -> None:
    args = parse_args()
    if args.child:
        child(args.child)
        return
    if args.quick:
        args.aois, args.scenes, args.repeat = "2", "10", 1
    import rasteret

    kms = [float(v) for v in args.aois.split(",")]
    size = args.size or scene_size(kms)
    wanted = [r.strip() for r in args.readers.split(",")]
    readers = []
    for reader in READERS:
        if reader not in wanted:
            continue
        module = NEEDS.get(reader)
        if module and importlib.util.find_spec(module.split(".")[0]) is None:
            print(f"skipping {reader}: {module} is not installed (make bench-deps)")
            continue
        readers.append(reader)
    rows = []
    for count in [int(v) for v in args.scenes.split(",")]:
        folder = Path(args.data) / f"{count}x{size}"
        scenes = scene_set(folder, scenes=count, size=size, bands=BANDS, stacked=True)
        for latency in [float(v) for v in args.latencies.split(",")]:
            with latency_server(folder, latency, args.latency_by) as (nginx, base_url):
                table = pa.Table.from_pylist([
                    {"id": f"s{i:03d}", "datetime": scene_time(i),
                     **{b: f"{base_url}/{files[b].name}" for b in BANDS}}
                    for i, files in enumerate(scenes)
                ])
                workspace = tempfile.mkdtemp(prefix="bench-aoi-")
                collection = rasteret.build_from_table(
                    table, name="aoi", href_columns=list(BANDS), workspace_dir=workspace,
                    progress=False)
                items = stac_items(scenes, base_url, size)
                urls = [f"{base_url}/{files[b].name}" for files in scenes for b in BANDS]
                for km in kms:
                    aoi = aoi_bounds(km, size)
                    floors = ("-", "-")
                    if km <= args.floor_max_km:
                        floor, rows_floor = decode_floors(floor_jobs(collection, folder, aoi))
                        floors = (f"{floor:.3f}", f"{rows_floor:.3f}")
                    measured, reference = {}, None
                    for reader in readers:
                        spec = {"reader": reader, "aoi": aoi, "threads": args.threads,
                                "repeat": args.repeat, "chunks": args.chunks,
                                "workspace": workspace, "items": items,
                                "urls": urls}
                        measured[reader] = m = measure(spec, nginx, reference)
                        if reader == REFERENCE:
                            reference = m
                        print(f"{km:g} km, {latency * 1000:.0f} ms, {reader}: "
                              f"{m['seconds']:.3f} s", flush=True)
                    base = measured.get(PEER_BASELINE)
                    for reader, m in measured.items():
                        ratio = f"{base['seconds'] / m['seconds']:.2f}x" if base else "-"
                        rows.append([
                            f"{km:g} km", f"{count}", f"{latency * 1000:.0f} ms", reader,
                            f"{m['seconds']:.3f}", ratio, f"{m['peak'] / 1e9:.2f}",
                            f"{m['rss_before'] / 1e9:.2f}", f"{m['nbytes'] / 1e6:.1f}",
                            str(m["requests"]), f"{m['bytes'] / 1e6:.1f}", f"{m['cpu']:.2f}",
                            f"{m['server_cpu']:.2f}", *floors])
    print_table(
        f"Areas over a time series, 2 bands, stacked {size}-px scenes (512-px tiles, uint16, "
        f"deflate + predictor 2), local nginx, latency by {args.latency_by}, {cores()} cores, "
        f"medians of {args.repeat}; each reader in a fresh process: peak RSS during the reads "
        "(VmHWM reset after set-up) and RSS before them; output MB; requests and MB fetched "
        "(nginx log, warm-up run); CPU s per run of the reader process and of nginx; floors: "
        "decode time of the tiles needed / cores, whole and down to the last row needed. "
        "Same pixels as rasteret get_numpy checked for every reader",
        ["AOI", "scenes", "latency", "reader", "median s", "speed-up vs odc-stac",
         "peak RSS GB", "RSS before GB", "output MB", "requests", "MB fetched", "CPU s",
         "nginx CPU s", "decode floor s", "floor, rows needed s"],
        rows,
    )


if __name__ == "__main__":
    main()
