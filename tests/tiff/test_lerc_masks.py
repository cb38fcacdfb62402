"""LERC's own per-pixel validity mask (plain LERC, LERC inside DEFLATE or ZSTD).

GDAL-written files are covered pixel for pixel in ``test_gdal_conformance.py``. The
files here are written tile by tile with imagecodecs, as other LERC writers do, so
that masked pixels hold a value the mask hides: floating-point masks read as NaN
(rasterio gives the same), integer masks, which GDAL cannot decode, read as the file's
nodata (0 without one). Partial decoding and the tile cache keep that rule.
"""

from __future__ import annotations

import math
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

import rasteret
from rasteret.read.cache import ChunkCaches
from rasteret.tiff.codecs import decode_chunk

rasterio = pytest.importorskip("rasterio")
tifffile = pytest.importorskip("tifffile")

TILE = 32
SHAPE = (80, 72)  # rows, cols: not multiples of the tile


def _invalid() -> np.ndarray:
    invalid = np.zeros(SHAPE, bool)
    invalid[3:9, 5:20] = True      # inside the first tile
    invalid[30:50, 60:72] = True   # across tile edges, at the right border
    invalid[70:80, 0:40] = True    # in the bottom (partial) tiles
    return invalid


def _values(dtype: str) -> np.ndarray:
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    return ((yy * 7 + xx * 3) % 500 + 10).astype(dtype)


def _write(path: Path, dtype: str, nodata: float | None, extra: str | None) -> Path:
    """A tiled GeoTIFF whose LERC tiles carry masks; masked pixels hold 77 before
    encoding (LERC drops them)."""
    values, invalid = _values(dtype), _invalid()
    tiles = []
    for top in range(0, SHAPE[0], TILE):
        for left in range(0, SHAPE[1], TILE):
            tile = np.zeros((TILE, TILE), dtype)
            valid = np.zeros((TILE, TILE), bool)
            part = values[top : top + TILE, left : left + TILE]
            rows, cols = part.shape
            tile[:rows, :cols] = np.where(invalid[top : top + TILE, left : left + TILE], 77, part)
            valid[:rows, :cols] = ~invalid[top : top + TILE, left : left + TILE]
            tiles.append(imagecodecs.lerc_encode(tile, 0, masks=None if valid.all() else valid))
    geotags = [
        (33550, "d", 3, (10.0, 10.0, 0.0), True),
        (33922, "d", 6, (0, 0, 0, 500000.0, 4100000.0, 0), True),
        (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True),
    ]
    if nodata is not None:
        geotags.append((42113, "s", 0, f"{nodata:g}", True))
    if extra == "deflate":
        tiles = [imagecodecs.zlib_encode(t) for t in tiles]
    elif extra == "zstd":
        tiles = [imagecodecs.zstd_encode(t) for t in tiles]
    tifffile.imwrite(path, iter(tiles), shape=SHAPE, dtype=dtype, tile=(TILE, TILE),
                     compression="lerc", compressionargs={"compression": extra},
                     photometric="minisblack", extratags=geotags)
    return path


WINDOWS = [
    None,                     # everything
    (0, 0, TILE, 7),          # ends inside the first tile's masked rows
    (4, 2, 30, 40),           # across a tile corner
    (50, 28, 40, 30),         # across the right border and its masked block
    (-5, 60, 30, 40),         # past the left and bottom edges
]


@pytest.mark.parametrize("extra", [None, "deflate", "zstd"])
@pytest.mark.parametrize("nodata", [None, -9999.0, float("nan")])
def test_float_masks_read_as_nan_like_rasterio(tmp_path, extra, nodata):
    path = _write(tmp_path / "f.tif", "float32", nodata, extra)
    cog = rasteret.open_cog(path)
    with rasterio.open(path) as src:
        for window in WINDOWS:
            expected = src.read(window=rasterio.windows.Window(*window) if window else None,
                                boundless=window is not None,
                                fill_value=src.nodata if src.nodata is not None else 0)
            got = cog.read(window)
            np.testing.assert_array_equal(got, expected, err_msg=f"{extra} {nodata} {window}")
    whole = cog.read()[0]
    assert np.isnan(whole[_invalid()]).all()
    assert not np.isnan(whole[~_invalid()]).any()


@pytest.mark.parametrize("extra", [None, "deflate", "zstd"])
@pytest.mark.parametrize(("dtype", "nodata"), [
    ("uint16", 65535.0), ("uint16", None), ("int16", -9999.0), ("int16", None),
])
def test_integer_masks_read_as_nodata(tmp_path, extra, dtype, nodata):
    path = _write(tmp_path / "i.tif", dtype, nodata, extra)
    cog = rasteret.open_cog(path)
    expected = _values(dtype)
    expected[_invalid()] = 0 if nodata is None else nodata
    np.testing.assert_array_equal(cog.read()[0], expected)
    fill = 0 if nodata is None else nodata
    for window in WINDOWS[1:]:
        col, row, width, height = window
        padded = np.full((SHAPE[0] + 200, SHAPE[1] + 200), fill, dtype)
        padded[100 : 100 + SHAPE[0], 100 : 100 + SHAPE[1]] = expected
        want = padded[100 + row : 100 + row + height, 100 + col : 100 + col + width]
        np.testing.assert_array_equal(cog.read(window)[0], want, err_msg=str(window))


@pytest.mark.parametrize("whole_chunks", [True, False])
def test_partial_decode_and_cache_keep_the_mask(tmp_path, whole_chunks):
    """A read ending inside a masked tile, then one needing all of it, from one cache."""
    path = _write(tmp_path / "c.tif", "int16", -9999.0, "zstd")
    plain = rasteret.open_cog(path)
    cached = rasteret.open_cog(path)
    cached.caches = ChunkCaches(memory_bytes=16 * 1024 * 1024, whole_chunks=whole_chunks)
    for window in [(0, 0, TILE, 5), (0, 0, TILE, 9), (0, 0, 72, 80), (40, 60, 32, 20)]:
        np.testing.assert_array_equal(cached.read(window), plain.read(window), str(window))
    assert (cached.read((5, 3, 15, 6)) == -9999).all()


def test_decode_chunk_rows_match_the_whole_tile(tmp_path):
    path = _write(tmp_path / "d.tif", "float32", None, "deflate")
    cog = rasteret.open_cog(path)
    level = cog.header.levels[0]
    with open(path, "rb") as handle:
        handle.seek(int(level.offsets[0]))
        data = handle.read(int(level.byte_counts[0]))
    whole = decode_chunk(data, level, cog.header.byteorder, TILE)
    assert math.isnan(whole[4, 6, 0]) and whole[0, 0, 0] == 10
    for rows in (1, 4, 9, TILE):
        part = decode_chunk(data, level, cog.header.byteorder, TILE, max_rows=rows)
        np.testing.assert_array_equal(part, whole[:rows])
