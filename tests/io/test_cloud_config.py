"""CloudConfig registered, then built by id: the guide's flow end to end against a
local STAC API (rustac) whose items point at ``https://cdn.example.com/``, with the
COGs only in a moto bucket (or a requester-pays stub) that the config rewrites to.

Nothing in ``cdn.example.com`` resolves here, and the bucket exists only on the local
server named in the config's ``s3_config``: a build or a read that does not go
through the config's backend cannot succeed.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rasteret
from rasteret import registry
from rasteret.errors import ConfigurationError, RasteretError
from rasteret.io import cloud_config
from rasteret.io.backend import RetryPolicy
from rasteret.io.cloud_config import CloudConfig, backend_for_collection, backend_for_dataset
from testbed import HANG_GUARD
from testbed.auth_servers import RequesterPaysStub
from testbed.scenes import stac_collection, stac_item, write_scenes
from testbed.stac import StacApiServer

rasterio = pytest.importorskip("rasterio")

FAST_RETRY = {"max_retries": 0, "retry_timeout": dt.timedelta(seconds=2)}
BBOX = (14.0, 36.0, 16.5, 38.0)
DATES = ("2024-05-01", "2024-06-30")
CDN = "https://cdn.example.com/"
STAC_COLLECTION = "my-collection"
DATASET_ID = "my-org/my-collection"
FAKE_SECRET = "FAKE-SECRET-dont-leak-9Zr4"
FAKE_SESSION = "FAKE-SESSION-TOKEN-dont-leak-5Wq8"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two small synthetic scenes (bands B02, B03, B04, B08, label)."""
    return write_scenes(tmp_path_factory.mktemp("cc-scenes"), count=2, size=512, tile=256,
                        shift=256)


def key_of(scene, path):
    return f"{scene.id}/{path.name}"


@pytest.fixture(scope="module")
def stac_api(scenes):
    """Items whose hrefs are on a CDN that does not exist here."""
    items = [stac_item(s, lambda scene, band, path: CDN + key_of(scene, path),
                       collection=STAC_COLLECTION) for s in scenes]
    with StacApiServer(stac_collection(items, STAC_COLLECTION), items) as server:
        yield server


@pytest.fixture(scope="module")
def bucket(moto_server, scenes):
    """A private moto bucket holding the COGs under the CDN's paths."""
    moto_server.create_bucket("my-bucket")
    for scene in scenes:
        for path in scene.files.values():
            moto_server.upload("my-bucket", key_of(scene, path), path)
    return moto_server


@pytest.fixture(autouse=True)
def clean_registry():
    """Each test registers its own configs; none leaks into the next."""
    with registry.restored_on_exit():
        yield
    cloud_config._backends.clear()


def moto_config(moto, **extra):
    """The guide's config, with s3_config pointing at moto."""
    return CloudConfig(
        provider="aws", requester_pays=True, region="eu-central-1",
        url_patterns={CDN: "s3://my-bucket/"},
        s3_config={"endpoint": moto.endpoint, "aws_access_key_id": moto.access_key_id,
                   "aws_secret_access_key": moto.secret_access_key},
        **extra,
    )


def rio_read(path, window=None):
    with rasterio.open(path) as src:
        return src.read(1, window=window)


def check_reads(collection, scenes, config_backend):
    """cog(), get_numpy, get_xarray and sample_points give rasterio's pixels, through
    the config's backend."""
    assert backend_for_collection(collection) is config_backend
    by_id = {s.id: s for s in scenes}
    for row, scene_id in enumerate(collection.table["id"].to_pylist()):
        scene = by_id[scene_id]
        np.testing.assert_array_equal(collection.cog(row, "red").read()[0],
                                      rio_read(scene.files["B04"]))
    first = by_id[collection.table["id"][0].as_py()]
    minx, miny, maxx, maxy = first.bounds
    box = (minx + 1000, miny + 1000, minx + 3560, miny + 2280)  # 256 x 128 px
    data = collection.get_numpy(box, ["red"], geometry_crs=first.epsg,
                                date_range=(first.datetime, first.datetime))
    with rasterio.open(first.files["B04"]) as src:
        from rasterio.windows import from_bounds

        expected = src.read(1, window=from_bounds(*box, transform=src.transform))
    np.testing.assert_array_equal(data[0, 0], expected)
    xarr = collection.get_xarray(box, ["red"], geometry_crs=first.epsg,
                                 date_range=(first.datetime, first.datetime))
    np.testing.assert_array_equal(np.asarray(xarr["red"]).squeeze(), expected)
    point = (minx + 1005, maxy - 2005)
    values = collection.sample_points([point], ["red"], geometry_crs=first.epsg,
                                      date_range=(first.datetime, first.datetime))
    with rasterio.open(first.files["B04"]) as src:
        assert values["red"].tolist() == [next(src.sample([point]))[0]]


