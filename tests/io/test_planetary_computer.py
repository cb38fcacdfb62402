"""Planetary Computer: rasteret.PlanetaryComputerSas takes the token API's URL (the
spelling the guide meant), and pc/... datasets build and read with no provider at
all, against Azurite and a local SAS token endpoint."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

import rasteret
from rasteret.errors import ConfigurationError
from rasteret.io import cloud_config
from testbed.auth_servers import AzuriteServer, CredentialEndpoints
from testbed.stac import StacApiServer

# These tests start local servers of their own: end to end.
pytestmark = pytest.mark.integration

rasterio = pytest.importorskip("rasterio")

FAST_RETRY = {"max_retries": 0, "retry_timeout": dt.timedelta(seconds=2)}
ACCOUNT = "sentinel2l2a01"
CONTAINER = "sentinel2-l2"
BLOB = "32/T/QM/2024/01/15/S2B_MSIL2A_20240115/IMG_DATA/R10m/T32TQM_20240115_B04_10m.tif"
HREF = f"https://{ACCOUNT}.blob.core.windows.net/{CONTAINER}/{BLOB}"
GUIDE_TOKEN_API = "https://planetarycomputer.microsoft.com/api/sas/v1/token"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = Path(tmp_path_factory.mktemp("pc")) / "B04.tif"
    data = (np.arange(256 * 320, dtype="uint16").reshape(1, 256, 320) % 4001) + 7
    with rasterio.open(path, "w", driver="COG", width=320, height=256, count=1,
                       dtype="uint16", crs="EPSG:32632",
                       transform=rasterio.transform.from_origin(699960, 5000040, 10, 10),
                       compress="deflate", blocksize=256) as dst:
        dst.write(data)
    return data, path


@pytest.fixture(scope="module")
def azurite(scene):
    with AzuriteServer() as server:
        server.upload(CONTAINER, BLOB, scene[1])
        yield server


@pytest.fixture
def token_api(azurite):
    with CredentialEndpoints(sas_token=lambda account, container: azurite.sas_token(container)
                             ) as endpoints:
        yield endpoints


def test_planetary_computer_sas_is_exported_at_the_top_level():
    from rasteret.io.credentials import PlanetaryComputerSas

    assert rasteret.PlanetaryComputerSas is PlanetaryComputerSas
    assert "PlanetaryComputerSas" in rasteret.__all__
    assert "Example" in PlanetaryComputerSas.__doc__


def test_obstore_provider_with_the_token_url_fails_and_the_guide_shows_it():
    """What the old guide wrote fails inside obstore; the guide quotes that error."""
    from obstore.auth.planetary_computer import PlanetaryComputerCredentialProvider

    with pytest.raises(ValueError) as caught:
        PlanetaryComputerCredentialProvider(GUIDE_TOKEN_API)
    first_line = str(caught.value).splitlines()[0]
    guide = (Path(__file__).parents[2] / "docs" / "authentication.md").read_text()
    assert first_line in guide
    assert f'rasteret.PlanetaryComputerSas("{GUIDE_TOKEN_API}")' in guide


def test_token_api_url_as_first_argument_reads(azurite, token_api, scene):
    provider = rasteret.PlanetaryComputerSas(token_api.sas_url + "/")
    assert provider.sas_url == token_api.sas_url
    backend = rasteret.create_backend(credential_provider=provider,
                                      azure_config={"endpoint": azurite.endpoint},
                                      retry_config=FAST_RETRY)
    np.testing.assert_array_equal(rasteret.open_cog(HREF, backend=backend).read(), scene[0])
    assert token_api.requests[f"/sas/{ACCOUNT}/{CONTAINER}"] == 1


@pytest.mark.parametrize("wrong", [
    f"https://{ACCOUNT}.blob.core.windows.net/{CONTAINER}", "planetarycomputer.microsoft.com",
])
def test_container_url_or_no_scheme_is_refused(wrong):
    with pytest.raises(ConfigurationError, match="token API"):
        rasteret.PlanetaryComputerSas(wrong)


def _pc_item() -> dict:
    ring = [[11.5, 45.05], [11.55, 45.05], [11.55, 45.08], [11.5, 45.08], [11.5, 45.05]]
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": "S2B_MSIL2A_20240115_R022_T32TQM",
        "collection": "sentinel-2-l2a",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [11.5, 45.05, 11.55, 45.08],
        "properties": {"datetime": "2024-01-15T10:20:00Z", "eo:cloud_cover": 3.1,
                       "proj:code": "EPSG:32632", "platform": "Sentinel-2B"},
        "assets": {"B04": {"href": HREF, "roles": ["data"],
                           "type": "image/tiff; application=geotiff; profile=cloud-optimized"}},
        "links": [],
    }


def test_pc_dataset_builds_and_reads_with_no_provider(azurite, token_api, scene, tmp_path,
                                                      monkeypatch):
    """Only where the services are (token API, blob endpoint) comes from the
    environment: no provider, no backend."""
    from testbed.scenes import stac_collection

    monkeypatch.setenv("PC_SDK_SAS_URL", token_api.sas_url)
    monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", azurite.endpoint)
    cloud_config._backends.pop("pc/sentinel-2-l2a", None)
    items = [_pc_item()]
    try:
        with StacApiServer(stac_collection(items), items) as stac:
            collection = rasteret.build(
                "pc/sentinel-2-l2a", name="pc-s2", bbox=(11.4, 45.0, 11.6, 45.1),
                date_range=("2024-01-01", "2024-01-31"), bands=["B04"], stac_api=stac.url,
                workspace_dir=tmp_path, progress=False)
        assert len(collection) == 1
        np.testing.assert_array_equal(collection.cog(0, "B04").read(), scene[0])
        assert token_api.requests[f"/sas/{ACCOUNT}/{CONTAINER}"] >= 1
        stored = "".join(p.read_text(errors="ignore") for p in tmp_path.rglob("*.json"))
        assert "sig=" not in stored
    finally:
        cloud_config._backends.pop("pc/sentinel-2-l2a", None)
