"""Distributed data parallel: each rank loads the collection from object storage and
reads a disjoint share of the chips.

Two CPU processes (spawned, gloo, a ``file://`` rendezvous) each load a collection
from an S3 workspace on moto (the COGs are on moto too), build the dataset and the
samplers with their rank taken from ``torch.distributed``, read their share through
a DataLoader and gather what they read. The backend (with moto's keys) reaches the
ranks pickled through the spawn pipe, never through a file. The guide's torchrun
script (docs/scale.md) trains on two ranks with credentials from the environment.
The share arithmetic is also checked in one process for uneven counts.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchgeo")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torchgeo.samplers import GriddedPatchSampler, RandomPatchSampler  # noqa: E402

import rasteret  # noqa: E402
from rasteret.errors import ConfigurationError  # noqa: E402
from rasteret.io.backend import RetryPolicy  # noqa: E402
from rasteret.torch import DistributedGeoSampler, TileAlignedSampler, dataloader  # noqa: E402
from rasteret.torch.distributed import share_positions  # noqa: E402
from testbed.scenes import write_scenes  # noqa: E402

pytestmark = pytest.mark.torch
BUCKET = "ddp-bucket"
WORKSPACE = f"s3://{BUCKET}/teams/ddp"
NAME = "ddp"
BANDS = ["B04", "B08"]
CHIP = 128
FAST_RETRY = {"max_retries": 0, "retry_timeout": dt.timedelta(seconds=5)}
ROOT = Path(__file__).parents[2]


def chip_key(xmin, ymax, seconds):
    """A chip's identity: its corner in 10 m pixels and its scene's day (a sample's
    ``bounds`` tensor is float32, so exact values would not match the sampler's)."""
    return (round(float(xmin) / 10), round(float(ymax) / 10), round(float(seconds) / 86400))


def bounds_key(bounds):
    """``chip_key`` of a sample's ``bounds`` row (x, y, t slices as start, stop, step)."""
    return chip_key(bounds[0], bounds[4], bounds[6])


def key_of(chip):
    """``chip_key`` of a sampler's ``(x, y, t)`` slices."""
    return chip_key(chip[0].start, chip[1].stop, chip[2].start.timestamp())


@pytest.fixture(scope="module")
def s3(moto_server, tmp_path_factory):
    """Three overlapping scenes on moto, indexed into a collection in an S3
    workspace; the backend carries moto's keys in memory."""
    moto_server.create_bucket(BUCKET)
    root = tmp_path_factory.mktemp("ddp-scenes")
    scenes = write_scenes(root, count=3, size=512, tile=256, shift=128, seed=5,
                          bands=tuple(BANDS), label=False)
    rows = []
    for scene in scenes:
        row = {"id": scene.id, "datetime": scene.datetime}
        for band, path in scene.files.items():
            key = f"cogs/{scene.id}/{band}.tif"
            moto_server.upload(BUCKET, key, path)
            row[band] = f"s3://{BUCKET}/{key}"
        rows.append(row)
    backend = rasteret.create_backend(
        default_s3_config={"endpoint": moto_server.endpoint, "region": "us-east-1",
                           "aws_access_key_id": moto_server.access_key_id,
                           "aws_secret_access_key": moto_server.secret_access_key},
        retry_config=FAST_RETRY, retries=RetryPolicy(attempts=2, budget=5))
    rasteret.build_from_table(pa.Table.from_pylist(rows), name=NAME, href_columns=BANDS,
                              workspace_dir=WORKSPACE, backend=backend, progress=False)
    return backend


def _read(loader):
    """Every chip a loader yields: key -> image tensor."""
    chips = {}
    for batch in loader:
        for bounds, image in zip(batch["bounds"], batch["image"]):
            chips.setdefault(bounds_key(bounds), []).append(image.clone())
    return chips


def _rank(rank, world_size, init_file, backend, out):
    """One DDP rank: load the collection from S3, read this rank's share, gather."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    try:
        collection = rasteret.load(NAME, workspace_dir=WORKSPACE, backend=backend)
        dataset = collection.to_torchgeo_dataset(BANDS, backend=backend, cache_bytes=0)
        # rank and world_size come from torch.distributed.
        tiles = TileAlignedSampler(dataset, size=CHIP, mode="grid")
        grid = DistributedGeoSampler(GriddedPatchSampler(dataset, size=CHIP))
        random = TileAlignedSampler(dataset, size=CHIP, length=6, seed=11)
        random.set_epoch(3)
        report = {
            "rank": (tiles.rank, tiles.world_size, grid.rank, grid.world_size),
            "pid": os.getpid(),
            "tiles": _read(dataloader(dataset, sampler=tiles, batch_size=8, num_workers=0)),
            "tiles_len": len(tiles),
            "grid": [(round(s[0].start, 3), round(s[1].stop, 3)) for s in grid],
            "grid_len": len(grid),
            "random": [key_of(s) for s in random],
        }
        gathered = [None] * world_size
        dist.all_gather_object(gathered, report)
        if rank == 0:
            torch.save(gathered, out)
    finally:
        dist.destroy_process_group()


def test_two_ranks_load_from_s3_and_read_disjoint_shares(s3, tmp_path):
    out = tmp_path / "shares.pt"
    # spawn, not fork: this process has done obstore I/O (the build).
    mp.start_processes(_rank, args=(2, str(tmp_path / "rendezvous"), s3, str(out)),
                       nprocs=2, join=True, start_method="spawn")
    reports = torch.load(out, weights_only=False)
    assert [r["rank"] for r in reports] == [(0, 2, 0, 2), (1, 2, 1, 2)]
    assert reports[0]["pid"] != reports[1]["pid"] != os.getpid()

    # The whole order, read in this one process.
    collection = rasteret.load(NAME, workspace_dir=WORKSPACE, backend=s3)
    dataset = collection.to_torchgeo_dataset(BANDS, backend=s3, cache_bytes=0)
    whole = TileAlignedSampler(dataset, size=CHIP, mode="grid", rank=0, world_size=1)
    chips = list(whole)
    order = [key_of(s) for s in chips]
    assert len(order) == 3 * (512 // CHIP) ** 2 == len(set(order))

    # Tile-aligned grid: disjoint shares of equal length whose union is the order.
    shares = [r["tiles"] for r in reports]
    assert all(len(chips) == 1 for share in shares for chips in share.values())
    assert not set(shares[0]) & set(shares[1])
    assert set(shares[0]) | set(shares[1]) == set(order)
    assert reports[0]["tiles_len"] == reports[1]["tiles_len"] == len(order) // 2

    # Their pixels are those of a single-process read.
    for share in shares:
        for key in list(share)[:2]:
            chip = chips[order.index(key)]
            assert torch.equal(share[key][0], dataset[chip]["image"])

    # TorchGeo's grid sampler, shared out by the wrapper.
    grid = [(round(s[0].start, 3), round(s[1].stop, 3))
            for s in GriddedPatchSampler(dataset, size=CHIP)]
    halves = [set(r["grid"]) for r in reports]
    assert reports[0]["grid_len"] == reports[1]["grid_len"] == len(reports[0]["grid"])
    assert sorted(reports[0]["grid"] + reports[1]["grid"]) == sorted(grid + grid[:len(grid) % 2])
    assert halves[0] | halves[1] == set(grid)
    assert len(halves[0] & halves[1]) <= 1  # at most the padding chip of an odd order

    # Random tile-aligned draws: each rank draws only from its own chips, and the
    # same epoch draws the same chips again.
    assert set(reports[0]["random"]) <= set(order[0::2])
    assert set(reports[1]["random"]) <= set(order[1::2])
    again = TileAlignedSampler(dataset, size=CHIP, length=6, seed=11, rank=1, world_size=2)
    again.set_epoch(3)
    assert [key_of(s) for s in again] == reports[1]["random"]

    # Nothing the ranks left behind (the rendezvous file, the report) holds the key
    # they were given through the spawn pipe.
    secret = s3_secret().encode()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes()


def s3_secret():
    from testbed.servers import MotoServer

    return MotoServer.secret_access_key


def guide_script():
    """The ``train_ddp.py`` script of docs/scale.md, "Many nodes in training"."""
    guide = (ROOT / "docs" / "scale.md").read_text()
    section = guide[guide.index("## Many nodes in training"):]
    return next(block for block in re.findall(r"```python\n(.*?)```", section, re.DOTALL)
                if "train_ddp.py" in block)


def test_the_guides_torchrun_script_trains_on_two_ranks(s3, moto_server, tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(guide_script())
    # Credentials reach the ranks through their environment, as on a cluster.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ENDPOINT_URL": moto_server.endpoint,
           "AWS_ACCESS_KEY_ID": moto_server.access_key_id,
           "AWS_SECRET_ACCESS_KEY": moto_server.secret_access_key,
           "AWS_REGION": moto_server.region, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script), "--collection", NAME, "--workspace-dir", WORKSPACE, "--bands", *BANDS,
         "--chip-size", str(CHIP), "--chips-per-epoch", "8", "--batch-size", "4",
         "--workers", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for rank in range(2):
        for epoch in range(2):
            assert f"rank {rank} of 2: epoch {epoch}, 8 chips" in out.stdout, out.stdout


# -- the share arithmetic, in one process ------------------------------------------------
@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp-local")
    scenes = write_scenes(root / "cogs", count=3, size=512, tile=256, shift=128, seed=5,
                          bands=tuple(BANDS), label=False)
    rows = [{"id": s.id, "datetime": s.datetime, **{b: str(p) for b, p in s.files.items()}}
            for s in scenes]
    collection = rasteret.build_from_table(pa.Table.from_pylist(rows), name=NAME,
                                           href_columns=BANDS, workspace_dir=root / "ws",
                                           progress=False)
    return collection.to_torchgeo_dataset(BANDS)


@pytest.mark.parametrize("count", [0, 1, 2, 7, 10])
@pytest.mark.parametrize("world_size", [1, 3, 4])
def test_share_positions_are_disjoint_equal_and_cover(count, world_size):
    padded = [list(share_positions(count, r, world_size)) for r in range(world_size)]
    cut = [list(share_positions(count, r, world_size, drop_last=True))
           for r in range(world_size)]
    assert len({len(p) for p in padded}) == 1 and len({len(p) for p in cut}) == 1
    assert sorted(sum(cut, [])) == list(range(count // world_size * world_size))
    flat = sum(padded, [])
    assert set(flat) == set(range(count))
    assert len(flat) == (-(-count // world_size) * world_size if count else 0)
    # Each rank's own positions come first; the padding repeats the order's start.
    for rank, positions in enumerate(padded):
        own = list(range(rank, count, world_size))
        assert positions[:len(own)] == own
        assert all(p < world_size for p in positions[len(own):])


def test_wrapper_streams_the_same_shares_as_the_positions():
    for count in range(9):
        for world_size in (1, 2, 3, 5):
            for drop_last in (False, True):
                for rank in range(world_size):
                    sampler = DistributedGeoSampler(list(range(count)), rank=rank,
                                                    world_size=world_size,
                                                    drop_last=drop_last)
                    expected = list(share_positions(count, rank, world_size,
                                                    drop_last=drop_last))
                    assert list(sampler) == expected and len(sampler) == len(expected)


def test_uneven_tile_aligned_shares_are_padded_to_equal_length(local_dataset):
    whole = [key_of(s) for s in TileAlignedSampler(local_dataset, size=CHIP, mode="grid")]
    shares = [[key_of(s) for s in TileAlignedSampler(local_dataset, size=CHIP, mode="grid",
                                                     rank=r, world_size=5)]
              for r in range(5)]
    assert len(whole) == 48
    assert {len(share) for share in shares} == {10}
    assert set(sum(shares, [])) == set(whole)
    for rank, share in enumerate(shares):
        own = whole[rank::5]
        assert share[:len(own)] == own
    # Random mode: every rank draws `length` chips, only from its own share.
    draws = [list(TileAlignedSampler(local_dataset, size=CHIP, length=12, seed=2, rank=r,
                                     world_size=5)) for r in range(5)]
    for rank, drawn in enumerate(draws):
        assert len(drawn) == 12 and {key_of(s) for s in drawn} <= set(whole[rank::5])


def test_epochs_are_reproducible_and_differ(local_dataset):
    sampler = TileAlignedSampler(local_dataset, size=CHIP, length=16, seed=4)
    first, second = [[key_of(s) for s in sampler] for _ in range(2)]
    assert first != second  # the epoch advances after each pass
    sampler.set_epoch(0)
    assert [key_of(s) for s in sampler] == first
    sampler.set_epoch(1)
    assert [key_of(s) for s in sampler] == second
    other_seed = TileAlignedSampler(local_dataset, size=CHIP, length=16, seed=5)
    assert [key_of(s) for s in other_seed] != first


def test_wrapper_shares_a_seeded_torchgeo_random_sampler(local_dataset):
    whole = [(s[0].start, s[1].start)
             for s in RandomPatchSampler(local_dataset, size=CHIP, length=9, generator=8)]
    shares = [[(s[0].start, s[1].start) for s in DistributedGeoSampler(
        RandomPatchSampler(local_dataset, size=CHIP, length=9, generator=8),
        rank=r, world_size=2)] for r in range(2)]
    assert shares[0] == whole[0::2] and shares[1] == whole[1::2] + whole[:1]


def test_bad_ranks_are_refused(local_dataset):
    for rank, world_size in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ConfigurationError, match="world_size"):
            TileAlignedSampler(local_dataset, size=CHIP, rank=rank, world_size=world_size)
        with pytest.raises(ConfigurationError, match="world_size"):
            DistributedGeoSampler([1, 2], rank=rank, world_size=world_size)


def test_the_datamodule_shares_torchgeo_samplers_under_ddp(local_dataset, monkeypatch):
    import rasteret.torch.datamodule as datamodule

    monkeypatch.setattr(datamodule, "distributed_share", lambda: (1, 2))
    monkeypatch.setattr("rasteret.torch.distributed.distributed_share",
                        lambda rank=None, world_size=None: (1, 2))
    module = datamodule.RasteretDataModule(local_dataset.collection, BANDS, chip_size=CHIP,
                                           sampler="random", length=5, num_workers=0)
    module.setup("fit")
    train = module.train_dataloader().sampler
    assert isinstance(train, DistributedGeoSampler) and (train.rank, train.world_size) == (1, 2)
    assert len(train) == 5  # length is per rank
    val = module.val_dataloader().sampler
    assert isinstance(val, DistributedGeoSampler)
    unseeded = datamodule.RasteretDataModule(local_dataset.collection, BANDS, chip_size=CHIP,
                                             sampler="random", seed=None, num_workers=0)
    unseeded.setup("fit")
    with pytest.raises(ConfigurationError, match="seed"):
        unseeded.train_dataloader()