@pytest.mark.parametrize("key", [DATASET_ID, STAC_COLLECTION])
def test_registered_then_built_by_id(key, stac_api, bucket, scenes, tmp_path):
    config = moto_config(bucket)
    rasteret.CloudConfig.register(key, config)
    collection = rasteret.build(DATASET_ID, name="mine", bbox=BBOX, date_range=DATES,
                                stac_api=stac_api.url, bands=["red", "nir"],
                                workspace_dir=tmp_path, progress=False)
    # The build rewrote the hrefs and indexed them on moto: the only place they exist.
    assert len(collection) == 2 and collection.bands == ["red", "nir"]
    hrefs = [collection.band_record(r, "red")["href"] for r in range(len(collection))]
    assert all(h.startswith("s3://my-bucket/") for h in hrefs)
    assert collection.dataset_id == DATASET_ID
    assert collection.stac_collection == STAC_COLLECTION
    config_backend = backend_for_dataset(DATASET_ID, collection=STAC_COLLECTION)
    assert config_backend.region == "eu-central-1"
    assert config_backend.default_s3_config["request_payer"] == "requester"
    check_reads(collection, scenes, config_backend)
    # A collection loaded from disk finds the same config through the recorded ids.
    loaded = rasteret.load("mine", workspace_dir=tmp_path)
    check_reads(loaded, scenes, config_backend)


def test_build_from_stac_uses_the_collection_config(stac_api, bucket, scenes, tmp_path):
    config = moto_config(bucket)
    rasteret.CloudConfig.register(STAC_COLLECTION, config)
    collection = rasteret.build_from_stac(
        name="plain", stac_api=stac_api.url, collection=STAC_COLLECTION, bbox=BBOX,
        date_range=DATES, band_map={"red": "red"}, workspace_dir=tmp_path, progress=False)
    assert collection.dataset_id is None and collection.stac_collection == STAC_COLLECTION
    check_reads(collection, scenes, backend_for_dataset(None, collection=STAC_COLLECTION))


def test_build_from_stac_with_dataset_id_indexes_through_its_config(stac_api, bucket, scenes,
                                                                     tmp_path):
    # Before, the hrefs were rewritten but the headers indexed with the default backend.
    rasteret.CloudConfig.register(DATASET_ID, moto_config(bucket))
    collection = rasteret.build_from_stac(
        name="by-id", stac_api=stac_api.url, collection=STAC_COLLECTION, bbox=BBOX,
        date_range=DATES, band_map={"red": "red"}, workspace_dir=tmp_path, progress=False,
        dataset_id=DATASET_ID)
    check_reads(collection, scenes, backend_for_dataset(DATASET_ID))


def test_full_id_wins_over_collection_id_and_explicit_collection(stac_api, bucket, tmp_path):
    rasteret.CloudConfig.register(STAC_COLLECTION, CloudConfig(
        provider="aws", url_patterns={CDN: "s3://no-such-bucket/"},
        s3_config={"endpoint": bucket.endpoint, "skip_signature": True}))
    rasteret.CloudConfig.register("other-org/renamed", moto_config(bucket))
    collection = rasteret.build("other-org/renamed", collection=STAC_COLLECTION, name="x",
                                bbox=BBOX, date_range=DATES, stac_api=stac_api.url,
                                bands=["red"], workspace_dir=tmp_path, progress=False)
    assert collection.stac_collection == STAC_COLLECTION
    assert collection.band_record(0, "red")["href"].startswith("s3://my-bucket/")


