"""docs/authentication.md runs as written: every ```python block of the guide is
executed, copied literally with only the cloud URLs swapped for local servers, in the
environment a user would have, and checked against what the guide promises.

The cloud here:

- S3: moto (``AWS_ENDPOINT_URL`` points at it, as boto3 and the AWS CLI read it), a
  second moto with IAM authentication on (``~/.aws`` holds a reader's keys, written as
  ``aws configure`` writes them), and a requester-pays stub that refuses requests
  without ``x-amz-request-payer: requester``.
- Planetary Computer: Azurite plus a local SAS token API (``PC_SDK_SAS_URL``,
  ``AZURE_STORAGE_ENDPOINT``).
- NASA Earthdata: a local ``s3credentials`` endpoint that sends the client to a login
  service wanting the ``~/.netrc`` password (tests/test_hls.py's ``EarthdataLogin``).
- STAC APIs: rustac servers with items shaped like Earth Search's, Planetary
  Computer's and CMR's (the recorded HLS items of tests/data); the catalog entries of
  the built-in ids get their ``stac_api`` swapped for the local one (restored after).

Each block has an entry in ``FLOWS`` (its index and first line, its setup, its
check): a new or changed block without one fails, so the guide cannot grow an
untested snippet. The troubleshooting table is checked the same way: each error it
names is a real class, and its described trigger raises it.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import dataclasses
import datetime as dt
import json
import re
import subprocess
import sys
import textwrap
from collections import defaultdict
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_hls import PASSWORD, USER, EarthdataLogin

import rasteret
from rasteret import errors, registry
from rasteret.io import backend as backend_module
from rasteret.io import cloud_config, regions
from rasteret.io.cloud_config import CloudConfig
from testbed import HANG_GUARD
from testbed.auth_servers import (
    AzuriteServer,
    CredentialEndpoints,
    RequesterPaysStub,
    WrongRegionStub,
)
from testbed.scenes import stac_collection
from testbed.servers import MotoServer
from testbed.stac import StacApiServer

# These tests start local servers of their own: end to end.
pytestmark = pytest.mark.integration

rasterio = pytest.importorskip("rasterio")

ROOT = Path(__file__).parents[1]
GUIDE = ROOT / "docs" / "authentication.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
BLOCKS = [textwrap.dedent(code) for code in BLOCK.findall(GUIDE.read_text())]
DATA = Path(__file__).parent / "data"

# The cloud URLs the guide names, each swapped for a local server.
PC_TOKEN_API = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
CMR_STAC = "https://cmr.earthdata.nasa.gov/stac/LPCLOUD"
EXAMPLE_STAC = "https://stac.example.com/v1"
LPDAAC_CREDENTIALS = "https://data.lpdaac.earthdatacloud.nasa.gov/s3credentials"
LOCAL_S3 = "http://127.0.0.1:9000"
# The guide's explicit keys (AWS's documentation examples) stand for the user's own.
EXAMPLE_KEYS = ("ASIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "FwoGZXIvYXdzEXAMPLESESSIONTOKEN")

AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
    "AWS_SKIP_SIGNATURE", "AWS_ALLOW_HTTP", "EARTHDATA_TOKEN", "EARTHDATA_USERNAME",
    "EARTHDATA_PASSWORD", "PC_SDK_SAS_URL", "PC_SDK_SUBSCRIPTION_KEY",
    "AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT",
)
FAST_RETRY = {"max_retries": 0, "retry_timeout": dt.timedelta(seconds=2)}
SIZE = 256  # every COG is 256 x 256


# -- the scenes: real-looking items, tiny COGs --------------------------------------------
@dataclasses.dataclass(frozen=True)
class Scene:
    """One scene placed around a lon/lat, with one COG per asset key."""

    id: str
    collection: str
    when: str
    center: tuple[float, float]
    epsg: int
    res: float
    hrefs: dict[str, str]  # asset key -> the cloud href its item carries

    @property
    def origin(self) -> tuple[float, float]:
        from pyproj import Transformer

        x, y = Transformer.from_crs(4326, self.epsg, always_xy=True).transform(*self.center)
        half = SIZE * self.res / 2
        return round(x - half), round(y + half)

    @property
    def transform(self) -> Any:
        return rasterio.transform.from_origin(*self.origin, self.res, self.res)

    def item(self, properties: dict[str, Any]) -> dict[str, Any]:
        from pyproj import Transformer

        x0, y0 = self.origin
        extent = SIZE * self.res
        to_degrees = Transformer.from_crs(self.epsg, 4326, always_xy=True)
        minx, miny, maxx, maxy = to_degrees.transform_bounds(x0, y0 - extent, x0 + extent, y0)
        ring = [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]
        return {
            "type": "Feature", "stac_version": "1.0.0", "id": self.id,
            "collection": self.collection,
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "bbox": [minx, miny, maxx, maxy],
            "properties": {"datetime": self.when, **properties},
            "assets": {key: {"href": href, "roles": ["data"],
                             "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                             "proj:shape": [SIZE, SIZE],
                             "proj:transform": list(self.transform)[:6]}
                       for key, href in self.hrefs.items()},
            "links": [],
        }


def write_cog(path: Path, *, epsg: int, transform: Any, seed: int) -> Path:
    """A 256 x 256 uint16 deflate COG (128-px tiles), nodata 0, distinct per seed."""
    data = ((np.arange(SIZE * SIZE, dtype="uint32").reshape(SIZE, SIZE) * 7 + seed * 131)
            % 9000 + 1).astype("uint16")
    with rasterio.open(path, "w", driver="COG", width=SIZE, height=SIZE, count=1,
                       dtype="uint16", crs=f"EPSG:{epsg}", transform=transform, nodata=0,
                       compress="deflate", predictor=2, blocksize=128) as dst:
        dst.write(data, 1)
    return path


def rio(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


ES_S2_BASE = ("https://sentinel-cogs.s3.us-west-2.amazonaws.com/sentinel-s2-l2a-cogs/32/U/PU/"
              "2024/6/S2B_32UPU_20240615_0_L2A/")
# Every band asset of the real items (a build without bands= indexes them all).
ES_S2 = Scene("S2B_32UPU_20240615_0_L2A", "sentinel-2-l2a", "2024-06-15T10:36:21.024Z",
              (11.55, 48.15), 32632, 10.0,
              {key: f"{ES_S2_BASE}{code}.tif" for code, key
               in rasteret.datasets.get("earthsearch/sentinel-2-l2a").band_map.items()})
LANDSAT_BASE = ("https://landsatlook.usgs.gov/data/collection02/level-2/standard/oli-tirs/2023/"
                "044/034/LC09_L2SP_044034_20230612_20230614_02_T1/"
                "LC09_L2SP_044034_20230612_20230614_02_T1_SR_")
LANDSAT = Scene("LC09_L2SP_044034_20230612_02_T1", "landsat-c2-l2", "2023-06-12T18:51:02.117Z",
                (-122.45, 37.75), 32610, 30.0,
                {"red": LANDSAT_BASE + "B4.TIF", "nir08": LANDSAT_BASE + "B5.TIF"})
PC_BASE = ("https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/43/P/GQ/2024/01/15/"
           "S2B_MSIL2A_20240115T050139_N0510_R119_T43PGQ_20240115T085010.SAFE/GRANULE/"
           "L2A_T43PGQ_A035766_20240115T050733/IMG_DATA/")
PC_RESOLUTION = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B01": 60, "B09": 60}
PC_S2 = Scene("S2B_MSIL2A_20240115T050139_R119_T43PGQ_20240115T085010", "sentinel-2-l2a",
              "2024-01-15T05:01:39.024Z", (77.6, 13.0), 32643, 10.0,
              {code: f"{PC_BASE}R{res}m/T43PGQ_20240115T050139_{code}_{res}m.tif"
               for code in rasteret.datasets.get("pc/sentinel-2-l2a").band_map
               for res in [PC_RESOLUTION.get(code, 20)]})
MINE_BASE = "https://cdn.example.com/my-collection/2024/02/10/MC_20240210_T32UPU/"
MINE = Scene("MC_20240210_T32UPU", "my-collection", "2024-02-10T10:20:00Z", (11.15, 48.15),
             32632, 60.0, {"red": MINE_BASE + "red.tif", "nir": MINE_BASE + "nir.tif"})
HLS_PREFIX = "https://data.lpdaac.earthdatacloud.nasa.gov/lp-prod-protected/"
HLS_BANDS = ("B04", "B05", "B8A", "Fmask")  # the assets the guide's HLS blocks read
PRIVATE = "s3://private-bucket/scene.tif"
PUBLIC = "s3://public-bucket/scene.tif"


def s3_key(href: str, prefix: str) -> str:
    assert href.startswith(prefix), href
    return href[len(prefix):]


class Cloud:
    """The local stand-ins of every service the guide names, each started on first
    use and stopped (by PID or thread) when the module ends."""

    def __init__(self, folder: Path, stack: contextlib.ExitStack) -> None:
        self.folder = folder
        self.stack = stack
        self.truth: dict[str, Path] = {}  # cloud href or s3:// URL -> local COG

    def _cog(self, scene: Scene, key: str, seed: int) -> Path:
        path = write_cog(self.folder / f"{scene.id}.{key}.tif", epsg=scene.epsg,
                         transform=scene.transform, seed=seed)
        self.truth[scene.hrefs[key]] = path
        return path

    # -- S3 -------------------------------------------------------------------------------
    @cached_property
    def moto(self) -> MotoServer:
        """moto, auth off: Earth Search's and LP DAAC's buckets, and a public bucket."""
        moto = self.stack.enter_context(MotoServer())
        moto.create_bucket("sentinel-cogs")
        for seed, key in enumerate(ES_S2.hrefs):
            path = self._cog(ES_S2, key, seed)
            moto.upload("sentinel-cogs", s3_key(
                ES_S2.hrefs[key], "https://sentinel-cogs.s3.us-west-2.amazonaws.com/"), path)
        moto.create_bucket("lp-prod-protected")
        for number, item in enumerate(self.hls_items):
            for code in HLS_BANDS:
                if code not in item["assets"]:
                    continue
                href = item["assets"][code]["href"]
                path = write_cog(self.folder / f"{item['id']}.{code}.tif", epsg=32610,
                                 transform=rasterio.transform.from_origin(499980, 4200000,
                                                                          30, 30),
                                 seed=10 + number * 10 + HLS_BANDS.index(code))
                self.truth[href] = path
                moto.upload("lp-prod-protected", s3_key(href, HLS_PREFIX), path)
        moto.create_bucket("public-bucket", public=True)
        public = write_cog(self.folder / "public.tif", epsg=32633,
                           transform=rasterio.transform.from_origin(5e5, 4e6, 10, 10), seed=40)
        moto.upload("public-bucket", "scene.tif", public, public_read=True)
        self.truth[PUBLIC] = public
        return moto

    @cached_property
    def iam(self) -> tuple[MotoServer, dict[str, tuple[str, ...]]]:
        """moto with IAM authentication on: a reader (with a policy), a stranger
        (without), and temporary keys (with a session token) of a reader role."""

        moto = self.stack.enter_context(MotoServer())
        private = write_cog(self.folder / "private.tif", epsg=32633,
                            transform=rasterio.transform.from_origin(5e5, 4e6, 10, 10), seed=50)
        self.truth[PRIVATE] = private
        moto.create_bucket("private-bucket")
        moto.upload("private-bucket", "scene.tif", private)
        keys = moto.enable_iam({"reader": ["s3:GetObject", "s3:ListBucket"],
                                "stranger": None}, session_for="reader")
        return moto, keys

    @cached_property
    def payer(self) -> RequesterPaysStub:
        """The requester-pays buckets: USGS Landsat, and the guide's my-bucket."""
        objects = {}
        for seed, key in enumerate(LANDSAT.hrefs, start=20):
            href = LANDSAT.hrefs[key]
            objects["usgs-landsat/" + s3_key(href, "https://landsatlook.usgs.gov/data/")] = \
                self._cog(LANDSAT, key, seed).read_bytes()
        for seed, key in enumerate(MINE.hrefs, start=30):
            href = MINE.hrefs[key]
            objects["my-bucket/" + s3_key(href, "https://cdn.example.com/")] = \
                self._cog(MINE, key, seed).read_bytes()
        return self.stack.enter_context(RequesterPaysStub(objects))

    # -- Planetary Computer ---------------------------------------------------------------
    @cached_property
    def azurite(self) -> AzuriteServer:
        azurite = self.stack.enter_context(AzuriteServer())
        prefix = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/"
        # azure-storage-blob (through requests) would send the ~/.netrc login of
        # 127.0.0.1 (the Earthdata stand-in) instead of the account key.
        empty = self.folder / "empty-netrc"
        empty.touch()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("NETRC", str(empty))
            for seed, key in enumerate(PC_S2.hrefs, start=60):
                azurite.upload("sentinel2-l2", s3_key(PC_S2.hrefs[key], prefix),
                               self._cog(PC_S2, key, seed))
        return azurite

    @cached_property
    def tokens(self) -> CredentialEndpoints:
        azurite = self.azurite
        return self.stack.enter_context(CredentialEndpoints(
            sas_token=lambda account, container: azurite.sas_token(container)))

    # -- Earthdata ------------------------------------------------------------------------
    @cached_property
    def login(self) -> EarthdataLogin:
        return self.stack.enter_context(EarthdataLogin())

    @cached_property
    def hls_items(self) -> list[dict[str, Any]]:
        return [json.loads((DATA / name).read_text())
                for name in ("hls_s30_item.json", "hls_l30_item.json")]

    # -- STAC APIs ------------------------------------------------------------------------
    def _stac(self, collections: list[dict], items: list[dict]) -> StacApiServer:
        return self.stack.enter_context(StacApiServer(collections, items))

    @cached_property
    def earth_search(self) -> StacApiServer:
        s2 = ES_S2.item({"platform": "sentinel-2b", "constellation": "sentinel-2",
                         "eo:cloud_cover": 4.2, "proj:epsg": 32632, "mgrs:utm_zone": 32,
                         "mgrs:latitude_band": "U", "mgrs:grid_square": "PU",
                         "s2:processing_baseline": "05.10"})
        landsat = LANDSAT.item({"platform": "landsat-9", "instruments": ["oli", "tirs"],
                                "eo:cloud_cover": 0.8, "proj:epsg": 32610,
                                "landsat:wrs_path": "044", "landsat:wrs_row": "034"})
        return self._stac([stac_collection([s2], "sentinel-2-l2a"),
                           stac_collection([landsat], "landsat-c2-l2")], [s2, landsat])

    @cached_property
    def planetary_computer(self) -> StacApiServer:
        item = PC_S2.item({"platform": "Sentinel-2B", "constellation": "Sentinel 2",
                           "eo:cloud_cover": 2.7, "proj:code": "EPSG:32643",
                           "s2:mgrs_tile": "43PGQ", "s2:processing_baseline": "05.10"})
        return self._stac([stac_collection([item], "sentinel-2-l2a")], [item])

    @cached_property
    def cmr(self) -> StacApiServer:
        items = self.hls_items
        self.moto  # noqa: B018 - their COGs must be in the bucket
        return self._stac([stac_collection([item], item["collection"]) for item in items],
                          items)

    @cached_property
    def example(self) -> StacApiServer:
        item = MINE.item({"platform": "my-satellite", "eo:cloud_cover": 1.5,
                          "proj:epsg": 32632})
        return self._stac([stac_collection([item], "my-collection")], [item])

    # -- the swaps --------------------------------------------------------------------------
    def url_swaps(self) -> dict[str, Callable[[], str]]:
        """Each cloud URL of the guide -> its local stand-in (started when asked)."""
        return {
            PC_TOKEN_API: lambda: self.tokens.sas_url,
            CMR_STAC: lambda: self.cmr.url,
            EXAMPLE_STAC: lambda: self.example.url,
            LPDAAC_CREDENTIALS: lambda: f"{self.login.url}/s3credentials",
            LOCAL_S3: lambda: self.moto.endpoint,
        }

    def localize(self, code: str, extra: dict[str, str] | None = None) -> str:
        """The block with the cloud URLs (and ``extra`` literals) swapped."""
        for cloud_url, local in self.url_swaps().items():
            if cloud_url in code:
                code = code.replace(cloud_url, local())
        for old, new in (extra or {}).items():
            assert old in code, f"{old!r} is not in the block any more"
            code = code.replace(old, new)
        return code


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    with contextlib.ExitStack() as stack:
        yield Cloud(tmp_path_factory.mktemp("guide-cloud"), stack)


