"""TorchGeo integration: RasteretDataset with TorchGeo's samplers, intersections,
unions, time series, DataLoader workers, tile-aligned chips and pixel equality."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow as pa
import pytest

from testbed import HANG_GUARD

torch = pytest.importorskip("torch")
torchgeo = pytest.importorskip("torchgeo")

import rasterio  # noqa: E402
from torchgeo.datasets import (  # noqa: E402
    IntersectionDataset,
    UnionDataset,
    VectorDataset,
    stack_samples,  # noqa: E402
)
from torchgeo.samplers import (  # noqa: E402
    GriddedPatchSampler,
    GridGeoSampler,
    RandomGeoSampler,
    RandomPatchSampler,
)

import rasteret  # noqa: E402
from rasteret.torch import TileAlignedSampler, dataloader  # noqa: E402
from testbed.scenes import write_scenes  # noqa: E402

pytestmark = pytest.mark.torch
BANDS = ["B02", "B04", "B08"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch-scenes")
    # Three overlapping scenes, each shifted 128 px east, 5 days apart.
    return write_scenes(root, count=3, size=512, tile=256, shift=128, seed=3)


def collection_of(scenes, workspace, name="tg", hrefs=None):
    rows = []
    for scene in scenes:
        row = {"id": scene.id, "datetime": scene.datetime, "eo:cloud_cover": scene.cloud_cover}
        for band, path in scene.files.items():
            row[band] = hrefs(scene, band, path) if hrefs else str(path)
        rows.append(row)
    return rasteret.build_from_table(
        pa.Table.from_pylist(rows), name=name, href_columns=[*BANDS, "label"],
        workspace_dir=workspace, progress=False,
    )


@pytest.fixture(scope="module")
def collection(scenes, tmp_path_factory):
    return collection_of(scenes, tmp_path_factory.mktemp("ws"))


def served_collection(scenes, nginx_server, workspace, folder):
    """The scenes copied under nginx's root, built into a collection of http hrefs."""
    href = nginx_server.serve_scenes(scenes, folder)
    return collection_of(scenes, workspace, name=folder,
                         hrefs=lambda s, b, p: href(s, p))


def rasterio_window(path, bounds, res=10.0):
    with rasterio.open(path) as src:
        window = rasterio.windows.from_bounds(*bounds, transform=src.transform)
        return src.read(1, window=window, boundless=True, fill_value=src.nodata or 0)


def test_dataset_follows_the_geodataset_contract(collection):
    dataset = collection.to_torchgeo_dataset(BANDS, chip_size=128)
    assert isinstance(dataset, torchgeo.datasets.GeoDataset)
    assert len(dataset) == 3
    assert dataset.crs.to_epsg() == 32633
    assert dataset.res == (10.0, 10.0)
    assert dataset.index.index.name == "datetime"
    assert dataset.index.index.closed == "both"
    x, y, t = dataset.bounds
    assert (x.start, y.stop) == (500_000.0, 4_100_000.0)
    assert x.stop == 500_000 + (512 + 2 * 128) * 10


def test_chip_equals_rasterio_and_mosaic_takes_latest_scene(collection, scenes):
    dataset = collection.to_torchgeo_dataset(BANDS)
    # A chip in the overlap of all three scenes: the latest scene wins.
    xmin, ymax = 500_000 + 300 * 10, 4_100_000 - 100 * 10
    bounds = (xmin, ymax - 640, xmin + 640, ymax)
    sample = dataset[slice(bounds[0], bounds[2]), slice(bounds[1], bounds[3])]
    assert sample["image"].shape == (3, 64, 64)
    assert sample["image"].dtype == torch.int32  # uint16 widened losslessly
    latest = scenes[-1]
    for channel, band in enumerate(BANDS):
        expected = rasterio_window(latest.files[band], bounds)
        np.testing.assert_array_equal(sample["image"][channel].numpy(), expected)
    assert sample["bounds"].shape == (9,)
    assert sample["transform"][:6].tolist() == [10.0, 0.0, bounds[0], 0.0, -10.0, bounds[3]]
    # A chip only the first scene covers.
    bounds = (500_000.0, 4_100_000.0 - 640, 500_000.0 + 640, 4_100_000.0)
    sample = dataset[slice(bounds[0], bounds[2]), slice(bounds[1], bounds[3])]
    np.testing.assert_array_equal(
        sample["image"][1].numpy(), rasterio_window(scenes[0].files["B04"], bounds)
    )


