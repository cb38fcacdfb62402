"""Credentials against real local servers: moto with IAM auth, a requester-pays stub,
Azurite with a Planetary Computer-style SAS token service, an Earthdata-style
credentials endpoint, CloudConfig, worker processes, and secrets never leaking."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import rasteret
from rasteret.errors import AccessDeniedError, ObjectNotFoundError, RasteretError
from testbed import HANG_GUARD
from testbed.auth_servers import AzuriteServer, CredentialEndpoints, RequesterPaysStub
from testbed.servers import MotoServer

rasterio = pytest.importorskip("rasterio")

FAST_RETRY = {"max_retries": 0, "retry_timeout": dt.timedelta(seconds=2)}
CONTAINER = "sentinel2-l2"
PC_ACCOUNT = "sentinel2l2a01"
FAKE_SECRET = "FAKE-SECRET-dont-leak-7Qx9"
FAKE_SESSION = "FAKE-SESSION-TOKEN-dont-leak-3Kp1"


def small_cog(path: Path) -> Path:
    data = (np.arange(300 * 400, dtype="uint16").reshape(1, 300, 400) % 1000) + 1
    with rasterio.open(path, "w", driver="COG", width=400, height=300, count=1, dtype="uint16",
                       crs="EPSG:32633", transform=rasterio.transform.from_origin(5e5, 4e6, 10, 10),
                       compress="deflate", blocksize=256) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def cog_path(tmp_path_factory):
    return small_cog(tmp_path_factory.mktemp("auth") / "scene.tif")


@pytest.fixture(scope="module")
def expected(cog_path):
    with rasterio.open(cog_path) as src:
        return src.read()


# -- moto with IAM auth on ---------------------------------------------------------------
@pytest.fixture(scope="module")
def iam_moto(cog_path):
    """A separate moto server with authentication enforced, a reader and a stranger."""
    with MotoServer() as moto:
        moto.create_bucket("private-bucket")
        moto.upload("private-bucket", "scene.tif", cog_path)
        keys = moto.enable_iam({"reader": ["s3:GetObject", "s3:ListBucket"],
                                "stranger": None}, session_for="reader")
        yield moto, keys


def s3_backend(moto, key_id, secret, token=None, **extra):
    config = {"endpoint": moto.endpoint, "region": "us-east-1",
              "aws_access_key_id": key_id, "aws_secret_access_key": secret, **extra}
    if token:
        config["aws_session_token"] = token
    return rasteret.create_backend(default_s3_config=config, retry_config=FAST_RETRY)


def test_good_keys_read(iam_moto, expected):
    moto, keys = iam_moto
    backend = s3_backend(moto, *keys["reader"])
    cog = rasteret.open_cog("s3://private-bucket/scene.tif", backend=backend)
    np.testing.assert_array_equal(cog.read(), expected)


def test_user_without_policy_gets_access_denied(iam_moto):
    moto, keys = iam_moto
    with pytest.raises(AccessDeniedError) as caught:
        backend = s3_backend(moto, *keys["stranger"])
        rasteret.open_cog("s3://private-bucket/scene.tif", backend=backend)
    message = str(caught.value)
    assert isinstance(caught.value, PermissionError)
    assert "s3://private-bucket/scene.tif" in message
    assert "explicit access keys" in message and "request_payer" in message
    assert keys["stranger"][1] not in message


def test_wrong_secret_is_a_clear_error(iam_moto):
    moto, keys = iam_moto
    backend = s3_backend(moto, keys["reader"][0], FAKE_SECRET)
    with pytest.raises(AccessDeniedError, match="access denied") as caught:
        rasteret.open_cog("s3://private-bucket/scene.tif", backend=backend)
    assert FAKE_SECRET not in str(caught.value)
    assert FAKE_SECRET not in repr(backend)


def test_session_tokens_work(iam_moto, expected):
    moto, keys = iam_moto
    cog = rasteret.open_cog("s3://private-bucket/scene.tif",
                            backend=s3_backend(moto, *keys["session"]))
    np.testing.assert_array_equal(cog.read(), expected)
    without_token = s3_backend(moto, *keys["session"][:2])
    with pytest.raises(AccessDeniedError):
        rasteret.open_cog("s3://private-bucket/scene.tif", backend=without_token)


def test_anonymous_reads_of_public_objects(moto_server, cog_path, expected):
    moto_server.create_bucket("public-bucket")
    moto_server.upload("public-bucket", "scene.tif", cog_path, public_read=True)
    backend = rasteret.create_backend(
        default_s3_config={"endpoint": moto_server.endpoint, "skip_signature": True,
                           "region": "us-east-1"},
        retry_config=FAST_RETRY,
    )
    cog = rasteret.open_cog("s3://public-bucket/scene.tif", backend=backend)
    np.testing.assert_array_equal(cog.read(), expected)
    assert "anonymous" in backend.describe_credentials("s3://public-bucket/scene.tif")
    with pytest.raises(ObjectNotFoundError):
        rasteret.open_cog("s3://public-bucket/nothing.tif", backend=backend)


# -- requester pays ----------------------------------------------------------------------
def test_requester_pays_header_is_sent(cog_path, expected):
    with RequesterPaysStub({"usgs-landsat/scene.tif": cog_path.read_bytes()}) as stub:
        plain = rasteret.create_backend(
            default_s3_config={"endpoint": stub.endpoint, "aws_access_key_id": "AKIDEXAMPLE",
                               "aws_secret_access_key": FAKE_SECRET, "region": "us-west-2"},
            retry_config=FAST_RETRY,
        )
        with pytest.raises(AccessDeniedError, match="request_payer"):
            rasteret.open_cog("s3://usgs-landsat/scene.tif", backend=plain)
        assert stub.refused >= 1
        paying = rasteret.create_backend(
            default_s3_config={"endpoint": stub.endpoint, "aws_access_key_id": "AKIDEXAMPLE",
                               "aws_secret_access_key": FAKE_SECRET, "region": "us-west-2",
                               "request_payer": True},
            retry_config=FAST_RETRY,
        )
        cog = rasteret.open_cog("s3://usgs-landsat/scene.tif", backend=paying)
        np.testing.assert_array_equal(cog.read(), expected)
        assert stub.served >= 2


def test_cloud_config_requester_pays_and_url_rewrite(cog_path, expected):
    config = rasteret.CloudConfig(
        provider="aws", requester_pays=True, region="us-west-2",
        url_patterns={"https://landsatlook.usgs.gov/data/": "s3://usgs-landsat/"},
    )
    rasteret.CloudConfig.register("test/landsat", config)
    assert rasteret.CloudConfig.get("test/landsat") is config
    assert config.rewrite_url("https://landsatlook.usgs.gov/data/a/b.tif") == \
        "s3://usgs-landsat/a/b.tif"
    assert config.rewrite_url("https://other/x.tif") == "https://other/x.tif"
    with RequesterPaysStub({"usgs-landsat/scene.tif": cog_path.read_bytes()}) as stub:
        config = rasteret.CloudConfig(
            provider="aws", requester_pays=True, region="us-west-2",
            s3_config={"endpoint": stub.endpoint, "aws_access_key_id": "AKIDEXAMPLE",
                       "aws_secret_access_key": FAKE_SECRET},
        )
        rasteret.CloudConfig.register("test/landsat-stub", config)
        from rasteret.io.cloud_config import backend_for_dataset

        backend = backend_for_dataset("test/landsat-stub")
        cog = rasteret.open_cog("s3://usgs-landsat/scene.tif", backend=backend)
        np.testing.assert_array_equal(cog.read(), expected)
        assert stub.refused == 0


# -- Planetary Computer SAS flow on Azurite ----------------------------------------------
@pytest.fixture(scope="module")
def azurite(cog_path):
    with AzuriteServer() as server:
        server.upload(CONTAINER, "24/X/WR/scene/B04.tif", cog_path)
        yield server


def pc_backend(azurite, endpoints):
    from obstore.auth.planetary_computer import PlanetaryComputerCredentialProvider

    provider = PlanetaryComputerCredentialProvider(
        account_name=PC_ACCOUNT, container_name=CONTAINER, sas_url=endpoints.sas_url)
    return rasteret.create_backend(
        credential_provider=provider,
        azure_config={"endpoint": azurite.endpoint},
        client_options={"allow_http": True},
        retry_config=FAST_RETRY,
    )


PC_HREF = f"https://{PC_ACCOUNT}.blob.core.windows.net/{CONTAINER}/24/X/WR/scene/B04.tif"


def test_planetary_computer_token_fetched_once_and_reused(azurite, expected):
    with CredentialEndpoints(sas_token=lambda a, c: azurite.sas_token(c)) as endpoints:
        backend = pc_backend(azurite, endpoints)
        cog = rasteret.open_cog(PC_HREF, backend=backend)
        for window in [(0, 0, 100, 100), (200, 100, 150, 150), None]:
            data = cog.read(window)
        np.testing.assert_array_equal(data, expected)
        assert sum(endpoints.requests.values()) == 1
        assert endpoints.requests[f"/sas/{PC_ACCOUNT}/{CONTAINER}"] == 1


def test_short_lived_token_is_refreshed(azurite, expected):
    import time

    with CredentialEndpoints(sas_token=lambda a, c: azurite.sas_token(c),
                             sas_lifetime=2) as endpoints:
        backend = pc_backend(azurite, endpoints)
        cog = rasteret.open_cog(PC_HREF, backend=backend)
        cog.read((0, 0, 10, 10))
        first = sum(endpoints.requests.values())
        time.sleep(3)  # the token has expired: the next read fetches a new one
        np.testing.assert_array_equal(cog.read((300, 200, 10, 10)),
                                      expected[:, 200:210, 300:310])
        assert sum(endpoints.requests.values()) > first


def test_bad_token_gives_access_denied(azurite):
    with CredentialEndpoints(sas_token=lambda a, c: "sv=2021-08-06&sig=not-a-signature"
                             ) as endpoints:
        with pytest.raises(AccessDeniedError) as caught:
            rasteret.open_cog(PC_HREF, backend=pc_backend(azurite, endpoints))
        assert "not-a-signature" not in str(caught.value)
        assert PC_HREF in str(caught.value)


# -- NASA Earthdata temporary keys -------------------------------------------------------
def test_earthdata_credentials_endpoint_hands_temporary_keys(iam_moto, expected):
    from obstore.auth.earthdata import NasaEarthdataCredentialProvider

    moto, keys = iam_moto
    with CredentialEndpoints(s3_keys=keys["session"]) as endpoints:
        provider = NasaEarthdataCredentialProvider(endpoints.s3_credentials_url)
        backend = rasteret.create_backend(
            credential_provider=provider, region="us-west-2",
            default_s3_config={"endpoint": moto.endpoint, "region": "us-east-1"},
            retry_config=FAST_RETRY,
        )
        cog = rasteret.open_cog("s3://private-bucket/scene.tif", backend=backend)
        np.testing.assert_array_equal(cog.read(), expected)
        assert endpoints.requests["/s3credentials"] == 1
        assert "NasaEarthdataCredentialProvider" in backend.describe_credentials(
            "s3://private-bucket/scene.tif")


# -- worker processes ---------------------------------------------------------------------
def _read_in_worker(backend_bytes: bytes, url: str, queue) -> None:
    backend = pickle.loads(backend_bytes)
    pixels = rasteret.open_cog(url, backend=backend).read()
    queue.put((os.getpid(), int(pixels.sum())))


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_each_worker_process_fetches_its_own_token(azurite, expected, method):
    with CredentialEndpoints(sas_token=lambda a, c: azurite.sas_token(c)) as endpoints:
        backend = pc_backend(azurite, endpoints)
        rasteret.open_cog(PC_HREF, backend=backend).read((0, 0, 8, 8))  # parent's token
        assert sum(endpoints.requests.values()) == 1
        context = multiprocessing.get_context(method)
        queue = context.Queue()
        payload = pickle.dumps(backend)
        assert FAKE_SECRET.encode() not in payload
        workers = [context.Process(target=_read_in_worker, args=(payload, PC_HREF, queue))
                   for _ in range(2)]
        for worker in workers:
            worker.start()
        results = [queue.get(timeout=HANG_GUARD) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        assert {pid for pid, _ in results} == {w.pid for w in workers}
        assert all(total == int(expected.sum()) for _, total in results)
        # One token for the parent, one per worker: the cache does not travel.
        assert sum(endpoints.requests.values()) == 3


@pytest.mark.torch
def test_torch_dataloader_workers_fetch_their_own_tokens(azurite, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchgeo")
    import pyarrow as pa

    from rasteret.torch import TileAlignedSampler, dataloader

    with CredentialEndpoints(sas_token=lambda a, c: azurite.sas_token(c)) as endpoints:
        backend = pc_backend(azurite, endpoints)
        collection = rasteret.build_from_table(
            pa.Table.from_pylist([{"id": "s1", "datetime": "2024-01-01", "B04": PC_HREF}]),
            name="pc", href_columns=["B04"], workspace_dir=tmp_path, backend=backend,
            progress=False,
        )
        stored = "".join(p.read_text(errors="ignore") for p in tmp_path.rglob("*.json"))
        assert "sig=" not in stored
        before = sum(endpoints.requests.values())
        dataset = collection.to_torchgeo_dataset(["B04"], backend=backend, dtype=torch.float32)
        sampler = TileAlignedSampler(dataset, size=128, length=8, seed=0)
        for method in ("forkserver", "spawn"):
            loader = dataloader(dataset, sampler=sampler, batch_size=2, num_workers=2,
                                multiprocessing_context=method, persistent_workers=False)
            batches = list(loader)
            assert sum(b["image"].shape[0] for b in batches) == 8
        # Two workers per loader, each with its own token.
        assert sum(endpoints.requests.values()) - before == 4


def test_fork_after_io_raises_within_seconds(nginx_server, cog_path):
    (Path(nginx_server.root) / "fork.tif").write_bytes(cog_path.read_bytes())
    code = textwrap.dedent(
        f"""
        import os, sys
        import rasteret
        from rasteret.errors import ForkAfterIOError
        url = "{nginx_server.url}/fork.tif"
        rasteret.open_cog(url).read()
        pid = os.fork()
        if pid == 0:
            try:
                rasteret.open_cog(url).read()
            except ForkAfterIOError as exc:
                print("child:", exc, flush=True)
                os._exit(0)
            os._exit(3)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=HANG_GUARD)
    assert out.returncode == 0, out.stderr
    assert "forkserver" in out.stdout and "spawn" in out.stdout