# -- a user's machine -------------------------------------------------------------------
@dataclasses.dataclass
class User:
    """The temp home a test runs in; ``monkeypatch`` undoes every change."""

    home: Path
    monkeypatch: pytest.MonkeyPatch
    cloud: Cloud

    def aws_endpoint(self, url: str | None) -> None:
        if url is None:
            self.monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        else:
            self.monkeypatch.setenv("AWS_ENDPOINT_URL", url)

    def catalog_stac_api(self, dataset_id: str, url: str) -> None:
        """Point a built-in dataset at a local STAC API (the registry is restored after)."""
        info = registry.get_dataset(dataset_id)
        registry.register_dataset(dataclasses.replace(info, stac_api=url),
                                  CloudConfig.get(dataset_id))

    def hls_credentials(self) -> None:
        """The built-in HLS configs fetch keys from the local s3credentials endpoint."""
        for dataset_id in ("earthdata/hls", "earthdata/hls-s30", "earthdata/hls-l30"):
            builtin = CloudConfig.get(dataset_id)
            CloudConfig.register(dataset_id, dataclasses.replace(
                builtin, credentials_url=f"{self.cloud.login.url}/s3credentials"))


def write_aws_configure(aws_dir: Path, keys: tuple[str, ...], *, profile: str = "default",
                        region: str = "us-west-2") -> None:
    """What `aws configure [--profile NAME]` writes."""
    aws_dir.mkdir(exist_ok=True)
    section = "default" if profile == "default" else f"profile {profile}"
    (aws_dir / "credentials").write_text(
        f"[{profile}]\naws_access_key_id = {keys[0]}\naws_secret_access_key = {keys[1]}\n")
    (aws_dir / "config").write_text(f"[{section}]\nregion = {region}\noutput = json\n")


