"""The embedded demo world: synthetic scenes on a credentialed local S3 (moto),
listed by a local STAC API (rustac), built into a collection.

Used by ``make demo`` and the training examples so that everything runs on one
machine with no network.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rasteret.collection import Collection
from rasteret.ingest.api import build_from_stac
from rasteret.io.backend import Backend, create_backend
from rasteret.io.fetch import FetchStats
from testbed.scenes import stac_collection, stac_item, write_scenes
from testbed.servers import MotoServer
from testbed.stac import StacApiServer

BUCKET = "demo-sentinel"
BANDS = ["B02", "B03", "B04", "B08"]
LABEL = "label"


@dataclass
class DemoWorld:
    """What the demo runs on."""

    collection: Collection
    backend: Backend
    stac_url: str
    s3_endpoint: str
    build_stats: FetchStats
    build_seconds: float


def demo_backend(moto: MotoServer) -> Backend:
    """A backend signing requests to the local S3 with the demo's keys."""
    return create_backend(
        default_s3_config={
            "endpoint": moto.endpoint,
            "aws_access_key_id": moto.access_key_id,
            "aws_secret_access_key": moto.secret_access_key,
            "region": moto.region,
        },
        retry_config={"max_retries": 3, "retry_timeout": dt.timedelta(seconds=60)},
    )


@contextlib.contextmanager
def demo_world(
    *,
    scenes: int = 6,
    size: int = 1024,
    tile: int = 256,
    cache_dir: str | Path | None = None,
    workspace: str | Path | None = None,
) -> Iterator[DemoWorld]:
    """Start moto and rustac, upload synthetic scenes, build the collection; stop
    every server on exit.

    Args:
        scenes: Number of scenes (10 days apart, shifted so they overlap).
        size: Pixels per side of each scene.
        tile: COG tile size.
        cache_dir: Where the scene files are written (default: a temporary folder).
        workspace: Where the collection is saved (default: a temporary folder).
    """
    import time

    folder = Path(cache_dir or tempfile.mkdtemp(prefix="rasteret-demo-data-"))
    written = write_scenes(folder, count=scenes, size=size, tile=tile, shift=size // 4,
                           days_between=10, seed=7)
    workspace = Path(workspace or tempfile.mkdtemp(prefix="rasteret-demo-ws-"))
    with MotoServer() as moto:
        moto.create_bucket(BUCKET)
        for scene in written:
            for band, path in scene.files.items():
                moto.upload(BUCKET, f"{scene.id}/{band}.tif", path)
        items = [
            stac_item(scene, lambda s, b, p: f"s3://{BUCKET}/{s.id}/{b}.tif")
            for scene in written
        ]
        backend = demo_backend(moto)
        with StacApiServer(stac_collection(items), items) as stac:
            stats = FetchStats()
            start = time.perf_counter()
            collection = build_from_stac(
                name="demo-s2", stac_api=stac.url, collection="sentinel-2-l2a",
                bbox=(-180, -90, 180, 90), date_range=("2024-01-01", "2024-12-31"),
                band_map={"B02": "blue", "B03": "green", "B04": "red", "B08": "nir",
                          LABEL: "label"},
                backend=backend, workspace_dir=workspace, force=True, progress=False,
                stats=stats,
            )
            elapsed = time.perf_counter() - start
            yield DemoWorld(collection, backend, stac.url, moto.endpoint, stats, elapsed)

