"""STAC ``raster:bands`` metadata: kept per band at build, applied by ``apply_scale``.

Two Sentinel-2-like scenes on one grid, served by nginx and described by a local
rustac STAC API: one from processing baseline 03.01 (values are reflectance x 10000,
the item gives scale 0.0001 and no offset), one from baseline 04.00 (values carry
+1000, the item gives offset -0.1). Both must read as the same reflectance through
NumPy, xarray and the TorchGeo dataset. A second band carries its own GDAL
scale/offset and nodata, which win over the item's.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rasteret
from rasteret.ingest.stac import band_metadata
from rasteret.schema import BAND_TYPE, band_nodata, band_scale_offset
from testbed.scenes import Scene, stac_collection, stac_item
from testbed.stac import StacApiServer

rasterio = pytest.importorskip("rasterio")
import rasterio.shutil  # noqa: E402, F811 - the COG copy below

FIXTURES = Path("/work/shared/fixtures/stac")
SIZE, TILE = 256, 128
EPSG = 32633
TRANSFORM = (10.0, 0.0, 500_000.0, 0.0, -10.0, 4_100_000.0)
BASELINES = ("03.01", "04.00")
# B08's own GDAL tags: they win over the item's raster:bands.
B08_SCALE, B08_OFFSET, B08_NODATA = 0.5, -3.0, 65535


def _reflectance_dn() -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    dn = (300 + (yy * 13 + xx * 7) % 5000).astype(np.uint16)
    dn[:10, :20] = 0  # no data in both scenes
    return dn


def _write(path: Path, data: np.ndarray, *, nodata=None, scale=None) -> Path:
    profile = {"driver": "COG", "width": SIZE, "height": SIZE, "count": 1,
               "dtype": data.dtype.name, "crs": f"EPSG:{EPSG}",
               "transform": rasterio.Affine(*TRANSFORM), "blocksize": TILE,
               "compress": "deflate", "predictor": 2}
    if nodata is not None:
        profile["nodata"] = nodata
    path.parent.mkdir(parents=True, exist_ok=True)
    if scale is None:
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
        return path
    # The COG driver copies from a source: give it one carrying scale/offset.
    staging = path.with_suffix(".src.tif")
    gtiff = {**profile, "driver": "GTiff", "tiled": True, "blockxsize": TILE,
             "blockysize": TILE}
    gtiff.pop("blocksize")
    with rasterio.open(staging, "w", **gtiff) as dst:
        dst.write(data, 1)
        dst.scales, dst.offsets = (scale[0],), (scale[1],)
    rasterio.shutil.copy(staging, path, driver="COG", blocksize=TILE, compress="deflate")
    staging.unlink()
    return path


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, nginx_server):
    """Both scenes under nginx's root; B04 files have no nodata tag, B08 files do."""
    root = Path(nginx_server.root) / "band-metadata"
    shutil.rmtree(root, ignore_errors=True)
    dn = _reflectance_dn()
    b08 = dn.copy()
    b08[20:30, 40:60] = B08_NODATA
    result = []
    for index, baseline in enumerate(BASELINES):
        scene_id = f"S2B_BASELINE_{baseline.replace('.', '')}"
        stored = dn if baseline < "04.00" else np.where(dn > 0, dn + 1000, 0).astype(np.uint16)
        scene = Scene(scene_id, dt.datetime(2024, 5, 1 + 10 * index, 10, tzinfo=dt.UTC), EPSG,
                      TRANSFORM, SIZE, SIZE, cloud_cover=10.0 * index)
        scene.files["B04"] = _write(root / scene_id / "B04.tif", stored)
        scene.files["B08"] = _write(root / scene_id / "B08.tif", b08, nodata=B08_NODATA,
                                    scale=(B08_SCALE, B08_OFFSET))
        result.append((scene, baseline))
    return result


def _href(nginx_server):
    return lambda scene, band, path: f"{nginx_server.url}/band-metadata/{scene.id}/{path.name}"


def _earth_search_items(scenes, nginx_server) -> list[dict]:
    items = []
    for scene, baseline in scenes:
        item = stac_item(scene, _href(nginx_server), collection="es-s2")
        item["properties"]["s2:processing_baseline"] = baseline
        reflectance = {"nodata": 0, "data_type": "uint16", "bits_per_sample": 15,
                       "spatial_resolution": 10, "scale": 0.0001}
        if baseline >= "04.00":
            reflectance["offset"] = -0.1
        item["assets"]["red"]["raster:bands"] = [reflectance]
        item["assets"]["nir"]["raster:bands"] = [
            {"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1,
             "unit": "reflectance"}]
        items.append(item)
    return items