def _forget_cached_backends() -> None:
    cloud_config._backends.clear()
    backend_module._default_backend = None
    regions._cache.clear()


@pytest.fixture
def user(cloud, tmp_path, monkeypatch):
    """A new user's machine: `aws configure` keys in ~/.aws (the IAM reader's), an
    Earthdata login in ~/.netrc, the Planetary Computer and Azure endpoints in the
    environment, a fresh workspace as the working directory."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RASTERET_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.chdir(tmp_path)
    write_aws_configure(home / ".aws", cloud.iam[1]["reader"])
    netrc = home / ".netrc"
    # The real login host, and the local login service standing in for it.
    netrc.write_text(f"machine urs.earthdata.nasa.gov login {USER} password {PASSWORD}\n"
                     f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    _forget_cached_backends()
    with registry.restored_on_exit():
        yield User(home, monkeypatch, cloud)
    _forget_cached_backends()


# -- running a block ---------------------------------------------------------------------
class Namespace(dict):
    """A block's namespace that remembers every value each name was given."""

    def __init__(self) -> None:
        super().__init__(rasteret=rasteret)  # the guide's first block imports it
        self.history: dict[str, list[Any]] = defaultdict(list)

    def __setitem__(self, key: str, value: Any) -> None:
        self.history[key].append(value)
        super().__setitem__(key, value)