def test_mosaic_fills_gaps_from_the_next_scene(collection, scenes):
    dataset = collection.to_torchgeo_dataset(["B04"], mosaic_order="latest")
    # Straddles the west edge of the latest scene: its left half comes from older ones.
    xmin = 500_000 + (256 - 32) * 10
    bounds = (xmin, 4_100_000 - 640, xmin + 640, 4_100_000)
    image = dataset[slice(bounds[0], bounds[2]), slice(bounds[1], bounds[3])]["image"][0]
    newest = rasterio_window(scenes[2].files["B04"], bounds)
    middle = rasterio_window(scenes[1].files["B04"], bounds)
    expected = np.where(newest != 0, newest, middle)
    np.testing.assert_array_equal(image.numpy(), expected)
    earliest = collection.to_torchgeo_dataset(["B04"], mosaic_order="earliest")
    image = earliest[slice(bounds[0], bounds[2]), slice(bounds[1], bounds[3])]["image"][0]
    np.testing.assert_array_equal(image.numpy(), rasterio_window(scenes[0].files["B04"], bounds))


def test_time_series_and_time_slices(collection, scenes):
    dataset = collection.to_torchgeo_dataset(["B04"], time_series=True)
    xmin = 500_000 + 300 * 10
    bounds = (xmin, 4_100_000 - 640, xmin + 640, 4_100_000)
    sample = dataset[slice(bounds[0], bounds[2]), slice(bounds[1], bounds[3])]
    assert sample["image"].shape == (3, 1, 64, 64)  # [T, C, H, W], oldest first
    for t, scene in enumerate(scenes):
        np.testing.assert_array_equal(
            sample["image"][t, 0].numpy(), rasterio_window(scene.files["B04"], bounds)
        )
    import pandas as pd

    window = slice(pd.Timestamp(scenes[1].datetime.replace(tzinfo=None)),
                   pd.Timestamp(scenes[2].datetime.replace(tzinfo=None)))
    sliced = dataset[slice(bounds[0], bounds[2]), slice(bounds[1], bounds[3]), window]
    assert sliced["image"].shape[0] == 2


def test_float_cast_and_label_mask(collection):
    dataset = collection.to_torchgeo_dataset(BANDS, dtype=torch.float32, mask_bands=["label"])
    bounds = (500_000.0, 4_100_000.0 - 640, 500_000.0 + 640, 4_100_000.0)
    sample = dataset[slice(bounds[0], bounds[2]), slice(bounds[1], bounds[3])]
    assert sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (64, 64) and sample["mask"].dtype == torch.long
    labels = collection.to_torchgeo_dataset(["label"], is_image=False)
    mask = labels[slice(bounds[0], bounds[2]), slice(bounds[1], bounds[3])]["mask"]
    assert mask.shape == (64, 64)


def test_outside_raises_index_error(collection):
    dataset = collection.to_torchgeo_dataset(BANDS)
    with pytest.raises(IndexError):
        dataset[slice(0, 640), slice(0, 640)]


def test_unknown_band_lists_the_available_ones(collection):
    with pytest.raises(rasteret.errors.ConfigurationError, match="available bands"):
        collection.to_torchgeo_dataset(["B99"])


