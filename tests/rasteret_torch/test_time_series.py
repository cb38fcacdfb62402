"""Time series that batch (issue 21, item 1): ``time_steps`` with ``time_select``,
``time_bins``, padding with ``dates`` and ``time_mask``, ``group_by="day"``, the
``CTHW`` layout, and batches of ``[B, T, C, H, W]`` through a DataLoader.

The world: two adjacent 64-pixel scenes' footprints in UTM 33N (near 15 degrees east,
where solar time is UTC + 1 h). Footprint A has four scenes (3 May with a cloud of
50 %, 20 May with 10 % and a nodata hole, 10 June with 30 %, 5 July with 5 %);
footprint B, east of A, has two: 19 May at 23:30 UTC (20 May in solar time, so the
same solar day as A's 20 May scene but not the same UTC day) and 10 June. Chips over
A see four scenes, chips over B two. Pixel truth is ``get_numpy`` of the same scenes
on the same grid: the read core gives every path the same pixels.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchgeo")
rasterio = pytest.importorskip("rasterio")

import pandas as pd  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchgeo.datasets import stack_samples  # noqa: E402
from torchgeo.samplers import GriddedPatchSampler  # noqa: E402

import rasteret  # noqa: E402
from rasteret.errors import ConfigurationError  # noqa: E402
from rasteret.torch import TileAlignedSampler  # noqa: E402
from rasteret.torch.timeseries import NAT, SeriesSampler, TimeSeries, solar_days  # noqa: E402

pytestmark = pytest.mark.torch

EPSG = 32633
LEFT, TOP = 500_000.0, 4_100_000.0
SIZE, TILE, RES, CHIP = 64, 32, 10.0, 32
BANDS = ["B04", "B08"]
UTC = dt.UTC
#: (id, footprint column (0: A, 1: B), time, cloud cover)
SCENES = [
    ("a1", 0, dt.datetime(2024, 5, 3, 10, 0, tzinfo=UTC), 50.0),
    ("a2", 0, dt.datetime(2024, 5, 20, 10, 0, tzinfo=UTC), 10.0),
    ("a3", 0, dt.datetime(2024, 6, 10, 10, 0, tzinfo=UTC), 30.0),
    ("a4", 0, dt.datetime(2024, 7, 5, 10, 0, tzinfo=UTC), 5.0),
    ("b1", 1, dt.datetime(2024, 5, 19, 23, 30, tzinfo=UTC), 20.0),
    ("b2", 1, dt.datetime(2024, 6, 10, 10, 0, tzinfo=UTC), 40.0),
]
STAMP = {name: pd.Timestamp(when).tz_convert(None).value for name, _, when, _ in SCENES}


def _write(path, data, left):
    profile = {"driver": "GTiff", "width": SIZE, "height": SIZE, "count": 1,
               "dtype": data.dtype, "crs": f"EPSG:{EPSG}", "nodata": 0,
               "transform": from_origin(left, TOP, RES, RES), "tiled": True,
               "blockxsize": TILE, "blockysize": TILE, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return str(path)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("series")
    rng = np.random.default_rng(21)
    rows = []
    for name, column, when, cloud in SCENES:
        row = {"id": name, "datetime": when, "eo:cloud_cover": cloud}
        for band in BANDS:
            data = rng.integers(1, 5000, (SIZE, SIZE), dtype=np.uint16)
            if name == "a2":
                data[4:20, 6:24] = 0  # a hole the 3 May scene fills in a monthly bin
            row[band] = _write(root / f"{name}_{band}.tif", data, LEFT + column * SIZE * RES)
        rows.append(row)
    return rasteret.build_from_table(
        pa.Table.from_pylist(rows), name="series", href_columns=BANDS,
        workspace_dir=tmp_path_factory.mktemp("ws"), progress=False)


def _box(col, row, width=CHIP, height=CHIP):
    """A chip's ``(minx, miny, maxx, maxy)`` from its top-left pixel of A's grid."""
    left, top = LEFT + col * RES, TOP - row * RES
    return left, top - height * RES, left + width * RES, top


def _query(box):
    return slice(box[0], box[2]), slice(box[1], box[3])


def _truth(collection, box, ids, **options):
    """``get_numpy`` of the scenes ``ids`` on the chip's grid, one array per id."""
    cube = collection.get_numpy(box, BANDS, geometry_crs=EPSG, progress=False, **options)
    found = [name for name, *_ in sorted(SCENES, key=lambda s: s[2])
             if _covers(name, box)]
    assert len(found) == len(cube)
    return {name: cube[found.index(name)] for name in ids}


