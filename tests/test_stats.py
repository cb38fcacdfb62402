"""Collection.band_stats: statistics from each COG's smallest overview equal NumPy's
on the same pixels (nodata excluded), for files with and without overviews; one
request per asset and band, counted by nginx; grouping with ``by=``; stored in the
manifest and reloaded; the histogram path equals NumPy's exactly."""

from __future__ import annotations

import datetime as dt
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import rasteret
from rasteret.errors import ConfigurationError
from rasteret.stats import (
    PERCENTILES,
    STATISTICS,
    Summary,
    ValueSample,
    histogram_of,
    histogram_shift,
    histogram_statistics,
    mean_std,
    valid_pixels,
)
from testbed.scenes import write_scenes

rasterio = pytest.importorskip("rasterio")
BANDS = ["B02", "B04"]


def numpy_statistics(values: np.ndarray) -> dict[str, float]:
    values = values.astype(np.float64)
    qs = np.percentile(values, PERCENTILES)
    return {"count": len(values), "mean": values.mean(), "std": values.std(),
            "min": values.min(), "max": values.max(),
            **{f"p{q}": v for q, v in zip(PERCENTILES, qs)}}


def truth(paths: list[Path], *, smallest_overview: bool) -> dict[str, float]:
    """NumPy's statistics of the valid pixels rasterio reads from the same level."""
    parts = []
    for path in paths:
        with rasterio.open(path) as src:
            overviews = src.overviews(1)
            if smallest_overview and overviews:
                factor = overviews[-1]
                shape = (math.ceil(src.height / factor), math.ceil(src.width / factor))
                with rasterio.open(path, overview_level=len(overviews) - 1) as level:
                    data = level.read(1)
                assert data.shape == shape
            else:
                data = src.read(1)
            nodata = src.nodata
        parts.append(data[data != nodata] if nodata is not None else data.ravel())
    return numpy_statistics(np.concatenate(parts))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats-scenes")
    with_overviews = write_scenes(root / "ov", count=3, size=1024, tile=256, bands=BANDS,
                                  label=False, seed=5)
    without = write_scenes(root / "flat", count=2, size=512, tile=256, bands=BANDS,
                           label=False, seed=6, overviews=False,
                           start=dt.datetime(2024, 7, 1, tzinfo=dt.UTC))
    # Nodata wedges: a third of each file is nodata (0), which must not count.
    for scene in with_overviews + without:
        for band in BANDS:
            path = scene.files[band]
            with rasterio.open(path) as src:
                data, profile = src.read(1), src.profile
            rows, cols = np.indices(data.shape)
            data[cols < rows // 3] = 0
            profile.update(driver="COG", blocksize=256, compress="deflate", predictor=2,
                           overviews="AUTO" if scene in with_overviews else "NONE")
            profile.pop("blockxsize", None)
            profile.pop("blockysize", None)
            profile.pop("tiled", None)
            profile.pop("interleave", None)
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(data, 1)
    return with_overviews, without


def serve(scenes, nginx_server, folder: str, workspace: Path):
    rows = []
    for platform, group in zip(("sentinel-2a", "sentinel-2b"), scenes):
        for scene in group:
            row = {"id": f"{platform}-{scene.id}", "datetime": scene.datetime,
                   "platform": platform}
            for band in BANDS:
                target = Path(nginx_server.root) / folder / platform / scene.id / f"{band}.tif"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(scene.files[band], target)
                row[band] = f"{nginx_server.url}/{folder}/{platform}/{scene.id}/{band}.tif"
            rows.append(row)
    return rasteret.build_from_table(pa.Table.from_pylist(rows), name=folder,
                                     href_columns=BANDS, workspace_dir=workspace,
                                     progress=False)


def test_stats_equal_numpy_on_the_same_pixels_with_one_request_per_file(
        scenes, nginx_server, tmp_path):
    with_overviews, without = scenes
    collection = serve(scenes, nginx_server, "stats", tmp_path / "ws")
    nginx_server.clear_log()
    frame = collection.band_stats(BANDS, by="platform")
    records = [r for r in nginx_server.requests() if r.path.startswith("/stats/")]
    # One request per asset and band, no header request: 5 scenes x 2 bands.
    assert len(records) == 10
    assert sorted(r.path for r in records) == sorted(
        {r.path for r in records})
    for band in BANDS:
        overview_truth = truth([s.files[band] for s in with_overviews], smallest_overview=True)
        flat_truth = truth([s.files[band] for s in without], smallest_overview=False)
        for platform, expected in (("sentinel-2a", overview_truth), ("sentinel-2b", flat_truth)):
            row = frame.loc[(platform, band)]
            for name in STATISTICS:
                assert row[name] == pytest.approx(expected[name], rel=1e-12), (band, name)
        assert frame.loc[("sentinel-2a", band), "full_resolution"] == 0
        assert frame.loc[("sentinel-2b", band), "full_resolution"] == 2
        assert frame.loc[("sentinel-2b", band), "files"] == 2
    # The smallest overview of a 1024-pixel file in 256-pixel tiles is one tile.
    overview_bytes = [r.body_bytes for r in records if "sentinel-2a" in r.path]
    assert max(overview_bytes) < 256 * 256 * 2
    # exact=True reads every file at full resolution: NumPy's statistics of every pixel.
    exact = collection.band_stats(BANDS, by="platform", exact=True)
    for band in BANDS:
        expected = truth([s.files[band] for s in with_overviews], smallest_overview=False)
        row = exact.loc[("sentinel-2a", band)]
        assert row["full_resolution"] == 3 and row["exact"]
        for name in STATISTICS:
            assert row[name] == pytest.approx(expected[name], rel=1e-12), (band, name)
    # Exact statistics are stored: the next call of either kind reads nothing.
    nginx_server.clear_log()
    collection.band_stats(BANDS, by="platform")
    assert nginx_server.count("/stats/") == 0


def test_stats_are_stored_and_reloaded_without_a_request(scenes, nginx_server, tmp_path):
    collection = serve(scenes, nginx_server, "stats-store", tmp_path / "ws")
    first = collection.band_stats(BANDS)
    assert list(first.index) == BANDS
    assert set(STATISTICS) <= set(first.columns)
    path = collection.export(tmp_path / "with-stats.parquet")
    reloaded = rasteret.load(path)
    nginx_server.clear_log()
    again = reloaded.band_stats(BANDS)
    assert nginx_server.count("/stats-store/") == 0
    assert np.allclose(again[list(STATISTICS)].to_numpy(float),
                       first[list(STATISTICS)].to_numpy(float), equal_nan=True)
    means, stds = mean_std(reloaded.manifest["band_stats"][""]["records"], BANDS)
    assert means == pytest.approx(list(first["mean"]))
    assert stds == pytest.approx(list(first["std"]))
    # A subset inherits the manifest but computes its own statistics.
    subset = reloaded.subset(platform="sentinel-2a")
    nginx_server.clear_log()
    own = subset.band_stats(["B02"])
    assert nginx_server.count("/stats-store/") == 3
    assert own.loc["B02", "files"] == 3
    # One overall group equals the union of the two groups.
    grouped = collection.band_stats(["B02"], by="platform")
    assert grouped["count"].sum() == first.loc["B02", "count"]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int8", "bool"])
def test_histograms_give_numpys_statistics(dtype):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if dtype != "bool" else None
    low, high = (info.min, info.max) if info else (0, 1)
    for size in (1, 2, 7, 1000):
        values = rng.integers(low, high, size=size, endpoint=True).astype(dtype)
        got = histogram_statistics(histogram_of(values, histogram_shift(values.dtype)),
                                   histogram_shift(values.dtype))
        expected = numpy_statistics(values)
        for name in STATISTICS:
            assert got[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-12), name


def test_mean_std_refuses_what_cannot_normalise():
    record = {"band": "B02", "group": None, "mean": 10.0, "std": 0.0, "scale": 1.0,
              "offset": 0.0}
    with pytest.raises(ConfigurationError, match="standard deviation"):
        mean_std([record], ["B02"])
    with pytest.raises(ConfigurationError, match="band_stats"):
        mean_std([], ["B02"])
    mixed = {**record, "std": 2.0, "scale": math.nan, "offset": math.nan}
    with pytest.raises(ConfigurationError, match="scales"):
        mean_std([mixed], ["B02"], apply_scale=True)
    scaled = {**record, "std": 2.0, "scale": 1e-4, "offset": -0.1}
    assert mean_std([scaled], ["B02"], apply_scale=True) == (
        [pytest.approx(10 * 1e-4 - 0.1)], [pytest.approx(2e-4)])


def test_nodata_is_excluded_only_where_the_type_can_hold_it():
    data = np.array([0, 1, 2, 65535, 9999], np.uint16)
    assert valid_pixels(data, 0).tolist() == [1, 2, 65535, 9999]
    assert valid_pixels(data, -9999).tolist() == data.tolist()  # never wraps to 55537
    assert valid_pixels(data, None).tolist() == data.tolist()
    floats = np.array([np.nan, -9999.0, 1.5], np.float32)
    assert valid_pixels(floats, -9999).tolist() == [1.5]
    assert valid_pixels(floats, None).tolist() == [-9999.0, 1.5]  # NaN only


def test_value_samples_give_numpys_statistics_and_stay_bounded():
    rng = np.random.default_rng(1)
    batches = [rng.normal(300, 50, size).astype(np.float32) for size in (1, 1000, 4321)]
    sample = ValueSample()
    for batch in batches:
        sample.add(valid_pixels(batch, None))
    expected = numpy_statistics(np.concatenate(batches))
    got = sample.statistics()
    for name in STATISTICS:
        assert got[name] == pytest.approx(expected[name], rel=1e-12), name
    # Past the cap, the moments and extremes stay exact; percentiles come from a sample.
    small = ValueSample(cap=500)
    for batch in batches:
        small.add(batch)
    thinned = small.statistics()
    assert small.stride == 16 and sum(len(k) for k in small.kept) <= 500
    for name in ("count", "mean", "std", "min", "max"):
        assert thinned[name] == pytest.approx(expected[name], rel=1e-12), name
    for q in PERCENTILES:
        assert thinned[f"p{q}"] == pytest.approx(expected[f"p{q}"], rel=0.05)


def test_a_band_mixing_integer_and_float_files_gives_the_statistics_of_all():
    ints = np.array([1, 2, 3, 3], np.uint16)
    floats = np.array([2.5, 10.0], np.float32)
    summary = Summary()
    summary.add(ints, full_resolution=False, scale=1.0, offset=0.0)
    summary.add(floats, full_resolution=True, scale=2.0, offset=0.0)
    got = summary.statistics()
    expected = numpy_statistics(np.concatenate([ints, floats]))
    for name in STATISTICS:
        assert got[name] == pytest.approx(expected[name], rel=1e-12), name
    assert summary.files == 2 and summary.full_resolution == 1 and len(summary.scales) == 2