def test_dataset_survives_pickling(collection):
    dataset = collection.to_torchgeo_dataset(BANDS)
    bounds = (500_000.0, 4_100_000.0 - 640, 500_000.0 + 640, 4_100_000.0)
    first = dataset[slice(bounds[0], bounds[2]), slice(bounds[1], bounds[3])]
    clone = pickle.loads(pickle.dumps(dataset))
    again = clone[slice(bounds[0], bounds[2]), slice(bounds[1], bounds[3])]
    assert torch.equal(first["image"], again["image"])


@pytest.mark.parametrize(
    "make_sampler",
    [
        lambda ds: RandomPatchSampler(ds, size=64, length=8, generator=0),
        lambda ds: GriddedPatchSampler(ds, size=128, stride=256),
        lambda ds: RandomGeoSampler(ds, size=64, length=8),
        lambda ds: GridGeoSampler(ds, size=128, stride=256),
        lambda ds: TileAlignedSampler(ds, size=128, length=8, seed=0),
    ],
    ids=["RandomPatch", "GriddedPatch", "RandomGeo", "GridGeo", "TileAligned"],
)
def test_samplers_with_two_forkserver_workers(collection, make_sampler):
    dataset = collection.to_torchgeo_dataset(BANDS, dtype=torch.float32)
    sampler = make_sampler(dataset)
    loader = dataloader(dataset, sampler=sampler, batch_size=4, num_workers=2)
    batches = list(loader)
    assert batches, "the loader produced no batch"
    total = sum(b["image"].shape[0] for b in batches)
    assert total == len(sampler)
    for batch in batches:
        assert batch["image"].ndim == 4 and batch["image"].shape[1] == 3
        assert torch.isfinite(batch["image"]).all()


def test_getitems_reads_a_batch_in_one_pass(collection):
    dataset = collection.to_torchgeo_dataset(BANDS)
    sampler = TileAlignedSampler(dataset, size=128, mode="grid")
    slices = list(sampler)[:6]
    batch = dataset.__getitems__(slices)
    single = [dataset[s] for s in slices]
    for a, b in zip(batch, single):
        assert torch.equal(a["image"], b["image"])
    stacked = stack_samples(batch)
    assert stacked["image"].shape == (6, 3, 128, 128)


def test_tile_aligned_sampler_grid_covers_tiles_and_ranks_are_disjoint(collection):
    dataset = collection.to_torchgeo_dataset(BANDS)
    full = TileAlignedSampler(dataset, size=128, mode="grid")
    # 3 scenes x (512/128)^2 chips each.
    assert len(full) == 3 * 16
    chips = [(s[0].start, s[1].stop, s[2].start) for s in full]
    assert len(set(chips)) == len(chips)
    for x, y, _ in chips:
        assert (x - 500_000) % 1280 == 0 and (4_100_000 - y) % 1280 == 0
    shares = [
        {(s[0].start, s[1].stop, s[2].start)
         for s in TileAlignedSampler(dataset, size=128, mode="grid", rank=r, world_size=2)}
        for r in range(2)
    ]
    assert not shares[0] & shares[1]
    assert shares[0] | shares[1] == set(chips)
    randoms = [list(TileAlignedSampler(dataset, size=128, length=20, seed=1, rank=r,
                                       world_size=2)) for r in range(2)]
    starts = [{(s[0].start, s[1].stop, s[2].start) for s in r} for r in randoms]
    assert not starts[0] & starts[1]
    import shapely

    roi = shapely.box(500_000, 4_100_000 - 2560, 500_000 + 2560, 4_100_000)
    inside = TileAlignedSampler(dataset, size=128, mode="grid", roi=roi)
    for s in inside:
        assert roi.contains(shapely.box(s[0].start, s[1].start, s[0].stop, s[1].stop))
    with pytest.raises(rasteret.errors.ConfigurationError):
        TileAlignedSampler(dataset, size=4096)