def _covers(name, box):
    column = next(c for n, c, *_ in SCENES if n == name)
    left = LEFT + column * SIZE * RES
    return box[0] <= left + SIZE * RES and box[2] >= left  # as get_numpy: edges count


def _first_valid(*arrays):
    out = arrays[0].copy()
    for more in arrays[1:]:
        out = np.where(out != 0, out, more)
    return out


A_CHIP, B_CHIP = _box(32, 32), _box(SIZE + 0, 0)


@pytest.mark.parametrize(("select", "ids"), [
    ("latest", ["a3", "a4"]), ("earliest", ["a1", "a2"]), ("least_cloudy", ["a2", "a4"]),
    # Targets at a quarter and three quarters of 3 May .. 5 July: 19 May and 19 June.
    ("even", ["a2", "a3"]),
])
def test_each_time_select_keeps_its_scenes_with_the_pixels_of_get_numpy(collection, select,
                                                                       ids):
    dataset = collection.to_torchgeo_dataset(BANDS, time_series=True, time_steps=2,
                                             time_select=select)
    sample = dataset[_query(A_CHIP)]
    truth = _truth(collection, A_CHIP, ids)
    assert sample["image"].shape == (2, 2, CHIP, CHIP)
    for step, name in enumerate(ids):
        np.testing.assert_array_equal(sample["image"][step].numpy(), truth[name])
    assert sample["dates"].dtype == torch.int64
    assert sample["dates"].tolist() == [STAMP[name] for name in ids]
    assert sample["time_mask"].tolist() == [True, True]


def test_missing_steps_are_padded_with_nodata_and_masked(collection):
    dataset = collection.to_torchgeo_dataset(BANDS, time_series=True, time_steps=3)
    sample = dataset[_query(B_CHIP)]
    truth = _truth(collection, B_CHIP, ["b1", "b2"])
    assert sample["image"].shape == (3, 2, CHIP, CHIP)
    np.testing.assert_array_equal(sample["image"][0].numpy(), truth["b1"])
    np.testing.assert_array_equal(sample["image"][1].numpy(), truth["b2"])
    assert (sample["image"][2] == 0).all()  # the stored nodata
    assert sample["time_mask"].tolist() == [True, True, False]
    assert sample["dates"].tolist() == [STAMP["b1"], STAMP["b2"], NAT]
    assert NAT == np.datetime64("NaT", "ns").astype(np.int64)
    floats = collection.to_torchgeo_dataset(BANDS, time_series=True, time_steps=3,
                                            masked=True)[_query(B_CHIP)]
    assert floats["image"].dtype == torch.float32
    assert torch.isnan(floats["image"][2]).all()
    np.testing.assert_array_equal(floats["image"][1].numpy(),
                                  _truth(collection, B_CHIP, ["b2"], masked=True)["b2"])


def test_fixed_steps_batch_through_a_dataloader_when_chips_see_different_scene_counts(
        collection):
    dataset = collection.to_torchgeo_dataset(BANDS, time_series=True, time_steps=3,
                                             chip_size=CHIP)
    sampler = TileAlignedSampler(dataset, mode="grid")
    # Each location once (A's four scenes share their chips), with the whole time range.
    assert len(sampler) == 8
    slices = list(sampler)
    assert {(t.start, t.stop) for _, _, t in slices} == {
        (pd.Timestamp(STAMP["a1"]), pd.Timestamp(STAMP["a4"]))}
    loader = DataLoader(dataset, sampler=sampler, batch_size=8, collate_fn=stack_samples)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 3, 2, CHIP, CHIP)
    assert batch["dates"].shape == (8, 3) and batch["time_mask"].shape == (8, 3)
    # Chips over A see four scenes (three kept), chips over B two (one padded step).
    counts = sorted(batch["time_mask"].sum(dim=1).tolist())
    assert counts == [2, 2, 2, 2, 3, 3, 3, 3]
    # TorchGeo's samplers, wrapped to take the whole time range, batch too.
    grid = SeriesSampler(GriddedPatchSampler(dataset, size=CHIP),
                         (pd.Timestamp(STAMP["a1"]), pd.Timestamp(STAMP["a4"])), unique=True)
    assert len(grid) == 8
    batch = next(iter(DataLoader(dataset, sampler=grid, batch_size=8,
                                 collate_fn=stack_samples)))
    assert batch["image"].shape == (8, 3, 2, CHIP, CHIP)


