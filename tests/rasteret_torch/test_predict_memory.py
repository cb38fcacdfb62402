"""A 50 km prediction keeps its peak memory within a stated bound of a 2 km one.

``predict`` holds the rows of output tiles a chip spans (their sums) and the batches in
flight, never the map. One child process predicts a 2 km area (200 x 200 px at 10 m)
and then a 50 km area (5,000 x 5,000 px) of the same local scene, a class map of 4
classes; the high-water mark of its resident memory (VmHWM) is read after each, reset
between them (``/proc/self/clear_refs``). The 50 km run's peak may exceed the 2 km
run's by at most ``GROWTH_BOUND_MB``: its row of 256-px tiles in flight, 5,000 px wide
(4 float32 score sums, weights and a valid mask: 26 MB), the row being written, and
slack; the 50 km map's class scores that a hand-written loop stitches (4 float32
bands, 381 MiB) are four times the bound. glibc's mmap threshold is fixed in the child
so that a freed row goes back to the system and the high-water mark counts what is
held, not the allocator's heap. The figures are the child's own, not timings, so a
loaded machine cannot make the test fail (measured: 66 MB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchgeo")

pytestmark = pytest.mark.torch

SIZE, SMALL = 5000, 200
#: How much more the 50 km run may hold at its peak than the 2 km run (MB).
GROWTH_BOUND_MB = 90
#: The 50 km map's class scores, as a hand-written loop holds them: 4 float32 bands.
MAP_MB = 4 * SIZE * SIZE * 4 / 2**20

CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import pyarrow as pa
    import rasteret
    from rasteret.torch import RasteretDataset, predict

    folder = Path(sys.argv[1])
    x0, y0, res, small = 500_000.0, 4_100_000.0, 10.0, int(sys.argv[2])
    table = pa.Table.from_pylist([{"id": "big", "B04": str(folder / "big.tif")}])
    collection = rasteret.build_from_table(table, name="memory", href_columns=["B04"],
                                           workspace_dir=folder / "ws", progress=False)
    # No decoded-tile cache: what grows is predict's own.
    dataset = RasteretDataset(collection, ["B04"], cache_bytes=0)

    def four_classes(image):
        return image[:, :1].float().repeat(1, 4, 1, 1)

    def high_water_mb():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

    peaks = []
    for name, roi in (("small", (x0, y0 - small * res, x0 + small * res, y0)), ("large", None)):
        Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark
        predict(four_classes, dataset, out=folder / f"{name}.tif", roi=roi, geometry_crs=32633,
                chip_size=256, overlap=0, tile_size=256, batch_size=4, output="classes",
                workspace_dir=folder / "ws")
        peaks.append(high_water_mb())
    print(json.dumps(peaks))
""")


def write_scene(path: Path) -> None:
    import rasterio
    from rasterio.transform import from_origin

    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    data = ((rows // 7 + cols // 5) % 3000 + 1).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=1,
                       dtype="uint16", crs="EPSG:32633", nodata=0, tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", predictor=2,
                       transform=from_origin(500_000.0, 4_100_000.0, 10.0, 10.0)) as dst:
        dst.write(data, 1)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_a_50_km_map_peaks_within_a_bound_of_a_2_km_one(tmp_path):
    write_scene(tmp_path / "big.tif")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
        "RASTERET_EARLY_FORKSERVER": "0", "RASTERET_PROGRESS": "0",
        "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(SMALL)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    small, large = json.loads(done.stdout.strip().splitlines()[-1])
    assert (tmp_path / "large.tif").exists() and (tmp_path / "small.tif").exists()
    assert large - small < GROWTH_BOUND_MB, (small, large)
    assert MAP_MB > 4 * GROWTH_BOUND_MB  # the bound is far below what the map would need
