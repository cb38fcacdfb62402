"""Overviews built from the tiles already written, one overview tile at a time.

Each overview tile is the 2x reduction of the (up to) four tiles below it, read back
from the spool and decoded, so building every overview holds a few tiles, never an
image: memory does not grow with the map.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np

from rasteret.tiff.codecs import decode_chunk
from rasteret.tiff.layout import CogImage
from rasteret.write.spool import TileSpool

#: How overview pixels are made from the four pixels below them: ``"mean"`` of the
#: valid ones (values), ``"nearest"`` (classes: the first valid of the four).
OverviewResampling = Literal["mean", "nearest"]


class TileCount:
    """How many tile-sized arrays a writer holds, now and at most (memory, in tiles)."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0

    @contextmanager
    def hold(self, tiles: int) -> Iterator[None]:
        """Count ``tiles`` tile-sized arrays as held inside the ``with`` block."""
        self.current += tiles
        self.peak = max(self.peak, self.current)
        try:
            yield
        finally:
            self.current -= tiles


def overview_count(width: int, height: int, tile: int) -> int:
    """Halvings until the image fits one tile (GDAL's COG driver default)."""
    count = 0
    while max(width, height) > tile:
        width, height = math.ceil(width / 2), math.ceil(height / 2)
        count += 1
    return count


def valid_pixels(block: np.ndarray, nodata: float | None) -> np.ndarray:
    """Where ``block`` holds data: not ``nodata`` (not NaN for a NaN nodata)."""
    if nodata is None:
        return np.ones(block.shape, bool)
    if isinstance(nodata, float) and math.isnan(nodata):
        return ~np.isnan(block)
    return np.asarray(block != nodata)


def downsample(block: np.ndarray, valid: np.ndarray, method: OverviewResampling,
               fill: float) -> np.ndarray:
    """Halve a ``(2n, 2m)`` block to ``(n, m)`` using only its ``valid`` pixels.

    Args:
        block: The pixels.
        valid: Where they count.
        method: ``"mean"`` (rounded to the nearest integer for integer dtypes) or
            ``"nearest"`` (the first valid pixel of each 2x2, row by row).
        fill: The value where none of the four pixels is valid.
    """
    rows, cols = block.shape[0] // 2, block.shape[1] // 2
    quads = block.reshape(rows, 2, cols, 2).transpose(0, 2, 1, 3).reshape(rows, cols, 4)
    ok = valid.reshape(rows, 2, cols, 2).transpose(0, 2, 1, 3).reshape(rows, cols, 4)
    count = ok.sum(axis=-1)
    if method == "nearest":
        first = np.argmax(ok, axis=-1)
        out = np.take_along_axis(quads, first[..., None], axis=-1)[..., 0]
    else:
        total = np.where(ok, quads, 0).sum(axis=-1, dtype=np.float64)
        mean = total / np.maximum(count, 1)
        if block.dtype.kind in "iu":
            info = np.iinfo(block.dtype)
            mean = np.clip(np.rint(mean), info.min, info.max)
        out = mean.astype(block.dtype)
    return np.where(count > 0, out, np.asarray(fill).astype(block.dtype))


def build_overview(spool: TileSpool, images: list[CogImage], index: int, *,
                   method: OverviewResampling, nodata: float | None, fill: float,
                   encode: Callable[[np.ndarray], bytes], count: TileCount) -> None:
    """Write every tile of overview ``index`` from the tiles of image ``index - 1``.

    Args:
        spool: Holds the parent's tiles; receives the overview's.
        images: The COG's images (full resolution first).
        index: The overview to build (1 for the largest).
        method: How four pixels become one.
        nodata: Pixels of this value do not count.
        fill: The value of pixels with nothing valid below them.
        encode: Encodes one tile.
        count: Counts the tiles held.
    """
    parent, child = images[index - 1], images[index]
    tile = child.tile
    decoder = parent.level()
    for band in range(child.bands):
        for row in range(child.tiles_down):
            for col in range(child.tiles_across):
                if spool.has(index, band, row, col):
                    continue  # journaled by the run this one resumes
                with count.hold(5):  # the 2x2 block (4 tiles) and the reduced tile
                    block = np.full((2 * tile, 2 * tile), fill, parent.dtype)
                    inside = np.zeros(block.shape, bool)
                    for dr in range(2):
                        for dc in range(2):
                            r, c = 2 * row + dr, 2 * col + dc
                            if r >= parent.tiles_down or c >= parent.tiles_across:
                                continue
                            with count.hold(1):
                                data = decode_chunk(spool.get(index - 1, band, r, c), decoder,
                                                    "<", tile)[:, :, 0]
                                block[dr * tile:(dr + 1) * tile, dc * tile:(dc + 1) * tile] = data
                            rows = min(tile, parent.height - r * tile)
                            cols = min(tile, parent.width - c * tile)
                            inside[dr * tile:dr * tile + rows, dc * tile:dc * tile + cols] = True
                    reduced = downsample(block, inside & valid_pixels(block, nodata), method, fill)
                    spool.put(index, band, row, col, encode(reduced))
