"""Every regex that classifies an obstore message, on realistic messages.

obstore raises ``GenericError`` for most HTTP failures: the type says little, so the
status line and the store's error code in the message decide which rasteret error a
user gets. One test per pattern (``rasteret/io/fetch.py``, ``rasteret/io/regions.py``),
each asserting the error type and what its message names.
"""

from __future__ import annotations

import pytest
from obstore.exceptions import GenericError

import rasteret
from rasteret.errors import (
    AccessDeniedError,
    BackendError,
    NetworkError,
    ObjectNotFoundError,
    RegionMismatchError,
    ShortReadError,
)
from rasteret.io import regions
from rasteret.io.fetch import is_throttled, is_transient, sanitize, translate_error
from rasteret.io.regions import region_from_message

S3_URL = "s3://sentinel-cogs/tiles/33/S/VB/B04.tif"
HTTP_URL = "https://example.blob.core.windows.net/data/B04.tif"


def obstore_error(store: str, url: str, status: str, body: str = "") -> GenericError:
    """A message as obstore 0.12 words a non-2xx answer (with its debug tail)."""
    return GenericError(
        f"Generic {store} error: Error performing GET {url} in 41.2ms - Server returned "
        f"non-2xx status code: {status}: {body}\n\nDebug source:\nGeneric {{\n"
        f'    store: "{store}",\n}}'
    )


@pytest.fixture
def backend(monkeypatch):
    # Explicit keys: describing the credentials never consults ~/.aws or boto3.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.delenv("AWS_REGION", raising=False)
    return rasteret.create_backend(region="us-east-1")


# -- sanitize: _QUERY and _SECRET_FIELD ---------------------------------------------

def test_query_strings_are_masked_in_store_messages():
    message = ("Generic HTTP error: Error performing GET https://acct.blob.core.windows.net"
               "/c/B04.tif?sv=2021-06-08&sig=AbC%2Bdef123&se=2030-01-01 in 3ms - Server "
               "returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?>")
    shown = sanitize(message)
    assert "sig=AbC" not in shown and "sv=2021" not in shown
    assert "https://acct.blob.core.windows.net/c/B04.tif?***" in shown
    assert '<?xml version="1.0"?>' in shown  # an XML prolog is not a query string


def test_credential_fields_are_masked_in_store_messages():
    message = ('Generic S3 error: Client error: Unable to refresh credentials: '
               'token="IQoJb3JpZ2luX2VjEJr" secret_access_key=wJalrXUtnFEMI/K7MDENG, '
               "x-amz-security-token: FwoGZXIvYXdzEBY, Password: hunter2")
    shown = sanitize(message)
    for secret in ("IQoJb3JpZ2luX2VjEJr", "wJalrXUtnFEMI", "FwoGZXIvYXdzEBY", "hunter2"):
        assert secret not in shown
    assert 'token=***' in shown and "secret_access_key=***" in shown
    assert "x-amz-security-token: ***" in shown and "Password: ***" in shown


# -- _TRANSIENT: which failures are retried ------------------------------------------

@pytest.mark.parametrize(("message", "transient"), [
    ("Server returned non-2xx status code: 502 Bad Gateway: ", True),
    ("Server returned non-2xx status code: 429 Too Many Requests: ", True),
    ("HTTP error: error sending request", True),
    ("HTTP error: operation timed out", True),
    ("Generic HTTP error: connection reset by peer", True),
    ("HTTP error: error decoding response body", True),
    ("<Error><Code>SlowDown</Code><Message>Please reduce your request rate.", True),
    ("Server returned non-2xx status code: 400 Bad Request: InvalidRange", False),
    ("read of http://h/x.tif failed: unsupported range unit", False),
])
def test_transient_failures_are_recognised(message, transient):
    assert is_transient(BackendError(f"read of {HTTP_URL} failed: {message}")) is transient


def test_typed_failures_are_never_or_always_transient():
    assert is_transient(NetworkError("x.tif failed after retries: timed out"))
    assert is_transient(ShortReadError("x.tif returned 10 bytes for range 0-20"))
    # A 5xx in a denied or missing object's message does not make it worth retrying.
    assert not is_transient(AccessDeniedError("access denied: status code: 503"))
    assert not is_transient(ObjectNotFoundError("x.tif does not exist: 500 Server"))


# -- _THROTTLED: which failures wait the throttle floor ------------------------------

@pytest.mark.parametrize(("message", "throttled"), [
    ("Server returned non-2xx status code: 503 Slow Down: ", True),
    ("<Error><Code>ServerBusy</Code><Message>The server is busy.</Message></Error>", True),
    ("<Error><Code>TooManyRequests</Code></Error>", True),
    ("Server returned non-2xx status code: 504 Gateway Timeout: ", False),
    ("x.tif returned 429 bytes for range 0-1024", False),
])
def test_throttling_codes_are_recognised(message, throttled):
    assert is_throttled(BackendError(message)) is throttled


# -- translate_error: token, region, denied, missing, network ------------------------

