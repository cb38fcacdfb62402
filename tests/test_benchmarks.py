"""The benchmark scripts' own logic: replicated collections, AOIs, pixel checks, slopes.

Timings are never asserted; these check that the benchmarks measure what they say.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _module(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def scale():
    return _module("scale")


@pytest.fixture(scope="module")
def aoi():
    return _module("aoi")


def test_replicated_rows_have_unique_ids_and_times_and_keep_the_rest(scale):
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    base = pa.table({
        "id": ["a", "b", "c"],
        "datetime": pa.array([start, start, start + dt.timedelta(days=1)],
                             pa.timestamp("us", tz="UTC")),
        "B04": [{"href": "x"}, {"href": "y"}, {"href": "z"}],
    })
    big = scale.replicate(base, 10)
    assert big.num_rows == 10
    assert len(set(big["id"].to_pylist())) == 10
    assert big["id"].to_pylist()[:4] == ["a-r0", "b-r0", "c-r0", "a-r1"]
    times = big["datetime"].to_pylist()
    assert times[:3] == base["datetime"].to_pylist()
    assert times[3] == start + dt.timedelta(hours=1)
    assert big["B04"].to_pylist() == (base["B04"].to_pylist() * 4)[:10]
    assert big.schema == base.schema


def test_scale_parts_run_their_script_with_defaults_the_caller_can_override(scale):
    command = scale.part_command("chunked", ["--aois=2", "--repeat", "1"])
    assert command[1].endswith("aoi.py")
    options = command[2:]
    assert "--aois" not in options and options[-2:] == ["--repeat", "1"]
    assert options[options.index("--latencies") + 1] == "0.02"
    assert "--aois=2" in options
    assert scale.part_command("builds", [])[2:] == []


def test_slope_per_100k_scenes(scale):
    assert scale.slope([1000, 20000, 200000], [1.0 + 2e-5 * s for s in (1000, 20000, 200000)]
                       ) == pytest.approx(2.0)
    assert scale.slope([1000, 20000], [1.0, None]) is None


def test_aois_are_on_the_pixel_grid_inside_the_scenes(aoi):
    size = aoi.scene_size([2, 20, 50])
    assert size % aoi.TILE == 0 and size >= 5000 + 2 * aoi.MARGIN
    assert aoi.aoi_bounds(2, size) == aoi.AOI_2KM
    for km in (2, 20, 50):
        minx, miny, maxx, maxy = aoi.aoi_bounds(km, size)
        assert maxx - minx == maxy - miny == km * 1000
        assert minx >= aoi.ORIGIN[0] and maxx <= aoi.ORIGIN[0] + size * aoi.RES
        assert maxy <= aoi.ORIGIN[1] and miny >= aoi.ORIGIN[1] - size * aoi.RES
        assert all(v % aoi.RES == 0 for v in (minx, miny, maxx, maxy))


def test_pixel_digests_match_across_layouts_and_catch_one_changed_pixel(aoi):
    import xarray as xr

    data = np.random.default_rng(0).integers(0, 10_000, (3, 2, 8, 8), dtype=np.uint16)
    dataset = xr.Dataset({band: (("time", "y", "x"), data[:, b]) for b, band in
                          enumerate(aoi.BANDS)})
    per_file = [data[t, b] for t in range(3) for b in range(2)]
    reference = aoi.digest("rasteret get_numpy", data)
    assert aoi.digest("odc-stac eager", dataset) == reference
    assert aoi.digest("stackstac dask", data) == reference
    assert aoi.digest("rasterio opening files", per_file) == reference
    changed = data.copy()
    changed[2, 1, 7, 7] += 1
    hashes = aoi.digest("rasteret get_numpy", changed)["hashes"]
    assert [a != b for a, b in zip(hashes, reference["hashes"])] == [False] * 5 + [True]


def test_stackstac_chunks_end_on_tile_edges(aoi):
    chunks = aoi.aligned_chunks(503, 5000, 2048)
    assert sum(chunks) == 5000 and max(chunks) <= 2048
    edges = np.cumsum(chunks)[:-1] + 503
    assert chunks[0] == 2048 - 503 and all(edge % 2048 == 0 for edge in edges)
    assert aoi.aligned_chunks(0, 4096, 2048) == (2048, 2048)


@pytest.fixture(scope="module")
def build_scale():
    return _module("build_scale")


def test_build_scale_tables_whole_scenes_of_distinct_links(build_scale):
    names = [f"assets/asset{i:05d}.tif" for i in range(12)]
    table = build_scale.href_table("http://h", names, 12)
    assert table.column_names == ["id", *build_scale.BANDS]
    assert table.num_rows == 3 and len(set(table["id"].to_pylist())) == 3
    hrefs = [table[band][row].as_py() for row in range(3) for band in build_scale.BANDS]
    assert hrefs == [f"http://h/{name}" for name in names]


def test_build_scale_rows_report_per_asset_figures_and_slopes(build_scale):
    def figures(assets, growth):
        return {"build_s": assets / 1000, "rss_before": 200e6, "driver_peak": 200e6 + growth,
                "growth": growth, "build_growth": growth / 2,
                "collection_bytes": assets * 2000.0, "requests": assets, "bytes": assets * 65536}

    results = [(2000, "one process", figures(2000, 50e6 * 2), "ok"),
               (20000, "one process", figures(20000, 50e6 * 20), "ok"),
               (2000, "dask 2 workers", figures(2000, 30e6), "ok"),
               (20000, "dask 2 workers", figures(20000, 30e6), "ok")]
    rows = build_scale.rows_of(results)
    assert rows[0][:6] == ["2,000", "one process", "2.00", "1000", "1.00", "65.5"]
    slopes = {row[1]: row for row in rows if row[0].startswith("slope")}
    # MB per 10,000 assets: growth before loading the result, peak, growth, collection
    assert slopes["one process"][7:11] == ["+250", "+500", "+500", "+20"]
    assert slopes["dask 2 workers"][7:10] == ["+0", "+0", "+0"]
    assert slopes["dask 2 workers"][2] == "+10.00"


def test_time_series_rows_read_distinct_links_one_a_month(tmp_path):
    """The time series rows of torchgeo_loader.py: one hard link per month and band
    (distinct URLs, so no cache sees a repeat), named as TorchGeo's regex expects."""
    pytest.importorskip("torchgeo")
    loader = _module("torchgeo_loader")
    for band in loader.BANDS:
        (tmp_path / f"scene000_{band}.tif").write_bytes(band.encode())
    folder = loader.series_links(tmp_path, 14)
    files = sorted(folder.glob("m*_B02.tif"))
    assert [f.name[1:9] for f in files[:2]] == ["20230115", "20230215"]
    assert files[-1].name == "m20240215_B02.tif" and len(files) == 14
    assert len(list(folder.iterdir())) == 14 * len(loader.BANDS)
    assert files[0].stat().st_ino == (tmp_path / "scene000_B02.tif").stat().st_ino
    import re

    pattern = re.compile(loader.SyntheticSeries.filename_regex, re.VERBOSE)
    assert pattern.match(files[0].name).group("date") == "20230115"
    assert loader.series_links(tmp_path, 14) == folder  # made once, reused