def test_explicit_backend_wins_at_build_and_read(stac_api, bucket, tmp_path):
    rasteret.CloudConfig.register(DATASET_ID, moto_config(bucket))
    dead = rasteret.create_backend(
        default_s3_config={"endpoint": "http://127.0.0.1:9", "skip_signature": True,
                           "region": "us-east-1"},
        retry_config=FAST_RETRY, retries=RetryPolicy(attempts=1))
    with pytest.raises(RasteretError):
        rasteret.build(DATASET_ID, name="dead", bbox=BBOX, date_range=DATES,
                       stac_api=stac_api.url, bands=["red"], workspace_dir=tmp_path,
                       progress=False, backend=dead)
    collection = rasteret.build(DATASET_ID, name="ok", bbox=BBOX, date_range=DATES,
                                stac_api=stac_api.url, bands=["red"], workspace_dir=tmp_path,
                                progress=False)
    assert backend_for_collection(collection, dead) is dead
    with pytest.raises(RasteretError):
        collection.cog(0, "red", backend=dead).read()


def test_requester_pays_header_at_build_and_read(stac_api, scenes, tmp_path):
    objects = {f"usgs-landsat/{key_of(s, p)}": p.read_bytes()
               for s in scenes for p in s.files.values()}
    with RequesterPaysStub(objects) as stub:
        def config(requester_pays):
            return CloudConfig(
                provider="aws", requester_pays=requester_pays, region="us-west-2",
                url_patterns={CDN: "s3://usgs-landsat/"},
                s3_config={"endpoint": stub.endpoint, "aws_access_key_id": "AKIDEXAMPLE",
                           "aws_secret_access_key": FAKE_SECRET})

        # Without requester_pays the stub refuses, like S3: the header is what counts.
        rasteret.CloudConfig.register(STAC_COLLECTION, config(False))
        with pytest.raises(RasteretError, match="AccessDenied|denied"):
            rasteret.build(DATASET_ID, name="refused", bbox=BBOX, date_range=DATES,
                           stac_api=stac_api.url, bands=["red"], workspace_dir=tmp_path,
                           progress=False)
        assert stub.refused >= 1
        refused, stub.refused = stub.refused, 0

        rasteret.CloudConfig.register(STAC_COLLECTION, config(True))
        collection = rasteret.build(DATASET_ID, name="paid", bbox=BBOX, date_range=DATES,
                                    stac_api=stac_api.url, bands=["red"],
                                    workspace_dir=tmp_path, progress=False)
        assert refused >= 1 and stub.refused == 0 and stub.served >= 2  # the build's GETs
        served = stub.served
        by_id = {s.id: s for s in scenes}
        np.testing.assert_array_equal(
            collection.cog(0, "red").read()[0],
            rio_read(by_id[collection.table["id"][0].as_py()].files["B04"]))
        assert stub.refused == 0 and stub.served > served  # the read's GETs


def test_unknown_id_without_stac_api_says_how_to_register():
    with pytest.raises(ConfigurationError) as caught:
        rasteret.build("my-org/unknown-thing", name="x", bbox=BBOX, date_range=DATES)
    message = str(caught.value)
    assert "rasteret.datasets.register(" in message and "stac_api=" in message
    assert "'unknown-thing'" in message  # the collection stac_api= would search


def test_registering_something_else_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="takes a CloudConfig"):
        rasteret.CloudConfig.register(DATASET_ID, {"provider": "aws"})


# -- provider names ----------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["gcp", "gcs", "GCP"])
def test_gcp_and_gcs_are_the_same_provider(spelling):
    assert rasteret.CloudConfig(provider=spelling).provider == "gcp"


@pytest.mark.parametrize("provider", ["aws", "azure", "planetary_computer", "earthdata",
                                      "http"])
def test_guide_providers_are_accepted(provider):
    assert rasteret.CloudConfig(provider=provider).provider == provider


def test_unknown_provider_names_the_choices():
    with pytest.raises(ConfigurationError, match="'gcp'"):
        rasteret.CloudConfig(provider="dropbox")


# -- no secret in any repr or description ----------------------------------------------
SECRETS = (FAKE_SECRET, FAKE_SESSION, "AKIDPLANTED", "sv=2024&sig=PLANTEDSIG",
           "PLANTED-PASSWORD", "PLANTED-BEARER")


def planted_config():
    return CloudConfig(
        provider="earthdata", region="us-west-2", requester_pays=True,
        credentials_url="https://user:PLANTED-PASSWORD@daac.example/s3credentials"
                        "?sv=2024&sig=PLANTEDSIG",
        s3_config={"aws_access_key_id": "AKIDPLANTED", "aws_secret_access_key": FAKE_SECRET,
                   "aws_session_token": FAKE_SESSION, "endpoint": "http://127.0.0.1:1"},
    )