@pytest.mark.parametrize("body", [
    "<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message>",
    "<Error><Code>InvalidToken</Code><Message>The provided token is malformed.</Message>",
    "<Error><Code>AuthenticationFailed</Code><Message>Signed expiry time [Mon, 01 Jan "
    "2024] must be after signed start time: the SAS has expired</Message>",
])
def test_rejected_session_tokens_are_access_denied_naming_the_refresh(backend, body):
    error = translate_error(obstore_error("S3", S3_URL, "400 Bad Request", body), S3_URL,
                            backend)
    assert type(error) is AccessDeniedError
    assert "session token" in str(error) and "refresh the credentials" in str(error)
    assert S3_URL in str(error) and "AWS keys from the environment" in str(error)


@pytest.mark.parametrize("body", [
    "<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header "
    "is malformed; the region 'us-east-1' is wrong; expecting 'eu-central-1'</Message>",
    "<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to "
    "access must be addressed using the specified endpoint.</Message>"
    "<Region>eu-central-1</Region></Error>",
])
def test_wrong_region_names_the_buckets_region(backend, body):
    error = translate_error(obstore_error("S3", S3_URL, "400 Bad Request", body), S3_URL,
                            backend)
    assert type(error) is RegionMismatchError
    assert (error.bucket, error.requested_region, error.bucket_region) == (
        "sentinel-cogs", "us-east-1", "eu-central-1")
    assert "create_backend(region='eu-central-1')" in str(error)


def test_a_bare_301_asks_the_bucket_for_its_region(backend, monkeypatch):
    asked = []
    monkeypatch.setattr(regions, "probe_bucket_region",
                        lambda bucket, endpoint=None: asked.append(bucket) or "ap-south-1")
    error = translate_error(obstore_error("S3", S3_URL, "301 Moved Permanently"), S3_URL,
                            backend)
    assert type(error) is RegionMismatchError and asked == ["sentinel-cogs"]
    assert "bucket 'sentinel-cogs' is in region 'ap-south-1'" in str(error)


@pytest.mark.parametrize(("status", "body"), [
    ("403 Forbidden", "<Error><Code>AccessDenied</Code><Message>Access Denied</Message>"),
    ("403 Forbidden", "<Error><Code>SignatureDoesNotMatch</Code></Error>"),
    ("403 Forbidden", "<Error><Code>InvalidAccessKeyId</Code></Error>"),
    ("401 Unauthorized", ""),
    ("403 Forbidden", "<Error><Code>AuthorizationFailure</Code><Message>This request "
                      "is not authorized to perform this operation.</Message></Error>"),
])
def test_denied_requests_are_access_denied_naming_the_credentials(backend, status, body):
    error = translate_error(obstore_error("S3", S3_URL, status, body), S3_URL, backend)
    assert type(error) is AccessDeniedError and isinstance(error, PermissionError)
    assert f"access denied to {S3_URL} using AWS keys from the environment" in str(error)
    assert status.split()[0] in str(error)
    assert "Debug source" not in str(error)


@pytest.mark.parametrize(("status", "body"), [
    ("404 Not Found", ""),
    ("404 Not Found", "<Error><Code>NoSuchKey</Code><Message>The specified key does "
                      "not exist.</Message></Error>"),
    ("404 Not Found", "<Error><Code>NoSuchBucket</Code></Error>"),
    ("404 The specified blob does not exist.", "<Error><Code>BlobNotFound</Code>"),
])
def test_missing_objects_are_not_found(backend, status, body):
    error = translate_error(obstore_error("HTTP", HTTP_URL, status, body), HTTP_URL, backend)
    assert type(error) is ObjectNotFoundError and isinstance(error, FileNotFoundError)
    assert str(error).startswith(f"{HTTP_URL} does not exist")


def test_unreachable_stores_are_network_errors(backend):
    error = translate_error(GenericError(
        f"Generic HTTP error: Error performing GET {HTTP_URL}?sig=secret in 524µs - HTTP "
        "error: error sending request\n\nDebug source:\nConnectionRefused"),
        f"{HTTP_URL}?sig=secret", backend, "header read")
    assert type(error) is NetworkError and isinstance(error, ConnectionError)
    assert str(error).startswith(f"header read of {HTTP_URL} failed after retries")
    assert "secret" not in str(error) and "ConnectionRefused" not in str(error)


def test_other_failures_are_backend_errors(backend):
    error = translate_error(obstore_error("HTTP", HTTP_URL, "416 Range Not Satisfiable"),
                            HTTP_URL, backend)
    assert type(error) is BackendError
    assert str(error).startswith(f"read of {HTTP_URL} failed") and "416" in str(error)


# -- regions.py: _EXPECTING and _REGION_TAG ------------------------------------------

def test_region_from_an_authorization_header_malformed_message():
    assert region_from_message(
        "<Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is "
        "malformed; the region 'us-east-1' is wrong; expecting 'us-west-2'</Message>"
    ) == "us-west-2"
    assert region_from_message("the region is wrong; expecting 'somewhere'") is None


def test_region_from_a_region_element():
    assert region_from_message(
        "<Error><Code>PermanentRedirect</Code><Endpoint>b.s3.ap-southeast-2.amazonaws.com"
        "</Endpoint><Region>ap-southeast-2</Region></Error>") == "ap-southeast-2"
    assert region_from_message("<Region></Region>") is None
