"""Lazy, chunked xarray (issue 14, item 3): ``get_xarray(chunks=...)`` returns dask
arrays whose values, coordinates and attributes equal the eager call's, under the
threaded scheduler and a 2-process ``distributed.LocalCluster``; tasks reuse their
process's backend (one store per worker, not per task); ``chunks="auto"`` puts chunk
edges on the tile grid; and ``.to_zarr()`` of an output four times a worker's memory
limit streams through workers that never exceed it."""

from __future__ import annotations

import datetime as dt
import pickle
import threading
import time

import dask
import distributed
import numpy as np
import pyarrow as pa
import pytest
import shapely
import xarray as xr

import rasteret
from rasteret import lazy
from rasteret.errors import ConfigurationError
from rasteret.io.backend import Backend
from testbed.scenes import write_scenes

BANDS = ["B04", "B08"]
#: Crosses tile edges (256 px) and the east edge of the first scene.
BOUNDS = (500_000 + 180 * 10, 4_100_000 - 520 * 10, 500_000 + 760 * 10, 4_100_000 - 30 * 10)
CHUNKS = {"time": 1, "y": 128, "x": 200}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("lazy")
    utm33 = write_scenes(root / "z33", count=3, size=600, tile=256, shift=200, seed=5,
                         bands=("B04", "B08"), label=False, days_between=7)
    utm32 = write_scenes(root / "z32", count=1, size=600, tile=256, seed=9, epsg=32632,
                         origin=(1_034_000.0, 4_117_000.0), bands=("B04", "B08"), label=False,
                         start=utm33[-1].datetime.replace(day=28))
    utm32[0].id = "S2X_SYN_Z32"
    return utm33, utm32


def build(scenes, workspace, name):
    rows = [{"id": s.id, "datetime": s.datetime, "B04": str(s.files["B04"]),
             "B08": str(s.files["B08"]), "eo:cloud_cover": s.cloud_cover} for s in scenes]
    return rasteret.build_from_table(pa.Table.from_pylist(rows), name=name,
                                     href_columns=BANDS, workspace_dir=workspace,
                                     progress=False)


@pytest.fixture(scope="module")
def utm(scenes, tmp_path_factory):
    return build(scenes[0], tmp_path_factory.mktemp("ws"), "utm33")


@pytest.fixture(scope="module")
def mixed(scenes, tmp_path_factory):
    return build(scenes[0] + scenes[1], tmp_path_factory.mktemp("ws2"), "mixed")


def assert_same(lazy_ds: xr.Dataset, eager: xr.Dataset) -> None:
    """Values (NaN-aware), dtypes, coordinates and attributes all equal."""
    for band in eager.data_vars:
        if band == "id":
            continue
        assert dask.is_dask_collection(lazy_ds[band].data), band
    computed = lazy_ds.compute()
    assert list(computed.data_vars) == list(eager.data_vars)
    for band in eager.data_vars:
        assert computed[band].dtype == eager[band].dtype, band
        np.testing.assert_array_equal(computed[band].values, eager[band].values)
        assert computed[band].attrs == eager[band].attrs, band
        assert computed[band].dims == eager[band].dims
    for name in ("time", "y", "x"):
        np.testing.assert_array_equal(computed[name].values, eager[name].values)
    assert computed["spatial_ref"].attrs == eager["spatial_ref"].attrs
    assert computed.attrs == eager.attrs
    xr.testing.assert_identical(computed, eager)


@pytest.mark.parametrize("options", [{}, {"masked": True}, {"apply_scale": True}])
def test_threaded_equals_eager(utm, options):
    eager = utm.get_xarray(BOUNDS, BANDS, geometry_crs=32633, **options)
    with dask.config.set(scheduler="threads"):
        assert_same(utm.get_xarray(BOUNDS, BANDS, geometry_crs=32633, chunks=CHUNKS,
                                   **options), eager)


def test_polygon_mask_and_time_chunks_equal_eager(utm):
    triangle = shapely.Polygon([(502_000, 4_097_000), (505_000, 4_097_000),
                                (503_500, 4_095_000)])
    eager = utm.get_xarray(triangle, ["B08"], geometry_crs=32633)
    chunked = utm.get_xarray(triangle, ["B08"], geometry_crs=32633,
                             chunks={"time": 2, "y": 64, "x": -1})
    assert chunked["B08"].data.chunks[0] == (2, 1)
    with dask.config.set(scheduler="threads"):
        assert_same(chunked, eager)


def test_reprojected_mosaic_equals_eager(mixed):
    # A box spanning both zones: the 32N scene is reprojected onto the 33N grid.
    box = (14.99, 37.02, 15.06, 37.07)
    eager = mixed.get_xarray(box, BANDS, masked=True)
    with dask.config.set(scheduler="threads"):
        assert_same(mixed.get_xarray(box, BANDS, masked=True, chunks="auto"), eager)


