"""Transient faults between rasteret and the store: dropped connections, 503 bursts,
throttling (429), truncated bodies, slow answers and a store restarting mid-read are
retried (and counted) until pixels equal a clean read, over HTTP and S3; when the
retry budget is spent, a typed error names URL, range and attempts. Every test is
bounded in time (pytest-timeout); none asserts a duration: waits are counted on a
:class:`StepClock` that the retry policy is given instead of the real clock."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import rasteret
from rasteret.errors import NetworkError
from rasteret.io.backend import RetryPolicy
from testbed.scenes import write_scenes
from testbed.servers import LatencyProxy, NginxServer

pytestmark = pytest.mark.timeout(120)

#: Windows read from every scene: the whole of it, one across tiles, a strip.
WINDOWS = [None, (100, 100, 200, 200), (0, 384, 512, 128)]


@pytest.fixture(scope="module")
def served(tmp_path_factory, nginx_server):
    scenes = write_scenes(tmp_path_factory.mktemp("faults"), count=3, size=512, tile=128,
                          bands=("B04",), label=False)
    folder = Path(nginx_server.root) / "faults"
    folder.mkdir(exist_ok=True)
    names = []
    for scene in scenes:
        name = f"{scene.id}.tif"
        shutil.copy(scene.files["B04"], folder / name)
        names.append(name)
    clean = [rasteret.open_cog(scene.files["B04"]).read() for scene in scenes]
    return names, clean


class StepClock:
    """A clock that moves only when the retry loop waits: each wait is recorded and
    spent at once, so a test counts attempts and sums the backoff instead of timing
    them (a loaded machine cannot change either)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # still let the other requests of the read run


def stepped(clock: StepClock | None) -> dict[str, Any]:
    """RetryPolicy's clock and sleep from ``clock`` (the real ones for None)."""
    return {} if clock is None else {"clock": clock, "sleep": clock.sleep}


def backend(attempts: int = 8, *, budget: float = 20, clock: StepClock | None = None,
            **options: Any) -> rasteret.Backend:
    """A backend with short retry delays (``options`` go to create_backend)."""
    return rasteret.create_backend(
        retries=RetryPolicy(attempts=attempts, base_delay=0.01, max_delay=0.05, budget=budget,
                            throttle_delay=0.01, **stepped(clock)), **options)


@pytest.mark.parametrize("fault", ["drop", "503", "429", "truncate"])
def test_reads_survive_faults_with_identical_pixels(served, nginx_server, fault):
    names, clean = served
    with LatencyProxy(nginx_server.url, delay=0, fault_rate=0.3, faults=(fault,),
                      seed=7) as proxy:
        stats = rasteret.FetchStats()
        b = backend()
        for name, expected in zip(names, clean):
            cog = rasteret.open_cog(f"{proxy.url}/faults/{name}", backend=b, stats=stats)
            for window in WINDOWS:
                pixels = cog.read(window, stats=stats)
                if window is None:
                    np.testing.assert_array_equal(pixels, expected)
        assert stats.retries > 0  # faults happened and were retried, visibly


def test_builds_survive_faults(served, nginx_server, tmp_path):
    names, _ = served
    with LatencyProxy(nginx_server.url, delay=0, fault_rate=0.3, seed=3,
                      faults=("drop", "503", "truncate")) as proxy:
        table = pa.Table.from_pylist(
            [{"id": n, "B04": f"{proxy.url}/faults/{n}"} for n in names])
        stats = rasteret.FetchStats()
        collection = rasteret.build_from_table(table, name="faulty", href_columns=["B04"],
                                               workspace_dir=tmp_path, backend=backend(),
                                               progress=False, stats=stats)
    assert len(collection) == 3 and collection.failures.num_rows == 0
    clean = rasteret.build_from_table(
        pa.Table.from_pylist([{"id": n, "B04": f"{nginx_server.url}/faults/{n}"}
                              for n in names]),
        name="clean", href_columns=["B04"], workspace_dir=tmp_path, progress=False)
    for row in range(3):
        a, b = collection.band_record(row, "B04"), clean.band_record(row, "B04")
        assert a["levels"] == b["levels"]