def run_block(code: str) -> Namespace:
    """Execute ``code`` in a fresh namespace; the value of a last bare expression is
    kept as ``_``."""
    tree = ast.parse(code)
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body[-1]
        tree.body[-1] = ast.copy_location(
            ast.Assign(targets=[ast.Name("_", ast.Store())], value=last.value), last)
        ast.fix_missing_locations(tree)
    namespace = Namespace()
    exec(compile(tree, str(GUIDE), "exec"), {"__builtins__": __builtins__}, namespace)
    return namespace


def no_secret_in_workspace(home: Path, *secrets: str) -> None:
    stored = "".join(p.read_bytes().decode("latin-1")
                     for p in (home.parent / "workspace").rglob("*") if p.is_file())
    assert stored, "the build wrote nothing"
    assert "sig=" not in stored
    for secret in secrets:
        assert secret not in stored


def read_equals(url_or_cog: Any, href: str, cloud: Cloud, backend: Any = None) -> None:
    cog = (rasteret.open_cog(url_or_cog, backend=backend) if isinstance(url_or_cog, str)
           else url_or_cog)
    np.testing.assert_array_equal(cog.read()[0], rio(cloud.truth[href]))


# -- each block: setup and check ----------------------------------------------------------
def overview(user: User) -> None:
    user.aws_endpoint(user.cloud.moto.endpoint)
    user.catalog_stac_api("earthsearch/sentinel-2-l2a", user.cloud.earth_search.url)
    ns = run_block(user.cloud.localize(BLOCKS[0]))
    collection, backend = ns["collection"], ns["backend"]
    assert len(collection) == 1
    assert collection.band_record(0, "B04")["href"] == ES_S2.hrefs["red"]
    truth = rio(user.cloud.truth[ES_S2.hrefs["red"]])
    pixels = ns["pixels"]
    assert pixels.shape == (1, 512, 512)  # past the 256-px image: boundless, nodata 0
    np.testing.assert_array_equal(pixels[0, :SIZE, :SIZE], truth)
    assert not pixels[0, SIZE:].any() and not pixels[0, :, SIZE:].any()
    assert "boto3" in backend.describe_credentials(ES_S2.hrefs["red"])  # aws configure
    from torchgeo.datasets import GeoDataset  # the block's last line needs the torch extra

    dataset = ns["dataset"]
    assert isinstance(dataset, GeoDataset) and dataset.backend is backend
    x0, y0 = ES_S2.origin
    sample = dataset[slice(x0, x0 + 1280), slice(y0 - 1280, y0)]
    np.testing.assert_array_equal(sample["image"][0].numpy(), truth[:128, :128])