def test_several_geometries_give_several_lazy_datasets(utm):
    boxes = [BOUNDS, (501_000, 4_096_000, 503_000, 4_098_000)]
    eager = utm.get_xarray(boxes, BANDS, geometry_crs=32633)
    chunked = utm.get_xarray(boxes, BANDS, geometry_crs=32633, chunks=CHUNKS)
    assert isinstance(chunked, list) and len(chunked) == 2
    for one, other in zip(chunked, eager):
        assert_same(one, other)


def test_nothing_is_read_until_computed(utm, monkeypatch):
    calls = []
    original = lazy.read_block
    monkeypatch.setattr(lazy, "read_block", lambda *a: calls.append(1) or original(*a))
    ds = utm.get_xarray(BOUNDS, BANDS, geometry_crs=32633, chunks=CHUNKS)
    assert not calls
    # One task per band, scene and spatial chunk.
    assert ds["B04"].data.npartitions == 3 * 4 * 3
    ds["B04"].isel(time=0, y=slice(0, 10), x=slice(0, 10)).compute(scheduler="threads")
    assert len(calls) == 1  # only the one chunk that holds those pixels


def test_auto_chunks_fall_on_the_tile_grid(utm, monkeypatch):
    # Spatial chunks of about one tile (256 px) here. The box starts 180 px into the
    # scenes: chunk edges fall where the scenes' pixel index is a multiple of 256; the
    # 76-px first piece joins the next chunk.
    monkeypatch.setattr(lazy, "AUTO_EDGE", 256)
    bounds = (500_000 + 180 * 10, 4_100_000 - 590 * 10, 500_000 + 990 * 10, 4_100_000 - 10 * 10)
    eager = utm.get_xarray(bounds, ["B04"], geometry_crs=32633)
    ds = utm.get_xarray(bounds, ["B04"], geometry_crs=32633, chunks="auto")
    time_chunks, y_chunks, x_chunks = ds["B04"].data.chunks
    assert time_chunks == (1, 1, 1)
    assert x_chunks == (332, 256, 222)
    assert y_chunks == (246, 334)  # edges at 256 px; the 78-px last piece joined
    assert_same(ds, eager)


def test_auto_chunks_on_a_large_grid():
    layout = lazy.chunk_layout("auto", _grid(7000, 9000), 5, None)
    assert layout == ((1,) * 5, (2048,) * 4 + (808,), (2048, 2048, 2048, 856))
    # A grid 180 px into a scene of 512-px tiles: edges at the scene's multiples of
    # 2048 px (1868 px into the grid), the 1868-px first chunk kept (over half a step).
    layout = lazy.chunk_layout("auto", _grid(5000, 100), 1, _ShiftedView(col=180))
    assert layout[2] == (1868, 2048, 1084) and layout[1] == (100,)


class _ShiftedView:
    """The fields chunk_layout reads from a reference view: a 512-px tiled scene whose
    top-left corner is ``col`` pixels west of the grid's."""

    def __init__(self, col):
        from affine import Affine
        from pyproj import CRS

        self.crs = CRS.from_epsg(32633)
        self.transform = Affine(10, 0, 500_000 - col * 10, 0, -10, 4_100_000)
        self.tile_width = self.tile_height = 512


def _grid(width, height):
    from affine import Affine
    from pyproj import CRS

    from rasteret.read.warp import GridSpec

    return GridSpec(CRS.from_epsg(32633), Affine(10, 0, 500_000, 0, -10, 4_100_000), width,
                    height)


@pytest.mark.parametrize("chunks", ["big", {"band": 1, "z": 3}, {"y": 0}, {"x": 1.5}, 5])
def test_bad_chunks_are_refused(utm, chunks):
    with pytest.raises(ConfigurationError, match="chunks"):
        utm.get_xarray(BOUNDS, BANDS, geometry_crs=32633, chunks=chunks)


def test_skip_is_refused_for_lazy_reads(utm):
    with pytest.raises(ConfigurationError, match="on_error"):
        utm.get_xarray(BOUNDS, BANDS, geometry_crs=32633, chunks=CHUNKS, on_error="skip")


def test_views_in_the_graph_hold_only_their_own_record(utm):
    view = utm.band_view(1, "B04")
    small = view.detached()
    assert len(small._source) == 1 and small.record() == view.record()
    assert small.href == view.href


def test_tasks_reuse_the_process_backend(utm, monkeypatch):
    builds = []
    original = Backend._build_store
    monkeypatch.setattr(Backend, "_build_store",
                        lambda self, target: builds.append(target) or original(self, target))
    # A description no other test used: this process keeps no backend for it yet.
    backend = rasteret.create_backend(region="lazy-reuse-test")
    ds = utm.get_xarray(BOUNDS, BANDS, geometry_crs=32633, chunks=CHUNKS, backend=backend)
    ds.compute(scheduler="threads")
    ds.compute(scheduler="threads")
    assert len(builds) == 1  # 72 tasks, two computes: one local store
    token = lazy.backend_token(backend)
    copy = pickle.loads(pickle.dumps(backend))
    assert lazy.backend_token(copy) == token
    assert lazy.process_backend(token, copy) is lazy.process_backend(token, backend)


