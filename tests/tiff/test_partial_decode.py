"""Decoding only a chunk's first rows (a window ending inside a tile) gives exactly the
rows a whole decode gives, for DEFLATE streams of every kind writers produce
(compressed and stored blocks, zlib and libdeflate, any level) and every predictor;
damaged streams raise typed errors when the damage lies within the rows decoded."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

import rasteret
from rasteret.errors import CorruptTiffError
from rasteret.tiff.codecs import decode_chunk

rasterio = pytest.importorskip("rasterio")
tifffile = pytest.importorskip("tifffile")

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

TILE = 512
ROWS = [1, 37, 128, 255, 256, 300, 447, 448, 511, 512]


def _pixels(kind: str, dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (TILE * 2, TILE * 2)
    if kind == "noise":  # incompressible: writers emit stored blocks
        values = rng.integers(0, 2**15, shape)
    elif kind == "smooth":
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        values = (yy * 7 + xx * 3) % 4000 + rng.integers(0, 4, shape)
    else:  # mixed: stored blocks next to well-compressed ones
        values = np.where(np.arange(shape[0])[:, None] % 200 < 100,
                          rng.integers(0, 2**15, shape), 1000)
    return values.astype(dtype)


def _write(path: Path, pixels: np.ndarray, writer: str, predictor: int, level: int) -> None:
    if writer == "rasterio":
        with rasterio.open(path, "w", driver="GTiff", width=pixels.shape[1],
                           height=pixels.shape[0], count=1, dtype=pixels.dtype, tiled=True,
                           blockxsize=TILE, blockysize=TILE, compress="deflate",
                           predictor=predictor, zlevel=level) as dst:
            dst.write(pixels, 1)
    else:
        tifffile.imwrite(path, pixels, tile=(TILE, TILE), compression="zlib",
                         compressionargs={"level": level},
                         predictor=predictor > 1)


@pytest.mark.parametrize("kind", ["noise", "smooth", "mixed"])
@pytest.mark.parametrize("writer,predictor,level,dtype", [
    ("rasterio", 1, 6, "uint16"),
    ("rasterio", 2, 1, "uint16"),
    ("rasterio", 2, 9, "int16"),
    ("rasterio", 3, 6, "float32"),
    ("tifffile", 1, 6, "uint16"),
    ("tifffile", 2, 9, "uint16"),
])
def test_first_rows_equal_a_whole_decode(tmp_path, kind, writer, predictor, level, dtype):
    path = tmp_path / f"{kind}.tif"
    _write(path, _pixels(kind, dtype), writer, predictor, level)
    level_info = rasteret.open_cog(path).header.levels[0]
    data = path.read_bytes()
    assert level_info.predictor == (1 if writer == "tifffile" and predictor == 1 else predictor)
    for index in range(len(level_info.offsets)):
        start, length = int(level_info.offsets[index]), int(level_info.byte_counts[index])
        raw = data[start : start + length]
        whole = decode_chunk(raw, level_info, "<", TILE)
        for rows in ROWS:
            first = decode_chunk(raw, level_info, "<", TILE, max_rows=rows)
            assert first.shape == (rows, TILE, 1)
            np.testing.assert_array_equal(first, whole[:rows])


def test_damaged_streams_still_raise(tmp_path):
    path = tmp_path / "smooth.tif"
    _write(path, _pixels("smooth", "uint16"), "rasterio", 2, 6)
    level = rasteret.open_cog(path).header.levels[0]
    data = path.read_bytes()
    raw = data[int(level.offsets[0]) : int(level.offsets[0]) + int(level.byte_counts[0])]
    # Damage at the start is met before the rows wanted.
    broken = raw[:2] + bytes(b ^ 0xFF for b in raw[2:200]) + raw[200:]
    with pytest.raises(CorruptTiffError):
        decode_chunk(broken, level, "<", TILE, max_rows=100)
    # A stream holding 100 of the tile's 512 rows: reads needing rows it lacks are
    # refused; reads of rows it holds get them (the damage lies past what they decode).
    rows_held = np.arange(TILE * 100, dtype="<u2").reshape(100, TILE)
    short = zlib.compress(rows_held.tobytes())
    for rows in (101, 400, None):
        with pytest.raises(CorruptTiffError):
            decode_chunk(short, level, "<", TILE, max_rows=rows)
    # (a predictor-2 level: the stored differences are summed along each row)
    expected = np.cumsum(rows_held[:30], axis=1, dtype="<u2")[:, :, None]
    np.testing.assert_array_equal(decode_chunk(short, level, "<", TILE, max_rows=30), expected)


def test_concurrent_reads_needing_different_rows_share_one_request(tmp_path, nginx_server):
    """Reads of one call that end at different rows of a tile: one request, one decode
    of as many rows as the deepest needs, pixels equal to rasterio's."""
    import asyncio

    from rasteret.io.runtime import run_sync
    from rasteret.read.cache import ChunkCaches, chunk_key

    path = Path(nginx_server.root) / "partial-shared.tif"
    _write(path, _pixels("smooth", "uint16"), "rasterio", 2, 6)
    cog = rasteret.open_cog(f"{nginx_server.url}/{path.name}")
    cog.caches = ChunkCaches(memory_bytes=64 * 1024 * 1024, whole_chunks=False)
    windows = [(0, 0, 64, 64), (10, 0, 100, 300), (200, 380, 50, 40), (0, 100, 30, 30)]

    async def read_all():
        return await asyncio.gather(*(cog.read_async(w) for w in windows))

    nginx_server.clear_log()
    results = run_sync(read_all())
    assert [r.range for r in nginx_server.requests()] == [
        f"bytes={int(cog.header.levels[0].offsets[0])}-"
        f"{int(cog.header.levels[0].offsets[0]) + int(cog.header.levels[0].byte_counts[0]) - 1}"]
    kept = cog.caches.memory.get(chunk_key(cog.url, cog.header.levels[0], 0))
    assert kept.shape[0] == 420  # the deepest window's last row, not the tile's 512
    with rasterio.open(path) as src:
        for window, pixels in zip(windows, results):
            expected = src.read(window=rasterio.windows.Window(*window))
            np.testing.assert_array_equal(pixels, expected)
        # A later read needing rows below those kept fetches the tile again.
        deeper = cog.read((0, 480, 20, 20))
        np.testing.assert_array_equal(
            deeper, src.read(window=rasterio.windows.Window(0, 480, 20, 20)))
    assert len(nginx_server.requests()) == 2