def pc_no_backend(user: User) -> None:
    cloud = user.cloud
    user.monkeypatch.setenv("PC_SDK_SAS_URL", cloud.tokens.sas_url)
    user.monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", cloud.azurite.endpoint)
    user.catalog_stac_api("pc/sentinel-2-l2a", cloud.planetary_computer.url)
    before = cloud.tokens.requests["/sas/sentinel2l2a01/sentinel2-l2"]
    ns = run_block(cloud.localize(BLOCKS[1]))
    assert len(ns["s2"]) == 1
    assert ns["s2"].band_record(0, "B04")["href"] == PC_S2.hrefs["B04"]  # stored unsigned
    np.testing.assert_array_equal(ns["pixels"][0, :SIZE, :SIZE],
                                  rio(cloud.truth[PC_S2.hrefs["B04"]]))
    assert cloud.tokens.requests["/sas/sentinel2l2a01/sentinel2-l2"] > before
    no_secret_in_workspace(user.home)


def pc_token_api(user: User) -> None:
    cloud = user.cloud
    # No PC_SDK_SAS_URL: the token API can only come from the block's own argument.
    user.monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", cloud.azurite.endpoint)
    user.catalog_stac_api("pc/sentinel-2-l2a", cloud.planetary_computer.url)
    before = cloud.tokens.requests["/sas/sentinel2l2a01/sentinel2-l2"]
    ns = run_block(cloud.localize(BLOCKS[2]))
    assert isinstance(ns["backend"].credential_provider, rasteret.PlanetaryComputerSas)
    assert len(ns["s2"]) == 1
    np.testing.assert_array_equal(ns["pixels"][0, :SIZE, :SIZE],
                                  rio(cloud.truth[PC_S2.hrefs["B04"]]))
    assert cloud.tokens.requests["/sas/sentinel2l2a01/sentinel2-l2"] > before
    no_secret_in_workspace(user.home)


def hls_catalog(user: User) -> None:
    cloud = user.cloud
    user.aws_endpoint(cloud.moto.endpoint)
    user.catalog_stac_api("earthdata/hls", cloud.cmr.url)
    user.hls_credentials()
    logins = cloud.login.logins
    ns = run_block(cloud.localize(BLOCKS[3]))
    hls = ns["hls"]
    assert len(hls) == 2 and hls.bands == ["red", "nir", "fmask"]
    scene = hls.table["id"][0].as_py()
    nir_href = hls.band_record(0, "nir")["href"]
    assert nir_href.startswith("s3://lp-prod-protected/")
    assert nir_href.endswith(".B8A.tif" if scene.startswith("HLS.S30") else ".B05.tif")
    np.testing.assert_array_equal(
        ns["nir"][0], rio(cloud.truth[nir_href.replace("s3://", "https://data.lpdaac."
                                                       "earthdatacloud.nasa.gov/")]))
    assert cloud.login.logins > logins and cloud.login.refused == 0  # ~/.netrc was used
    no_secret_in_workspace(user.home, PASSWORD)


def hls_other_daac(user: User) -> None:
    cloud = user.cloud
    user.aws_endpoint(cloud.moto.endpoint)
    logins = cloud.login.logins
    ns = run_block(cloud.localize(BLOCKS[4]))
    hls = ns["hls"]
    assert [s[:7] for s in hls.table["id"].to_pylist()] == ["HLS.S30"]
    href = hls.band_record(0, "B8A")["href"]
    assert href.startswith("s3://lp-prod-protected/")  # the block's url_patterns
    original = HLS_PREFIX + href.removeprefix("s3://lp-prod-protected/")
    read_equals(hls.cog(0, "B8A", backend=ns["backend"]), original, cloud)
    read_equals(hls.cog(0, "B8A"), original, cloud)  # the registered config reads too
    assert cloud.login.logins > logins


def aws_configure(user: User) -> None:
    moto, keys = user.cloud.iam
    user.aws_endpoint(moto.endpoint)
    ns = run_block(user.cloud.localize(BLOCKS[5]))
    default, explicit = ns.history["backend"]
    assert "boto3" in default.describe_credentials(PRIVATE)
    for backend in (default, explicit):
        read_equals(PRIVATE, PRIVATE, user.cloud, backend)
    # Without the ~/.aws keys, IAM refuses: the keys found are what signs.
    (user.home / ".aws" / "credentials").unlink()
    with pytest.raises(errors.AccessDeniedError):
        rasteret.open_cog(PRIVATE, backend=rasteret.create_backend(retry_config=FAST_RETRY))