# -- secrets -----------------------------------------------------------------------------
def test_planted_secrets_never_reach_files_reprs_or_errors(iam_moto, tmp_path, caplog):
    import logging

    import pyarrow as pa

    caplog.set_level(logging.DEBUG)
    moto, keys = iam_moto
    secret_backend = s3_backend(moto, *keys["session"])
    wrong = s3_backend(moto, keys["reader"][0], FAKE_SECRET, FAKE_SESSION)
    signed_href = "s3://private-bucket/scene.tif?X-Amz-Signature=" + FAKE_SECRET
    table = pa.Table.from_pylist([
        {"id": "ok", "B04": "s3://private-bucket/scene.tif"},
        {"id": "bad", "B04": "s3://private-bucket/missing.tif"},
    ])
    # Backends pickle into worker processes in memory (they need the keys there);
    # rasteret never writes a pickle to disk.
    texts = [repr(secret_backend), repr(wrong)]
    for backend in (wrong,):
        for url in ("s3://private-bucket/scene.tif", signed_href):
            try:
                rasteret.open_cog(url, backend=backend)
            except RasteretError as exc:
                texts.append(str(exc))
                texts.append(repr(exc))
    with pytest.warns(UserWarning):
        collection = rasteret.build_from_table(
            table, name="secrets", href_columns=["B04"], workspace_dir=tmp_path,
            backend=secret_backend, on_error="skip", progress=False)
    texts.append(repr(collection))
    texts.append(str(collection.failures.to_pylist()))
    # Configs and dataset descriptions holding the same secrets mask them too.
    planted = {"aws_access_key_id": keys["session"][0], "aws_secret_access_key": FAKE_SECRET,
               "aws_session_token": FAKE_SESSION}
    config = rasteret.CloudConfig(s3_config=planted,
                                  credentials_url=f"https://x.example/creds?token={FAKE_SECRET}")
    info = rasteret.datasets.register(
        id="planted/auth", stac_api=f"https://stac.example/?token={FAKE_SESSION}",
        collection="auth", band_map={"B04": "B04"},
        cloud_config={"provider": "aws", "s3_config": planted})
    texts += [repr(config), repr(info), str(rasteret.datasets.info("planted/auth")),
              repr(rasteret.create_backend(
                  azure_config={"account_key": FAKE_SECRET, "sas_token": FAKE_SESSION},
                  client_options={"default_headers": {"Authorization": FAKE_SECRET}}))]
    texts.append(caplog.text)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
    blob = "\n".join(texts)
    for secret in (FAKE_SECRET, FAKE_SESSION, keys["session"][1], keys["session"][2]):
        assert secret not in blob