def test_tile_aligned_chips_request_exactly_the_covering_tiles(scenes, tmp_path, nginx_server):
    served = served_collection(scenes, nginx_server, tmp_path / "ws", "torch-test")
    dataset = served.to_torchgeo_dataset(BANDS, cache_bytes=0)
    sampler = TileAlignedSampler(dataset, size=128, length=12, seed=4)
    nginx_server.clear_log()
    for chip in sampler:
        dataset[chip]
    records = [r for r in nginx_server.requests() if r.path.startswith("/torch-test/")]
    # One 128-px chip inside one 256-px tile: one tile request per band, no header.
    assert len(records) == 12 * len(BANDS)
    expected_bytes = 0
    for chip in sampler.__class__(dataset, size=128, length=12, seed=4):
        rows = dataset._scenes(*dataset._disambiguate_slice(chip))
        row = rows[0]
        for band in BANDS:
            record = served.band_record(row, band)
            level = record["levels"][0]
            col = round((chip[0].start - record["transform"][2]) / 10) // 256
            line = round((record["transform"][5] - chip[1].stop) / 10) // 256
            expected_bytes += level["byte_counts"][line * 2 + col]
    assert sum(r.body_bytes for r in records) == expected_bytes  # read amplification 1.0


def test_tile_caches_serve_repeated_chips_and_later_epochs(scenes, tmp_path, nginx_server):
    served = served_collection(scenes, nginx_server, tmp_path / "ws", "cache-test")
    cache_dir = tmp_path / "tiles"
    dataset = served.to_torchgeo_dataset(BANDS, cache_dir=str(cache_dir))
    chips = list(TileAlignedSampler(dataset, size=64, mode="grid"))[:32]
    nginx_server.clear_log()
    first = [dataset[c]["image"] for c in chips]
    requests = len(nginx_server.requests())
    # Sixteen 64-px chips share each 256-px tile: every tile is fetched once.
    assert 0 < requests <= len(chips) * len(BANDS) // 4 + len(BANDS) * 2
    nginx_server.clear_log()
    again = [dataset[c]["image"] for c in chips]
    assert nginx_server.requests() == []  # decoded tiles from memory
    assert dataset.caches.memory.hits > 0
    fresh = pickle.loads(pickle.dumps(dataset))  # a new worker: empty memory cache
    later = [fresh[c]["image"] for c in chips]
    assert nginx_server.requests() == []  # compressed tiles from disk
    assert fresh.caches.disk.hits > 0
    for a, b, c in zip(first, again, later):
        assert torch.equal(a, b) and torch.equal(a, c)
    tiny = served.to_torchgeo_dataset(BANDS, cache_bytes=200_000)
    for chip in chips:
        tiny[chip]
    assert tiny.caches.memory.bytes <= 200_000


def test_intersection_with_vector_labels_and_union(collection, tmp_path):
    dataset = collection.to_torchgeo_dataset(BANDS, dtype=torch.float32)
    square = [[500_500, 4_099_500], [502_000, 4_099_500], [502_000, 4_098_000],
              [500_500, 4_098_000], [500_500, 4_099_500]]
    geojson = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
        "features": [{"type": "Feature", "properties": {"class": 1},
                      "geometry": {"type": "Polygon", "coordinates": [square]}}],
    }
    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / "labels.geojson").write_text(json.dumps(geojson))
    labels = VectorDataset(paths=folder, crs=dataset.crs, res=dataset.res)
    both = dataset & labels
    assert isinstance(both, IntersectionDataset)
    sampler = GriddedPatchSampler(both, size=64, stride=64)
    sample = both[next(iter(sampler))]
    assert sample["image"].shape == (3, 64, 64)
    assert sample["mask"].shape[-2:] == (64, 64)
    union = dataset | collection.to_torchgeo_dataset(BANDS, dtype=torch.float32)
    assert isinstance(union, UnionDataset)
    x, y, _ = dataset.bounds
    sample = union[slice(x.start, x.start + 640), slice(y.stop - 640, y.stop)]
    assert sample["image"].shape[-2:] == (64, 64)