def requester_pays(user: User) -> None:
    stub = user.cloud.payer
    user.aws_endpoint(stub.endpoint)
    url = "s3://usgs-landsat/" + LANDSAT.hrefs["red"].removeprefix(
        "https://landsatlook.usgs.gov/data/")
    refused = stub.refused
    with pytest.raises(errors.AccessDeniedError):  # S3's answer without the header
        rasteret.open_cog(url, backend=rasteret.create_backend(region="us-west-2"))
    assert stub.refused > refused
    ns = run_block(user.cloud.localize(BLOCKS[6]))
    refused, served = stub.refused, stub.served
    read_equals(url, LANDSAT.hrefs["red"], user.cloud, ns["backend"])
    assert stub.refused == refused and stub.served > served


def landsat_catalog(user: User) -> None:
    stub = user.cloud.payer
    user.aws_endpoint(stub.endpoint)
    user.catalog_stac_api("earthsearch/landsat-c2-l2", user.cloud.earth_search.url)
    refused, served = stub.refused, stub.served
    ns = run_block(user.cloud.localize(BLOCKS[7]))
    landsat = ns["landsat"]
    assert len(landsat) == 1 and landsat.bands == ["B4", "B5"]
    assert landsat.band_record(0, "B4")["href"].startswith("s3://usgs-landsat/collection02/")
    np.testing.assert_array_equal(ns["red"][0], rio(user.cloud.truth[LANDSAT.hrefs["red"]]))
    assert stub.refused == refused and stub.served > served  # build and read sent the header


def explicit_keys(user: User) -> None:
    moto, keys = user.cloud.iam
    user.aws_endpoint(moto.endpoint)
    (user.home / ".aws" / "credentials").unlink()  # only the block's keys
    # The example keys stand for the user's own: here, temporary keys of moto's reader.
    code = user.cloud.localize(BLOCKS[8], dict(zip(EXAMPLE_KEYS, keys["session"])))
    backend = run_block(code)["backend"]
    assert backend.default_s3_config["region"] == "eu-central-1"
    assert "explicit access keys" in backend.describe_credentials(PRIVATE)
    read_equals(PRIVATE, PRIVATE, user.cloud, backend)
    for secret in keys["session"][1:]:
        assert secret not in repr(backend)
    # As printed, the example keys are sent, and refused.
    example = run_block(user.cloud.localize(BLOCKS[8]))["backend"]
    with pytest.raises(errors.AccessDeniedError):
        rasteret.open_cog(PRIVATE, backend=example)


def custom_endpoint(user: User) -> None:
    ns = run_block(user.cloud.localize(BLOCKS[9]))  # no AWS_ENDPOINT_URL: the block's own
    backend = ns["backend"]
    assert backend.default_s3_config["endpoint"] == user.cloud.moto.endpoint
    assert "anonymous" in backend.describe_credentials(PUBLIC)  # ~/.aws keys not used
    read_equals(PUBLIC, PUBLIC, user.cloud, backend)


def cloud_config_by_id(user: User) -> None:
    stub = user.cloud.payer
    user.aws_endpoint(stub.endpoint)  # where my-bucket lives
    refused, served = stub.refused, stub.served
    ns = run_block(user.cloud.localize(BLOCKS[10]))
    collection = ns["collection"]
    assert collection.dataset_id == "my-org/my-collection"
    assert collection.stac_collection == "my-collection"
    assert collection.band_record(0, "red")["href"] == \
        MINE.hrefs["red"].replace("https://cdn.example.com/", "s3://my-bucket/")
    assert stub.refused == refused and stub.served > served  # requester pays, build + read
    # get_numpy gives rasterio's pixels at each output pixel's centre (the same grid as
    # get_xarray's coordinates); outside the bbox polygon is nodata.
    pixels = ns["pixels"]
    xarr = collection.get_xarray((11.1, 48.1, 11.2, 48.2), ["red"])
    np.testing.assert_array_equal(pixels[0, 0], np.asarray(xarr["red"])[0])
    truth = rio(user.cloud.truth[MINE.hrefs["red"]])
    x0, y0 = MINE.origin
    cols = ((np.asarray(xarr["x"]) - x0) / MINE.res).astype(int)
    rows = ((y0 - np.asarray(xarr["y"])) / MINE.res).astype(int)
    expected = truth[np.ix_(rows, cols)]
    inside = pixels[0, 0] != 0
    assert inside.mean() > 0.8
    np.testing.assert_array_equal(pixels[0, 0][inside], expected[inside])


def rewrite_url(user: User) -> None:
    code = BLOCKS[11]
    ns = run_block(user.cloud.localize(code))
    promised = re.search(r'# -> "(.*)"', code).group(1)
    assert ns["_"] == promised


@dataclasses.dataclass(frozen=True)
class Flow:
    first_line: str
    run: Callable[[User], None]
    torch: bool = False  # the block needs the torch extra


