"""Sampling where data and labels are: ``min_valid``, ``positive_fraction`` and
``class_balance`` on TileAlignedSampler and on TorchGeo's samplers (ContentSampler),
with no request to sample and one scan of the labels."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import shapely
from shapely.geometry import shape

torch = pytest.importorskip("torch")
torchgeo = pytest.importorskip("torchgeo")

from torchgeo.samplers import GriddedPatchSampler, RandomPatchSampler  # noqa: E402

import rasteret  # noqa: E402
from rasteret.errors import ConfigurationError  # noqa: E402
from rasteret.torch import ContentSampler, TileAlignedSampler  # noqa: E402
from testbed.wedges import write_wedge_scenes  # noqa: E402

pytestmark = pytest.mark.torch
X0, Y0, RES = 500_000.0, 4_100_000.0, 10.0


@pytest.fixture(scope="module")
def wedges(tmp_path_factory):
    return write_wedge_scenes(tmp_path_factory.mktemp("wedges"))


def build(scenes, workspace, name, *, href=None, **options):
    rows = []
    for scene in scenes:
        row = {"id": scene.id, "datetime": scene.datetime,
               "geometry": shapely.to_wkb(shape(scene.geometry))}
        for band, path in scene.files.items():
            row[band] = href(scene, path) if href else str(path)
        rows.append(row)
    return rasteret.build_from_table(
        pa.Table.from_pylist(rows), name=name, href_columns=["B04", "label"],
        workspace_dir=workspace, progress=False, **options)


@pytest.fixture(scope="module")
def served(wedges, nginx_server, tmp_path_factory):
    """The scenes on nginx, built with the smallest overview read."""
    return build(wedges, tmp_path_factory.mktemp("ws"), "served",
                 href=nginx_server.serve_scenes(wedges, "content-sampling"),
                 valid_coverage="overview")


def scene_at(wedges, t):
    """The scene of a chip's time slice."""
    import pandas as pd

    start = pd.Timestamp(t.start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start
    return min(wedges, key=lambda s: abs((pd.Timestamp(s.datetime) - start).total_seconds()))


def window(array, x, y, *_):
    col0, row0 = round((x.start - X0) / RES), round((Y0 - y.stop) / RES)
    col1, row1 = round((x.stop - X0) / RES), round((Y0 - y.start) / RES)
    return array[row0:row1, col0:col1]


def true_valid(wedges, index):
    x, y, t = index
    return window(scene_at(wedges, t).valid, x, y).mean()


def test_tile_aligned_min_valid_never_yields_a_chip_below_it(wedges, served, nginx_server):
    dataset = served.to_torchgeo_dataset(["B04"])
    nginx_server.clear_log()
    every = list(TileAlignedSampler(dataset, size=128, mode="grid"))
    sampler = TileAlignedSampler(dataset, size=128, mode="grid", min_valid=0.9)
    kept = list(sampler)
    drawn = list(TileAlignedSampler(dataset, size=128, length=300, min_valid=0.9, seed=1))
    assert nginx_server.count("/content-sampling/") == 0  # sampling makes no request
    values = [true_valid(wedges, index) for index in every]
    assert min(values) == 0.0  # there are empty chips to avoid
    assert all(true_valid(wedges, index) >= 0.9 for index in kept + drawn)
    # Few good chips are lost: only those whose coverage cell edges are unsure.
    good = sum(v >= 0.9 for v in values)
    assert len(kept) >= 0.9 * good
    # The pixels read agree: the B04 chips hold no more than 10% nodata.
    for index in kept[::9]:
        image = dataset[index]["image"][0].numpy()
        assert (image != 0).mean() >= 0.9


def test_torchgeo_samplers_wrapped_keep_min_valid(wedges, served, nginx_server):
    nginx_server.clear_log()
    # TorchGeo's spatial samplers mosaic every scene under a chip: the best scene
    # bounds it, so only the chips no scene fills are dropped (here: one scene).
    orbit = served.take_rows([0]).to_torchgeo_dataset(["B04"])
    random = ContentSampler(RandomPatchSampler(orbit, size=96, length=200), orbit,
                            min_valid=0.9, seed=0)
    chips = list(random)
    halves = served.take_rows([0, 1]).to_torchgeo_dataset(["B04"])  # orbit and margin
    grid = ContentSampler(GriddedPatchSampler(halves, size=128, stride=128), halves,
                          min_valid=0.9)
    filtered = list(grid)
    assert nginx_server.count("/content-sampling/") == 0
    assert len(chips) == len(random) == 200
    assert all(window(wedges[0].valid, *index).mean() >= 0.9 for index in chips)
    assert len(filtered) < len(grid.sampler)
    either = wedges[0].valid | wedges[1].valid
    for index in filtered:
        assert max(window(s.valid, *index).mean() for s in wedges[:2]) >= 0.9
        assert window(either, *index).mean() >= 0.9
        assert (halves[index]["image"][0].numpy() != 0).mean() >= 0.9


def test_older_collection_without_coverage_samples_from_geometry(wedges, tmp_path):
    collection = build(wedges, tmp_path, "old", valid_coverage=None)
    assert "valid_coverage" not in collection.column_names
    dataset = collection.to_torchgeo_dataset(["B04"])
    kept = list(TileAlignedSampler(dataset, size=128, mode="grid", min_valid=0.9))
    # Geometry and sparse tiles still apply (the overview-only margin does not).
    orbit = [i for i in kept if scene_at(wedges, i[2]).kind == "orbit"]
    assert orbit and all(true_valid(wedges, index) >= 0.9 for index in orbit)


def has_positive(wedges, index):
    x, y, t = index
    return bool((window(scene_at(wedges, t).labels, x, y) > 0).any())


def test_positive_fraction_is_respected_and_histograms_are_cached(wedges, served,
                                                                 nginx_server):
    dataset = served.to_torchgeo_dataset(["B04"], mask_bands=["label"])
    nginx_server.clear_log()
    sampler = TileAlignedSampler(dataset, size=128, length=2000, positive_fraction=0.3,
                                 seed=4)
    scan = nginx_server.count("/content-sampling/")
    assert 0 < scan <= 16 * len(wedges)  # the label tiles once, at most one request each
    chips = list(sampler)
    positive = np.array([has_positive(wedges, index) for index in chips])
    assert abs(positive.mean() - 0.3) < 0.04
    # Without positive_fraction, positives are rarer: the balance is the sampler's doing.
    every = list(TileAlignedSampler(dataset, size=128, mode="grid"))
    assert np.mean([has_positive(wedges, index) for index in every]) < 0.2
    nginx_server.clear_log()
    again = TileAlignedSampler(dataset, size=128, length=500, positive_fraction=0.8,
                               min_valid=0.5, seed=5)
    wrapped = ContentSampler(RandomPatchSampler(dataset, size=128, length=100), dataset,
                             positive_fraction=0.5, seed=1)
    list(again), list(wrapped)
    assert nginx_server.count("/content-sampling/") == 0  # histograms cached


def test_class_balance_weights_classes(wedges, served):
    dataset = served.to_torchgeo_dataset(["B04"], mask_bands=["label"])
    sampler = TileAlignedSampler(dataset, size=128, length=3000, class_balance={1: 1, 2: 3},
                                 seed=2)
    holds = []
    for x, y, t in sampler:
        labels = window(scene_at(wedges, t).labels, x, y)
        holds.append(((labels == 1).any(), (labels == 2).any()))
    ones, twos = np.array(holds).T
    # Class 2 (a small square) is in few chips: drawn 3 times as often as class 1.
    assert abs(twos.mean() - 0.75) < 0.04
    assert ones.mean() > 0.2


def test_label_options_are_checked(served):
    dataset = served.to_torchgeo_dataset(["B04"])
    with pytest.raises(ConfigurationError, match="mask_bands"):
        TileAlignedSampler(dataset, size=128, positive_fraction=0.5)
    labelled = served.to_torchgeo_dataset(["B04"], mask_bands=["label"])
    with pytest.raises(ConfigurationError, match="mode='random'"):
        TileAlignedSampler(labelled, size=128, mode="grid", positive_fraction=0.5)
    with pytest.raises(ConfigurationError, match="between 0 and 1"):
        TileAlignedSampler(labelled, size=128, min_valid=1.5)
    with pytest.raises(ConfigurationError, match="class 7"):
        TileAlignedSampler(labelled, size=128, class_balance={7: 1.0})


def test_a_mask_dataset_gives_the_labels(wedges, served, tmp_path):
    """Labels in a dataset of their own (one label map under three image scenes)."""
    labels = build(wedges[:1], tmp_path, "labels-only").to_torchgeo_dataset(["label"])
    images = served.to_torchgeo_dataset(["B04"])
    sampler = TileAlignedSampler(images, size=128, length=1000, positive_fraction=0.5,
                                 labels=labels, seed=3)
    positive = np.array([(window(wedges[0].labels, *index) > 0).any() for index in sampler])
    assert abs(positive.mean() - 0.5) < 0.05


def test_min_valid_with_an_roi_and_ranks(wedges, served):
    dataset = served.to_torchgeo_dataset(["B04"])
    roi = shapely.box(X0, Y0 - 1024 * RES, X0 + 512 * RES, Y0)  # the west half
    shares = [list(TileAlignedSampler(dataset, size=128, mode="grid", roi=roi, min_valid=0.9,
                                      rank=rank, world_size=2)) for rank in (0, 1)]
    chips = shares[0] + shares[1]
    assert chips and len(shares[0]) == len(shares[1])
    for x, y, t in chips:
        assert x.stop <= X0 + 512 * RES
        assert true_valid(wedges, (x, y, t)) >= 0.9


@pytest.mark.parametrize("sampler", ["tile_aligned", "random", "grid"])
def test_the_datamodule_keeps_min_valid_on_every_stage(wedges, served, sampler):
    from rasteret.torch import RasteretDataModule

    orbit = served.take_rows([0])  # one half-empty scene: chips of one time slice
    module = RasteretDataModule(orbit, ["B04"], chip_size=128, batch_size=4, num_workers=0,
                                sampler=sampler, length=40, seed=0, min_valid=0.9)
    module.setup("fit")
    for name, loader in (("train", module.train_dataloader()), ("val", module.val_dataloader())):
        chips = list(loader.sampler)
        assert chips, name
        assert all(window(wedges[0].valid, *index).mean() >= 0.9 for index in chips), name
    with pytest.raises(ConfigurationError, match="min_valid"):
        RasteretDataModule(orbit, ["B04"], min_valid=1.5)
