"""Large-area reads: tiles decode straight into the result, memory is the output plus a
fixed working set, and the bytes in flight are bounded."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import shapely

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import from_bounds  # noqa: E402

import rasteret  # noqa: E402
from rasteret.pixels import clip_outside  # noqa: E402
from rasteret.read.execute import ByteBudget  # noqa: E402
from rasteret.read.warp import GridSpec, read_into_grid  # noqa: E402

SIZE = 4096
SCENES = 3
BANDS = ["B04", "B08"]
ORIGIN = (500_000.0, 4_100_000.0)
MB = 1024 * 1024


def _write(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    ramp = (np.arange(SIZE, dtype=np.uint16)[None, :] // 8 + 1000)
    data = (ramp + rng.integers(0, 64, (SIZE, SIZE), dtype=np.uint16)).astype(np.uint16)
    profile = {"driver": "GTiff", "width": SIZE, "height": SIZE, "count": 1, "dtype": "uint16",
               "crs": "EPSG:32633", "transform": from_origin(*ORIGIN, 10, 10), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate", "predictor": 2,
               "nodata": 0}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """``SCENES`` stacked 4096-px scenes of two bands (12 files of 32 MB of pixels)."""
    root = tmp_path_factory.mktemp("large")
    rows = []
    for index in range(SCENES):
        row = {"id": f"s{index}", "datetime": f"2024-01-{index + 1:02d}T10:00:00Z"}
        for b, band in enumerate(BANDS):
            row[band] = str(_write(root / f"s{index}_{band}.tif", index * 10 + b))
        rows.append(row)
    workspace = tmp_path_factory.mktemp("large-ws")
    collection = rasteret.build_from_table(pa.Table.from_pylist(rows), name="large",
                                           href_columns=BANDS, workspace_dir=workspace,
                                           progress=False)
    return collection, workspace, rows


def _bounds(pixels: int) -> tuple[float, float, float, float]:
    """A square of ``pixels`` starting 40 px into the scenes (not on a tile edge)."""
    minx, maxy = ORIGIN[0] + 400, ORIGIN[1] - 400
    return minx, maxy - pixels * 10, minx + pixels * 10, maxy


def test_large_read_equals_rasterio(large):
    collection, _, rows = large
    bounds = _bounds(1500)
    data = collection.get_numpy(bounds, BANDS, geometry_crs=32633)
    assert data.shape == (SCENES, 2, 1500, 1500)
    for t, row in enumerate(rows):
        for b, band in enumerate(BANDS):
            with rasterio.open(row[band]) as src:
                expected = src.read(1, window=from_bounds(*bounds, transform=src.transform))
            np.testing.assert_array_equal(data[t, b], expected)


def test_get_numpy_allocates_the_output_once(large):
    """Traced allocations peak at the output plus decode buffers: no per-scene arrays,
    no stacking copy (the old path peaked at twice the output)."""
    collection, _, _ = large
    bounds = _bounds(2000)
    collection.get_numpy(_bounds(100), BANDS, geometry_crs=32633)  # warm imports, pools
    tracemalloc.start()
    try:
        data = collection.get_numpy(bounds, BANDS, geometry_crs=32633)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.nbytes == SCENES * 2 * 2000 * 2000 * 2
    # tracemalloc counts from its start, so the baseline is this process's state after
    # the warm-up read. Margin 16 MB: the decode buffers in flight (a few 512² tiles
    # per thread) and the plan; a second copy of the output would exceed it 14-fold.
    assert peak < data.nbytes + 16 * MB, (peak / MB, data.nbytes / MB)


def test_get_xarray_costs_no_more_memory_than_get_numpy(large):
    collection, _, _ = large
    bounds = _bounds(2000)
    collection.get_xarray(_bounds(100), BANDS, geometry_crs=32633)
    tracemalloc.start()
    try:
        dataset = collection.get_xarray(bounds, BANDS, geometry_crs=32633)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    nbytes = sum(dataset[b].nbytes for b in BANDS)
    assert nbytes == SCENES * 2 * 2000 * 2000 * 2
    # Baseline and margin as in test_get_numpy_allocates_the_output_once.
    assert peak < nbytes + 16 * MB, (peak / MB, nbytes / MB)


def test_native_grid_read_fills_the_given_array(large):
    """On the native grid the result is the destination the tiles were decoded into."""
    collection, _, rows = large
    cog = collection.cog(0, "B04")
    grid = GridSpec(cog.crs, from_origin(ORIGIN[0] + 400, ORIGIN[1] - 400, 10, 10), 700, 600)
    out = np.empty((2, 1, 600, 700), np.uint16)
    target = out[1]
    result = asyncio.run(read_into_grid(cog, grid, bands=[1], out=target))
    assert result is target
    with rasterio.open(rows[0]["B04"]) as src:
        expected = src.read(1, window=((40, 640), (40, 740)))
    np.testing.assert_array_equal(out[1, 0], expected)


_CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import rasteret

    workspace, bounds = sys.argv[1], json.loads(sys.argv[2])

    def status(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    collection = rasteret.load("large", workspace_dir=workspace)
    collection.get_numpy((bounds[0], bounds[3] - 1000, bounds[0] + 1000, bounds[3]),
                         ["B04", "B08"], geometry_crs=32633)  # imports, pools, threads
    Path("/proc/self/clear_refs").write_text("5")  # peak := current
    before = status("VmRSS")
    data = collection.get_numpy(tuple(bounds), ["B04", "B08"], geometry_crs=32633)
    print(json.dumps({"before": before, "peak": status("VmHWM"), "nbytes": data.nbytes}))
""")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_rss_is_the_output_plus_a_fixed_working_set(large):
    """A fresh process reading ~190 MB grows by at most 1.25x that plus 192 MB (the old
    path held every tile's compressed bytes and a second copy of the result)."""
    _, workspace, _ = large
    bounds = _bounds(SIZE - 80)
    run = subprocess.run([sys.executable, "-c", _CHILD, str(workspace), json.dumps(bounds)],
                         capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(run.stdout.strip().splitlines()[-1])
    # Baseline: the child's RSS after a warm-up read, its high-water mark reset there.
    # Margin: 1.25x for pages the allocator keeps after freeing them, plus 192 MB for
    # decode buffers, thread stacks and the compressed tiles in flight.
    growth = report["peak"] - report["before"]
    assert report["nbytes"] == SCENES * 2 * (SIZE - 80) ** 2 * 2
    assert growth <= 1.25 * report["nbytes"] + 192 * MB, (growth / MB, report["nbytes"] / MB)


def test_byte_budget_bounds_bytes_in_flight():
    async def scenario() -> None:
        budget = ByteBudget(100)
        assert await budget.acquire(60) == 60
        waiter = asyncio.ensure_future(budget.acquire(50))
        await asyncio.sleep(0)
        assert not waiter.done() and budget.used == 60
        cancelled = asyncio.ensure_future(budget.acquire(10))
        await asyncio.sleep(0)
        cancelled.cancel()  # a cancelled waiter never takes room
        await asyncio.sleep(0)
        budget.release(60)
        assert await waiter == 50 and budget.used == 50
        budget.release(50)
        # Larger than the whole budget: let through alone, capped at the limit.
        assert await budget.acquire(500) == 100 and budget.used == 100
        late = asyncio.ensure_future(budget.acquire(1))
        await asyncio.sleep(0)
        assert not late.done()
        budget.release(100)
        assert await late == 1 and budget.used == 1

    asyncio.run(scenario())


@pytest.mark.parametrize("bounds", [
    (1000.4, 2000.0, 1100.0, 2090.6),   # a rectangle not on pixel edges
    (995.0, 1990.0, 1105.0, 2105.0),     # wider than the grid: nothing masked
    (1003.0, 2003.0, 1003.5, 2050.0),    # narrower than a pixel: everything masked
])
def test_rectangle_mask_equals_the_polygon_mask(bounds):
    from pyproj import CRS

    crs = CRS.from_epsg(32633)
    grid = GridSpec(crs, from_origin(1000, 2100, 2, 2), 50, 50)
    data = np.ones((2, 1, 50, 50), np.uint16)
    clip_outside(data, grid, shapely.box(*bounds), [[np.uint16(0)]] * 2)
    t = grid.transform
    xx, yy = np.meshgrid(t.c + (np.arange(50) + 0.5) * t.a, t.f + (np.arange(50) + 0.5) * t.e)
    inside = shapely.contains_xy(shapely.box(*bounds), xx, yy)
    for time in range(2):
        np.testing.assert_array_equal(data[time, 0], inside.astype(np.uint16))


def _reprojected_read(cog, resampling):
    """2,000 x 1,500 px of ``cog`` on a 12 m grid in the neighbouring UTM zone."""
    from pyproj import CRS, Transformer

    x, y = Transformer.from_crs(32633, 32632, always_xy=True).transform(
        ORIGIN[0] + 4000, ORIGIN[1] - 4000)
    grid = GridSpec(CRS.from_epsg(32632), from_origin(x, y, 12, 12), 2000, 1500)
    return asyncio.run(read_into_grid(cog, grid, bands=[1], resampling=resampling))


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_reprojection_fills_the_destination_strip_by_strip(large, monkeypatch, resampling):
    """Strips (here 40 small ones) give the same pixels as one strip, and the
    reprojection's temporaries are bounded by a strip, not by the output."""
    from rasteret.read import warp

    collection, _, _ = large
    cog = collection.cog(0, "B04")
    whole = _reprojected_read(cog, resampling)
    monkeypatch.setattr(warp, "STRIP_PIXELS", 2000 * 30)
    monkeypatch.setattr(warp, "STRIP_TILE_ROWS", 0)
    assert warp.strip_rows(cog, GridSpec(cog.crs, cog.transform, 2000, 1500), None) == 30
    tracemalloc.start()
    try:
        strips = _reprojected_read(cog, resampling)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(strips, whole)
    assert (whole != 0).mean() > 0.9  # the grid lies inside the scene
    # Output 6 MB; one strip's coordinates and temporaries are well under 8 MB, the
    # whole grid's would be 48 MB (nearest) to over 100 MB (bilinear).
    assert peak < strips.nbytes + 16 * MB, (peak / MB, strips.nbytes / MB)
