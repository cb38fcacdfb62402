"""Load and process faults: thousands of concurrent ranges with bounded memory, and
a DataLoader worker that dies surfaces an error instead of a hang."""

from __future__ import annotations

import asyncio
import os
import resource
import signal

import pyarrow as pa
import pytest

import rasteret
from rasteret.io import fetch
from rasteret.io.runtime import run_sync
from rasteret.testing.scenes import write_scenes

pytestmark = pytest.mark.timeout(180)


def test_thousands_of_concurrent_ranges_stay_bounded(nginx_server):
    payload = os.urandom(8 * 1024 * 1024)
    (nginx_server.root / "load.bin").write_bytes(payload)
    url = f"{nginx_server.url}/load.bin"
    backend = rasteret.create_backend()
    in_flight = peak = 0

    original = fetch.obstore.get_range_async

    async def counting(store, path, *, start, end):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await original(store, path, start=start, end=end)
        finally:
            in_flight -= 1

    fetch.obstore.get_range_async = counting
    try:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        async def read_all() -> int:
            # 4,000 ranges of 64 KiB, all submitted at once; results dropped as they come.
            async def one(i: int) -> int:
                start = (i * 65536) % (len(payload) - 65536)
                data = await fetch.fetch_range(backend, url, start, start + 65536)
                assert bytes(data[:16]) == payload[start : start + 16]
                return len(data)

            return sum(await asyncio.gather(*(one(i) for i in range(4000))))

        total = run_sync(read_all())
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    finally:
        fetch.obstore.get_range_async = original
    assert total == 4000 * 65536
    assert peak <= fetch.MAX_CONCURRENT_REQUESTS  # backpressure: never more in flight
    assert grown_mb < 200


def _die_on_second_sample(sample):
    # A transform that kills its worker process: stands in for an OOM kill.
    count = getattr(_die_on_second_sample, "count", 0) + 1
    _die_on_second_sample.count = count
    if count >= 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return sample


def test_a_dead_worker_surfaces_an_error(tmp_path):
    pytest.importorskip("torch")
    from rasteret.torch import TileAlignedSampler, dataloader

    scenes = write_scenes(tmp_path / "data", count=1, size=512, tile=128, bands=("B04",),
                          label=False)
    collection = rasteret.build_from_table(
        pa.Table.from_pylist([{"id": "s", "B04": str(scenes[0].files["B04"])}]),
        name="dying", href_columns=["B04"], workspace_dir=tmp_path / "ws", progress=False)
    dataset = collection.to_torchgeo_dataset(["B04"], transforms=_die_on_second_sample)
    sampler = TileAlignedSampler(dataset, size=128, length=16, seed=0)
    loader = dataloader(dataset, sampler=sampler, batch_size=4, num_workers=1,
                        persistent_workers=False)
    with pytest.raises(RuntimeError, match="(?i)worker"):
        list(loader)
