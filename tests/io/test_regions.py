"""A bucket in another region: S3's two answers (400 AuthorizationHeaderMalformed to
signed requests, 301 PermanentRedirect to unsigned ones) become a RegionMismatchError
naming the bucket's real region, found in the message or by a HEAD on the bucket."""

from __future__ import annotations

import datetime as dt

import pytest

import rasteret
from rasteret.errors import ConfigurationError, RegionMismatchError
from rasteret.io import regions
from testbed.auth_servers import WrongRegionStub

# These tests start local servers of their own: end to end.
pytestmark = pytest.mark.integration

FAST_RETRY = {"max_retries": 0, "retry_timeout": dt.timedelta(seconds=2)}
SECRET = "FAKE-SECRET-region-test-9Zq"


@pytest.fixture(autouse=True)
def _fresh_probe_cache():
    regions._cache.clear()
    yield
    regions._cache.clear()


def _open(backend):
    with pytest.raises(RegionMismatchError) as caught:
        rasteret.open_cog("s3://far-bucket/scene.tif", backend=backend)
    return caught.value


def test_authorization_header_malformed_names_the_expected_region():
    with WrongRegionStub("eu-central-1", answer="malformed") as stub:
        backend = rasteret.create_backend(
            region="us-east-1",
            default_s3_config={"endpoint": stub.endpoint, "aws_access_key_id": "AKIDEXAMPLE",
                               "aws_secret_access_key": SECRET},
            retry_config=FAST_RETRY)
        error = _open(backend)
    message = str(error)
    assert isinstance(error, ConfigurationError)
    assert error.bucket_region == "eu-central-1" and error.requested_region == "us-east-1"
    # The advice names the bucket's region (Y), not the one S3 called wrong (X).
    advice = message.split("Store said:")[0]
    assert "is in region 'eu-central-1'" in advice
    assert "create_backend(region='eu-central-1')" in advice
    assert "us-east-1" in advice and "'us-east-1'" not in advice.split("Pass")[1]
    assert SECRET not in message
    assert stub.heads == 0  # S3's message said it: no extra request


def test_permanent_redirect_is_a_region_error_found_by_head():
    with WrongRegionStub("ap-southeast-2", answer="redirect") as stub:
        backend = rasteret.create_backend(
            default_s3_config={"endpoint": stub.endpoint, "region": "us-west-2",
                               "skip_signature": True},
            retry_config=FAST_RETRY)
        error = _open(backend)
        assert stub.heads == 1
        # One probe per bucket and process.
        _open(backend)
        assert stub.heads == 1
    assert error.bucket_region == "ap-southeast-2"
    advice = str(error).split("Store said:")[0]
    assert "default_s3_config={'region': 'ap-southeast-2'}" in advice
    assert "'us-west-2'" in advice


def test_region_unknown_still_a_region_error(monkeypatch):
    monkeypatch.setattr(regions, "probe_bucket_region", lambda bucket, endpoint=None: None)
    with WrongRegionStub("eu-west-1", answer="redirect") as stub:
        backend = rasteret.create_backend(
            default_s3_config={"endpoint": stub.endpoint, "region": "us-west-2",
                               "skip_signature": True},
            retry_config=FAST_RETRY)
        error = _open(backend)
    assert error.bucket_region is None
    assert "did not say which" in str(error) and "region=" in str(error)


def test_region_from_message_prefers_expecting():
    text = ("the region 'us-east-1' is wrong; expecting 'eu-central-1'</Message>"
            "<Region>eu-central-1</Region>")
    assert regions.region_from_message(text) == "eu-central-1"
    assert regions.region_from_message("<Region>us-west-2</Region>") == "us-west-2"
    assert regions.region_from_message("nothing here") is None
