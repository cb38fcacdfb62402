"""split_by="blocks" in the datamodule: whatever the seed, block size, buffer and shape
of the area, no chip of one stage comes within ``buffer`` of a chip of another, for
TileAlignedSampler and for TorchGeo's RandomPatchSampler and GriddedPatchSampler;
the date holdout; split_report()."""

from __future__ import annotations

import datetime as dt
import itertools
import math

import numpy as np
import pyarrow as pa
import pytest
import shapely
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("torchgeo")
pytest.importorskip("lightning")

import rasteret  # noqa: E402
from rasteret.errors import ConfigurationError  # noqa: E402
from rasteret.torch import RasteretDataModule, RegionSampler, TileAlignedSampler  # noqa: E402
from testbed.scenes import write_scenes  # noqa: E402

pytestmark = pytest.mark.torch
GRID = 4  # scenes per side
SIZE, TILE, RES = 128, 32, 10.0  # a scene is 1280 m across, in 32-pixel tiles
ORIGIN = (500_000.0, 4_100_000.0)
START = dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    """16 scenes on a 4 x 4 grid, one day apart: subsets of them are areas of any
    shape (L shapes, holes, islands)."""
    root = tmp_path_factory.mktemp("blocks")
    rows = []
    for number, (i, j) in enumerate(itertools.product(range(GRID), range(GRID))):
        origin = (ORIGIN[0] + i * SIZE * RES, ORIGIN[1] - j * SIZE * RES)
        scene = write_scenes(root / f"{i}{j}", count=1, size=SIZE, tile=TILE, bands=("B02",),
                             label=False, origin=origin, seed=number)[0]
        rows.append({"id": f"S{i}{j}", "datetime": START + dt.timedelta(days=number),
                     "B02": str(scene.files["B02"])})
    return rasteret.build_from_table(pa.Table.from_pylist(rows), name="blocks",
                                     href_columns=["B02"], workspace_dir=root / "ws",
                                     progress=False)


def datamodule(collection, **options):
    return RasteretDataModule(collection, ["B02"], chip_size=TILE, batch_size=4,
                              num_workers=0, split_by="blocks", **options)


def chips_of(sampler) -> np.ndarray:
    """Every chip a sampler yields in one epoch, as ``minx, miny, maxx, maxy``."""
    return np.asarray([(x.start, y.start, x.stop, y.stop) for x, y, *_ in sampler],
                      float).reshape(-1, 4)