FLOWS = {
    0: Flow("import rasteret", overview, torch=True),
    1: Flow('s2 = rasteret.build("pc/sentinel-2-l2a", name="pc-s2", '
            'bbox=(77.5, 12.9, 77.7, 13.1),', pc_no_backend),
    2: Flow("backend = rasteret.create_backend(", pc_token_api),
    3: Flow('hls = rasteret.build("earthdata/hls", name="hls", '
            'bbox=(-122.6, 38.0, -122.3, 38.3),', hls_catalog),
    4: Flow("from obstore.auth.earthdata import NasaEarthdataCredentialProvider",
            hls_other_daac),
    5: Flow("backend = rasteret.create_backend()          # the default: finds `aws "
            "configure` keys", aws_configure),
    6: Flow('backend = rasteret.create_backend(region="us-west-2",', requester_pays),
    7: Flow('landsat = rasteret.build("earthsearch/landsat-c2-l2", name="landsat-sf",',
            landsat_catalog),
    8: Flow("backend = rasteret.create_backend(default_s3_config={", explicit_keys),
    9: Flow("backend = rasteret.create_backend(default_s3_config={", custom_endpoint),
    10: Flow("import rasteret", cloud_config_by_id),
    11: Flow('config = rasteret.CloudConfig.get("earthsearch/landsat-c2-l2")', rewrite_url),
}


def _block_id(index: int) -> str:
    first = BLOCKS[index].splitlines()[0]
    return f"{index}-{re.sub(r'[^A-Za-z0-9]+', '-', first).strip('-')[:40]}"


def _block_params() -> list[Any]:
    return [pytest.param(index, id=_block_id(index),
                         marks=[pytest.mark.torch] if index in FLOWS and FLOWS[index].torch
                         else [])
            for index in range(len(BLOCKS))]


@pytest.mark.parametrize("index", _block_params())
def test_guide_block_runs_as_written(index, user):
    flow = FLOWS.get(index)
    if flow is not None and flow.torch:
        pytest.importorskip("torchgeo")
    first = BLOCKS[index].splitlines()[0]
    assert flow is not None, (
        f"docs/authentication.md block {index} ({first!r}) has no entry in FLOWS: give it "
        "a setup and a check of what it promises")
    assert first == flow.first_line, (
        f"block {index} now starts {first!r}, FLOWS expects {flow.first_line!r}: the guide "
        "changed, update its entry")
    flow.run(user)


def test_every_flow_has_its_block():
    assert sorted(FLOWS) == list(range(len(BLOCKS)))


# -- the troubleshooting table -----------------------------------------------------------
def troubleshooting_rows() -> dict[str, str]:
    section = GUIDE.read_text().split("## Troubleshooting", 1)[1]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("error", "---") and len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


def _raises(kind: type[BaseException], action: Callable[[], Any]) -> BaseException:
    with pytest.raises(kind) as caught:
        action()
    return caught.value


def _quoted(cell: str) -> list[str]:
    """The parts of the message a row quotes (``...`` elides)."""
    text = cell.strip("`\"")
    text = text.split(": ", 1)[1] if re.match(r"^\w+Error: ", text) else text
    return [part.strip() for part in text.split("...") if part.strip()]


def trigger_access_denied(user: User, cell: str) -> BaseException:
    moto, keys = user.cloud.iam
    backend = rasteret.create_backend(default_s3_config={
        "endpoint": moto.endpoint, "aws_access_key_id": keys["stranger"][0],
        "aws_secret_access_key": keys["stranger"][1]}, retry_config=FAST_RETRY)
    error = _raises(errors.AccessDeniedError, lambda: rasteret.open_cog(PRIVATE, backend=backend))
    message = str(error)
    assert PRIVATE in message and "explicit access keys" in message
    assert keys["stranger"][1] not in message
    return error


def trigger_session_token(user: User, cell: str) -> BaseException:
    moto, keys = user.cloud.iam
    key, secret, _ = keys["session"]
    backend = rasteret.create_backend(default_s3_config={
        "endpoint": moto.endpoint, "aws_access_key_id": key, "aws_secret_access_key": secret,
        "aws_session_token": "FwoGZXIvYXdzEXPIREDTOKEN"}, retry_config=FAST_RETRY)
    error = _raises(errors.AccessDeniedError, lambda: rasteret.open_cog(PRIVATE, backend=backend))
    assert cell.strip('"') in str(error)
    assert "FwoGZXIvYXdzEXPIREDTOKEN" not in str(error)
    return error


def trigger_not_found(user: User, cell: str) -> BaseException:
    moto, keys = user.cloud.iam
    user.aws_endpoint(moto.endpoint)
    missing = "s3://private-bucket/moved.tif"
    return _raises(errors.ObjectNotFoundError,
                   lambda: rasteret.open_cog(missing, backend=rasteret.create_backend()))


def trigger_network(user: User, cell: str) -> BaseException:
    from rasteret.io.backend import RetryPolicy

    backend = rasteret.create_backend(
        default_s3_config={"endpoint": "http://127.0.0.1:9", "skip_signature": True},
        retry_config=FAST_RETRY, retries=RetryPolicy(attempts=1))
    error = _raises(errors.NetworkError, lambda: rasteret.open_cog(PUBLIC, backend=backend))
    assert PUBLIC in str(error)
    return error