def test_cloud_config_dataset_info_and_backend_reprs_mask_secrets():
    config = planted_config()
    info = rasteret.datasets.register(
        id="planted/secrets", stac_api="https://stac.example/api?sv=2024&sig=PLANTEDSIG",
        collection="secrets", band_map={"B04": "red"},
        cloud_config={"provider": "aws", "s3_config": dict(config.s3_config),
                      "credentials_url": config.credentials_url})
    backend = rasteret.create_backend(
        default_s3_config=dict(config.s3_config),
        azure_config={"azure_storage_account_key": FAKE_SECRET, "sas_token": FAKE_SESSION},
        gcs_config={"service_account_key": FAKE_SECRET},
        client_options={"default_headers": {"Authorization": "Bearer PLANTED-BEARER"}},
    )
    texts = [repr(config), str(config), repr(info), str(info),
             repr(rasteret.datasets.info("planted/secrets")),
             json.dumps(rasteret.datasets.info("planted/secrets")),
             repr(rasteret.datasets.get("planted/secrets")),
             repr(CloudConfig.get("planted/secrets")),
             repr(backend), repr(config.to_backend(credential_provider=object())),
             repr(backend_for_dataset("planted/secrets"))]
    blob = "\n".join(texts)
    for secret in SECRETS:
        assert secret not in blob, secret
    # Masked, not dropped: the reader still sees which settings are there.
    assert "aws_secret_access_key': '***'" in repr(config) and "daac.example" in repr(config)
    assert "'Authorization': '***'" in repr(backend) and "account_key': '***'" in repr(backend)


def test_cli_datasets_info_and_list_json_mask_secrets(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import rasteret
        from rasteret.cli import main

        rasteret.datasets.register(
            id="planted/secrets", stac_api="https://stac.example/api?sv=2024&sig=PLANTEDSIG",
            collection="secrets", band_map={{"B04": "red"}},
            cloud_config={{"provider": "aws", "credentials_url":
                           "https://user:PLANTED-PASSWORD@daac.example/c?sv=2024&sig=PLANTEDSIG",
                           "s3_config": {{"aws_secret_access_key": "{FAKE_SECRET}",
                                         "aws_session_token": "{FAKE_SESSION}",
                                         "aws_access_key_id": "AKIDPLANTED"}}}})
        status = main(["datasets", "info", "planted/secrets", "--json"])
        status |= main(["datasets", "info", "planted/secrets"])
        status |= main(["datasets", "list", "--json"])
        sys.exit(status)
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=HANG_GUARD, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert '"aws_secret_access_key": "***"' in out.stdout
    for secret in SECRETS:
        assert secret not in out.stdout + out.stderr, secret


@pytest.mark.torch
def test_torchgeo_dataset_and_chip_export_read_through_the_config(stac_api, bucket, scenes,
                                                                   tmp_path):
    pytest.importorskip("torchgeo")
    rasteret.CloudConfig.register(STAC_COLLECTION, moto_config(bucket))
    collection = rasteret.build(DATASET_ID, name="torch", bbox=BBOX, date_range=DATES,
                                stac_api=stac_api.url, bands=["red"], workspace_dir=tmp_path,
                                progress=False)
    dataset = collection.to_torchgeo_dataset(["red"])
    assert dataset.backend is backend_for_dataset(None, collection=STAC_COLLECTION)
    first = scenes[0]
    minx, _, _, maxy = first.bounds
    bounds = (minx, maxy - 640, minx + 640, maxy)  # only the first scene covers it
    sample = dataset[slice(bounds[0], bounds[2]), slice(bounds[1], bounds[3])]
    with rasterio.open(first.files["B04"]) as src:
        from rasterio.windows import from_bounds

        expected = src.read(1, window=from_bounds(*bounds, transform=src.transform))
    np.testing.assert_array_equal(sample["image"][0].numpy(), expected)
    manifest = collection.export_chips(["red"], tmp_path / "chips", chip_size=128,
                                       mode="random", length=2, quicklook=False)
    chips = sorted((tmp_path / "chips" / "chips").glob("*.tif"))
    assert manifest.exists() and len(chips) == 2
    for chip in chips:
        assert rio_read(chip).any()
