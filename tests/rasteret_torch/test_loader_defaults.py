"""Loader defaults: the ``cache_bytes="auto"`` policy, decode threads per DataLoader
worker, and the forkserver's module preload."""

from __future__ import annotations

import multiprocessing.forkserver
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchgeo")

from torch.utils.data import Dataset, default_collate  # noqa: E402
from torchgeo.samplers import RandomPatchSampler  # noqa: E402

import rasteret  # noqa: E402
import rasteret.torch.dataset as dataset_module  # noqa: E402
from rasteret.errors import ConfigurationError  # noqa: E402
from rasteret.io import runtime  # noqa: E402
from rasteret.read.cache import REUSE_WINDOW, ChunkCaches  # noqa: E402
from rasteret.torch import TileAlignedSampler, dataloader  # noqa: E402
from rasteret.torch.forkserver import FORKSERVER_PRELOAD  # noqa: E402
from testbed.scenes import write_scenes  # noqa: E402

pytestmark = pytest.mark.torch
BANDS = ["B02", "B04", "B08"]


@pytest.fixture(scope="module")
def many_scenes(tmp_path_factory):
    """Eight side-by-side scenes of 1024 px in 256-px tiles: 16 tiles per band each."""
    root = tmp_path_factory.mktemp("auto-scenes")
    scenes = write_scenes(root, count=8, size=1024, tile=256, shift=1024, seed=5,
                          label=False, overviews=False)
    rows = [{"id": s.id, "datetime": s.datetime,
             **{band: str(path) for band, path in s.files.items()}} for s in scenes]
    return rasteret.build_from_table(
        pa.Table.from_pylist(rows), name="auto", href_columns=BANDS,
        workspace_dir=tmp_path_factory.mktemp("auto-ws"), progress=False)


def read_chips(dataset, sampler, chips: int, batch: int = 16) -> None:
    slices = list(sampler)[:chips]
    for start in range(0, len(slices), batch):
        dataset.__getitems__(slices[start : start + batch])


@pytest.fixture
def small_budget(monkeypatch):
    # 32 tiles of 256 x 256 uint16: far fewer than the 384 tiles of the collection
    # (as random chips over many scenes see a default budget), enough for the tiles a
    # row of grid chips shares with the next.
    monkeypatch.setattr(dataset_module, "AUTO_CACHE_BYTES", 32 * 256 * 256 * 2)


def test_auto_keeps_whole_tiles_for_a_tile_aligned_grid(many_scenes, small_budget):
    dataset = many_scenes.to_torchgeo_dataset(BANDS, chip_size=128)
    assert dataset.cache_bytes == "auto"
    sampler = TileAlignedSampler(dataset, size=128, mode="grid")
    # One tile per band each: 960 lookups. A batch is one row of chips (8 per scene
    # row), so the next batch needs the other halves of the same tiles.
    read_chips(dataset, sampler, 320, batch=8)
    shadow = dataset.caches.memory.shadow
    assert shadow.decisions >= 2
    assert dataset.caches.whole_chunks is True
    # Whole tiles held: later grid chips of the same tiles were served from memory.
    assert dataset.caches.memory.hits > 0


def test_auto_decodes_partially_for_random_patches_over_many_scenes(many_scenes,
                                                                    small_budget):
    dataset = many_scenes.to_torchgeo_dataset(BANDS, chip_size=128)
    sampler = RandomPatchSampler(dataset, size=128, length=160, generator=0)
    read_chips(dataset, sampler, 160)
    assert dataset.caches.memory.shadow.decisions >= 2
    assert dataset.caches.whole_chunks is False


