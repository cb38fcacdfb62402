"""sample_points: time matching, nearest valid pixel, windows, kinds in and out, one
request per tile (from the nginx log), and dask DataFrames (threads and a LocalCluster).

Pixel truth comes from rasterio on the same files.
"""

from __future__ import annotations

import datetime as dt
import pickle
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import shapely

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import Window  # noqa: E402

import rasteret  # noqa: E402
from rasteret.errors import ConfigurationError, NoCoverageError  # noqa: E402
from rasteret.options import ReadOptions  # noqa: E402

EPSG = 32633
LEFT, TOP = 500_000.0, 4_100_000.0
SIZE, TILE = 320, 64
START = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)
DAYS = 10
CLOUD = [8, 9]


def _write(path, data, res, nodata):
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
               "dtype": data.dtype, "crs": f"EPSG:{EPSG}", "nodata": nodata,
               "transform": from_origin(LEFT, TOP, res, res), "tiled": True,
               "blockxsize": TILE, "blockysize": TILE, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


@pytest.fixture(scope="module")
def files(tmp_path_factory, nginx_server):
    """Three dates over one footprint: B04 and B08 at 10 m (uint16, nodata 0, a hole of
    nodata in each), SCL at 20 m (uint8 classes, some cloud), served by nginx."""
    served = tmp_path_factory.mktemp("points")
    rng = np.random.default_rng(7)
    scenes = []
    for index in range(3):
        folder = served / f"scene{index}"
        folder.mkdir()
        paths = {}
        for band in ("B04", "B08"):
            data = rng.integers(1, 5000, (SIZE, SIZE), dtype=np.uint16)
            data[100 + index * 7:130, 40:75] = 0  # a nodata hole, other per date
            _write(folder / f"{band}.tif", data, 10.0, 0)
            paths[band] = folder / f"{band}.tif"
        scl = rng.choice(np.array([4, 5, 8, 9], np.uint8), (SIZE // 2, SIZE // 2),
                         p=[0.5, 0.2, 0.2, 0.1])
        _write(folder / "SCL.tif", scl, 20.0, None)
        paths["SCL"] = folder / "SCL.tif"
        scenes.append({"id": f"S{index}", "datetime": START + dt.timedelta(days=DAYS * index),
                       "paths": paths})
    web = nginx_server.root / "points"
    shutil.copytree(served, web)
    for scene in scenes:
        scene["urls"] = {band: f"{nginx_server.url}/points/{path.parent.name}/{path.name}"
                         for band, path in scene["paths"].items()}
    return scenes


@pytest.fixture(scope="module")
def collection(files, tmp_path_factory):
    rows = [{"id": s["id"], "datetime": s["datetime"], **s["urls"]} for s in files]
    return rasteret.build_from_table(pa.Table.from_pylist(rows), name="points",
                                     href_columns=["B04", "B08", "SCL"],
                                     workspace_dir=tmp_path_factory.mktemp("ws"),
                                     progress=False)


@pytest.fixture(scope="module")
def arrays(files):
    """Every band of every scene, read whole by rasterio."""
    out = {}
    for scene in files:
        for band, path in scene["paths"].items():
            with rasterio.open(path) as src:
                out[(scene["id"], band)] = src.read(1)
    return out


def _points(count, seed=1, margin=0):
    rng = np.random.default_rng(seed)
    cols = rng.uniform(margin, SIZE - margin, count)
    rows = rng.uniform(margin, SIZE - margin, count)
    return pd.DataFrame({"site": [f"p{i}" for i in range(count)],
                         "x": LEFT + cols * 10.0, "y": TOP - rows * 10.0})


def _pixel(x, y):
    return int(np.floor((TOP - y) / 10.0)), int(np.floor((x - LEFT) / 10.0))


def test_values_equal_rasterio_for_every_kind_and_keep_the_columns(collection, arrays):
    import geopandas as gpd

    frame = _points(40)
    frame["label"] = np.arange(40) % 3
    eager = collection.sample_points(frame, ["B04", "B08"], geometry_crs=EPSG,
                                     xy_columns=("x", "y"))
    assert isinstance(eager, pd.DataFrame)
    assert list(eager.columns) == ["site", "x", "y", "label", "point_index", "id", "datetime",
                                   "distance_pixels", "distance_days", "B04", "B08"]
    assert len(eager) == 40 * 3 and eager["distance_days"].isna().all()
    for _, row in eager.iterrows():
        line, col = _pixel(row["x"], row["y"])
        for band in ("B04", "B08"):
            assert row[band] == arrays[(row["id"], band)][line, col]
    assert eager["B04"].dtype == np.uint16

    table = pa.Table.from_pandas(frame, preserve_index=False)
    arrow = collection.sample_points(table, ["B04", "B08"], geometry_crs=EPSG,
                                     xy_columns=("x", "y"))
    assert isinstance(arrow, pa.Table)
    assert arrow.column_names == list(eager.columns)
    assert arrow["datetime"].type == pa.timestamp("us", tz="UTC")
    np.testing.assert_array_equal(arrow["B08"].to_numpy(), eager["B08"].to_numpy())

    geo = gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(frame.x, frame.y), crs=EPSG)
    out = collection.sample_points(geo, ["B04"])
    assert isinstance(out, gpd.GeoDataFrame) and out.crs.to_epsg() == EPSG
    assert "geometry" in out.columns and "label" in out.columns
    np.testing.assert_array_equal(out["B04"].to_numpy(), eager["B04"].to_numpy())

    wkb = table.append_column("geometry", pa.array(shapely.to_wkb(geo.geometry.values)))
    from_wkb = collection.sample_points(wkb.drop(["x", "y"]), ["B04"], geometry_crs=EPSG)
    np.testing.assert_array_equal(from_wkb["B04"].to_numpy(), eager["B04"].to_numpy())