def test_aws_profile_is_read_through_boto3(iam_moto, expected, tmp_path, monkeypatch):
    moto, keys = iam_moto
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[reader]\naws_access_key_id = {keys['reader'][0]}\n"
                           f"aws_secret_access_key = {keys['reader'][1]}\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "reader")
    backend = rasteret.create_backend(
        default_s3_config={"endpoint": moto.endpoint, "region": "us-east-1"},
        retry_config=FAST_RETRY,
    )
    assert "boto3" in backend.describe_credentials("s3://private-bucket/scene.tif")
    cog = rasteret.open_cog("s3://private-bucket/scene.tif", backend=backend)
    np.testing.assert_array_equal(cog.read(), expected)


def test_wrong_region_names_the_bucket_region():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class WrongRegion(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>"
                    b"AuthorizationHeaderMalformed</Code><Message>The authorization header is "
                    b"malformed; the region 'us-east-1' is wrong; expecting 'us-west-2'"
                    b"</Message><Region>us-west-2</Region></Error>")
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), WrongRegion)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = rasteret.create_backend(default_s3_config={
            "endpoint": f"http://127.0.0.1:{server.server_address[1]}", "region": "us-east-1",
            "aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": FAKE_SECRET},
            retry_config=FAST_RETRY)
        with pytest.raises(rasteret.errors.ConfigurationError, match="us-west-2") as caught:
            rasteret.open_cog("s3://somebucket/scene.tif", backend=backend)
        assert "region=" in str(caught.value) and FAKE_SECRET not in str(caught.value)
    finally:
        server.shutdown()
