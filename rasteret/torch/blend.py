"""Blending overlapping chip predictions into rows of output tiles (NumPy only).

Each chip's output is added, weighted by a window, into the rows of output tiles it
covers; a row of tiles is handed out (and forgotten) as soon as no later chip can
reach it. Memory holds the rows of tiles a chip spans, never the map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rasteret.errors import ConfigurationError

#: How overlapping chips are weighted: a cosine taper over the overlap (seamless),
#: a uniform mean, or the chip's centre only.
Blend = Literal["cosine", "mean", "center"]
BLENDS = ("cosine", "mean", "center")

#: The weight ``"center"`` gives a chip's margin: only where no chip's centre reaches
#: (the map's outer margin) does a margin count.
MARGIN_WEIGHT = 2.0**-20


def blend_window(chip: int, overlap: int, blend: Blend) -> np.ndarray:
    """The ``(chip, chip)`` weights of one chip's pixels; never zero, so every pixel a
    chip covers gets a value.

    Args:
        chip: Chip size in pixels.
        overlap: Pixels shared by neighbouring chips.
        blend: ``"cosine"`` (a raised-cosine taper over the ``overlap`` pixels at each
            edge, 1 inside), ``"mean"`` (1 everywhere) or ``"center"`` (1 on the
            centre that the chip grid tiles without overlap, a tiny weight elsewhere).

    Raises:
        ConfigurationError: An unknown ``blend``.
    """
    if blend not in BLENDS:
        raise ConfigurationError(f"blend={blend!r}: give one of {', '.join(BLENDS)}")
    edge = np.minimum(np.arange(chip), np.arange(chip)[::-1]).astype(np.float64)
    if blend == "mean" or overlap == 0:
        line = np.ones(chip)
    elif blend == "cosine":
        line = np.where(edge >= overlap, 1.0,
                        0.5 * (1 - np.cos(np.pi * (edge + 0.5) / overlap)))
    else:
        index = np.arange(chip)
        inside = (index >= overlap // 2) & (index < chip - (overlap - overlap // 2))
        square = np.outer(inside, inside)
        return np.where(square, 1.0, MARGIN_WEIGHT)
    return np.outer(line, line)


@dataclass
class TileRow:
    """The sums of one row of output tiles.

    Attributes:
        index: The row of tiles (0 at the top).
        total: Weighted sum of the outputs, ``(channels, tile, width)``.
        weight: Sum of the weights, ``(tile, width)``.
        valid: Where an input pixel was valid, ``(tile, width)``.
    """

    index: int
    total: np.ndarray
    weight: np.ndarray
    valid: np.ndarray


class TileRowBlender:
    """Accumulates weighted chip outputs into rows of output tiles.

    Args:
        width: The output's width in pixels.
        height: Its height.
        tile: Its tile size.
        channels: Output channels.
        dtype: The sums' dtype: float64 (the default) makes an identity exact after
            blending; float32 halves the memory of the rows in flight.
    """

    def __init__(self, width: int, height: int, tile: int, channels: int,
                 dtype: np.dtype | str = "float64") -> None:
        self.width, self.height, self.tile, self.channels = width, height, tile, channels
        self.dtype = np.dtype(dtype)
        self.rows: dict[int, TileRow] = {}
        self.peak_rows = 0

    def row(self, index: int) -> TileRow:
        """The sums of row ``index`` (started empty)."""
        found = self.rows.get(index)
        if found is None:
            shape = (self.tile, self.width)
            found = self.rows[index] = TileRow(
                index, np.zeros((self.channels, *shape), self.dtype), np.zeros(shape, self.dtype),
                np.zeros(shape, bool))
            self.peak_rows = max(self.peak_rows, len(self.rows))
        return found

    def add(self, values: np.ndarray, weight: np.ndarray, valid: np.ndarray, top: int,
            left: int) -> None:
        """Add one chip's ``values`` ``(channels, h, w)`` with ``weight`` ``(h, w)`` at
        output pixel ``(top, left)`` (parts outside the output are dropped)."""
        rows, cols = weight.shape
        r0, r1 = max(top, 0), min(top + rows, self.height)
        c0, c1 = max(left, 0), min(left + cols, self.width)
        if r0 >= r1 or c0 >= c1:
            return
        for index in range(r0 // self.tile, (r1 - 1) // self.tile + 1):
            acc = self.row(index)
            a, b = max(r0, index * self.tile), min(r1, (index + 1) * self.tile)
            here = (slice(a - index * self.tile, b - index * self.tile), slice(c0, c1))
            there = (slice(a - top, b - top), slice(c0 - left, c1 - left))
            w = weight[there]
            acc.total[(slice(None), *here)] += values[(slice(None), *there)] * w
            acc.weight[here] += w
            acc.valid[here] |= valid[there]

    def finished(self, before: int | None) -> list[TileRow]:
        """Remove and return the rows no chip starting at output row ``before`` or
        below can reach (every row when ``before`` is None), top first."""
        done = sorted(i for i in self.rows
                      if before is None or (i + 1) * self.tile <= before)
        return [self.rows.pop(i) for i in done]