def test_match_nearest_latest_and_all_by_the_points_dates(collection):
    frame = _points(6)
    frame["date"] = [START + dt.timedelta(days=d) for d in (0, 4, 6, 14, 19, 60)]
    nearest = collection.sample_points(frame, ["B04"], geometry_crs=EPSG,
                                       xy_columns=("x", "y"), match="nearest",
                                       date_column="date", max_days=5)
    # Day 60 is 40 days from the last scene: no row. Day 4 -> S0, 6 -> S1, 14 -> S1, 19 -> S2.
    assert nearest["site"].tolist() == ["p0", "p1", "p2", "p3", "p4"]
    assert nearest["id"].tolist() == ["S0", "S0", "S1", "S1", "S2"]
    np.testing.assert_allclose(nearest["distance_days"], [0, 4, 4, 4, 1])
    unlimited = collection.sample_points(frame, ["B04"], geometry_crs=EPSG,
                                         xy_columns=("x", "y"), match="nearest",
                                         dates=frame["date"].tolist())
    assert unlimited["id"].tolist()[-1] == "S2" and len(unlimited) == 6

    latest = collection.sample_points(frame, ["B04"], geometry_crs=EPSG, xy_columns=("x", "y"),
                                      match="latest", date_column="date")
    # The newest scene at or before each point's date.
    assert latest["id"].tolist() == ["S0", "S0", "S0", "S1", "S1", "S2"]
    within = collection.sample_points(frame, ["B04"], geometry_crs=EPSG, xy_columns=("x", "y"),
                                      match="all", date_column="date", max_days=10)
    assert within.groupby("site")["id"].apply(list).to_dict()["p2"] == ["S0", "S1"]
    # The older spelling is gone (CHANGELOG): a TypeError, as for any unknown keyword.
    with pytest.raises(TypeError, match="scenes"):
        collection.sample_points(frame, ["B04"], geometry_crs=EPSG, xy_columns=("x", "y"),
                                 scenes="latest")


