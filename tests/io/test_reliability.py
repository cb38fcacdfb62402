"""Load and process faults: thousands of concurrent ranges with bounded memory, memory
that stays flat over a long run of reads, and a DataLoader worker that dies surfaces
an error instead of a hang."""

from __future__ import annotations

import asyncio
import ctypes
import os
import resource
import signal
import statistics
from pathlib import Path

import pyarrow as pa
import pytest

import rasteret
from rasteret.io import fetch
from rasteret.io.runtime import run_sync
from testbed.scenes import write_scenes

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


def rss_bytes() -> int:
    """This process's resident memory now (getrusage only gives the peak)."""
    # glibc keeps freed heap pages resident and reuses them, where a leak would hide:
    # hand them back first, so that RSS follows the memory actually in use.
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads Linux /proc")
@pytest.mark.timeout(60)
def test_memory_stays_flat_over_a_long_read(nginx_server):
    folder = nginx_server.root / "memory"
    scenes = write_scenes(folder, count=4, size=512, tile=128, bands=("B04", "B08"),
                          label=False)
    urls = [f"{nginx_server.url}/memory/{path.relative_to(folder)}"
            for scene in scenes for path in scene.files.values()]
    samples = []
    for i in range(1200):
        # A fresh CogFile each time; whole scenes and 128-px windows all over them.
        cog = rasteret.open_cog(urls[i % len(urls)])
        window = None if i % 3 == 0 else ((i * 37) % 384, (i * 53) % 384, 128, 128)
        assert cog.read(window).size
        if i % 10 == 0:
            samples.append(rss_bytes())
    quarter = len(samples) // 4
    second, last = (statistics.median(samples[k * quarter:(k + 1) * quarter]) for k in (1, 3))
    # Growth measured here: under 1 MiB; one leaked 128-px chip per read adds 19 MiB.
    assert last - second < 10 * 2**20


def _die_on_second_sample(sample):
    # A transform that kills its worker process: stands in for an OOM kill.
    count = getattr(_die_on_second_sample, "count", 0) + 1
    _die_on_second_sample.count = count
    if count >= 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return sample


@pytest.mark.torch
def test_a_dead_worker_surfaces_an_error(tmp_path):
    pytest.importorskip("torchgeo")
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