def test_spent_attempts_raise_a_typed_error_after_short_waits(served, nginx_server):
    names, _ = served
    clock = StepClock()
    with LatencyProxy(nginx_server.url, delay=0, fault_rate=1.0, faults=("503",)) as proxy:
        url = f"{proxy.url}/faults/{names[0]}"
        with pytest.raises(NetworkError) as caught:
            rasteret.open_cog(url, backend=backend(attempts=3, clock=clock))
        assert proxy.injected() == {"503": 3}
    # Two waits between three tries; 503 counts as throttling: backoff + the floor.
    assert len(clock.waits) == 2 and all(0.01 <= w <= 0.05 + 0.01 for w in clock.waits)
    message = str(caught.value)
    assert url in message and "3 attempt(s)" in message and "header read" in message


def test_slow_answers_still_complete(served, nginx_server):
    names, clean = served
    with LatencyProxy(nginx_server.url, delay=0, fault_rate=0.5, faults=("slow",),
                      seed=1) as proxy:
        cog = rasteret.open_cog(f"{proxy.url}/faults/{names[1]}", backend=backend())
        np.testing.assert_array_equal(cog.read(), clean[1])


def test_the_proxy_counts_what_it_injects(served, nginx_server):
    names, _ = served
    with LatencyProxy(nginx_server.url, delay=0, fault_rate=0.5, faults=("503",),
                      seed=2) as proxy:
        stats = rasteret.FetchStats()
        cog = rasteret.open_cog(f"{proxy.url}/faults/{names[2]}", backend=backend(),
                                stats=stats)
        for col in range(0, 512, 128):
            cog.read((col, 0, 128, 512), stats=stats)
        assert proxy.injected().get("503", 0) == stats.retries > 0


def test_objects_changed_after_indexing_are_detected(served, nginx_server, tmp_path):
    from rasteret.errors import ObjectChangedError

    names, clean = served
    victim = Path(nginx_server.root) / "faults" / "changing.tif"
    shutil.copy(Path(nginx_server.root) / "faults" / names[0], victim)
    collection = rasteret.build_from_table(
        pa.Table.from_pylist([{"id": "c", "B04": f"{nginx_server.url}/faults/changing.tif"}]),
        name="changing", href_columns=["B04"], workspace_dir=tmp_path, progress=False)
    assert collection.band_record(0, "B04")["etag"]
    np.testing.assert_array_equal(collection.cog(0, "B04", validate=True).read(), clean[0])
    time.sleep(1.1)  # nginx ETags include the modification time in seconds
    shutil.copy(Path(nginx_server.root) / "faults" / names[1], victim)
    with pytest.raises(ObjectChangedError, match="changed after it was indexed"):
        collection.cog(0, "B04", validate=True).read()


# -- throttling ------------------------------------------------------------------------

def test_obstore_errors_do_not_show_retry_after(served, nginx_server):
    # Why RetryPolicy.throttle_delay exists: the status and body reach us, the header not.
    import obstore
    from obstore.store import HTTPStore

    names, _ = served
    with LatencyProxy(nginx_server.url, delay=0, fault_rate=1.0, faults=("429",)) as proxy:
        store = HTTPStore.from_url(proxy.url, client_options={"allow_http": True},
                                   retry_config={"max_retries": 0})
        with pytest.raises(Exception) as caught:  # noqa: PT011 - obstore's generic error
            obstore.get_range(store, f"faults/{names[0]}", start=0, end=16)
    message = str(caught.value)
    assert "429 Too Many Requests" in message
    assert "retry-after" not in message.lower()


