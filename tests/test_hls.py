"""earthdata/hls, earthdata/hls-s30 and earthdata/hls-l30 from the catalog, end to end:
recorded CMR STAC HLS item shapes served by a local rustac STAC API, hrefs rewritten to
the LP DAAC bucket, temporary S3 keys from a local s3credentials endpoint that sends
the client to a login service authenticated from ~/.netrc, and COGs on moto."""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as dt
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rasteret
from rasteret import registry
from rasteret.io import cloud_config
from rasteret.io.cloud_config import CloudConfig
from testbed.auth_servers import _ThreadedServer
from testbed.scenes import stac_collection
from testbed.stac import StacApiServer

rasterio = pytest.importorskip("rasterio")

DATA = Path(__file__).parent / "data"
BUCKET = "lp-prod-protected"
PREFIX = f"https://data.lpdaac.earthdatacloud.nasa.gov/{BUCKET}/"
USER, PASSWORD = "hls-tester", "FAKE-EARTHDATA-PASSWORD-4Rt"
S3_KEYS = ("ASIAHLSTEST", "FAKE-TEMP-SECRET-Hls8", "FAKE-TEMP-SESSION-Hls8")
HLS_IDS = ("earthdata/hls", "earthdata/hls-s30", "earthdata/hls-l30")


class EarthdataLogin(_ThreadedServer):
    """An s3credentials endpoint that, like the DAACs', redirects an unauthenticated
    client to the login service, which wants HTTP basic auth (from ~/.netrc)."""

    def __init__(self) -> None:
        self.url = ""
        self.logins = 0
        self.refused = 0

    def start(self) -> EarthdataLogin:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.startswith("/s3credentials"):
                    self.send_response(302)
                    self.send_header("Location", f"{server.url}/oauth/authorize?client=lp")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    server.refused += 1
                    self._json(401, {"error": "unauthorized"})
                    return
                server.logins += 1
                expiry = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
                key, secret, session = S3_KEYS
                self._json(200, {"accessKeyId": key, "secretAccessKey": secret,
                                 "sessionToken": session, "expiration": expiry.isoformat()})

            def log_message(self, *args: Any) -> None:
                pass

        self.url = self._serve(Handler)
        return self


