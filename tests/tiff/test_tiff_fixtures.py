"""Every third-party TIFF in tests/data/tiff: decoded equal to tifffile, or refused
with UnsupportedTiffError. Never wrong pixels, never a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

import rasteret
from rasteret.errors import UnsupportedTiffError

DATA = Path(__file__).parents[1] / "data" / "tiff"
FILES = sorted(p for p in DATA.rglob("*") if p.suffix.lower() in (".tif", ".tiff"))
# Files rasteret refuses on purpose, with the feature named in the error.
REFUSED = {"logluv-3c-16b.tiff": "LogLuv|34676"}
LOSSY = {"quad-tile.jpg.tiff", "tiled-jpeg-rgb-u8.tif", "tiled-jpeg-ycbcr.tif"}


def reference(path: Path, count: int) -> np.ndarray:
    """tifffile's pixels of the first image as ``(bands, rows, cols)``."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        data = page.asarray()
        if data.dtype == bool:
            data = data.astype(np.uint8)
        if data.ndim == 2:
            return data[np.newaxis]
        if page.planarconfig == 2 and data.shape[0] == count:
            return data
        return np.moveaxis(data, -1, 0)


def test_fixtures_are_present():
    assert len(FILES) >= 50


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_fixture_decodes_like_tifffile_or_is_refused(path: Path):
    if path.name in REFUSED:
        with pytest.raises(UnsupportedTiffError, match=REFUSED[path.name]) as caught:
            rasteret.open_cog(path).read()
        assert path.name in str(caught.value)
        return
    cog = rasteret.open_cog(path)
    pixels = cog.read()
    expected = reference(path, cog.count)
    assert pixels.shape == expected.shape
    if path.name in LOSSY:
        # Two JPEG decoders may differ by a level or two.
        assert np.abs(pixels.astype(int) - expected.astype(int)).max() <= 2
    else:
        np.testing.assert_array_equal(pixels, expected.astype(pixels.dtype))


@pytest.mark.parametrize("path", [p for p in FILES if p.name not in REFUSED][:12],
                         ids=lambda p: p.name)
def test_windows_of_fixtures_match_the_whole_read(path: Path):
    cog = rasteret.open_cog(path)
    whole = cog.read()
    rng = np.random.default_rng(len(path.name))
    for _ in range(5):
        width = int(rng.integers(1, cog.width + 1))
        height = int(rng.integers(1, cog.height + 1))
        col = int(rng.integers(-5, cog.width))
        row = int(rng.integers(-5, cog.height))
        window = cog.read((col, row, width, height))
        fill = np.zeros((cog.count, height, width), whole.dtype)
        c0, r0 = max(col, 0), max(row, 0)
        c1, r1 = min(col + width, cog.width), min(row + height, cog.height)
        if c0 < c1 and r0 < r1:
            fill[:, r0 - row : r1 - row, c0 - col : c1 - col] = whole[:, r0:r1, c0:c1]
        np.testing.assert_array_equal(window, fill)