@pytest.mark.parametrize(("message", "throttled"), [
    ("Server returned non-2xx status code: 429 Too Many Requests: ", True),
    ("Server returned non-2xx status code: 503 Service Unavailable: ", True),
    ("<Error><Code>SlowDown</Code><Message>Please reduce your request rate.", True),
    ("Server returned non-2xx status code: 500 Internal Server Error: ", False),
    ("read of bytes 0-503 of http://h/x.tif failed: status code: 502 Bad Gateway", False),
])
def test_throttling_is_recognised(message, throttled):
    from rasteret.errors import BackendError, ShortReadError
    from rasteret.io.fetch import is_throttled

    assert is_throttled(BackendError(message)) is throttled
    assert not is_throttled(ShortReadError("x.tif returned 503 bytes for range 0-1024"))


def _waits_before_giving_up(nginx_server, name: str, fault: str,
                            throttle_delay: float) -> list[float]:
    """The waits between the 3 attempts of an open that meets ``fault`` every time."""
    clock = StepClock()
    backend = rasteret.create_backend(retries=RetryPolicy(
        attempts=3, base_delay=0.001, max_delay=0.001, budget=20,
        throttle_delay=throttle_delay, **stepped(clock)))
    with LatencyProxy(nginx_server.url, delay=0, fault_rate=1.0, faults=(fault,)) as proxy:
        with pytest.raises(NetworkError, match=r"3 attempt\(s\)") as failure:
            rasteret.open_cog(f"{proxy.url}/faults/{name}", backend=backend)
    if fault == "429":
        assert "429 Too Many Requests" in str(failure.value)
    return clock.waits


def test_throttled_retries_wait_at_least_the_throttle_delay(served, nginx_server):
    names, _ = served
    # Two retries, each after the floor (plus a jitter of at most max_delay).
    waits = _waits_before_giving_up(nginx_server, names[0], "429", throttle_delay=0.3)
    assert len(waits) == 2 and all(0.3 <= w <= 0.301 for w in waits)
    # Failures that are not throttling keep the short backoff.
    waits = _waits_before_giving_up(nginx_server, names[0], "drop", throttle_delay=5)
    assert len(waits) == 2 and all(w <= 0.001 for w in waits)


# -- a store restarting under a read ----------------------------------------------------

@pytest.fixture(scope="module")
def restartable(served, nginx_server, tmp_path_factory):
    """A private nginx over the fault scenes (so restarting it spares the session's),
    behind a proxy slow enough that a restart lands mid-read; a collection of the
    scenes and the tiles they hold, read cleanly."""
    names, _ = served
    with NginxServer(Path(nginx_server.root) / "faults") as nginx, \
            LatencyProxy(nginx.url, delay=0.05) as proxy:
        table = pa.Table.from_pylist([{"id": n, "B04": f"{proxy.url}/{n}"} for n in names])
        collection = rasteret.build_from_table(
            table, name="restarts", href_columns=["B04"], progress=False,
            workspace_dir=tmp_path_factory.mktemp("restarts"))
        yield nginx, collection, read_tiles(collection, patient(budget=15))


def patient(budget: float, clock: StepClock | None = None) -> rasteret.Backend:
    """Retries every ~0.1 s until ``budget`` seconds are spent (attempts never run out
    first)."""
    return rasteret.create_backend(retries=RetryPolicy(
        attempts=1000, base_delay=0.05, max_delay=0.2, budget=budget, **stepped(clock)))


def read_tiles(collection: rasteret.Collection, b: rasteret.Backend) -> list[np.ndarray]:
    """Each 128-px tile of the (co-located) scenes, all scenes at once, tile after
    tile, twice over: a long multi-scene read."""
    a, _, c, _, e, f = collection.band_record(0, "B04")["transform"][:6]
    boxes = [(c + (col * 128 + 1) * a, f + (row * 128 + 127) * e,
              c + (col * 128 + 127) * a, f + (row * 128 + 1) * e)
             for row in range(4) for col in range(4)]
    return [collection.get_numpy(box, ["B04"], geometry_crs=32633, backend=b)
            for box in boxes * 2]


