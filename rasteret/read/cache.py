"""Chunk caches: decoded tiles in memory (bounded in bytes) and compressed tile
bytes on disk, so overlapping chips and later epochs skip the network.

A decoded tile may be held with only its first rows (reads decode a tile down to
the last row they need); a read needing more rows treats it as a miss.

Keys name a chunk by file, level and index: ``(href, level key, chunk index)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rasteret.atomic import write_atomic
from rasteret.tiff.header import ImageLevel

ChunkKey = tuple[str, tuple[int, int, bool], int]


def chunk_key(url: str, level: ImageLevel, index: int) -> ChunkKey:
    """The cache key of chunk ``index`` of ``level`` in the file at ``url``."""
    return (url, (level.width, level.height, level.is_mask), index)


class TileCache:
    """Decoded chunks, least recently used first out, at most ``max_bytes`` in total.

    Thread-safe: decode threads add to it while the event loop reads from it.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[ChunkKey, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: ChunkKey, rows: int = 0) -> np.ndarray | None:
        """The cached array if it holds at least ``rows`` rows, else None (counted as a
        hit or a miss)."""
        with self._lock:
            array = self._items.get(key)
            if array is None or array.shape[0] < rows:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return array

    def put(self, key: ChunkKey, array: np.ndarray) -> None:
        """Keep ``array`` (read-only from now on), evicting the oldest entries; a chunk
        already held with more rows is kept instead."""
        if array.nbytes > self.max_bytes:
            return
        array.flags.writeable = False
        with self._lock:
            previous = self._items.pop(key, None)
            if previous is not None:
                if previous.shape[0] > array.shape[0]:
                    array = previous
                self.bytes -= previous.nbytes
            self._items[key] = array
            self.bytes += array.nbytes
            while self.bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self.bytes -= evicted.nbytes


class DiskCache:
    """Compressed chunk bytes under ``folder``, one file per chunk, written atomically.

    Holds only pixel bytes (no URLs' query strings, no credentials): a file name is a
    hash of the unsigned href and the object's version (ETag and size, when known),
    and the chunk's position, so the bytes of a replaced object are never decoded
    with a rebuilt collection's offsets.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = 0

    def _path(self, key: ChunkKey, version: str) -> Path:
        url, (width, height, mask), index = key
        name = url.split("?", 1)[0] + (f"\n{version}" if version.strip("|") else "")
        digest = hashlib.sha1(name.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}-{width}x{height}{'m' if mask else ''}-{index}"

    def get(self, key: ChunkKey, version: str = "") -> bytes | None:
        """The stored bytes of ``key`` in ``version`` of its object, or None."""
        try:
            data = self._path(key, version).read_bytes()
        except OSError:
            return None
        self.hits += 1
        return data

    def put(self, key: ChunkKey, data: Any, version: str = "") -> None:
        """Store ``data`` (written to a temporary name, then renamed into place)."""
        path = self._path(key, version)
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, lambda tmp: tmp.write_bytes(bytes(data)))


@dataclass
class PendingChunk:
    """A chunk that one read is fetching and decoding, which concurrent reads await.

    Attributes:
        future: Resolves to the decoded chunk (or its failure).
        rows: Rows the owner will decode; a read that joins before decoding starts
            raises it to what that read needs.
        decoding: True once decoding started (``rows`` is final).
    """

    future: asyncio.Future[np.ndarray]
    rows: int
    decoding: bool = False


class ChunkCaches:
    """The caches a reader consults: memory (decoded) and, optionally, disk (bytes),
    plus the chunks being fetched right now, so concurrent reads of one tile share a
    single request and decode.

    Args:
        memory_bytes: Memory for decoded chunks (0: none).
        disk_dir: A folder for compressed chunk bytes (None: none).
        whole_chunks: Decode whole chunks, so that later reads of other rows find them
            in memory (a cache kept across reads). False decodes only the rows the
            current reads need (a cache that serves the concurrent reads of one call).
            Without memory, reads always decode only the rows they need.
    """

    def __init__(self, *, memory_bytes: int = 0, disk_dir: str | os.PathLike[str] | None = None,
                 whole_chunks: bool = True):
        self.memory = TileCache(memory_bytes) if memory_bytes > 0 else None
        self.disk = DiskCache(disk_dir) if disk_dir else None
        self.whole_chunks = whole_chunks
        self._in_flight: dict[int, dict[ChunkKey, PendingChunk]] = {}

    def in_flight(self, loop: Any) -> dict[ChunkKey, PendingChunk]:
        """The chunks being read on ``loop`` (futures belong to one loop)."""
        return self._in_flight.setdefault(id(loop), {})
