"""Local servers that speak the credential protocols rasteret supports.

- :class:`AzuriteServer`: Azure Blob Storage emulator (npm ``azurite``).
- :class:`CredentialEndpoints`: a token service answering like the Planetary
  Computer SAS API (``GET /{account}/{container}`` -> ``token``, ``msft:expiry``) and
  a NASA Earthdata ``s3credentials`` endpoint (temporary S3 keys), counting requests.
- :class:`RequesterPaysStub`: an S3-like server that refuses any request without
  ``x-amz-request-payer: requester``, as requester-pays buckets do.
- :class:`WrongRegionStub`: an S3-like server for a bucket in another region (400
  ``AuthorizationHeaderMalformed`` or 301 ``PermanentRedirect``, and
  ``x-amz-bucket-region`` on ``HEAD``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from testbed.servers import _Server, _wait_for_port, free_port, start_process

AZURITE_ACCOUNT = "devstoreaccount1"
#: Azurite's well-known development key (public, documented by Microsoft).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_BIN = Path(".cache/azurite/node_modules/.bin/azurite-blob")


class AzuriteServer(_Server):
    """Azurite's blob service on a free loopback port, in memory.

    Attributes:
        endpoint: ``http://127.0.0.1:PORT/devstoreaccount1`` (the account's base URL).
    """

    def __init__(self, binary: str | Path | None = None) -> None:
        self.binary = Path(binary) if binary else _find_azurite()
        self.endpoint = ""
        self.port = 0

    def start(self) -> AzuriteServer:
        """Start Azurite and wait until it listens."""
        self.port = free_port()
        self._process = start_process(
            [str(self.binary), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
             "--skipApiVersionCheck", "--disableTelemetry", "--inMemoryPersistence",
             "--loose"], "azurite",
        )
        _wait_for_port(self.port, self._process, "azurite", timeout=60)
        self.endpoint = f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"
        return self

    def connection_string(self) -> str:
        """A connection string for azure-storage-blob clients."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.endpoint};"
        )

    def upload(self, container: str, name: str, data: bytes | str | Path) -> None:
        """Upload a blob (creating the container if needed)."""
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(self.connection_string())
        client = service.get_container_client(container)
        if not client.exists():
            client.create_container()
        body = data if isinstance(data, bytes) else Path(data).read_bytes()
        client.upload_blob(name, body, overwrite=True)

    def sas_token(self, container: str, *, minutes: float = 60, read: bool = True) -> str:
        """A container SAS token signed with the emulator's key."""
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        return generate_container_sas(
            account_name=AZURITE_ACCOUNT, container_name=container, account_key=AZURITE_KEY,
            permission=ContainerSasPermissions(read=read, list=read),
            expiry=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes),
        )


def _find_azurite() -> Path:
    for candidate in (AZURITE_BIN, Path(__file__).parents[1] / AZURITE_BIN):
        if candidate.exists():
            return candidate.resolve()
    raise RuntimeError("Azurite is not installed: run `make test` (it installs it with npm)")


class _ThreadedServer:
    """An http.server in a daemon thread: start/stop and context-manager plumbing."""

    _server: ThreadingHTTPServer | None = None

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> str:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def start(self) -> Any:  # pragma: no cover - overridden
        raise TypeError("subclasses start themselves")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class CredentialEndpoints(_ThreadedServer):
    """Token services on one loopback port, counting the requests they answer.

    Routes:
        ``GET /sas/{account}/{container}``: Planetary Computer SAS API shape.
        ``GET /s3credentials``: NASA Earthdata temporary S3 keys.

    Args:
        sas_token: Function ``(account, container) -> token`` (a SAS for Azurite).
        sas_lifetime: Seconds until each SAS token expires (short values force
            refreshes).
        s3_keys: ``(access_key_id, secret_access_key, session_token)`` to hand out.
        s3_lifetime: Seconds until the temporary keys expire.
    """

    def __init__(self, *, sas_token=None, sas_lifetime: float = 3600,
                 s3_keys: tuple[str, str, str] | None = None, s3_lifetime: float = 3600):
        self.sas_token = sas_token
        self.sas_lifetime = sas_lifetime
        self.s3_keys = s3_keys
        self.s3_lifetime = s3_lifetime
        self.requests: Counter[str] = Counter()
        self.clients: set[int] = set()
        self._lock = threading.Lock()
        self.url = ""

    @property
    def sas_url(self) -> str:
        """The base to give ``PlanetaryComputerCredentialProvider(sas_url=...)``."""
        return f"{self.url}/sas"

    @property
    def s3_credentials_url(self) -> str:
        """The URL to give ``NasaEarthdataCredentialProvider(credentials_url)``."""
        return f"{self.url}/s3credentials"

    def _answer(self, path: str) -> tuple[int, dict[str, Any]]:
        now = dt.datetime.now(dt.UTC)
        parts = path.strip("/").split("/")
        if parts[0] == "sas" and len(parts) == 3 and self.sas_token:
            expiry = now + dt.timedelta(seconds=self.sas_lifetime)
            token = self.sas_token(parts[1], parts[2])
            return 200, {"token": token, "msft:expiry": expiry.isoformat()}
        if parts[0] == "s3credentials" and self.s3_keys:
            key, secret, session = self.s3_keys
            expiry = now + dt.timedelta(seconds=self.s3_lifetime)
            return 200, {"accessKeyId": key, "secretAccessKey": secret,
                         "sessionToken": session, "expiration": expiry.isoformat()}
        return 404, {"message": f"no route {path}"}

    def start(self) -> CredentialEndpoints:
        """Serve in a background thread."""
        endpoints = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                status, body = endpoints._answer(self.path.split("?", 1)[0])
                with endpoints._lock:
                    endpoints.requests[self.path.split("?", 1)[0]] += 1
                    endpoints.clients.add(self.client_address[1])
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.url = self._serve(Handler)
        return self