def trigger_fork(user: User, cell: str) -> BaseException:
    user.aws_endpoint(None)
    code = textwrap.dedent(f"""
        import os, sys
        import rasteret
        backend = rasteret.create_backend(default_s3_config={{
            "endpoint": "{user.cloud.moto.endpoint}", "skip_signature": True}})
        rasteret.open_cog("{PUBLIC}", backend=backend).read()
        pid = os.fork()
        if pid == 0:
            try:
                rasteret.open_cog("{PUBLIC}", backend=backend).read()
            except rasteret.errors.ForkAfterIOError as exc:
                print(type(exc).__name__, flush=True)
                os._exit(0)
            os._exit(3)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=HANG_GUARD, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return errors.ForkAfterIOError(out.stdout.strip())


def trigger_region(user: User, cell: str) -> BaseException:
    assert "create_backend(region='eu-central-1')" in troubleshooting_rows()[cell]
    url = "s3://far-bucket/scene.tif"
    with WrongRegionStub("eu-central-1", answer="malformed") as stub:
        signed = rasteret.create_backend(region="us-east-1", default_s3_config={
            "endpoint": stub.endpoint, "aws_access_key_id": "AKIDEXAMPLE",
            "aws_secret_access_key": "FAKE-SECRET-guide"}, retry_config=FAST_RETRY)
        error = _raises(errors.RegionMismatchError, lambda: rasteret.open_cog(url, backend=signed))
    assert error.bucket_region == "eu-central-1"
    assert "create_backend(region='eu-central-1')" in str(error)
    with WrongRegionStub("eu-central-1", answer="redirect") as stub:
        unsigned = rasteret.create_backend(default_s3_config={
            "endpoint": stub.endpoint, "region": "us-west-2", "skip_signature": True},
            retry_config=FAST_RETRY)
        redirect = _raises(errors.RegionMismatchError,
                           lambda: rasteret.open_cog(url, backend=unsigned))
        assert stub.heads == 1  # the unsigned HEAD that found the region
    assert redirect.bucket_region == "eu-central-1"
    assert "default_s3_config={'region': 'eu-central-1'}" in str(redirect)
    return error


def trigger_missing_profile(user: User, cell: str) -> BaseException:
    moto, keys = user.cloud.iam
    write_aws_configure(user.home / ".aws", keys["reader"], profile="research")
    user.monkeypatch.setenv("AWS_PROFILE", "x")
    user.aws_endpoint(moto.endpoint)
    error = _raises(errors.ConfigurationError,
                    lambda: rasteret.open_cog(PRIVATE, backend=rasteret.create_backend()))
    assert "research" in str(error) and "aws configure --profile x" in str(error)
    return error


def trigger_no_boto3(user: User, cell: str) -> BaseException:
    moto, _ = user.cloud.iam
    user.aws_endpoint(moto.endpoint)
    user.monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 -> ImportError
    error = _raises(errors.AccessDeniedError,
                    lambda: rasteret.open_cog(PRIVATE, backend=rasteret.create_backend()))
    assert "pip install 'rasteret[aws]'" in str(error)
    return error


def trigger_pc_provider(user: User, cell: str) -> BaseException:
    from obstore.auth.planetary_computer import PlanetaryComputerCredentialProvider

    error = _raises(ValueError, lambda: PlanetaryComputerCredentialProvider(PC_TOKEN_API))
    assert f'rasteret.PlanetaryComputerSas("{PC_TOKEN_API}")' in troubleshooting_rows()[cell]
    rasteret.PlanetaryComputerSas(PC_TOKEN_API)  # the fix it names is accepted
    return error


TRIGGERS: dict[str, tuple[type[BaseException], Callable[[User, str], BaseException]]] = {
    "`AccessDeniedError` (a `PermissionError`)": (errors.AccessDeniedError,
                                                  trigger_access_denied),
    '"rejected the session token"': (errors.AccessDeniedError, trigger_session_token),
    "`ObjectNotFoundError` (a `FileNotFoundError`)": (errors.ObjectNotFoundError,
                                                      trigger_not_found),
    "`NetworkError`": (errors.NetworkError, trigger_network),
    "`ForkAfterIOError`": (errors.ForkAfterIOError, trigger_fork),
    "`RegionMismatchError` (a `ConfigurationError`)": (errors.RegionMismatchError,
                                                       trigger_region),
    "`ConfigurationError: AWS_PROFILE='x' names a profile that is not in ...`": (
        errors.ConfigurationError, trigger_missing_profile),
    "`AccessDeniedError: ... boto3, which reads them, is not installed`": (
        errors.AccessDeniedError, trigger_no_boto3),
    "`ValueError: Invalid blob URL: https://planetarycomputer.microsoft.com/api/sas/v1/token`":
        (ValueError, trigger_pc_provider),
}


def test_troubleshooting_names_real_error_classes():
    rows = troubleshooting_rows()
    assert set(rows) == set(TRIGGERS), "a row was added or changed: give it a trigger"
    for cell in rows:
        named = re.findall(r"`(\w+Error)\b", cell)
        assert named or cell.startswith('"'), f"row {cell!r} names no error"
        # The row's error (obstore's ValueError aside) is a rasteret.errors class.
        if named and named[0] != "ValueError":
            assert hasattr(errors, named[0]), f"{named[0]} is not in rasteret.errors"
        parent = re.search(r"\(a `(\w+)`\)", cell)
        if parent:
            base = getattr(errors, parent.group(1), None) or getattr(builtins, parent.group(1))
            assert issubclass(getattr(errors, named[0]), base), \
                f"{named[0]} is not a {parent.group(1)}"


@pytest.mark.parametrize("cell", list(troubleshooting_rows()))
def test_troubleshooting_trigger_raises_the_named_error(cell, user):
    assert cell in TRIGGERS, f"troubleshooting row {cell!r} has no trigger in TRIGGERS"
    kind, trigger = TRIGGERS[cell]
    error = trigger(user, cell)
    assert isinstance(error, kind)
    message = str(error)
    for part in _quoted(cell) if ": " in cell or cell.startswith('"') else []:
        assert part in message, f"{part!r} (quoted in the table) is not in: {message}"
