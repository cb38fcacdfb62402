"""The local test servers themselves: ranges, logs, S3, the latency proxy."""

from __future__ import annotations

import concurrent.futures
import http.client
import threading
import time
import urllib.request

import pytest

from testbed.servers import AccessRecord, LatencyProxy, NginxServer

# These tests start local servers of their own: end to end.
pytestmark = pytest.mark.integration


def test_nginx_serves_ranges_and_logs_them(nginx_server):
    (nginx_server.root / "blob.bin").write_bytes(bytes(range(256)) * 100)
    nginx_server.clear_log()
    request = urllib.request.Request(f"{nginx_server.url}/blob.bin",
                                     headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 206
        assert response.read() == bytes(range(10, 20))
    (record,) = nginx_server.requests()
    assert (record.method, record.path, record.status) == ("GET", "/blob.bin", 206)
    assert record.range == "bytes=10-19" and record.body_bytes == 10


def test_moto_upload_ranged_get_and_anonymous_public_read(moto_server):
    moto_server.create_bucket("servers-test")
    moto_server.upload("servers-test", "a.bin", b"0123456789", public_read=True)
    client = moto_server.boto3_client()
    body = client.get_object(Bucket="servers-test", Key="a.bin", Range="bytes=2-4")["Body"]
    assert body.read() == b"234"
    with urllib.request.urlopen(f"{moto_server.endpoint}/servers-test/a.bin") as response:
        assert response.read() == b"0123456789"


def fetch_twice_concurrently(url: str, payload: bytes) -> list[float]:
    """50 keep-alive connections, released together, each fetching two ranges of
    ``/proxied.bin``; the seconds each connection took."""
    host, port = url.split("//")[1].split(":")
    release = threading.Barrier(50, timeout=60)

    def fetch_twice(index: int) -> float:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        release.wait()
        start = time.perf_counter()
        for _ in range(2):
            start_byte = index * 100
            connection.request("GET", "/proxied.bin",
                               headers={"Range": f"bytes={start_byte}-{start_byte + 99999}"})
            response = connection.getresponse()
            assert response.status == 206
            assert response.read() == payload[start_byte : start_byte + 100000]
        connection.close()
        return time.perf_counter() - start

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        return list(pool.map(fetch_twice, range(50)))


def most_in_flight(records: list[AccessRecord]) -> int:
    """The most requests nginx was working on at once, by its own clock (an end and
    a start at the same millisecond do not overlap)."""
    events = sorted([(r.started, 1) for r in records] + [(r.finished, -1) for r in records])
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


def test_most_in_flight_counts_overlapping_requests():
    def record(started: float, seconds: float) -> AccessRecord:
        return AccessRecord("GET", "/", 206, "", 0, started + seconds, seconds)

    assert most_in_flight([record(0, 1), record(1, 1), record(2, 1)]) == 1
    assert most_in_flight([record(0, 1), record(0.5, 1), record(0.9, 1)]) == 3


def test_latency_proxy_delays_each_keep_alive_request(nginx_server):
    payload = bytes(range(256)) * 4000
    (nginx_server.root / "proxied.bin").write_bytes(payload)
    with LatencyProxy(nginx_server.url, delay=0.05) as proxy:
        durations = fetch_twice_concurrently(proxy.url, payload)
    # Two requests on one connection: at least twice the delay each (time.sleep never
    # returns early, and a loaded machine only makes it later).
    assert min(durations) >= 0.1


def test_delayed_nginx_holds_every_request_without_serialising_them(tmp_path):
    payload = bytes(range(256)) * 4000
    (tmp_path / "proxied.bin").write_bytes(payload)
    with NginxServer(tmp_path, delay=0.05) as nginx:
        fetch_twice_concurrently(nginx.url, payload)
        records = nginx.requests()
    assert len(records) == 100 and {r.status for r in records} == {206}
    assert sum(r.body_bytes for r in records) == 100 * 100000
    # Every request was held, by nginx's own account (its timers tick in whole
    # milliseconds, so a held request may end a fraction of one early)...
    assert min(r.seconds for r in records) >= 0.05 - 0.002
    # ...and held side by side: a server serialising them would hold one at a time.
    assert most_in_flight(records) >= 2
