"""Transient faults between rasteret and the store: dropped connections, 503 bursts,
truncated bodies and slow answers are retried (and counted) until pixels equal a
clean read; when the retry budget is spent, a typed error names URL, range and
attempts. Every test is bounded in time."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import rasteret
from rasteret.errors import NetworkError
from rasteret.io.backend import RetryPolicy
from rasteret.testing.scenes import write_scenes
from rasteret.testing.servers import LatencyProxy

pytestmark = pytest.mark.timeout(120)


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


def backend(attempts: int = 8) -> rasteret.Backend:
    return rasteret.create_backend(
        retries=RetryPolicy(attempts=attempts, base_delay=0.01, max_delay=0.05, budget=20))


@pytest.mark.parametrize("fault", ["drop", "503", "truncate"])
def test_reads_survive_faults_with_identical_pixels(served, nginx_server, fault):
    names, clean = served
    with LatencyProxy(nginx_server.url, delay=0, fault_rate=0.3, faults=(fault,),
                      seed=7) as proxy:
        stats = rasteret.FetchStats()
        b = backend()
        for name, expected in zip(names, clean):
            cog = rasteret.open_cog(f"{proxy.url}/faults/{name}", backend=b, stats=stats)
            for window in [None, (100, 100, 200, 200), (0, 384, 512, 128)]:
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


def test_spent_budget_raises_a_typed_error_quickly(served, nginx_server):
    names, _ = served
    with LatencyProxy(nginx_server.url, delay=0, fault_rate=1.0, faults=("503",)) as proxy:
        url = f"{proxy.url}/faults/{names[0]}"
        start = time.monotonic()
        with pytest.raises(NetworkError) as caught:
            rasteret.open_cog(url, backend=backend(attempts=3))
        assert time.monotonic() - start < 10
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
    from rasteret.io.fetch import ObjectChangedError

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