def restart_after(nginx: NginxServer, requests: int, downtime: float) -> threading.Thread:
    """Restart ``nginx`` from a background thread once it has logged ``requests``
    requests, staying down ``downtime`` seconds."""
    nginx.clear_log()

    def restart() -> None:
        deadline = time.monotonic() + 30
        while nginx.count(settled=False) < requests and time.monotonic() < deadline:
            time.sleep(0.005)
        nginx.restart(downtime)

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    return thread


def test_a_store_restarted_mid_read_gives_identical_pixels(restartable):
    from rasteret.io.fetch import PROCESS_STATS

    nginx, collection, clean = restartable
    retries = PROCESS_STATS.retries
    restarter = restart_after(nginx, requests=6, downtime=0.5)
    pixels = read_tiles(collection, patient(budget=15))
    restarter.join(timeout=30)
    assert not restarter.is_alive()
    assert PROCESS_STATS.retries > retries  # the restart broke requests; retries mended them
    assert nginx.count() > 6  # ...and the read went on after it
    for got, expected in zip(pixels, clean, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_a_store_down_past_the_budget_fails_typed_and_in_time(restartable):
    nginx, collection, clean = restartable
    clock = StepClock()
    restarter = restart_after(nginx, requests=6, downtime=3.0)
    with pytest.raises(NetworkError, match=r"failed after \d+ attempt\(s\)"):
        read_tiles(collection, patient(budget=1.0, clock=clock))
    # It gave up once its budget was spent in waits, while the store was still down
    # (the restarter brings it back only after its downtime), not on recovery.
    assert restarter.is_alive()
    assert 1.0 - 0.2 < sum(clock.waits) and clock.waits
    restarter.join(timeout=30)
    # Back up: the same collection and backend read again, nothing left broken.
    for got, expected in zip(read_tiles(collection, patient(budget=1.0)), clean, strict=True):
        np.testing.assert_array_equal(got, expected)


# -- S3 (moto) behind the fault proxy ---------------------------------------------------

@pytest.fixture(scope="module")
def s3_bucket(served, nginx_server, moto_server) -> str:
    """The fault scenes uploaded to a bucket of the session's moto server."""
    names, _ = served
    moto_server.create_bucket("rasteret-faults")
    for name in names:
        moto_server.upload("rasteret-faults", name, Path(nginx_server.root) / "faults" / name)
    return "rasteret-faults"


def test_s3_builds_and_reads_through_faults_equal_a_clean_run(served, s3_bucket, moto_server,
                                                             tmp_path):
    names, clean = served
    table = pa.Table.from_pylist([{"id": n, "B04": f"s3://{s3_bucket}/{n}"} for n in names])

    def build_and_read(endpoint: str, name: str):
        # Path-style requests to the endpoint (obstore's default with an endpoint set).
        b = backend(default_s3_config={
            "endpoint": endpoint, "region": moto_server.region,
            "aws_access_key_id": moto_server.access_key_id,
            "aws_secret_access_key": moto_server.secret_access_key})
        stats = rasteret.FetchStats()
        collection = rasteret.build_from_table(table, name=name, href_columns=["B04"],
                                               workspace_dir=tmp_path, backend=b,
                                               progress=False, stats=stats)
        pixels = [collection.cog(row, "B04", backend=b).read(window, stats=stats)
                  for row in range(len(collection)) for window in WINDOWS]
        return collection, pixels, stats

    reference, expected, _ = build_and_read(moto_server.endpoint, "s3-clean")
    with LatencyProxy(moto_server.endpoint, delay=0, fault_rate=0.3, seed=5,
                      faults=("drop", "503", "429", "truncate")) as proxy:
        collection, pixels, stats = build_and_read(proxy.url, "s3-faulty")
        injected = proxy.injected()
    assert len(collection) == 3 and collection.failures.num_rows == 0
    for row in range(3):
        a, b = collection.band_record(row, "B04"), reference.band_record(row, "B04")
        assert (a["levels"], a["etag"]) == (b["levels"], b["etag"])
    for got, want in zip(pixels, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(pixels[0], clean[0])  # and equal to the local file
    assert stats.retries == sum(injected.values()) > 0  # one counted retry per fault
