"""``RasteretDataset.plot``: image, mask and prediction side by side, as TorchGeo's
datasets plot."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

# matplotlib comes with torchgeo (the torch extra): the core run on 3.11 has neither.
torch = pytest.importorskip("torch")
pytest.importorskip("torchgeo")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

import rasteret  # noqa: E402
from rasteret.errors import ConfigurationError  # noqa: E402
from testbed.scenes import write_scenes  # noqa: E402

pytestmark = pytest.mark.torch
BANDS = ["B02", "B03", "B04", "B08"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("plot")
    scenes = write_scenes(root / "data", count=1, size=256, tile=128, seed=7)
    rows = [{"id": s.id, "datetime": s.datetime, **{b: str(p) for b, p in s.files.items()}}
            for s in scenes]
    return rasteret.build_from_table(pa.Table.from_pylist(rows), name="plot",
                                     href_columns=[*BANDS, "label"],
                                     workspace_dir=root / "ws", progress=False)


def first_sample(dataset):
    bounds = dataset.bounds
    x, y = bounds[0], bounds[1]
    return dataset[x.start:x.start + 640, y.start:y.start + 640]


def images_of(figure):
    return [axis.get_images()[0].get_array() for axis in figure.axes]


def test_plot_shows_rgb_mask_and_prediction(collection, tmp_path):
    dataset = collection.to_torchgeo_dataset(BANDS, mask_bands=["label"])
    sample = first_sample(dataset)
    sample["prediction"] = torch.rand(4, 64, 64)  # class scores: argmax is plotted
    figure = dataset.plot(sample, suptitle="chip 0")
    assert isinstance(figure, Figure) and len(figure.axes) == 3
    assert [a.get_title() for a in figure.axes] == ["Image (B04, B03, B02)", "Mask",
                                                   "Prediction"]
    assert figure.get_suptitle() == "chip 0"
    rgb, mask, prediction = images_of(figure)
    assert rgb.shape == (64, 64, 3) and 0 <= rgb.min() and rgb.max() <= 1
    # The red channel is B04 stretched between the 2nd and 98th percentiles of RGB.
    shown = sample["image"][[2, 1, 0]].float().numpy()
    low, high = np.percentile(shown, (2, 98))
    np.testing.assert_allclose(rgb[..., 0], np.clip((shown[0] - low) / (high - low), 0, 1),
                               rtol=1e-6)
    np.testing.assert_array_equal(mask, sample["mask"].numpy())
    np.testing.assert_array_equal(prediction, sample["prediction"].numpy().argmax(0))
    figure.savefig(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_single_band_without_mask(collection):
    dataset = collection.to_torchgeo_dataset(BANDS)
    sample = first_sample(dataset)
    figure = dataset.plot(sample, bands=["B08"], show_titles=False)
    assert len(figure.axes) == 1 and figure.axes[0].get_title() == ""
    (grey,) = images_of(figure)
    assert grey.shape == (64, 64)
    assert figure.axes[0].get_images()[0].get_cmap().name == "gray"
    # Channel indices work as band names do.
    by_index = dataset.plot(sample, bands=(3,))
    np.testing.assert_array_equal(images_of(by_index)[0], grey)
    assert by_index.axes[0].get_title() == "Image (B08)"


def test_plot_of_a_mask_dataset_and_errors(collection):
    labels = collection.to_torchgeo_dataset(["label"], is_image=False)
    figure = labels.plot(first_sample(labels))
    assert len(figure.axes) == 1 and figure.axes[0].get_title() == "Mask"
    dataset = collection.to_torchgeo_dataset(["B02", "B08"])
    sample = first_sample(dataset)
    assert dataset.plot(sample).axes[0].get_title() == "Image (B02)"  # < 3 bands: grey
    with pytest.raises(ConfigurationError, match="no band 'B04'"):
        dataset.plot(sample, bands=["B04", "B03", "B02"])
    with pytest.raises(ConfigurationError, match="one band .grey. or three"):
        dataset.plot(sample, bands=["B02", "B08"])
    with pytest.raises(ConfigurationError, match="nothing|no 'image'"):
        dataset.plot({"bounds": sample["bounds"]})


def test_demo_png_is_made_of_plots(collection):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "training_examples" / "demo.py"
    spec = importlib.util.spec_from_file_location("demo", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    dataset = collection.to_torchgeo_dataset(BANDS, mask_bands=["label"])
    sample = first_sample(dataset)
    figures = [dataset.plot({**sample, "prediction": sample["mask"]}) for _ in range(2)]
    width, height = (int(v) for v in figures[0].canvas.get_width_height())
    grid = demo.figure_rows(figures)
    assert grid.shape == (2 * height, width, 3) and grid.dtype == np.uint8
    assert grid.flags["C_CONTIGUOUS"]
