"""Encoded tiles kept on local disk until the COG they belong to is assembled."""

from __future__ import annotations

import os
import tempfile
import threading

import numpy as np

#: A tile not written yet.
MISSING = -1


class TileSpool:
    """Encoded tiles of every image of a COG in one anonymous temporary file.

    The file has no name (it vanishes when closed, or when the process dies), so a
    run that fails leaves nothing behind. Memory holds only two numbers per tile
    (where its bytes are), never pixels.

    Args:
        shapes: Per image, its tile table's shape ``(bands, tiles_down, tiles_across)``.
        folder: Where the file lives (default: the system's temporary folder).
    """

    def __init__(self, shapes: list[tuple[int, int, int]], folder: str | os.PathLike[str] | None
                 = None) -> None:
        self.folder = folder
        self.file = tempfile.TemporaryFile(dir=folder)
        self.offsets = [np.full(shape, MISSING, np.int64) for shape in shapes]
        self.lengths = [np.zeros(shape, np.int64) for shape in shapes]
        self.size = 0
        self.lock = threading.Lock()

    def has(self, image: int, band: int, row: int, col: int) -> bool:
        """True when that tile was written."""
        return bool(self.offsets[image][band, row, col] != MISSING)

    def put(self, image: int, band: int, row: int, col: int, data: bytes) -> None:
        """Store one tile's encoded bytes."""
        with self.lock:
            self.file.seek(self.size)
            self.file.write(data)
            self.offsets[image][band, row, col] = self.size
            self.lengths[image][band, row, col] = len(data)
            self.size += len(data)

    def alias(self, image: int, band: int, row: int, col: int,
              source: tuple[int, int, int, int]) -> None:
        """Let a tile share the bytes of an identical tile already stored (``source``
        is its ``(image, band, row, col)``)."""
        self.offsets[image][band, row, col] = self.offsets[source[0]][source[1:]]
        self.lengths[image][band, row, col] = self.lengths[source[0]][source[1:]]

    def get(self, image: int, band: int, row: int, col: int) -> bytes:
        """One tile's encoded bytes.

        Raises:
            KeyError: The tile was not written.
        """
        offset = int(self.offsets[image][band, row, col])
        if offset == MISSING:
            raise KeyError((image, band, row, col))
        with self.lock:
            self.file.seek(offset)
            return self.file.read(int(self.lengths[image][band, row, col]))

    def missing(self, image: int) -> np.ndarray:
        """``(band, row, col)`` of each tile of ``image`` not written, as rows."""
        return np.argwhere(self.offsets[image] == MISSING)

    def byte_counts(self, image: int) -> np.ndarray:
        """The encoded size of each tile of ``image``, in tile table order."""
        return self.lengths[image].ravel().astype(np.uint64)

    def close(self) -> None:
        """Drop the file (its bytes are gone)."""
        self.file.close()