def test_auto_policy_switches_with_the_access_pattern():
    """The shadow follows the reads: repeated tiles turn whole caching on, a stream of
    tiles never seen again turns it off."""
    caches = ChunkCaches(memory_bytes=64 * 512 * 512 * 2, whole_chunks="auto")
    memory = caches.memory
    assert caches.whole_chunks is False  # partial until reuse is shown
    for i in range(REUSE_WINDOW):  # four chips per tile, each needing its half
        memory.get(("a.tif", (4096, 4096, False), i // 4), 256 if i % 4 < 2 else 512,
                   whole_rows=512)
    assert caches.whole_chunks is True
    for i in range(3 * REUSE_WINDOW):  # each tile read once, the top rows only
        memory.get(("b.tif", (4096, 4096, False), i), 200, whole_rows=512)
    assert caches.whole_chunks is False
    assert ChunkCaches(memory_bytes=1 << 20, whole_chunks=True).whole_chunks is True
    assert ChunkCaches(memory_bytes=0, whole_chunks="auto").whole_chunks is False


def test_explicit_cache_bytes_keep_whole_tiles_and_bad_values_are_refused(many_scenes):
    assert many_scenes.to_torchgeo_dataset(BANDS, cache_bytes=1 << 20).caches.whole_chunks
    assert many_scenes.to_torchgeo_dataset(BANDS, cache_bytes=0).caches.memory is None
    for bad in ("big", -1, 1.5):
        with pytest.raises(ConfigurationError, match="cache_bytes"):
            many_scenes.to_torchgeo_dataset(BANDS, cache_bytes=bad)


class DecodeThreadReport(Dataset):
    """Each item: the worker's decode threads, its pool's size, and whether its parent
    (the forkserver) had torch loaded before forking it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict[str, int]:
        pool = runtime.decode_pool()
        with open(f"/proc/{os.getppid()}/maps") as maps:
            parent_has_torch = any("libtorch" in line for line in maps)
        return {"threads": runtime.decode_threads(), "pool": pool._max_workers,
                "parent_has_torch": int(parent_has_torch), "pid": os.getpid()}


def test_workers_decode_with_their_share_of_the_cores():
    # A forkserver started earlier in this process (by another test) keeps the
    # modules it was started with: the preload can only be checked on a fresh one.
    fresh_server = multiprocessing.forkserver._forkserver._forkserver_pid is None
    loader = dataloader(DecodeThreadReport(), batch_size=1, num_workers=2,
                        collate_fn=default_collate, persistent_workers=False)
    # Set before the forkserver started, so the server honours it.
    preload = multiprocessing.forkserver._forkserver._preload_modules
    assert set(FORKSERVER_PRELOAD) <= set(preload)
    reports = list(loader)
    expected = max(1, runtime.available_cores() // 2)
    assert len({int(r["pid"]) for r in reports}) == 2
    assert {int(r["threads"]) for r in reports} == {expected}
    assert {int(r["pool"]) for r in reports} == {expected}
    # The workers' parent is the forkserver, which imported torch for them.
    if fresh_server:
        assert {int(r["parent_has_torch"]) for r in reports} == {1}


def test_main_process_decodes_with_every_core(monkeypatch):
    monkeypatch.setattr(runtime, "_decode_threads", 1)
    dataloader(DecodeThreadReport(), batch_size=1, num_workers=0, collate_fn=default_collate)
    assert runtime.decode_threads() == runtime.available_cores()
    assert runtime.decode_pool()._max_workers == runtime.available_cores()


_EARLY = textwrap.dedent("""
    import multiprocessing, multiprocessing.forkserver, os
    import rasteret.torch
    from rasteret.torch.forkserver import FORKSERVER_PRELOAD


    def main():
        server = multiprocessing.forkserver._forkserver
        print("started", server._forkserver_pid is not None)
        print("preloaded", set(FORKSERVER_PRELOAD) <= set(server._preload_modules))
        print("marker-left", "_RASTERET_FORKSERVER_CHILD" in os.environ)
        if server._forkserver_pid is not None:
            # Once a process was forked from it the server's preload is done: its
            # own import of rasteret.torch started no server of its own.
            child = multiprocessing.get_context("forkserver").Process(target=os.getpid)
            child.start()
            child.join()
            parent = str(server._forkserver_pid)
            children = [p for p in os.listdir("/proc") if p.isdigit() and open(
                f"/proc/{p}/stat").read().split(") ")[1].split()[1] == parent]
            print("server-children", len(children))


    if __name__ == "__main__":  # the server preloads this file as __mp_main__
        main()
""")


@pytest.mark.parametrize("switch", ["1", "0"])
def test_importing_rasteret_torch_starts_the_worker_server_early(tmp_path, switch):
    script = tmp_path / "early.py"
    script.write_text(_EARLY)
    env = {**os.environ, "RASTERET_EARLY_FORKSERVER": switch}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert lines["started"] == ("True" if switch == "1" else "False")
    assert lines["marker-left"] == "False"
    if switch == "1":
        assert lines["preloaded"] == "True"
        assert lines["server-children"] == "0"