def load_item(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


@pytest.fixture(scope="module")
def hls_items():
    return [load_item("hls_s30_item.json"), load_item("hls_l30_item.json")]


@pytest.fixture(scope="module")
def band_pixels(moto_server, hls_items, tmp_path_factory):
    """A distinct small COG per band asset of each item, on moto at the DAAC's keys."""
    folder = tmp_path_factory.mktemp("hls")
    moto_server.create_bucket(BUCKET)
    pixels = {}
    for number, item in enumerate(hls_items):
        for code, asset in item["assets"].items():
            if not asset["href"].startswith(PREFIX):
                continue
            seed = number * 100 + sum(map(ord, code))
            data = ((np.arange(96 * 128, dtype="uint16").reshape(1, 96, 128) * 7 + seed)
                    % 10000).astype("uint16")
            path = folder / f"{item['id']}.{code}.tif"
            with rasterio.open(path, "w", driver="COG", width=128, height=96, count=1,
                               dtype="uint16", crs="EPSG:32610",
                               transform=rasterio.transform.from_origin(499980, 4200000, 30, 30),
                               compress="deflate", blocksize=64) as dst:
                dst.write(data)
            moto_server.upload(BUCKET, asset["href"][len(PREFIX):], path)
            pixels[(item["id"], code)] = data
    return pixels


@pytest.fixture
def earthdata_env(moto_server, tmp_path, monkeypatch):
    """~/.netrc with the login, and the built-in HLS configs pointed at the local
    credentials endpoint and moto (provider, region and URL rewrite stay built-in)."""
    for name in ("EARTHDATA_TOKEN", "EARTHDATA_USERNAME", "EARTHDATA_PASSWORD",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    with EarthdataLogin() as login, registry.restored_on_exit():
        for dataset_id in HLS_IDS:
            builtin = CloudConfig.get(dataset_id)
            CloudConfig.register(dataset_id, dataclasses.replace(
                builtin, credentials_url=f"{login.url}/s3credentials",
                s3_config={"endpoint": moto_server.endpoint}))
            cloud_config._backends.pop(dataset_id, None)
        yield login
        for dataset_id in HLS_IDS:
            cloud_config._backends.pop(dataset_id, None)


def test_catalog_entries():
    hls = rasteret.datasets.get("earthdata/hls")
    assert hls.stac_api == "https://cmr.earthdata.nasa.gov/stac/LPCLOUD"
    assert hls.collection == "HLSS30_2.0,HLSL30_2.0"
    assert hls.band_map["nir"] == {"HLSS30_2.0": "B8A", "HLSL30_2.0": "B05"}
    assert hls.band_map["swir16"] == {"HLSS30_2.0": "B11", "HLSL30_2.0": "B06"}
    assert hls.band_map["fmask"] == {"HLSS30_2.0": "Fmask", "HLSL30_2.0": "Fmask"}
    s30 = rasteret.datasets.get("earthdata/hls-s30")
    l30 = rasteret.datasets.get("earthdata/hls-l30")
    assert (s30.collection, l30.collection) == ("HLSS30_2.0", "HLSL30_2.0")
    assert {"B8A", "B11", "B12", "Fmask"} <= set(s30.band_map)
    assert {"B05", "B10", "B11", "Fmask"} <= set(l30.band_map) and "B8A" not in l30.band_map
    for dataset_id in HLS_IDS:
        config = CloudConfig.get(dataset_id)
        assert config.provider == "earthdata" and config.region == "us-west-2"
        assert config.credentials_url == \
            "https://data.lpdaac.earthdatacloud.nasa.gov/s3credentials"
        assert config.rewrite_url(PREFIX + "HLSS30.020/x/x.B04.tif") == \
            "s3://lp-prod-protected/HLSS30.020/x/x.B04.tif"
    json.dumps(rasteret.datasets.info("earthdata/hls"))  # the CLI's --json


def test_recorded_items_use_the_catalog_asset_keys(hls_items):
    s30, l30 = hls_items
    assert set(rasteret.datasets.get("earthdata/hls-s30").band_map.values()) <= set(s30["assets"])
    assert set(rasteret.datasets.get("earthdata/hls-l30").band_map.values()) <= set(l30["assets"])


def test_hls_builds_both_sensors_with_common_band_names(hls_items, band_pixels, earthdata_env,
                                                        tmp_path):
    with StacApiServer([stac_collection([item], item["collection"]) for item in hls_items],
                       copy.deepcopy(hls_items)) as stac:
        collection = rasteret.build(
            "earthdata/hls", name="hls", bbox=(-122.6, 38.0, -122.3, 38.3),
            date_range=("2023-06-01", "2023-06-30"), bands=["red", "nir", "swir16", "fmask"],
            stac_api=stac.url, workspace_dir=tmp_path / "workspace", progress=False)
    assert len(collection) == 2
    ids = collection.table["id"].to_pylist()
    expected_keys = {"HLS.S30": {"red": "B04", "nir": "B8A", "swir16": "B11", "fmask": "Fmask"},
                     "HLS.L30": {"red": "B04", "nir": "B05", "swir16": "B06", "fmask": "Fmask"}}
    for row, scene_id in enumerate(ids):
        keys = expected_keys[scene_id[:7]]
        for band, code in keys.items():
            record = collection.band_record(row, band)
            assert record["href"].startswith("s3://lp-prod-protected/")
            assert record["href"].endswith(f".{code}.tif")
            np.testing.assert_array_equal(collection.cog(row, band).read(),
                                          band_pixels[(scene_id, code)])
    # Keys came from the credentials endpoint, after a login with the netrc password.
    assert earthdata_env.logins >= 1 and earthdata_env.refused == 0
    stored = "".join(p.read_bytes().decode("latin-1")
                     for p in (tmp_path / "workspace").rglob("*") if p.is_file())
    for secret in (PASSWORD, *S3_KEYS[1:]):
        assert secret not in stored


@pytest.mark.parametrize("dataset_id, sensor, band, code", [
    ("earthdata/hls-s30", "HLS.S30", "B8A", "B8A"),
    ("earthdata/hls-l30", "HLS.L30", "B10", "B10"),
])
def test_single_sensor_datasets(hls_items, band_pixels, earthdata_env, tmp_path,
                                dataset_id, sensor, band, code):
    with StacApiServer([stac_collection([item], item["collection"]) for item in hls_items],
                       copy.deepcopy(hls_items)) as stac:
        collection = rasteret.build(
            dataset_id, name=dataset_id.split("/")[1], bbox=(-122.6, 38.0, -122.3, 38.3),
            date_range=("2023-06-01", "2023-06-30"), bands=[band, "Fmask"],
            stac_api=stac.url, workspace_dir=tmp_path / "workspace", progress=False)
    assert [scene[:7] for scene in collection.table["id"].to_pylist()] == [sensor]
    scene_id = collection.table["id"][0].as_py()
    np.testing.assert_array_equal(collection.cog(0, band).read(),
                                  band_pixels[(scene_id, code)])
