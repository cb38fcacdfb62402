"""rasteret.torch.predict: a model swept over an roi, blended, streamed into a COG that
GDAL and rasteret read again; exact for identity-like models, for every blend."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchgeo")

import rasterio  # noqa: E402
from rasterio.windows import from_bounds  # noqa: E402

import rasteret  # noqa: E402
from rasteret.errors import ConfigurationError, NoCoverageError, WriteConflictError  # noqa: E402
from rasteret.torch import predict  # noqa: E402
from rasteret.torch.blend import TileRowBlender, blend_window  # noqa: E402
from rasteret.write import CLASS_NAMES_ITEM, finished_rows  # noqa: E402
from testbed.cogcheck import validate_cog  # noqa: E402
from testbed.scenes import write_scenes  # noqa: E402

pytestmark = pytest.mark.torch
BANDS = ["B02", "B04"]
X0, Y0, RES = 500_000.0, 4_100_000.0, 10.0
# An roi off the tile grid: pixels 53..690 across, 37..470 down of the first scene.
ROI = (X0 + 53 * RES, Y0 - 470 * RES, X0 + 690 * RES, Y0 - 37 * RES)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    # Two scenes, the second shifted 256 px east: the roi spans both (a mosaic).
    return write_scenes(tmp_path_factory.mktemp("predict-scenes"), count=2, size=512,
                        tile=256, shift=256, bands=tuple(BANDS), label=True, seed=5)


@pytest.fixture(scope="module")
def collection(scenes, tmp_path_factory):
    rows = [{"id": s.id, "datetime": s.datetime, **{b: str(p) for b, p in s.files.items()}}
            for s in scenes]
    return rasteret.build_from_table(pa.Table.from_pylist(rows), name="predict",
                                     href_columns=[*BANDS, "label"],
                                     workspace_dir=tmp_path_factory.mktemp("ws"),
                                     progress=False)


def expected_band(scenes, band, transform, shape):
    """The latest scene's pixels, else the earlier one's, on the output grid; NaN where
    no scene has data or outside the roi (the output's top-left margin)."""
    bounds = rasterio.transform.array_bounds(*shape, transform)
    mosaic = np.full(shape, np.nan)
    for scene in scenes:  # oldest first; later scenes win
        with rasterio.open(scene.files[band]) as src:
            data = src.read(1, window=from_bounds(*bounds, transform=src.transform),
                            boundless=True, fill_value=0).astype(float)
        mosaic = np.where(data != 0, data, mosaic)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    x = transform.c + (cols + 0.5) * RES
    y = transform.f - (rows + 0.5) * RES
    inside = (x > ROI[0]) & (x < ROI[2]) & (y > ROI[1]) & (y < ROI[3])
    return np.where(inside, mosaic, np.nan)


def read_map(path):
    with rasterio.open(path) as src:
        return src.read(), src.transform, src


def first_band(image):
    return image[:, :1]


@pytest.mark.parametrize("blend", ["cosine", "mean", "center"])
@pytest.mark.parametrize("overlap", [0, 37, 64])
def test_identity_reproduces_the_input_exactly(collection, scenes, tmp_path, blend, overlap):
    out = tmp_path / f"identity-{blend}-{overlap}.tif"
    result = predict(first_band, collection, bands=BANDS, out=out, roi=ROI, geometry_crs=32633,
                     chip_size=128, overlap=overlap, batch_size=5, blend=blend)
    # The map comes back as a collection of one scene (named after the file).
    assert result.name == out.stem and result.band_view(0, "prediction").href == str(out)
    data, transform, src = read_map(out)
    # The grid starts on the inputs' tile grid (the roi's top-left tile corner).
    assert (transform.c, transform.f) == (X0, Y0)
    assert data.shape == (1, 470, 690)
    assert src.crs.to_epsg() == 32633 and np.isnan(src.nodata)
    np.testing.assert_array_equal(data[0], expected_band(scenes, "B02", transform, (470, 690)))
    assert validate_cog(out) == []


def test_constant_and_add_one_models(collection, scenes, tmp_path):
    constant = tmp_path / "constant.tif"
    predict(lambda image: torch.full((image.shape[0], 3, 96, 96), 7.25), collection,
            bands=BANDS, out=constant, roi=ROI, geometry_crs=32633, chip_size=96, overlap=30)
    data, transform, _ = read_map(constant)
    reference = expected_band(scenes, "B02", transform, data.shape[1:])
    for channel in range(3):
        assert (data[channel][~np.isnan(reference)] == 7.25).all()
        assert np.isnan(data[channel][np.isnan(reference)]).all()
    plus_one = tmp_path / "plus-one.tif"
    predict(lambda image: image + 1, collection, bands=BANDS, out=plus_one, roi=ROI,
            geometry_crs=32633, chip_size=128, overlap=64)
    data, transform, src = read_map(plus_one)
    for channel, band in enumerate(BANDS):
        np.testing.assert_array_equal(
            data[channel], expected_band(scenes, band, transform, data.shape[1:]) + 1)


def test_classes_with_colours_and_scores(collection, scenes, tmp_path):
    def two_classes(image):  # logits: class 1 where B02 is above 2000
        high = (image[:, :1] > 2000).float()
        return torch.cat([1 - high, high], dim=1) * 10

    out = tmp_path / "classes.tif"
    predict(two_classes, collection, bands=BANDS, out=out, roi=ROI, geometry_crs=32633,
            chip_size=128, overlap=32, output="classes", class_names=["low", "high"],
            colors={0: (0, 0, 255), 1: (255, 0, 0)})
    with rasterio.open(out) as src:
        classes = src.read(1)
        assert src.dtypes[0] == "uint8" and src.nodata == 255
        assert src.colormap(1)[1] == (255, 0, 0, 255)
        assert json.loads(src.tags()[CLASS_NAMES_ITEM]) == ["low", "high"]
        reference = expected_band(scenes, "B02", src.transform, classes.shape)
    expected = np.where(np.isnan(reference), 255, reference > 2000).astype(np.uint8)
    np.testing.assert_array_equal(classes, expected)
    assert validate_cog(out) == []
    scores = tmp_path / "scores.tif"
    predict(two_classes, collection, bands=BANDS, out=scores, roi=ROI, geometry_crs=32633,
            chip_size=128, overlap=32, output="scores", class_names=["low", "high"])
    with rasterio.open(scores) as src:
        probabilities = src.read()
        assert src.descriptions == ("low", "high")
    valid = ~np.isnan(reference)
    np.testing.assert_allclose(probabilities.sum(axis=0)[valid], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.argmax(probabilities, axis=0)[valid], expected[valid])
    half = tmp_path / "scores16.tif"
    predict(two_classes, collection, bands=BANDS, out=half, roi=ROI, geometry_crs=32633,
            chip_size=128, overlap=32, output="scores", dtype="float16")
    with rasterio.open(half) as src:
        assert src.dtypes == ("float16", "float16")
        np.testing.assert_allclose(src.read(), probabilities, atol=1e-3)


def test_the_map_reads_back_through_rasteret(collection, scenes, tmp_path):
    out = tmp_path / "B02pred.tif"
    predict(first_band, collection, bands=BANDS, out=out, roi=ROI, geometry_crs=32633,
            chip_size=128, overlap=16)
    table = pa.Table.from_pylist([{"id": "prediction", "datetime": None,
                                   "prediction": str(out)}])
    maps = rasteret.build_from_table(table, name="maps", href_columns=["prediction"],
                                     workspace_dir=tmp_path / "ws", progress=False)
    pixels = maps.get_numpy(ROI, ["prediction"], geometry_crs=32633, progress=False)
    with rasterio.open(out) as src:
        window = from_bounds(*ROI, transform=src.transform)
        np.testing.assert_array_equal(pixels[0, 0], src.read(1, window=window))


def test_rows_of_tiles_in_flight_are_bounded(collection, tmp_path, monkeypatch):
    blenders = []

    class Recording(TileRowBlender):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            blenders.append(self)

    monkeypatch.setattr("rasteret.torch.mapping.TileRowBlender", Recording)
    predict(first_band, collection, bands=BANDS, out=tmp_path / "rows.tif", chip_size=64,
            overlap=16, batch_size=3, tile_size=32)  # 24 rows of 32-px tiles
    (blender,) = blenders
    assert blender.height // blender.tile == 16
    # A chip spans 64 px: at most three rows of tiles, plus those the batch reached.
    assert blender.peak_rows <= 4


def test_bad_input_writes_nothing(collection, tmp_path):
    out = tmp_path / "bad.tif"
    with pytest.raises(ConfigurationError, match=r"\[B, K, 128, 128\]"):
        predict(lambda image: image[:, :, :64, :64], collection, bands=BANDS, out=out,
                roi=ROI, geometry_crs=32633, chip_size=128, overlap=0)
    with pytest.raises(NoCoverageError, match="covers"):
        predict(first_band, collection, bands=BANDS, out=out, roi=(10.0, 10.0, 10.1, 10.1))
    with pytest.raises(ConfigurationError, match="overlap"):
        predict(first_band, collection, bands=BANDS, out=out, chip_size=64, overlap=64)
    with pytest.raises(ConfigurationError, match="blend"):
        predict(first_band, collection, bands=BANDS, out=out, blend="max")
    assert os.listdir(tmp_path) == []
    out.write_bytes(b"another run's map")
    with pytest.raises(WriteConflictError):
        predict(first_band, collection, bands=BANDS, out=out)
    assert out.read_bytes() == b"another run's map"


def test_windows_never_vanish_and_cosine_tapers_sum_to_one():
    for blend in ("cosine", "mean", "center"):
        for overlap in (0, 1, 31, 64):
            window = blend_window(128, overlap, blend)
            assert window.shape == (128, 128) and (window > 0).all() and window.max() <= 1.0
    # Two neighbours overlapping by 40 px: their cosine weights add up to 1 there.
    line = blend_window(128, 40, "cosine")[64]
    np.testing.assert_allclose(line[-40:] + line[:40], 1.0)


def test_dataset_options_workers_and_a_dataset_source(collection, scenes, tmp_path):
    out = tmp_path / "earliest.tif"
    predict(first_band, collection, bands=BANDS, out=out, roi=ROI, geometry_crs=32633,
            chip_size=128, overlap=32, num_workers=1, mosaic_order="earliest",
            options=rasteret.ReadOptions(validate=True))
    data, transform, _ = read_map(out)
    expected = expected_band(scenes[::-1], "B02", transform, data.shape[1:])
    np.testing.assert_array_equal(data[0], expected)
    dataset = collection.to_torchgeo_dataset(["B04"])
    again = tmp_path / "dataset.tif"
    predict(first_band, dataset, out=again, roi=ROI, geometry_crs=32633, chip_size=128,
            overlap=32, date_range=("2024-05-01", "2024-05-01"))  # the first scene only
    data, transform, _ = read_map(again)
    expected = expected_band(scenes[:1], "B04", transform, data.shape[1:])
    np.testing.assert_array_equal(data[0], expected)
    with pytest.raises(ConfigurationError, match="belong to a collection"):
        predict(first_band, dataset, out=tmp_path / "x.tif", mosaic_order="earliest")
    with pytest.raises(ConfigurationError, match="belong to a collection"):
        predict(first_band, dataset, out=tmp_path / "x.tif",
                options=rasteret.ReadOptions(apply_scale=True))


class Counting:
    """The first band, counting the chips it sees; fails on call ``fail_at``."""

    def __init__(self, fail_at=None):
        self.chips, self.calls, self.fail_at = 0, 0, fail_at

    def __call__(self, image):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("out of memory")
        self.chips += len(image)
        return first_band(image)


def test_a_failed_run_resumes_from_its_journal_to_the_same_file(collection, tmp_path):
    options = dict(bands=BANDS, roi=ROI, geometry_crs=32633, chip_size=64, overlap=16,
                   batch_size=4, tile_size=64)
    whole, uninterrupted = tmp_path / "whole.tif", Counting()
    predict(uninterrupted, collection, out=whole, **options)
    out, journal = tmp_path / "resumed.tif", tmp_path / "journal"
    with pytest.raises(RuntimeError):
        predict(Counting(fail_at=12), collection, out=out, journal=journal, **options)
    assert not out.exists() and finished_rows(journal) >= 2
    second = Counting()
    predict(second, collection, out=out, journal=journal, **options)
    assert out.read_bytes() == whole.read_bytes()
    assert not journal.exists()
    assert 0 < second.chips < uninterrupted.chips  # the finished rows' chips are skipped


def test_a_run_killed_while_publishing_resumes(collection, tmp_path, monkeypatch):
    options = dict(bands=BANDS, roi=ROI, geometry_crs=32633, chip_size=128, overlap=32)
    whole, uninterrupted = tmp_path / "whole.tif", Counting()
    predict(uninterrupted, collection, out=whole, **options)
    out, journal = tmp_path / "resumed.tif", tmp_path / "journal"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # every tile journaled, then killed
        patch.setattr("rasteret.write.cog.cog_head", killed)
        with pytest.raises(KeyboardInterrupt):
            predict(first_band, collection, out=out, journal=journal, **options)
    assert not out.exists() and finished_rows(journal) == 2  # every row of tiles
    last_row = Counting()
    predict(last_row, collection, out=out, journal=journal, **options)
    assert out.read_bytes() == whole.read_bytes()
    # Only the chips of the last row of tiles run again, to publish through.
    assert 0 < last_row.chips < uninterrupted.chips


def test_lightning_writes_the_same_map_through_the_callback(collection, tmp_path):
    import lightning as L

    from rasteret.torch import RasteretDataModule, RasteretPredictionWriter

    class FirstBand(L.LightningModule):
        def predict_step(self, batch, batch_idx):
            return first_band(batch["image"].float())

    direct = tmp_path / "direct.tif"
    predict(first_band, collection, bands=BANDS, out=direct, roi=ROI, geometry_crs=32633,
            chip_size=128, overlap=32, blend="center")
    datamodule = RasteretDataModule(collection, BANDS, chip_size=128, batch_size=3,
                                    num_workers=0, roi=ROI, geometry_crs=32633, overlap=32)
    writer = RasteretPredictionWriter(tmp_path / "lightning.tif", blend="center")
    trainer = L.Trainer(callbacks=[writer], devices=1, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False)
    trainer.predict(FirstBand(), datamodule=datamodule, return_predictions=False)
    assert writer.path == str(tmp_path / "lightning.tif")
    assert (tmp_path / "lightning.tif").read_bytes() == direct.read_bytes()

    class WrongShape(L.LightningModule):
        def predict_step(self, batch, batch_idx):
            return batch["image"][:, :1, :10].float()

    broken = RasteretPredictionWriter(tmp_path / "broken.tif")
    trainer = L.Trainer(callbacks=[broken], devices=1, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False)
    with pytest.raises(ConfigurationError, match="needs a tensor"):
        trainer.predict(WrongShape(), datamodule=datamodule, return_predictions=False)
    assert not (tmp_path / "broken.tif").exists()


def test_a_polygon_roi_reads_only_the_chips_it_touches(collection, scenes, tmp_path):
    import shapely

    minx, miny, maxx, maxy = ROI
    triangle = shapely.Polygon([(minx, maxy), (maxx, maxy), (minx, miny)])
    box, tri = Counting(), Counting()
    options = dict(bands=BANDS, geometry_crs=32633, chip_size=64, overlap=16)
    predict(box, collection, out=tmp_path / "box.tif", roi=ROI, **options)
    predict(tri, collection, out=tmp_path / "tri.tif", roi=triangle, **options)
    assert tri.chips < 0.7 * box.chips
    data, transform, _ = read_map(tmp_path / "tri.tif")
    reference = expected_band(scenes, "B02", transform, data.shape[1:])
    rows, cols = np.mgrid[0:data.shape[1], 0:data.shape[2]]
    x = transform.c + (cols + 0.5) * RES
    y = transform.f - (rows + 0.5) * RES
    inside = shapely.contains_xy(triangle, x, y)
    np.testing.assert_array_equal(data[0][inside], reference[inside])
    far = (x - minx) / (maxx - minx) + (maxy - y) / (maxy - miny) > 1.5  # the far corner
    assert np.isnan(data[0][far]).all()


def test_a_named_run_returns_its_map_as_a_collection_that_trains_again(collection, scenes,
                                                                       tmp_path):
    from torchgeo.datasets import IntersectionDataset

    def two_classes(image):
        high = (image[:, :1] > 2000).float()
        return torch.cat([1 - high, high], dim=1)

    maps = predict(two_classes, collection, bands=BANDS, out=tmp_path / "classes.tif",
                   roi=ROI, geometry_crs=32633, chip_size=128, overlap=32, output="classes",
                   name="landcover", workspace_dir=tmp_path / "ws")
    assert isinstance(maps, rasteret.Collection) and len(maps) == 1
    assert maps.column("rasteret:source_collection").to_pylist() == ["predict"]
    assert maps.column("rasteret:model").to_pylist() == ["two_classes"]
    assert rasteret.load("landcover", workspace_dir=tmp_path / "ws").name == "landcover"
    with rasterio.open(tmp_path / "classes.tif") as src:
        classes = src.read(1)
    read = maps.get_xarray(ROI, ["prediction"], geometry_crs=32633, progress=False)
    np.testing.assert_array_equal(read["prediction"].values[0], classes[37:470, 53:690])
    # The map as labels of the imagery it was predicted from.
    images = collection.to_torchgeo_dataset(BANDS)
    labels = maps.to_torchgeo_dataset(["prediction"], is_image=False)
    both = IntersectionDataset(images, labels)
    x0, y0 = X0 + 100 * RES, Y0 - 300 * RES
    sample = both[x0:x0 + 640:RES, y0:y0 + 640:RES]
    assert sample["image"].shape == (2, 64, 64) and sample["mask"].shape == (64, 64)
    np.testing.assert_array_equal(sample["mask"].numpy(), classes[236:300, 100:164])


def test_writes_the_map_to_an_object_store(collection, scenes, moto_server, tmp_path):
    moto_server.create_bucket("maps")
    backend = moto_server.backend()
    url = "s3://maps/run/identity.tif"
    options = dict(bands=BANDS, roi=ROI, geometry_crs=32633, chip_size=128, overlap=32,
                   backend=backend)
    maps = predict(first_band, collection, out=url, **options)
    assert maps.band_view(0, "prediction").href == url
    assert len(maps) == 1 and maps.name == "identity"  # the output's stem
    local = tmp_path / "copy.tif"
    local.write_bytes(moto_server.boto3_client().get_object(
        Bucket="maps", Key="run/identity.tif")["Body"].read())
    data, transform, _ = read_map(local)
    np.testing.assert_array_equal(data[0], expected_band(scenes, "B02", transform,
                                                         data.shape[1:]))
    assert validate_cog(local) == []
    second = Counting()
    with pytest.raises(WriteConflictError):  # another run's map: found before any chip
        predict(second, collection, out=url, **options)
    assert second.calls == 0


# -- the time dimension: one map per date, per bin, or one mosaic ---------------------
SWEEP = {"bands": BANDS, "roi": ROI, "geometry_crs": 32633, "chip_size": 128, "overlap": 32}


def day(scene):
    return scene.datetime.strftime("%Y-%m-%d")


def test_a_time_series_writes_one_map_per_date_equal_to_each_date_alone(collection, scenes,
                                                                        tmp_path):
    maps = predict(first_band, collection, out=tmp_path / "id-{date}.tif", time_series=True,
                   workspace_dir=tmp_path / "ws", **SWEEP)
    assert sorted(p.name for p in tmp_path.glob("id-*.tif")) == [
        f"id-{day(s)}.tif" for s in scenes]
    for scene in scenes:
        alone = tmp_path / f"alone-{day(scene)}.tif"
        predict(first_band, collection, out=alone, date_range=(scene.datetime, scene.datetime),
                workspace_dir=tmp_path / "ws", **SWEEP)
        data, transform, _ = read_map(tmp_path / f"id-{day(scene)}.tif")
        expected, expected_transform, _ = read_map(alone)
        assert transform == expected_transform
        np.testing.assert_array_equal(data, expected)
        assert validate_cog(tmp_path / f"id-{day(scene)}.tif") == []
    # One scene per map, dated by its step; the name is the pattern's without {date}.
    assert maps.name == "id" and len(maps) == 2
    assert [d.date() for d in maps.column("datetime").to_pylist()] == [
        s.datetime.date() for s in scenes]
    assert sorted(maps.band_view(i, "prediction").href for i in range(2)) == [
        str(tmp_path / f"id-{day(s)}.tif") for s in scenes]


def test_time_bins_give_one_map_per_bin_and_a_folder_takes_dated_files(collection, tmp_path):
    mosaic = tmp_path / "mosaic.tif"
    predict(first_band, collection, out=mosaic, workspace_dir=tmp_path / "ws", **SWEEP)
    monthly = tmp_path / "monthly"
    monthly.mkdir()
    maps = predict(first_band, collection, out=monthly, time_series=True, time_bins="1MS",
                   workspace_dir=tmp_path / "ws", **SWEEP)
    # Both scenes fall in May: one map, the mosaic of the month, named by the bin's label.
    assert [p.name for p in monthly.iterdir()] == ["2024-05-01.tif"]
    assert maps.name == "monthly" and len(maps) == 1
    np.testing.assert_array_equal(read_map(monthly / "2024-05-01.tif")[0], read_map(mosaic)[0])
    # Three-day bins split the two scenes (May 1 and May 6) into bins labelled by their
    # first day; a time series dataset gives the same maps as the collection's keywords.
    series = collection.to_torchgeo_dataset(BANDS, time_series=True, time_bins="3D")
    predict(first_band, series, out=str(tmp_path / "bins") + "/",
            workspace_dir=tmp_path / "ws", **{k: v for k, v in SWEEP.items() if k != "bands"})
    assert sorted(p.name for p in (tmp_path / "bins").iterdir()) == [
        "2024-05-01.tif", "2024-05-04.tif"]


def test_bad_time_series_input_writes_nothing(collection, scenes, tmp_path):
    with pytest.raises(ConfigurationError, match="names one file"):
        predict(first_band, collection, out=tmp_path / "one.tif", time_series=True, **SWEEP)
    with pytest.raises(ConfigurationError, match="time_series=True"):
        predict(first_band, collection, out=tmp_path / "one.tif", time_bins="1MS", **SWEEP)
    with pytest.raises(ConfigurationError, match="belong to a collection"):
        predict(first_band, collection.to_torchgeo_dataset(BANDS), out=tmp_path / "one.tif",
                time_series=True, roi=ROI, geometry_crs=32633)
    # The second date's map exists: found before any map is written.
    (tmp_path / f"m-{day(scenes[1])}.tif").write_bytes(b"another run")
    with pytest.raises(WriteConflictError):
        predict(first_band, collection, out=tmp_path / "m-{date}.tif", time_series=True,
                **SWEEP)
    assert not (tmp_path / f"m-{day(scenes[0])}.tif").exists()
    # A model failing on the second date: the first date's map is removed again.
    calls = []

    def fails_later(image):
        calls.append(1)
        if len(calls) > 1:  # the first date is one batch
            raise RuntimeError("out of memory")
        return first_band(image)

    with pytest.raises(RuntimeError):
        predict(fails_later, collection, out=tmp_path / "f-{date}.tif", time_series=True,
                batch_size=64, **SWEEP)
    assert not list(tmp_path.glob("f-*.tif"))


def test_a_time_series_run_resumes_from_its_journal(collection, scenes, tmp_path):
    calls = []

    def fails_on_the_second_date(image):
        calls.append(1)
        if len(calls) == 2:  # the first date is one batch
            raise RuntimeError("killed")
        return first_band(image)

    journal = tmp_path / "journal"
    with pytest.raises(RuntimeError):
        predict(fails_on_the_second_date, collection, out=tmp_path / "r-{date}.tif",
                time_series=True, batch_size=64, journal=journal, **SWEEP)
    # The first date's map stays published for the run that resumes; it is not redone.
    first = tmp_path / f"r-{day(scenes[0])}.tif"
    assert first.exists() and not (tmp_path / f"r-{day(scenes[1])}.tif").exists()
    before = first.stat().st_mtime_ns
    maps = predict(fails_on_the_second_date, collection, out=tmp_path / "r-{date}.tif",
                   time_series=True, batch_size=64, journal=journal,
                   workspace_dir=tmp_path / "ws", **SWEEP)
    assert len(calls) == 3 and first.stat().st_mtime_ns == before and len(maps) == 2
    assert not journal.exists()
    whole = predict(first_band, collection, out=tmp_path / "w-{date}.tif", time_series=True,
                    workspace_dir=tmp_path / "ws", **SWEEP)
    for scene in scenes:
        np.testing.assert_array_equal(read_map(tmp_path / f"r-{day(scene)}.tif")[0],
                                      read_map(tmp_path / f"w-{day(scene)}.tif")[0])
    assert len(whole) == 2
