"""AWS credentials as `aws configure` leaves them: ~/.aws/credentials and config read
with no keys given, AWS_PROFILE errors, AWS_ENDPOINT_URL and string skip_signature,
against moto with IAM authentication on."""

from __future__ import annotations

import datetime as dt
import sys

import numpy as np
import pytest

import rasteret
from rasteret.errors import AccessDeniedError, ConfigurationError
from testbed.servers import MotoServer

# These tests start local servers of their own: end to end.
pytestmark = pytest.mark.integration

rasterio = pytest.importorskip("rasterio")

FAST_RETRY = {"max_retries": 0, "retry_timeout": dt.timedelta(seconds=2)}
URL = "s3://private-bucket/scene.tif"
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
    "AWS_SKIP_SIGNATURE", "AWS_ALLOW_HTTP",
)


@pytest.fixture(scope="module")
def pixels_and_cog(tmp_path_factory):
    path = tmp_path_factory.mktemp("aws") / "scene.tif"
    data = (np.arange(200 * 300, dtype="uint16").reshape(1, 200, 300) % 977) + 3
    with rasterio.open(path, "w", driver="COG", width=300, height=200, count=1,
                       dtype="uint16", crs="EPSG:32633",
                       transform=rasterio.transform.from_origin(5e5, 4e6, 10, 10),
                       compress="deflate", blocksize=256) as dst:
        dst.write(data)
    return data, path


@pytest.fixture(scope="module")
def iam_moto(pixels_and_cog):
    """moto with IAM authentication enforced: a reader with a policy, and a public
    object for anonymous reads."""

    with MotoServer() as moto:
        moto.create_bucket("private-bucket")
        moto.upload("private-bucket", "scene.tif", pixels_and_cog[1])
        keys = moto.enable_iam({"reader": ["s3:GetObject", "s3:ListBucket"]})
        yield moto, keys["reader"]


@pytest.fixture
def aws_home(tmp_path, monkeypatch):
    """A clean AWS environment with HOME in a temporary directory."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".aws").mkdir()
    return tmp_path / ".aws"


def write_aws_configure(aws_dir, keys, *, profile="default", region="us-east-1"):
    """What `aws configure [--profile NAME]` writes."""
    section = "default" if profile == "default" else f"profile {profile}"
    (aws_dir / "credentials").write_text(
        f"[{profile}]\naws_access_key_id = {keys[0]}\naws_secret_access_key = {keys[1]}\n")
    (aws_dir / "config").write_text(f"[{section}]\nregion = {region}\noutput = json\n")


def test_aws_configure_credentials_are_found_with_no_keys_given(iam_moto, aws_home,
                                                               pixels_and_cog, monkeypatch):
    moto, keys = iam_moto
    write_aws_configure(aws_home, keys)
    backend = rasteret.create_backend(default_s3_config={"endpoint": moto.endpoint},
                                      retry_config=FAST_RETRY)
    assert "boto3" in backend.describe_credentials(URL)
    np.testing.assert_array_equal(rasteret.open_cog(URL, backend=backend).read(),
                                  pixels_and_cog[0])


def test_aws_endpoint_url_http_works_like_an_endpoint(iam_moto, aws_home, pixels_and_cog,
                                                     monkeypatch):
    """`aws configure` keys plus AWS_ENDPOINT_URL=http://...: nothing given in code."""
    moto, keys = iam_moto
    write_aws_configure(aws_home, keys, region="eu-west-3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    backend = rasteret.create_backend(retry_config=FAST_RETRY)
    config = backend.s3_config(None)
    assert config["endpoint"] == moto.endpoint and moto.endpoint.startswith("http://")
    assert config["region"] == "eu-west-3"  # from ~/.aws/config, as boto3 reads it
    np.testing.assert_array_equal(rasteret.open_cog(URL, backend=backend).read(),
                                  pixels_and_cog[0])


def test_named_profile_is_found(iam_moto, aws_home, pixels_and_cog, monkeypatch):
    moto, keys = iam_moto
    write_aws_configure(aws_home, keys, profile="research")
    monkeypatch.setenv("AWS_PROFILE", "research")
    backend = rasteret.create_backend(default_s3_config={"endpoint": moto.endpoint},
                                      retry_config=FAST_RETRY)
    np.testing.assert_array_equal(rasteret.open_cog(URL, backend=backend).read(),
                                  pixels_and_cog[0])


def test_missing_profile_is_a_configuration_error(iam_moto, aws_home, monkeypatch):
    moto, keys = iam_moto
    write_aws_configure(aws_home, keys, profile="research")
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    backend = rasteret.create_backend(default_s3_config={"endpoint": moto.endpoint},
                                      retry_config=FAST_RETRY)
    with pytest.raises(ConfigurationError) as caught:
        rasteret.open_cog(URL, backend=backend)
    message = str(caught.value)
    assert type(caught.value).__module__ == "rasteret.errors"
    assert "'no-such-profile'" in message and "research" in message
    assert "aws configure --profile no-such-profile" in message
    assert keys[1] not in message


@pytest.mark.parametrize("value", ["false", "False", "0"])
def test_skip_signature_false_string_signs(iam_moto, aws_home, pixels_and_cog, value):
    moto, keys = iam_moto
    write_aws_configure(aws_home, keys)
    backend = rasteret.create_backend(
        default_s3_config={"endpoint": moto.endpoint, "skip_signature": value},
        retry_config=FAST_RETRY)
    assert backend.default_s3_config["skip_signature"] is False
    assert "anonymous" not in backend.describe_credentials(URL)
    np.testing.assert_array_equal(rasteret.open_cog(URL, backend=backend).read(),
                                  pixels_and_cog[0])


def test_skip_signature_true_string_is_anonymous_and_nonsense_is_refused(aws_home):
    backend = rasteret.create_backend(default_s3_config={"skip_signature": "true"})
    assert backend.default_s3_config["skip_signature"] is True
    assert "anonymous" in backend.describe_credentials(URL)
    with pytest.raises(ConfigurationError, match="skip_signature"):
        rasteret.create_backend(default_s3_config={"skip_signature": "maybe"})


def test_without_boto3_the_error_names_the_extra(iam_moto, aws_home, monkeypatch):
    moto, keys = iam_moto
    write_aws_configure(aws_home, keys)
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 -> ImportError
    backend = rasteret.create_backend(default_s3_config={"endpoint": moto.endpoint},
                                      retry_config=FAST_RETRY)
    with pytest.raises(AccessDeniedError) as caught:
        rasteret.open_cog(URL, backend=backend)
    message = str(caught.value)
    assert "boto3" in message and "rasteret[aws]" in message and "aws configure" in message
    assert keys[1] not in message


def test_boto3_is_a_core_dependency():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert any(dep.startswith("boto3") for dep in project["project"]["dependencies"])