def test_fork_after_io_raises_a_clear_error_in_workers(collection):
    dataset = collection.to_torchgeo_dataset(BANDS)
    bounds = (500_000.0, 4_100_000.0 - 640, 500_000.0 + 640, 4_100_000.0)
    dataset[slice(bounds[0], bounds[2]), slice(bounds[1], bounds[3])]  # parent does I/O
    sampler = TileAlignedSampler(dataset, size=128, length=2, seed=0)
    loader = dataloader(dataset, sampler=sampler, batch_size=2, num_workers=1,
                        multiprocessing_context="fork", timeout=60)
    with pytest.raises(Exception, match="forkserver"):
        next(iter(loader))


def test_raster_labels_by_intersection(collection):
    images = collection.to_torchgeo_dataset(BANDS, dtype=torch.float32)
    labels = collection.to_torchgeo_dataset(["label"], is_image=False)
    both = images & labels
    assert isinstance(both, IntersectionDataset)
    chip = next(iter(GriddedPatchSampler(both, size=64, stride=64)))
    sample = both[chip]
    assert sample["image"].shape == (3, 64, 64) and sample["mask"].shape == (64, 64)


def test_chip_export_for_labelling(collection, tmp_path):
    import subprocess
    import sys

    import pyarrow.parquet as pq

    out = tmp_path / "chips"
    manifest = collection.export_chips(["B04", "B02"], out, chip_size=128, mode="random",
                                       length=5, png=True)
    table = pq.read_table(manifest)
    assert table.num_rows == 5
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry"
    dataset = collection.to_torchgeo_dataset(["B04", "B02"])
    for row in table.to_pylist():
        assert row["crs"] == "EPSG:32633" and row["source_scenes"]
        with rasterio.open(out / row["path"]) as src:
            assert src.crs.to_epsg() == 32633
            assert src.bounds == pytest.approx((row["minx"], row["miny"], row["maxx"],
                                                row["maxy"]))
            import pandas as pd

            when = pd.Timestamp(row["datetime"]).tz_convert(None)
            expected = dataset[slice(row["minx"], row["maxx"]),
                               slice(row["miny"], row["maxy"]),
                               slice(when, when)]["image"].numpy()
            np.testing.assert_array_equal(src.read(), expected)
        assert (out / row["path"]).with_suffix(".png").exists()
    assert (out / "quicklook.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError):
        collection.export_chips(["B04"], out, chip_size=128)
    cli = subprocess.run(
        [sys.executable, "-m", "rasteret.cli", "chips", "export", collection.name, "--bands",
         "B04", "--out", str(tmp_path / "cli-chips"), "--size", "256", "--json",
         "--workspace", str(collection.path.parent)],
        capture_output=True, text=True, timeout=HANG_GUARD,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["chips"] == 3 * 4  # grid: 4 chips of 256 px per scene


def test_concurrent_reads_of_one_tile_share_a_request(scenes, tmp_path, nginx_server):
    served = served_collection(scenes, nginx_server, tmp_path / "ws", "shared-test")
    dataset = served.to_torchgeo_dataset(["B04"])
    # Eight 64-px chips inside the same 256-px tile of the first scene, in one batch.
    x0, y1 = 500_000.0, 4_100_000.0
    chips = [(slice(x0 + 640 * (i % 4), x0 + 640 * (i % 4 + 1), 10.0),
              slice(y1 - 640 * (i // 4 + 1), y1 - 640 * (i // 4), 10.0))
             for i in range(8)]
    nginx_server.clear_log()
    batch = dataset.__getitems__(chips)
    requests = [r for r in nginx_server.requests() if r.path.endswith("B04.tif")]
    # The chips fall in one tile of each of two scenes: one request per tile, not per chip.
    assert len(requests) == len({(r.path, r.range) for r in requests}) == 2
    for chip, sample in zip(chips, batch):
        alone = served.to_torchgeo_dataset(["B04"], cache_bytes=0)[chip]
        assert torch.equal(sample["image"], alone["image"])
