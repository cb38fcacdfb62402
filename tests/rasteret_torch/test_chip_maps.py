"""Chip maps and split maps (rasteret.torch.plots, issue 21 item 6): a sampler's chips
over the footprints, for TileAlignedSampler, TorchGeo's samplers and plain bounds; the
datamodule's block split with its stages, buffer and chips; headless PNG output; bad
input refused."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchgeo")
pytest.importorskip("lightning")
matplotlib = pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402
from torchgeo.samplers import GriddedPatchSampler, RandomPatchSampler  # noqa: E402

import rasteret  # noqa: E402
from rasteret.errors import ConfigurationError  # noqa: E402
from rasteret.torch import RasteretDataModule, TileAlignedSampler, plot_chips  # noqa: E402
from rasteret.torch.plots import plot_split, thinned  # noqa: E402
from testbed.scenes import write_scenes  # noqa: E402

pytestmark = pytest.mark.torch
SIZE, TILE, RES = 128, 32, 10.0  # 1280 m scenes in 32-pixel tiles (GDAL writes 128)
ORIGIN = (500_000.0, 4_100_000.0)
START = dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    """Four scenes on a 2 x 2 grid, one day apart."""
    root = tmp_path_factory.mktemp("chipmaps")
    rows = []
    for number, (i, j) in enumerate(itertools.product(range(2), range(2))):
        origin = (ORIGIN[0] + i * SIZE * RES, ORIGIN[1] - j * SIZE * RES)
        scene = write_scenes(root / f"{i}{j}", count=1, size=SIZE, tile=128, bands=("B02",),
                             label=False, origin=origin, seed=number)[0]
        rows.append({"id": f"S{i}{j}", "datetime": START + dt.timedelta(days=number),
                     "B02": str(scene.files["B02"])})
    return rasteret.build_from_table(pa.Table.from_pylist(rows), name="chipmaps",
                                     href_columns=["B02"], workspace_dir=root / "ws",
                                     progress=False)


def named(figure: Figure, label: str):
    return [c for c in figure.axes[0].collections if c.get_label() == label]


def legend_texts(figure: Figure) -> list[str]:
    return [t.get_text() for t in figure.axes[0].get_legend().get_texts()]


def test_tile_aligned_chips_over_the_footprints(mosaic, tmp_path):
    dataset = mosaic.to_torchgeo_dataset(["B02"], chip_size=32)
    sampler = TileAlignedSampler(dataset, size=32, mode="grid")
    figure = plot_chips(sampler, dataset)
    assert isinstance(figure, Figure)
    (chips,) = named(figure, "chips")
    assert len(chips.get_paths()) == len(sampler.chip_bounds()) == 4 * 16
    (footprints,) = named(figure, "footprints")
    assert len(footprints.get_paths()) == 4
    assert figure.axes[1].get_ylabel() == "scene date"  # the colorbar
    assert legend_texts(figure) == ["scene footprints (4)", "valid data", "chips (64)"]
    assert figure.axes[0].get_xlabel() == "x (metre)"
    figure.savefig(tmp_path / "chips.png")
    assert (tmp_path / "chips.png").read_bytes()[:4] == b"\x89PNG"


def test_torchgeo_samplers_and_plain_bounds(mosaic):
    dataset = mosaic.to_torchgeo_dataset(["B02"], chip_size=32)
    random = RandomPatchSampler(dataset, size=32, length=10)
    assert len(named(plot_chips(random, dataset), "chips")[0].get_paths()) == 10
    grid = GriddedPatchSampler(dataset, size=64, stride=64)
    figure = plot_chips(grid, dataset, title="grid")
    assert figure.axes[0].get_title() == "grid"
    assert len(named(figure, "chips")[0].get_paths()) == len(list(grid))
    boxes = np.array([[500_000, 4_099_000, 500_320, 4_099_320]], float)
    assert len(named(plot_chips(boxes, dataset), "chips")[0].get_paths()) == 1
    # Beyond the cap, an evenly spaced subset is drawn.
    many = np.tile(boxes, (30, 1))
    assert len(thinned(many, 7)) == 7


@pytest.mark.parametrize("bad", ["chips", np.zeros(4), np.zeros((2, 3)), np.zeros((0, 4))])
def test_bad_chips_are_a_configuration_error(mosaic, bad):
    dataset = mosaic.to_torchgeo_dataset(["B02"], chip_size=32)
    with pytest.raises(ConfigurationError):
        plot_chips(bad, dataset)


@pytest.mark.parametrize("sampler", ["tile_aligned", "random"])
def test_split_map_shows_stages_buffer_and_chips(mosaic, sampler, tmp_path):
    module = RasteretDataModule(mosaic, ["B02"], chip_size=32, batch_size=4, num_workers=0,
                                split_by="blocks", block_size=640, buffer=320, seed=3,
                                sampler=sampler, length=40)
    figure = module.plot_splits()
    split = module.split_blocks()
    stages = ["train", "val", "test"]
    texts = legend_texts(figure)
    assert texts[0] == "scene footprints"
    assert [t.split(" (")[0] for t in texts[1:4]] == stages
    assert texts[4] == "buffer (320)"
    for stage in stages:
        assert len(named(figure, f"region {stage}")) == 1
        (chips,) = named(figure, f"chips {stage}")
        assert len(chips.get_paths()) > 0
        assert f"{split.block_count(stage)} blocks" in texts[1 + stages.index(stage)]
    assert len(named(figure, "blocks")[0].get_paths()) == len(split.blocks)
    assert len(named(figure, "footprints")[0].get_paths()) == 4
    assert len(named(figure, "buffer")) == 1
    figure.savefig(tmp_path / "split.png")
    # Without chips: the regions only.
    bare = module.plot_splits(chips=False, title="regions")
    assert not [c for c in bare.axes[0].collections if c.get_label().startswith("chips")]
    assert bare.axes[0].get_title() == "regions"


def test_split_map_needs_a_block_split(mosaic):
    module = RasteretDataModule(mosaic, ["B02"], chip_size=32, batch_size=4, num_workers=0,
                                split_by="date", splits={"train": ("2024-05-01", "2024-05-02"),
                                                         "val": ("2024-05-03", "2024-05-05")})
    with pytest.raises(ConfigurationError, match="blocks"):
        module.plot_splits()


def test_plot_split_on_its_own():
    import shapely

    from rasteret.splits import block_split

    split = block_split(shapely.box(0, 0, 4000, 4000), block_size=1000, buffer=100, seed=1)
    figure = plot_split(split)
    assert [t.split(" (")[0] for t in legend_texts(figure)] == ["train", "val", "test",
                                                                "buffer"]
    assert figure.axes[0].get_xlabel() == "x"


def test_chip_map_shades_valid_coverage_when_recorded(mosaic, monkeypatch):
    import shapely

    from rasteret.collection import Collection
    from rasteret.plots import COVERAGE_ACCESSOR

    dataset = mosaic.to_torchgeo_dataset(["B02"], chip_size=32)
    sampler = TileAlignedSampler(dataset, size=32, mode="grid")
    # Recorded at build (whole scenes here), the coverage is shaded.
    assert len(named(plot_chips(sampler, dataset), "valid data")[0].get_paths()) == 4
    assert named(plot_chips(sampler, dataset, coverage=False), "valid data") == []
    degrees = shapely.from_wkb(mosaic.column("geometry").to_numpy(zero_copy_only=False))
    monkeypatch.setattr(Collection, COVERAGE_ACCESSOR,
                        lambda self: [g.centroid.buffer(0.001) for g in degrees], raising=False)
    figure = plot_chips(sampler, dataset)
    assert len(named(figure, "valid data")[0].get_paths()) == 4
    assert "valid data" in legend_texts(figure)