def _planetary_items(scenes, nginx_server) -> list[dict]:
    """Planetary Computer's shape: no raster:bands, only eo:bands and the baseline."""
    items = []
    for scene, baseline in scenes:
        item = stac_item(scene, _href(nginx_server), collection="pc-s2", style="planetary")
        item["properties"]["s2:processing_baseline"] = baseline
        for key in ("B04", "B08"):
            item["assets"][key]["eo:bands"] = [{"name": key, "common_name": "red"}]
        items.append(item)
    return items


@pytest.fixture(scope="module")
def earth_search(scenes, nginx_server):
    items = _earth_search_items(scenes, nginx_server)
    with StacApiServer(stac_collection(items, "es-s2"), items) as server:
        yield server


@pytest.fixture(scope="module")
def planetary(scenes, nginx_server):
    items = _planetary_items(scenes, nginx_server)
    with StacApiServer(stac_collection(items, "pc-s2"), items) as server:
        yield server


def _build(server, collection: str, band_map: dict, workspace: Path):
    return rasteret.build_from_stac(
        name=collection, stac_api=server.url, collection=collection,
        bbox=(14.0, 36.0, 16.5, 38.0), date_range=("2024-04-01", "2024-06-30"),
        band_map=band_map, workspace_dir=workspace, progress=False,
    )


@pytest.fixture(scope="module")
def es_collection(earth_search, tmp_path_factory):
    return _build(earth_search, "es-s2", {"B04": "red", "B08": "nir"},
                  tmp_path_factory.mktemp("workspace"))


#: The scenes' footprint in their own CRS: reads come back on the native grid.
AREA = (500_000.0, 4_100_000.0 - SIZE * 10, 500_000.0 + SIZE * 10, 4_100_000.0)


def _expected_reflectance() -> np.ndarray:
    dn = _reflectance_dn()
    values = (dn.astype(np.float64) * 0.0001).astype(np.float32)
    values[dn == 0] = np.nan
    return values


def _expected_b08() -> np.ndarray:
    dn = _reflectance_dn().astype(np.float64)
    dn[20:30, 40:60] = B08_NODATA
    values = (dn * B08_SCALE + B08_OFFSET).astype(np.float32)
    values[20:30, 40:60] = np.nan
    return values


def test_raster_bands_are_stored_per_band(es_collection):
    by_id = {es_collection.table["id"][r].as_py(): r for r in range(len(es_collection))}
    old = es_collection.band_record(by_id["S2B_BASELINE_0301"], "B04")
    new = es_collection.band_record(by_id["S2B_BASELINE_0400"], "B04")
    assert old["stac"] == {"scale": 0.0001, "offset": None, "nodata": 0.0,
                           "data_type": "uint16", "unit": None}
    assert new["stac"]["offset"] == -0.1
    assert band_scale_offset(old) == (0.0001, 0.0)
    assert band_scale_offset(new) == (0.0001, -0.1)
    # The file has no GDAL_NODATA: the item's nodata applies.
    assert old["nodata"] is None and band_nodata(old) == 0.0
    assert es_collection.cog(0, "B04").nodata == 0.0
    nir = es_collection.band_record(0, "B08")
    assert nir["stac"]["unit"] == "reflectance"
    # The file's own scale/offset and nodata win.
    assert band_scale_offset(nir) == (B08_SCALE, B08_OFFSET)
    assert band_nodata(nir) == B08_NODATA


def test_numpy_reflectance_is_harmonised_across_baselines(es_collection):
    data = es_collection.get_numpy(AREA, ["B04", "B08"], apply_scale=True,
                                   clip=False, geometry_crs=EPSG)
    assert data.dtype == np.float32 and data.shape == (2, 2, SIZE, SIZE)
    for time in range(2):
        np.testing.assert_allclose(data[time, 0], _expected_reflectance(), rtol=0, atol=1e-7)
        np.testing.assert_array_equal(data[time, 1], _expected_b08())
    raw = es_collection.get_numpy(AREA, ["B04"], clip=False, geometry_crs=EPSG)
    assert not np.array_equal(raw[0], raw[1])  # the stored values do differ


def test_xarray_apply_scale_and_attributes(es_collection):
    scaled = es_collection.get_xarray(AREA, ["B04", "B08"], apply_scale=True,
                                      clip=False, geometry_crs=EPSG)
    for time in range(2):
        np.testing.assert_allclose(scaled["B04"].values[time], _expected_reflectance(),
                                   rtol=0, atol=1e-7)
    raw = es_collection.get_xarray(AREA, ["B04", "B08"], clip=False, geometry_crs=EPSG)
    assert raw["B08"].attrs["scale_factor"] == B08_SCALE
    assert raw["B08"].attrs["add_offset"] == B08_OFFSET
    # The scenes' B04 offsets differ: no single CF pair describes the variable.
    assert "scale_factor" not in raw["B04"].attrs