def test_the_old_time_series_stacks_every_scene_and_does_not_batch(collection):
    dataset = collection.to_torchgeo_dataset(BANDS, time_series=True)
    # Inside one footprint each (a chip on an edge also stacks the scenes it touches).
    a, b = dataset[_query(_box(16, 16))], dataset[_query(_box(SIZE + 16, 16))]
    assert a["image"].shape[0] == 4 and b["image"].shape[0] == 2
    assert a["dates"].tolist() == sorted(STAMP[n] for n in ("a1", "a2", "a3", "a4"))
    assert a["time_mask"].all()
    with pytest.raises(RuntimeError):
        stack_samples([a, b])


def test_monthly_bins_mosaic_a_bins_scenes_first_valid(collection):
    dataset = collection.to_torchgeo_dataset(BANDS, time_series=True, time_bins="1MS")
    hole = _box(0, 0)  # holds a2's nodata hole
    sample = dataset[_query(hole)]
    truth = _truth(collection, hole, ["a1", "a2", "a3", "a4"])
    assert sample["image"].shape == (3, 2, CHIP, CHIP)  # May, June, July
    may = sample["image"][0].numpy()
    # The latest scene of May first (mosaic_order), its hole filled from 3 May.
    np.testing.assert_array_equal(may, _first_valid(truth["a2"], truth["a1"]))
    assert (truth["a2"] == 0).any() and (may != 0).all()
    np.testing.assert_array_equal(sample["image"][1].numpy(), truth["a3"])
    np.testing.assert_array_equal(sample["image"][2].numpy(), truth["a4"])
    months = [pd.Timestamp(f"2024-{m:02d}-01").value for m in (5, 6, 7)]
    assert sample["dates"].tolist() == months
    b = dataset[_query(B_CHIP)]
    assert b["time_mask"].tolist() == [True, True, False]
    assert b["dates"].tolist() == [*months[:2], NAT]
    assert stack_samples([sample, b])["image"].shape == (2, 3, 2, CHIP, CHIP)


