"""normalize="stats" in the datamodule: batches are (x - mean) / std per band on the
device after transfer, with the band statistics of the collection (stored ones, or
the training stage's computed in setup); mean_std() exports the same lists."""

from __future__ import annotations

import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

import rasteret  # noqa: E402
from rasteret.errors import ConfigurationError  # noqa: E402
from rasteret.torch import RasteretDataModule  # noqa: E402
from testbed.scenes import write_scenes  # noqa: E402

pytestmark = pytest.mark.torch
BANDS = ["B02", "B08"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("normalize")
    scenes = write_scenes(root, count=2, size=512, tile=128, bands=tuple(BANDS),
                          label=False, seed=9)
    rows = [{"id": s.id, "datetime": s.datetime, **{b: str(s.files[b]) for b in BANDS}}
            for s in scenes]
    return rasteret.build_from_table(pa.Table.from_pylist(rows), name="normalize",
                                     href_columns=BANDS, workspace_dir=root / "ws",
                                     progress=False)


def first_batch(module: RasteretDataModule) -> dict:
    module.setup("fit")
    return next(iter(module.train_dataloader()))


def test_batches_are_normalised_with_the_band_statistics(collection):
    module = RasteretDataModule(collection, BANDS, chip_size=128, batch_size=4,
                                num_workers=0, sampler="grid", normalize="stats")
    batch = first_batch(module)
    raw = batch["image"].clone()
    stats = collection.band_stats(BANDS)  # stored by setup: no second read
    means, stds = module.mean_std()
    assert means == pytest.approx(list(stats["mean"]))
    assert stds == pytest.approx(list(stats["std"]))
    out = module.on_after_batch_transfer(batch, 0)["image"]
    assert out.dtype == torch.float32 and out.shape == raw.shape
    mean = torch.tensor(means).view(1, -1, 1, 1)
    std = torch.tensor(stds).view(1, -1, 1, 1)
    assert torch.allclose(out, (raw.float() - mean) / std, atol=1e-5)
    # Statistics of each file's smallest overview describe the chips' pixels well.
    per_band = out.transpose(0, 1).reshape(len(BANDS), -1)
    assert per_band.mean(dim=1).abs().max() < 0.3
    assert ((per_band.std(dim=1) - 1).abs() < 0.3).all()


def test_time_series_batches_normalise_the_channel_axis(collection):
    module = RasteretDataModule(collection, BANDS, chip_size=128, batch_size=2,
                                num_workers=0, sampler="grid", normalize="stats")
    module.setup("fit")
    means, stds = module.mean_std()
    image = torch.ones(2, 3, len(BANDS), 4, 4) * torch.tensor(means).view(1, 1, -1, 1, 1)
    out = module.on_after_batch_transfer({"image": image}, 0)["image"]
    assert torch.allclose(out, torch.zeros_like(out), atol=1e-4)


def test_normalize_options_are_checked(collection):
    with pytest.raises(ConfigurationError, match="normalize"):
        RasteretDataModule(collection, BANDS, normalize="minmax")
    with pytest.raises(ConfigurationError, match="not both"):
        RasteretDataModule(collection, BANDS, normalize="stats", image_scale=1e-4)


def test_cthw_time_series_batches_normalise_their_channel_axis(collection):
    module = RasteretDataModule(collection, BANDS, chip_size=128, batch_size=2,
                                num_workers=0, sampler="grid", normalize="stats",
                                time_series=True, time_steps=2, layout="CTHW")
    batch = first_batch(module)
    assert batch["image"].shape[1:3] == (len(BANDS), 2)  # [B, C, T, H, W]
    means, stds = module.mean_std()
    image = torch.ones(2, len(BANDS), 3, 4, 4) * torch.tensor(means).view(1, -1, 1, 1, 1)
    out = module.on_after_batch_transfer({"image": image}, 0)["image"]
    assert torch.allclose(out, torch.zeros_like(out), atol=1e-4)