def _count_store_builds() -> None:
    """Runs on each worker: count the stores its backends build."""
    import rasteret.io.backend as module

    module.BUILDS = 0  # type: ignore[attr-defined]
    original = module.Backend._build_store

    def counting(self, target):
        module.BUILDS += 1  # type: ignore[attr-defined]
        return original(self, target)

    module.Backend._build_store = counting


def _store_builds() -> int:
    import rasteret.io.backend as module

    return int(module.BUILDS)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as local, \
            distributed.Client(local) as client:
        yield client


def test_distributed_equals_eager_with_one_store_per_worker(utm, cluster):
    cluster.run(_count_store_builds)
    for options in ({}, {"apply_scale": True}):
        eager = utm.get_xarray(BOUNDS, BANDS, geometry_crs=32633, **options)
        chunked = utm.get_xarray(BOUNDS, BANDS, geometry_crs=32633, chunks=CHUNKS, **options)
        assert_same(chunked, eager)  # computed by the client (the default scheduler now)
    builds = cluster.run(_store_builds)
    # 144 tasks over 2 workers; a worker that ran any builds its one store once.
    assert sum(builds.values()) >= 1 and all(count <= 1 for count in builds.values())


# -- bigger than memory: .to_zarr() streams ------------------------------------------------
#: Worker memory limit. A worker that imported rasteret, xarray and zarr holds about
#: 230 MB before its first task, and Dask pauses it at 80% of the limit.
MEMORY_LIMIT = 400_000_000
#: One 4096² uint16 image (33.5 MB) listed 48 times: 1.6 GB of output, 4x the limit.
TIMES = 48


@pytest.fixture(scope="module")
def big(nginx_server, tmp_path_factory):
    """One 4096² uint16 tiled GeoTIFF on nginx (a smooth pattern: quick to write and
    to decode), listed :data:`TIMES` times in a collection."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    path = nginx_server.root / "lazy-big" / "B04.tif"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, cols = np.mgrid[0:4096, 0:4096]
    truth = ((rows * 7 + cols * 3) % 10_000 + 1).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=4096, height=4096, count=1,
                       dtype="uint16", crs="EPSG:32633", nodata=0, tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate",
                       transform=from_origin(500_000, 4_100_000, 10, 10)) as dst:
        dst.write(truth, 1)
    href = f"{nginx_server.url}/lazy-big/B04.tif"
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    table = pa.Table.from_pylist([
        {"id": f"copy-{i:02d}", "datetime": start + dt.timedelta(days=i), "B04": href}
        for i in range(TIMES)])
    collection = rasteret.build_from_table(
        table, name="big", href_columns=["B04"],
        workspace_dir=tmp_path_factory.mktemp("ws-big"), progress=False)
    return collection, truth


#: How much a worker may grow while streaming, over its own baseline (its RSS once
#: it has imported what the tasks import, before the first task). A 2048² uint16 chunk
#: is 8 MB; a task holds its chunk, the tiles it decodes and zarr's encoded copy, and
#: the allocator keeps some freed pages: 20 chunks' worth is the margin. A worker that
#: kept its results would grow by its half of the output, 800 MB, five times as much.
GROWTH_MARGIN = 160_000_000


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _warm_rss() -> int:
    """A worker's RSS after the imports its tasks need (its baseline)."""
    import xarray  # noqa: F401
    import zarr  # noqa: F401

    import rasteret  # noqa: F401

    return _rss()


def test_to_zarr_streams_four_times_the_worker_memory(big, tmp_path):
    collection, truth = big
    bounds = (500_000, 4_100_000 - 4096 * 10, 500_000 + 4096 * 10, 4_100_000)
    ds = collection.get_xarray(bounds, ["B04"], geometry_crs=32633,
                               chunks={"time": 1, "y": 2048, "x": 2048})
    assert ds["B04"].nbytes >= 4 * MEMORY_LIMIT
    # No spilling to disk: a worker must hold its tasks in memory or be paused/killed.
    settings = {"distributed.worker.memory.target": False,
                "distributed.worker.memory.spill": False}
    with dask.config.set(settings), distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
            memory_limit=MEMORY_LIMIT) as local, distributed.Client(local) as client:
        workers = set(client.scheduler_info()["workers"])
        baselines = client.run(_warm_rss)
        peaks: dict[str, int] = {}
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                for address, rss in client.run(_rss).items():
                    peaks[address] = max(peaks.get(address, 0), rss)
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            ds.to_zarr(tmp_path / "out.zarr", mode="w")
        finally:
            done.set()
            watcher.join()
        assert set(client.scheduler_info()["workers"]) == workers  # none was restarted
    growth = {address: peaks[address] - baselines[address] for address in peaks}
    assert growth and max(growth.values()) < GROWTH_MARGIN, (growth, baselines)
    stored = xr.open_zarr(tmp_path / "out.zarr")
    assert stored["B04"].shape == (TIMES, 4096, 4096)
    for t in (0, TIMES // 2, TIMES - 1):
        np.testing.assert_array_equal(stored["B04"][t].values, truth)
