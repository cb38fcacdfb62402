"""The wider catalog: each dataset's band map, auth, license and CloudConfig met with a
recorded item shape of its provider (tests/data/stac), the CLI's listing, and
pc/sentinel-1-rtc built end to end from a local STAC API with its COGs on Azurite
behind a local SAS token endpoint."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

import rasteret
from rasteret.cli import main as cli_main
from rasteret.ingest.stac import band_metadata, item_to_record
from rasteret.io import cloud_config
from rasteret.io.cloud_config import CloudConfig
from testbed.auth_servers import AzuriteServer, CredentialEndpoints
from testbed.scenes import stac_collection
from testbed.stac import StacApiServer

# These tests start local servers of their own: end to end.
pytestmark = pytest.mark.integration

STAC = Path(__file__).parents[1] / "data" / "stac"
COG = "profile=cloud-optimized"

# dataset id -> (recorded item, provider, region)
NEW_DATASETS = {
    "earthsearch/cop-dem-glo-90": ("earth-search__cop-dem-glo-90.json", "aws", "eu-central-1"),
    "pc/cop-dem-glo-30": ("planetary-computer__cop-dem-glo-30.json", "planetary_computer", None),
    "pc/alos-dem": ("planetary-computer__alos-dem.json", "planetary_computer", None),
    "pc/usda-cdl": ("planetary-computer__usda-cdl.json", "planetary_computer", None),
    "pc/sentinel-1-rtc": ("planetary-computer__sentinel-1-rtc.json", "planetary_computer",
                          None),
    "pc/hls2-s30": ("planetary-computer__hls2-s30.json", "planetary_computer", None),
    "pc/hls2-l30": ("planetary-computer__hls2-l30.json", "planetary_computer", None),
}


def recorded(name: str) -> dict:
    return json.loads((STAC / name).read_text())


@pytest.mark.parametrize("dataset_id", sorted(NEW_DATASETS))
def test_band_map_resolves_against_the_recorded_item(dataset_id):
    name, provider, region = NEW_DATASETS[dataset_id]
    item = recorded(name)
    info = rasteret.datasets.get(dataset_id)
    assert item["collection"] == info.collection
    for band, key in info.band_map.items():
        asset = item["assets"][key]  # the asset key exists
        # ...and is a COG: by media type where the provider gives one, else by name.
        assert COG in asset.get("type", COG) and asset["href"].split("?")[0].endswith(
            (".tif", ".tiff")), (band, asset)
    record = item_to_record(item, band_map=info.band_map)
    assert all(source is not None for source in record.bands.values())
    assert record.epsg == item["properties"].get("proj:epsg")
    config = CloudConfig.get(dataset_id)
    assert config.provider == provider and config.region == region
    assert info.auth and info.license


def test_provider_facts_the_entries_rely_on():
    # Earth Search GLO-90 sits in a public eu-central-1 bucket: read anonymously there.
    glo90 = rasteret.datasets.get("earthsearch/cop-dem-glo-90")
    assert glo90.auth.startswith("none")
    href = recorded(NEW_DATASETS[glo90.id][0])["assets"]["data"]["href"]
    assert ".s3.eu-central-1.amazonaws.com/" in href
    # Sentinel-1 RTC needs a PC account; its bands are float32 gamma0, nodata -32768.
    rtc = recorded("planetary-computer__sentinel-1-rtc.json")
    assert "PC_SDK_SUBSCRIPTION_KEY" in rasteret.datasets.get("pc/sentinel-1-rtc").auth
    for key in ("vv", "vh"):
        metadata = band_metadata(rtc, rtc["assets"][key])
        assert (metadata.nodata, metadata.data_type) == (-32768.0, "float32")
    # HLS on PC keeps LP DAAC's band codes (so the HLS band maps apply) and its blobs.
    for dataset_id, earthdata_id in (("pc/hls2-s30", "earthdata/hls-s30"),
                                     ("pc/hls2-l30", "earthdata/hls-l30")):
        assert rasteret.datasets.get(dataset_id).band_map == \
            rasteret.datasets.get(earthdata_id).band_map
        item = recorded(NEW_DATASETS[dataset_id][0])
        assert item["assets"]["B04"]["href"].startswith(
            "https://hls2euwest.blob.core.windows.net/hls2/")


def test_cli_lists_auth_and_license(capsys):
    assert cli_main(["datasets", "list"]) == 0
    text = capsys.readouterr().out
    for dataset_id in NEW_DATASETS:
        info = rasteret.datasets.get(dataset_id)
        block = text[text.index(dataset_id):].split("\n", 2)[:2]
        assert f"auth: {info.auth}" in block[1] and f"license: {info.license}" in block[1]
    assert cli_main(["datasets", "list", "--json"]) == 0
    listed = {d["id"]: d for d in json.loads(capsys.readouterr().out)}
    for dataset_id in NEW_DATASETS:
        assert listed[dataset_id]["auth"] and listed[dataset_id]["license"]


# -- end to end: pc/sentinel-1-rtc from a recorded shape ---------------------------
ACCOUNT, CONTAINER = "sentinel1euwestrtc", "sentinel1-grd-rtc"
BLOB_ROOT = f"https://{ACCOUNT}.blob.core.windows.net/{CONTAINER}/"


@pytest.fixture(scope="module")
def rtc_pixels(tmp_path_factory):
    rasterio = pytest.importorskip("rasterio")
    folder = tmp_path_factory.mktemp("rtc")
    pixels, paths = {}, {}
    for number, key in enumerate(("vv", "vh")):
        data = (np.random.default_rng(number).gamma(2.0, 0.05, (1, 200, 240))
                .astype("float32"))
        data[0, :10, :10] = -32768  # nodata, as the product marks it
        path = folder / f"{key}.tif"
        with rasterio.open(path, "w", driver="COG", width=240, height=200, count=1,
                           dtype="float32", crs="EPSG:32614", nodata=-32768,
                           transform=rasterio.transform.from_origin(600000, 2950000, 10, 10),
                           compress="deflate", blocksize=128) as dst:
            dst.write(data)
        pixels[key], paths[key] = data[0], path
    return pixels, paths


def test_sentinel1_rtc_builds_and_reads_through_sas(rtc_pixels, tmp_path, monkeypatch):
    pixels, paths = rtc_pixels
    item = recorded("planetary-computer__sentinel-1-rtc.json")
    with AzuriteServer() as azurite, CredentialEndpoints(
            sas_token=lambda account, container: azurite.sas_token(container)) as tokens:
        for key, path in paths.items():
            azurite.upload(CONTAINER, item["assets"][key]["href"][len(BLOB_ROOT):], path)
        monkeypatch.setenv("PC_SDK_SAS_URL", tokens.sas_url)
        monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", azurite.endpoint)
        cloud_config._backends.pop("pc/sentinel-1-rtc", None)
        try:
            with StacApiServer(stac_collection([item], "sentinel-1-rtc"),
                               [copy.deepcopy(item)]) as stac:
                collection = rasteret.build(
                    "pc/sentinel-1-rtc", name="rtc", bbox=(-98.0, 27.0, -97.5, 27.5),
                    date_range=("2020-07-27", "2020-07-27"), stac_api=stac.url,
                    workspace_dir=tmp_path, progress=False)
            assert collection.bands == ["vv", "vh"] and len(collection) == 1
            for key in ("vv", "vh"):
                assert collection.band_record(0, key)["href"] == item["assets"][key]["href"]
                np.testing.assert_array_equal(collection.cog(0, key).read()[0], pixels[key])
            assert tokens.requests[f"/sas/{ACCOUNT}/{CONTAINER}"] >= 1
            stored = "".join(p.read_bytes().decode("latin-1")
                             for p in tmp_path.rglob("*") if p.is_file())
            assert "sig=" not in stored
        finally:
            cloud_config._backends.pop("pc/sentinel-1-rtc", None)