def test_group_by_day_mosaics_adjacent_scenes_of_one_solar_day(collection):
    # A chip across the border of A and B: half over each.
    across = _box(SIZE - CHIP // 2, 16)
    scenes = collection.to_torchgeo_dataset(BANDS, time_series=True)
    assert scenes[_query(across)]["image"].shape[0] == 6
    days = collection.to_torchgeo_dataset(BANDS, time_series=True, group_by="day")
    sample = days[_query(across)]
    # a1 | a2 + b1 (one solar day, two UTC days) | a3 + b2 | a4
    assert sample["image"].shape == (4, 2, CHIP, CHIP)
    truth = _truth(collection, across, ["a1", "a2", "a3", "a4", "b1", "b2"])
    np.testing.assert_array_equal(sample["image"][1].numpy(),
                                  _first_valid(truth["a2"], truth["b1"]))
    np.testing.assert_array_equal(sample["image"][2].numpy(),
                                  _first_valid(truth["a3"], truth["b2"]))
    left, right = sample["image"][1, :, :, :16], sample["image"][1, :, :, 16:]
    assert (left != 0).all() and (right != 0).all()
    assert sample["dates"].tolist() == [STAMP["a1"], STAMP["b1"], STAMP["a3"], STAMP["a4"]]
    # Fixed steps over days batch as well.
    fixed = collection.to_torchgeo_dataset(BANDS, time_series=True, group_by="day",
                                           time_steps=2, time_select="latest")
    assert fixed[_query(across)]["dates"].tolist() == [STAMP["a3"], STAMP["a4"]]
    # Solar days: 23:30 UTC at 15 degrees east is the next day; at 0 degrees it is not.
    stamps = np.array([STAMP["b1"], STAMP["a2"]])
    assert len(set(solar_days(stamps, np.array([15.0, 15.0])))) == 1
    assert len(set(solar_days(stamps, np.array([np.nan, np.nan])))) == 2


def test_cthw_layout_for_terratorch(collection):
    tchw = collection.to_torchgeo_dataset(BANDS, time_series=True, time_steps=3)
    cthw = collection.to_torchgeo_dataset(BANDS, time_series=True, time_steps=3,
                                          layout="CTHW", chip_size=CHIP)
    sample = cthw[_query(A_CHIP)]
    assert sample["image"].shape == (2, 3, CHIP, CHIP)
    np.testing.assert_array_equal(sample["image"].numpy(),
                                  tchw[_query(A_CHIP)]["image"].permute(1, 0, 2, 3).numpy())
    loader = DataLoader(cthw, sampler=TileAlignedSampler(cthw, mode="grid"), batch_size=4,
                        collate_fn=stack_samples)
    assert next(iter(loader))["image"].shape == (4, 2, 3, CHIP, CHIP)
    figure = cthw.plot(sample)
    assert figure.axes


@pytest.mark.parametrize(("keywords", "named"), [
    ({"time_series": True, "time_steps": 2, "time_select": "middle"}, "time_select"),
    ({"time_series": True, "layout": "THWC"}, "layout"),
    ({"time_series": True, "group_by": "week"}, "group_by"),
    ({"time_series": True, "time_steps": 0}, "time_steps"),
    ({"time_series": True, "time_steps": 2, "time_bins": "1MS"}, "time_bins"),
    ({"time_series": True, "time_bins": "fortnightly"}, "time_bins"),
    ({"time_steps": 2}, "time_series=True"),
])
def test_bad_time_series_options_raise_configuration_errors(collection, keywords, named):
    with pytest.raises(ConfigurationError, match=named):
        collection.to_torchgeo_dataset(BANDS, **keywords)
    with pytest.raises(ConfigurationError, match=named):
        rasteret.torch.RasteretDataModule(collection, BANDS, **keywords)
    with pytest.raises(ConfigurationError, match="'latest', 'earliest', 'even'"):
        TimeSeries(steps=2, select="middle")  # type: ignore[arg-type]


@pytest.mark.parametrize("sampler", ["tile_aligned", "random", "grid"])
def test_the_datamodule_batches_time_series(collection, sampler):
    from rasteret.torch import RasteretDataModule

    module = RasteretDataModule(collection, BANDS, chip_size=CHIP, batch_size=4,
                                sampler=sampler, length=4, num_workers=0,
                                time_series=True, time_bins="1MS", layout="CTHW")
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (4, 2, 3, CHIP, CHIP)
    assert batch["dates"].shape == batch["time_mask"].shape == (4, 3)
    assert len(module.val_dataloader()) == 2  # 8 chips, each location once


def test_a_pickled_dataset_reads_the_same_steps_as_a_worker_would(collection):
    import pickle

    dataset = collection.to_torchgeo_dataset(BANDS, time_series=True, group_by="day",
                                             time_steps=3, time_select="earliest")
    across = _box(SIZE - CHIP // 2, 16)
    here = dataset[_query(across)]
    # A worker selects scenes from the memory-mapped index, longitudes included.
    worker = pickle.loads(pickle.dumps(dataset))
    there = worker[_query(across)]
    assert there["dates"].tolist() == here["dates"].tolist() == [
        STAMP["a1"], STAMP["b1"], STAMP["a3"]]
    np.testing.assert_array_equal(there["image"].numpy(), here["image"].numpy())
    # On an edge, a step is not spent on a scene that only touches the chip.
    edge = worker[_query(_box(SIZE, 0))]
    assert edge["dates"].tolist() == [STAMP["b1"], STAMP["b2"], NAT]


@pytest.fixture(scope="module")
def two_zones(tmp_path_factory):
    """One day's pass over the border of two UTM zones: footprint A in 33N, and a
    scene in 34N covering footprint B (reprojected by the read core)."""
    from pyproj import Transformer

    root = tmp_path_factory.mktemp("zones")
    rng = np.random.default_rng(22)
    to_34 = Transformer.from_crs(EPSG, 32634, always_xy=True)
    xs, ys = to_34.transform([LEFT + SIZE * RES, LEFT + 2 * SIZE * RES] * 2,
                             [TOP, TOP, TOP - SIZE * RES, TOP - SIZE * RES])
    rows = []
    for name, epsg, left, top, size, minute in (
            ("z33", EPSG, LEFT, TOP, SIZE, 0),
            ("z34", 32634, min(xs) - 8 * RES, max(ys) + 8 * RES, SIZE + 16, 1)):
        row = {"id": name, "datetime": dt.datetime(2024, 5, 20, 10, minute, tzinfo=UTC)}
        for band in BANDS:
            path = root / f"{name}_{band}.tif"
            profile = {"driver": "GTiff", "width": size, "height": size, "count": 1,
                       "dtype": "uint16", "crs": f"EPSG:{epsg}", "nodata": 0,
                       "transform": from_origin(left, top, RES, RES), "tiled": True,
                       "blockxsize": TILE, "blockysize": TILE, "compress": "deflate"}
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(rng.integers(1, 5000, (size, size), dtype=np.uint16), 1)
            row[band] = str(path)
        rows.append(row)
    return rasteret.build_from_table(
        pa.Table.from_pylist(rows), name="zones", href_columns=BANDS,
        workspace_dir=tmp_path_factory.mktemp("ws-zones"), progress=False)


def test_group_by_day_mosaics_two_utm_zones_into_one_step(two_zones):
    across = _box(SIZE - CHIP // 2, 16)
    grid = {"target_crs": EPSG, "resolution": RES}
    dataset = two_zones.to_torchgeo_dataset(BANDS, time_series=True, group_by="day",
                                            time_steps=2, **grid)
    sample = dataset[_query(across)]
    assert sample["time_mask"].tolist() == [True, False]
    z33, z34 = two_zones.get_numpy(across, BANDS, geometry_crs=EPSG, progress=False, **grid)
    # The latest scene first (mosaic_order), the other where it has no pixel.
    expected = _first_valid(z34, z33)
    np.testing.assert_array_equal(sample["image"][0].numpy(), expected)
    assert (z33[..., :16] != 0).all() and (z34[..., 16:] != 0).all()
    assert (expected != 0).all()


def test_plan_steps_on_its_own():
    from rasteret.torch.timeseries import plan_steps

    day = 86_400 * 10**9
    stamps = np.array([0, 1, 2, 10, 30, 31], dtype=np.int64) * day
    clouds = np.array([90.0, 10.0, 50.0, 100.0, 0.0, 20.0])
    lon = np.full(6, np.nan)
    common = {"stamps": stamps, "clouds": clouds, "longitudes": lon, "start": 0,
              "stop": 40 * day, "mosaic": lambda rows: [int(r) for r in rows[::-1]]}
    rows = [5, 3, 0, 1, 2, 4]  # any order: steps are in time order
    even = plan_steps(TimeSeries(steps=4, select="even"), rows, **common)
    # Targets at days 5, 15, 25 and 35: nearest 2 (or 10), 10, 30, 31 -- each once.
    assert even.slots == [[2], [3], [4], [5]]
    cloudy = plan_steps(TimeSeries(steps=3, select="least_cloudy"), rows, **common)
    assert cloudy.slots == [[1], [4], [5]]
    padded = plan_steps(TimeSeries(steps=8, select="latest"), rows, **common)
    assert padded.slots[6:] == [[], []] and padded.mask.tolist() == [True] * 6 + [False] * 2
    assert padded.dates.tolist()[6:] == [NAT, NAT]
    # Ten-day bins from day 0: [0, 10), [10, 20), [20, 30), [30, 40), [40, 50).
    binned = plan_steps(TimeSeries(bins="10D"), rows, **common)
    assert binned.slots == [[2, 1, 0], [3], [], [5, 4], []]
    assert binned.dates.tolist() == [0, 10 * day, NAT, 30 * day, NAT]
    assert binned.mask.tolist() == [True, True, False, True, False]