class RequesterPaysStub(_ThreadedServer):
    """An S3-like GET-object server for a requester-pays bucket.

    Requests without ``x-amz-request-payer: requester`` get 403 AccessDenied, like
    S3; others get the object's bytes (with Range support). It does not check
    signatures (moto covers those).

    Attributes:
        endpoint: ``http://127.0.0.1:PORT`` (path-style: ``/{bucket}/{key}``).
        refused: Requests refused for lack of the header.
    """

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects  # "bucket/key" -> bytes
        self.refused = 0
        self.served = 0
        self.endpoint = ""

    def start(self) -> RequesterPaysStub:
        """Serve in a background thread."""
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.headers.get("x-amz-request-payer", "").lower() != "requester":
                    stub.refused += 1
                    body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied"
                            b"</Code><Message>Access Denied</Message></Error>")
                    self._reply(403, body, {"Content-Type": "application/xml"})
                    return
                data = stub.objects.get(self.path.lstrip("/").split("?", 1)[0])
                if data is None:
                    body = b"<Error><Code>NoSuchKey</Code></Error>"
                    self._reply(404, body, {"Content-Type": "application/xml"})
                    return
                stub.served += 1
                headers = {"Content-Type": "binary/octet-stream", "ETag": '"stub"',
                           "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
                           "Accept-Ranges": "bytes"}
                requested = self.headers.get("Range")
                if requested:
                    first, _, last = requested.removeprefix("bytes=").partition("-")
                    start = int(first)
                    end = min(int(last) + 1 if last else len(data), len(data))
                    headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
                    self._reply(206, data[start:end], headers)
                else:
                    self._reply(200, data, headers)

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.endpoint = self._serve(Handler)
        return self


class WrongRegionStub(_ThreadedServer):
    """An S3-like endpoint for a bucket that lives in another region than asked.

    Object requests get S3's answer to a request signed for the wrong region: either
    ``400 AuthorizationHeaderMalformed`` ("the region 'X' is wrong; expecting 'Y'",
    the answer to a signed request) or ``301 PermanentRedirect`` without a
    ``Location`` header (the answer to an unsigned one). An unsigned ``HEAD`` on the
    bucket answers with ``x-amz-bucket-region``, as S3 does.

    Args:
        bucket_region: The region the bucket lives in.
        answer: ``"malformed"`` (400) or ``"redirect"`` (301).

    Attributes:
        endpoint: ``http://127.0.0.1:PORT`` (path-style: ``/{bucket}/{key}``).
        heads: Bucket ``HEAD`` requests answered.
    """

    def __init__(self, bucket_region: str, *, answer: str = "malformed") -> None:
        if answer not in ("malformed", "redirect"):
            raise ValueError(f"answer must be 'malformed' or 'redirect', got {answer!r}")
        self.bucket_region = bucket_region
        self.answer = answer
        self.heads = 0
        self.endpoint = ""

    def start(self) -> WrongRegionStub:
        """Serve in a background thread."""
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("x-amz-bucket-region", stub.bucket_region)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                stub.heads += 1
                self._reply(200 if stub.answer == "malformed" else 301, b"")

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                bucket = self.path.lstrip("/").split("/", 1)[0]
                if stub.answer == "malformed":
                    asked = "us-east-1"
                    match = re.search(r"/\d{8}/([a-z0-9-]+)/s3/",
                                      self.headers.get("Authorization", ""))
                    if match:
                        asked = match.group(1)
                    body = (
                        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>"
                        "AuthorizationHeaderMalformed</Code><Message>The authorization "
                        f"header is malformed; the region '{asked}' is wrong; expecting "
                        f"'{stub.bucket_region}'</Message><Region>{stub.bucket_region}"
                        "</Region><RequestId>STUB</RequestId></Error>"
                    ).encode()
                    self._reply(400, body)
                else:
                    body = (
                        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>PermanentRedirect"
                        "</Code><Message>The bucket you are attempting to access must be "
                        "addressed using the specified endpoint. Please send all future "
                        f"requests to this endpoint.</Message><Endpoint>{bucket}.s3."
                        f"{stub.bucket_region}.amazonaws.com</Endpoint><Bucket>{bucket}"
                        "</Bucket><RequestId>STUB</RequestId></Error>"
                    ).encode()
                    self._reply(301, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.endpoint = self._serve(Handler)
        return self