def _expected_nearest_valid(arrays, scene, line, col, k):
    """Brute force: the valid pixel nearest (line, col) within k, ties by row then
    column; SCL is at 20 m, so pixel (r, c) takes SCL (r // 2, c // 2)."""
    best = None
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            d = (dy * dy + dx * dx) ** 0.5
            r, c = line + dy, col + dx
            if d > k or not (0 <= r < SIZE and 0 <= c < SIZE):
                continue
            ok = all(arrays[(scene, b)][r, c] != 0 for b in ("B04", "B08")) \
                and arrays[(scene, "SCL")][r // 2, c // 2] not in CLOUD
            if ok and (best is None or (d, dy, dx) < best[0]):
                best = ((d, dy, dx), r, c)
    return best


def test_nearest_valid_pixel_skips_nodata_and_masked_classes(collection, arrays):
    frame = _points(300, seed=3)
    # Points inside the nodata hole of every date.
    hole = pd.DataFrame({"site": ["h0", "h1"], "x": [LEFT + 42.5 * 10, LEFT + 73.5 * 10],
                         "y": [TOP - 118.5 * 10, TOP - 128.5 * 10]})
    frame = pd.concat([frame, hole], ignore_index=True)
    out = collection.sample_points(frame, ["B04", "B08"], geometry_crs=EPSG,
                                   xy_columns=("x", "y"), quality_band="SCL", invalid_values=CLOUD,
                                   max_distance_pixels=4)
    assert "SCL" not in out.columns
    moved = 0
    for _, row in out.iterrows():
        line, col = _pixel(row["x"], row["y"])
        best = _expected_nearest_valid(arrays, row["id"], line, col, 4)
        if best is None:
            assert np.isnan(row["distance_pixels"])
            assert row["B04"] == arrays[(row["id"], "B04")][line, col]
            continue
        (d, _, _), r, c = best
        moved += d > 0
        assert row["distance_pixels"] == pytest.approx(d)
        assert row["B04"] == arrays[(row["id"], "B04")][r, c]
        assert row["B08"] == arrays[(row["id"], "B08")][r, c]
    assert moved > 50  # the search was exercised (cloud and the holes)
    assert (out[out.site.isin(["h0", "h1"])]["distance_pixels"] > 0).all()
    centre = collection.sample_points(frame, ["B04"], geometry_crs=EPSG, xy_columns=("x", "y"))
    assert (centre["distance_pixels"].isna() == (centre["B04"] == 0)).all()


def test_neighbourhood_windows_equal_rasterio_boundless_reads(collection, files):
    frame = _points(30, seed=4)
    frame.loc[0, ["x", "y"]] = [LEFT + 0.5 * 10, TOP - 319.5 * 10]  # a corner pixel
    out = collection.sample_points(frame, ["B08"], geometry_crs=EPSG, xy_columns=("x", "y"),
                                   neighbourhood=5)
    paths = {s["id"]: s["paths"]["B08"] for s in files}
    for _, row in out.iterrows():
        line, col = _pixel(row["x"], row["y"])
        with rasterio.open(paths[row["id"]]) as src:
            expected = src.read(1, window=Window(col - 2, line - 2, 5, 5), boundless=True,
                                fill_value=0)
        np.testing.assert_array_equal(row["B08"], expected)
    table = collection.sample_points(pa.Table.from_pandas(frame), ["B08"], geometry_crs=EPSG,
                                     xy_columns=("x", "y"), neighbourhood=5)
    first = np.array(table["B08"][0].as_py())
    np.testing.assert_array_equal(first, out["B08"].iloc[0])


def test_one_request_per_distinct_tile_touched(collection, nginx_server):
    frame = _points(2000, seed=5)
    tiles = set()
    for x, y in zip(frame.x, frame.y):
        line, col = _pixel(x, y)
        tiles.add((line // TILE, col // TILE))
    nginx_server.clear_log()
    collection.sample_points(frame, ["B04", "B08"], geometry_crs=EPSG, xy_columns=("x", "y"))
    records = [r for r in nginx_server.requests() if r.path.startswith("/points/")]
    # 3 scenes x 2 bands, each tile fetched once, nothing else (no header request).
    assert len(records) == len(tiles) * 3 * 2
    assert len({(r.path, r.range) for r in records}) == len(records)


def test_bad_options_say_what_to_do(collection):
    frame = _points(3)
    options = {"geometry_crs": EPSG, "xy_columns": ("x", "y")}
    with pytest.raises(ConfigurationError, match="needs the points' dates"):
        collection.sample_points(frame, ["B04"], match="nearest", **options)
    with pytest.raises(ConfigurationError, match="odd"):
        collection.sample_points(frame, ["B04"], neighbourhood=4, **options)
    with pytest.raises(ConfigurationError, match="needs quality_band"):
        collection.sample_points(frame, ["B04"], invalid_values=[3], **options)
    with pytest.raises(ConfigurationError, match="needs invalid_values"):
        collection.sample_points(frame, ["B04"], quality_band="SCL", **options)
    with pytest.raises(ConfigurationError, match="date_column 'when'"):
        collection.sample_points(frame, ["B04"], date_column="when", **options)
    with pytest.raises(ConfigurationError, match="xy_columns"):
        collection.sample_points(frame, ["B04"], geometry_crs=EPSG)
    with pytest.raises(ConfigurationError, match="match must be one of"):
        collection.sample_points(frame, ["B04"], match="first", **options)
    with pytest.raises(ConfigurationError, match="rename"):
        collection.sample_points(frame.assign(id=1), ["B04"], **options)
    with pytest.raises(ConfigurationError, match="does not apply.*resolution"):
        collection.sample_points(frame, ["B04"], options=ReadOptions(resolution=20), **options)
    far = frame.assign(x=frame.x + 1e6)
    with pytest.raises(NoCoverageError, match="covers the points"):
        collection.sample_points(far, ["B04"], **options)


# -- dask -------------------------------------------------------------------------------------
def _dask_frame(frame, partitions):
    dd = pytest.importorskip("dask.dataframe")
    import dask

    with dask.config.set({"dataframe.convert-string": False}):
        return dd.from_pandas(frame, npartitions=partitions)


def _sorted(frame):
    return frame.sort_values(["site", "id"]).reset_index(drop=True)


def _dask_case(collection, nginx_server):
    frame = _points(500, seed=6)
    frame["date"] = [START + dt.timedelta(days=int(d)) for d in
                     np.random.default_rng(1).integers(0, 25, len(frame))]
    options = {"geometry_crs": EPSG, "xy_columns": ("x", "y"), "match": "nearest",
               "date_column": "date", "quality_band": "SCL", "invalid_values": CLOUD,
               "max_distance_pixels": 2}
    eager = collection.sample_points(frame, ["B04", "B08"], **options)
    nginx_server.clear_log()
    lazy = collection.sample_points(_dask_frame(frame, 7), ["B04", "B08"], **options)
    assert nginx_server.count() == 0  # the meta is computed without reading
    return eager, lazy


def _check_lazy(eager, lazy, computed):
    assert list(lazy.columns) == list(eager.columns)
    assert dict(lazy.dtypes) == dict(eager.dtypes)
    result = _sorted(computed)
    expected = _sorted(eager)
    pd.testing.assert_frame_equal(result, expected)


def test_dask_dataframe_threaded_equals_eager(collection, nginx_server):
    import dask

    eager, lazy = _dask_case(collection, nginx_server)
    with dask.config.set(scheduler="threads"):
        computed = lazy.compute()
    _check_lazy(eager, lazy, computed)


def test_dask_partitions_are_spatially_compact(collection):
    import dask

    frame = _points(800, seed=8)
    lazy = collection.sample_points(_dask_frame(frame, 8), ["B04"], geometry_crs=EPSG,
                                    xy_columns=("x", "y"), match="latest")
    with dask.config.set(scheduler="threads"):
        parts = [p.compute() for p in lazy.to_delayed()]
    touched = [len({(_pixel(x, y)[0] // TILE, _pixel(x, y)[1] // TILE)
                    for x, y in zip(p.x, p.y)}) for p in parts if len(p)]
    # 25 tiles in all; input partitions are random (each touches about all of them).
    assert sum(touched) / len(touched) < 12


def test_dask_dataframe_on_a_local_cluster_equals_eager(collection, nginx_server):
    distributed = pytest.importorskip("distributed")

    eager, lazy = _dask_case(collection, nginx_server)
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        computed = client.compute(lazy).result()
    _check_lazy(eager, lazy, computed)


def _replicated(collection, copies, folder):
    """``collection``'s rows ``copies`` times (ids made unique, times an hour apart per
    copy), saved as a collection folder and loaded."""
    from rasteret.storage import write_parts

    table = collection.table
    tables = []
    for copy in range(copies):
        ids = pa.array([f"{i}-{copy}" for i in table["id"].to_pylist()])
        times = pa.array([t + dt.timedelta(hours=copy) for t in table["datetime"].to_pylist()],
                         table.schema.field("datetime").type)
        tables.append(table.set_column(table.schema.get_field_index("id"), "id", ids).set_column(
            table.schema.get_field_index("datetime"), "datetime", times))
    write_parts(pa.concat_tables(tables), folder, {**collection.manifest, "name": folder.name},
                collection.failures)
    return rasteret.load(folder)


def _graph_bytes(lazy):
    import cloudpickle

    return len(cloudpickle.dumps(dict(lazy.__dask_graph__())))


def test_dask_tasks_are_sent_where_the_collection_is_not_its_table(collection, tmp_path,
                                                                   monkeypatch):
    import dask

    from rasteret import reopen

    big = _replicated(collection, 200, tmp_path / "big")
    assert len(big) == 600 and big.lazy
    frame = _points(300, seed=9)
    options = {"geometry_crs": EPSG, "xy_columns": ("x", "y"), "match": "latest"}

    def lazy_of(source):
        return source.sample_points(_dask_frame(frame, 4), ["B04", "B08"], **options)

    # The graph holds the points and where the collection's files are: the same size
    # for 3 or 600 scenes, and for a subset of them (its rows pack to a few bytes).
    small_graph, big_graph = _graph_bytes(lazy_of(collection)), _graph_bytes(lazy_of(big))
    assert abs(big_graph - small_graph) < 200
    whole = big.subset(date_range=("2000-01-01", "2100-01-01"))
    assert len(whole) == len(big) and abs(_graph_bytes(lazy_of(whole)) - big_graph) < 200
    # A collection held in memory (no files) is sent whole.
    in_memory = rasteret.Collection.from_arrow(big)
    assert _graph_bytes(lazy_of(in_memory)) - big_graph > big.table.nbytes / 2

    # Computed in tasks that receive pickled copies: the files are opened once in the
    # process, for every partition, and the values equal the eager call's.
    lazy = lazy_of(pickle.loads(pickle.dumps(big)))
    opened = []
    real_read = reopen.read_source
    monkeypatch.setattr(reopen, "read_source",
                        lambda origin: opened.append(origin) or real_read(origin))
    reopen.clear_reopened()
    with dask.config.set(scheduler="threads"):
        computed = lazy.compute()
    assert len(opened) <= 1
    expected = big.sample_points(frame, ["B04", "B08"], **options)
    assert set(computed["id"]) == {f"S2-{199}"}  # the latest copy of the latest scene
    pd.testing.assert_frame_equal(_sorted(computed), _sorted(expected))


def test_a_reopened_collection_refuses_another_build(collection, tmp_path):
    from rasteret import reopen
    from rasteret.errors import CollectionChangedError

    folder = tmp_path / "reopened"
    shutil.copytree(collection.path, folder)
    loaded = rasteret.load(folder)
    data = pickle.dumps(loaded)
    again = pickle.loads(data)
    assert again.lazy and again.column("id").equals(loaded.column("id"))
    assert again.table.equals(collection.table)
    # Rebuilt with other rows since then: what was opened keeps reading its own build
    # (the driver's collection, and this process's re-opened copy)...
    _replicated(collection, 2, tmp_path / "rebuilt")
    shutil.rmtree(folder)
    shutil.copytree(tmp_path / "rebuilt", folder)
    assert loaded.table.equals(collection.table)
    assert pickle.loads(data).table.equals(collection.table)
    # ...and a process opening the files afresh refuses the other build.
    reopen.clear_reopened()
    with pytest.raises(CollectionChangedError, match="rebuilt since it was loaded"):
        pickle.loads(data).table  # noqa: B018
    shutil.rmtree(folder)
    with pytest.raises(CollectionChangedError, match="is gone"):
        pickle.loads(data).table  # noqa: B018


def _guide_blocks():
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "reading-pixels.md").read_text()
    section = text[text.index("### Labels with dates"):text.index("## Errors")]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_the_guides_point_examples_run(collection, monkeypatch):
    import dask

    blocks = _guide_blocks()
    assert len(blocks) == 2
    monkeypatch.setattr(rasteret, "load", lambda name: collection)
    namespace: dict = {}
    with dask.config.set({"dataframe.convert-string": False}):
        for code in blocks:
            exec(compile(code, "reading-pixels.md", "exec"), namespace)
    values, result = namespace["values"], namespace["result"]
    assert len(values) > 100 and (values["distance_days"] <= 10).all()
    assert namespace["chips"]["B08"].iloc[0].shape == (5, 5)
    eager = collection.sample_points(namespace["labels"], ["B04", "B08"],
                                     xy_columns=("lon", "lat"), match="nearest",
                                     date_column="date")
    assert sorted(result["label_id"]) == sorted(eager["label_id"]) and len(eager) > 100


def test_the_benchmark_counts_the_tiles_a_window_touches():
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("bench_points", folder / "points.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(folder))
    x0, y0 = bench.ORIGIN
    corner = pd.DataFrame({"x": [x0 + 5.0], "y": [y0 - 5.0]})      # pixel (0, 0)
    edge = pd.DataFrame({"x": [x0 + 511.5 * 10], "y": [y0 - 511.5 * 10]})  # pixel (511, 511)
    assert bench.tiles_touched(corner, 2, 2048) == 1               # outside pixels skipped
    assert bench.tiles_touched(edge, 0, 2048) == 1
    assert bench.tiles_touched(edge, 1, 2048) == 4                 # a window across 4 tiles
    points = bench.random_points(5000, 2048, 20)
    assert bench.tiles_touched(points, 0, 2048) == 16
    assert len(points) == 5000 and points.date.min() >= pd.Timestamp(bench.START)