def test_planetary_items_harmonise_from_the_processing_baseline(planetary, tmp_path):
    collection = _build(planetary, "pc-s2", {"B04": "B04"}, tmp_path / "workspace")
    offsets = sorted(band_scale_offset(collection.band_record(r, "B04"))
                     for r in range(len(collection)))
    assert offsets == [(0.0001, -0.1), (0.0001, 0.0)]
    data = collection.get_numpy(AREA, ["B04"], apply_scale=True, clip=False, geometry_crs=EPSG)
    expected = (_reflectance_dn().astype(np.float64) * 0.0001).astype(np.float32)
    for time in range(2):
        # No nodata anywhere (neither file nor item): 0 reads as reflectance 0 or -0.1.
        valid = _reflectance_dn() > 0
        np.testing.assert_allclose(data[time, 0][valid], expected[valid], rtol=0, atol=1e-7)


def test_band_metadata_from_real_items():
    def item(name):
        return json.loads((FIXTURES / name).read_text())

    es = item("earth-search__sentinel-2-l2a.json")
    assert band_metadata(es, es["assets"]["red"]).scale == 0.0001
    assert band_metadata(es, es["assets"]["red"]).offset == -0.1
    assert band_metadata(es, es["assets"]["scl"]).scale is None
    pc = item("planetary-computer__sentinel-2-l2a.json")
    assert pc["properties"]["s2:processing_baseline"] == "04.00"
    meta = band_metadata(pc, pc["assets"]["B04"])
    assert (meta.scale, meta.offset) == (0.0001, -0.1)
    assert band_metadata(pc, pc["assets"]["visual"]) is None  # 8-bit true colour
    landsat = item("planetary-computer__landsat-c2-l2.json")
    meta = band_metadata(landsat, landsat["assets"]["lwir11"])
    assert (meta.scale, meta.offset, meta.nodata, meta.unit) == (0.00341802, 149.0, 0.0,
                                                                  "kelvin")
    # STAC 1.1: bands with raster:scale, nodata given once for the asset.
    asset = {"href": "x.tif", "nodata": "nan", "data_type": "float32",
             "bands": [{"name": "a", "raster:scale": 2.0}, {"name": "b", "raster:offset": 1.0}]}
    second = band_metadata({"properties": {}}, asset, 2)
    assert math.isnan(second.nodata) and second.offset == 1.0 and second.scale is None


@pytest.mark.torch
def test_torchgeo_dataset_apply_scale(es_collection):
    pytest.importorskip("torchgeo")
    from rasteret.torch import RasteretDataset

    x0, y0, x1, y1 = 500_000.0, 4_100_000.0 - SIZE * 10, 500_000.0 + SIZE * 10, 4_100_000.0
    whole = (slice(x0, x1), slice(y0, y1))
    dataset = RasteretDataset(es_collection, ["B04", "B08"], apply_scale=True,
                              time_series=True)
    image = dataset[whole]["image"].numpy()
    assert image.dtype == np.float32 and image.shape == (2, 2, SIZE, SIZE)
    for time in range(2):
        np.testing.assert_allclose(image[time, 0], _expected_reflectance(), rtol=0, atol=1e-7)
        np.testing.assert_array_equal(image[time, 1], _expected_b08())
    mosaic = RasteretDataset(es_collection, ["B04"], apply_scale=True)
    chip = mosaic[whole]["image"].numpy()
    np.testing.assert_allclose(chip[0], _expected_reflectance(), rtol=0, atol=1e-7)
    plain = RasteretDataset(es_collection, ["B04"], time_series=True)
    raw = plain[whole]["image"].numpy()
    assert raw.dtype == np.int32 and not np.array_equal(raw[0], raw[1])


def test_collections_written_before_the_stac_field_still_load(es_collection, tmp_path):
    old_type = pa.struct([f for f in BAND_TYPE if f.name != "stac"])
    table = es_collection.table
    for name in es_collection.bands:
        index = table.schema.get_field_index(name)
        rows = [None if r is None else {k: v for k, v in r.items() if k != "stac"}
                for r in table.column(name).to_pylist()]
        table = table.set_column(index, pa.field(name, old_type), pa.array(rows, old_type))
    path = tmp_path / "old.parquet"
    pq.write_table(table, path)
    old = rasteret.load(path)
    assert old.bands == ["B04", "B08"]
    assert old.band_record(0, "B04")["stac"] is None
    data = old.get_numpy(AREA, ["B08"], apply_scale=True, clip=False, geometry_crs=EPSG)
    np.testing.assert_array_equal(data[0, 0], _expected_b08())