def min_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest distance between a box of ``a`` and a box of ``b`` (brute force)."""
    if not len(a) or not len(b):
        return math.inf
    dx = np.maximum(0, np.maximum(a[:, None, 0] - b[None, :, 2], b[None, :, 0] - a[:, None, 2]))
    dy = np.maximum(0, np.maximum(a[:, None, 1] - b[None, :, 3], b[None, :, 1] - a[:, None, 3]))
    return float(np.hypot(dx, dy).min())


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.filter_too_much])
@given(cells=st.sets(st.tuples(st.integers(0, GRID - 1), st.integers(0, GRID - 1)),
                     min_size=3),
       block_size=st.floats(300, 1600), buffer=st.floats(0, 700),
       seed=st.integers(0, 2**31 - 1),
       sampler=st.sampled_from(["tile_aligned", "random", "grid"]))
def test_no_chip_comes_within_buffer_of_another_stage(mosaic, cells, block_size, buffer,
                                                      seed, sampler):
    area = mosaic.subset(ids=[f"S{i}{j}" for i, j in cells])
    module = datamodule(area, block_size=block_size, buffer=buffer, seed=seed,
                        sampler=sampler, length=200)
    try:
        module.setup()
        loaders = {"train": module.train_dataloader(), "val": module.val_dataloader(),
                   "test": module.test_dataloader()}
        chips = {stage: chips_of(loader.sampler) for stage, loader in loaders.items()}
    except ConfigurationError:
        assume(False)  # too few blocks for three stages, or no chip fits a stage
    split = module.split_blocks()
    assert all(len(boxes) for boxes in chips.values())  # a stage without chips raises
    for stage, boxes in chips.items():
        sampler_of = loaders[stage].sampler
        assert isinstance(sampler_of, TileAlignedSampler if sampler == "tile_aligned"
                          else RegionSampler)
        region = split.region(stage)
        inside = shapely.covered_by(shapely.box(*boxes.T), shapely.buffer(region, 1e-6))
        assert inside.all(), stage
    for first, second in itertools.combinations(chips, 2):
        gap = min_distance(chips[first], chips[second])
        assert gap >= buffer, (first, second, gap, buffer)


def test_split_report_and_the_date_holdout(mosaic):
    module = datamodule(mosaic, block_size=640, buffer=320, seed=3,
                        splits={"train": 0.8, "val": 0.2},
                        holdout_dates=("2024-05-13", "2024-05-31"))
    report = module.split_report()
    assert list(report.columns) == ["blocks", "area_km2", "chips", "scenes", "min_distance_m"]
    assert list(report.index) == ["train", "val", "test"]
    split = module.split_blocks()
    assert report.loc["train", "blocks"] + report.loc["val", "blocks"] == len(split.blocks)
    # 5120 m across in 640 m blocks anchored at multiples of 640 m: 9 x 9 blocks, some
    # cut by the area's edge; the training stage gets 80% of the area within a block.
    assert len(split.blocks) == 81
    train = shapely.area(split.blocks[split.stages == "train"]).sum()
    assert train / 5120**2 == pytest.approx(0.8, abs=640**2 / 5120**2)
    assert report.loc["train", "area_km2"] == pytest.approx(split.area("train") / 1e6)
    # Scenes of 2024-05-13 onwards (the last four) are the test stage's, over the whole
    # area (no test ratio); the other stages use the twelve before.
    assert report.loc["test", "scenes"] == 4
    assert report.loc["train", "scenes"] + report.loc["val", "scenes"] >= 12
    times = module.datasets["train"].index.index.left
    assert (times < "2024-05-13").all()
    assert (module.datasets["test"].index.index.left >= "2024-05-13").all()
    # Train and val share dates and are kept apart in space; test is apart in time.
    assert report.loc["train", "min_distance_m"] >= 320
    assert report.loc["val", "min_distance_m"] >= 320
    assert report.loc["test", "min_distance_m"] == math.inf
    assert (report["chips"] > 0).all()


def test_holdout_with_a_test_ratio_holds_out_places_and_times(mosaic):
    module = datamodule(mosaic, block_size=640, buffer=200, seed=1, sampler="grid",
                        holdout_dates=("2024-05-09", "2024-05-16"))
    report = module.split_report()
    split = module.split_blocks()
    test = module.datasets["test"]
    assert (test.index.index.left >= "2024-05-09").all()
    assert (module.datasets["val"].index.index.left < "2024-05-09").all()
    test_chips = shapely.box(*np.asarray(
        [(x.start, y.start, x.stop, y.stop) for x, y, *_ in module.test_dataloader().sampler]).T)
    assert shapely.covered_by(test_chips, shapely.buffer(split.region("test"), 1e-6)).all()
    # Train and val share dates: apart in space; test is apart in time from both.
    assert report.loc["train", "min_distance_m"] >= 200
    assert report.loc["test", "min_distance_m"] == math.inf
    assert report.loc["test", "blocks"] == split.block_count("test") > 0


def test_blocks_options_are_checked(mosaic):
    with pytest.raises(ConfigurationError, match="block_size"):
        datamodule(mosaic)
    with pytest.raises(ConfigurationError, match="buffer"):
        datamodule(mosaic, block_size=500, buffer=-1)
    with pytest.raises(ConfigurationError, match="positive number"):
        datamodule(mosaic, block_size=500, splits={"train": 0.8, "val": "0.2"})
    with pytest.raises(ConfigurationError, match="split_by"):
        RasteretDataModule(mosaic, ["B02"], block_size=500)
    with pytest.raises(ConfigurationError, match="smaller block_size"):
        datamodule(mosaic, block_size=100_000).setup()
