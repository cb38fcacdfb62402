"""Chunk caches: decoded tiles in memory (bounded in bytes) and compressed tile
bytes on disk, so overlapping chips and later epochs skip the network.

A decoded tile may be held with only its first rows (reads decode a tile down to
the last row they need); a read needing more rows treats it as a miss.

Keys name a chunk by file, level and index: ``(href, level key, chunk index)``.

Whether to keep whole tiles can be left to the cache (``whole_chunks="auto"``): a
whole tile costs a full decode and pays off only when later reads reuse it. The
cache replays every lookup on a shadow of whole-tile caching (keys only, no pixels,
the same byte budget) and counts the rows it would decode (a full tile per miss)
against the rows partial decoding does (every read down to its last row). Every
:data:`REUSE_WINDOW` lookups (the first time after an eighth of them) it adopts the
cheaper policy for the reads that follow; while partial decoding is the cheaper, no
tile is kept (memory stays free). Random
chips over many scenes rarely meet a tile again before it is evicted, so they decode
partially; tile-aligned grids, small regions, time series and repeated epochs meet
the same tiles again and keep them whole. The decision follows the access pattern
each process sees (a DataLoader worker sees only its own batches), which no static
rule about the sampler can know.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rasteret.atomic import write_atomic
from rasteret.tiff.header import ImageLevel

ChunkKey = tuple[str, tuple[int, int, bool], int]


def chunk_key(url: str, level: ImageLevel, index: int) -> ChunkKey:
    """The cache key of chunk ``index`` of ``level`` in the file at ``url``."""
    return (url, (level.width, level.height, level.is_mask), index)


#: Lookups between two decisions of the ``"auto"`` policy (the first decision comes
#: after an eighth of it, so a short run of reads benefits too).
REUSE_WINDOW = 256


class ReuseShadow:
    """The rows whole-tile caching and partial decoding would decode for the lookups
    seen, whole tiles simulated on keys alone with the cache's byte budget (see the
    module docstring).

    Not thread-safe on its own: :class:`TileCache` calls it under its lock.

    Args:
        max_bytes: The byte budget of the cache being simulated.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        #: True while whole tiles are the cheaper policy (partial until shown).
        self.whole = False
        self.decisions = 0
        self.whole_rows = 0.0
        self.partial_rows = 0.0
        self.row_bytes = 0
        self._lookups = 0
        self._keys: OrderedDict[ChunkKey, None] = OrderedDict()

    def observe(self, key: ChunkKey, rows: int, whole_rows: int) -> None:
        """Count one lookup needing ``rows`` rows of a chunk of ``whole_rows`` rows."""
        self.partial_rows += rows
        if key in self._keys:
            self._keys.move_to_end(key)
        else:
            self.whole_rows += whole_rows
            self._keys[key] = None
            # Whole tiles of this size that fit the budget (tiles are about square
            # until a decoded tile tells the real bytes per row).
            tile_bytes = whole_rows * (self.row_bytes or 2 * whole_rows)
            while len(self._keys) > max(1, self.max_bytes // max(1, tile_bytes)):
                self._keys.popitem(last=False)
        self._lookups += 1
        if self._lookups >= (REUSE_WINDOW if self.decisions else REUSE_WINDOW // 8):
            self.whole = self.whole_rows < self.partial_rows
            self.decisions += 1
            self._lookups = 0
            # Halve the history: the policy follows a sampler that changes its pattern.
            self.whole_rows /= 2
            self.partial_rows /= 2


class TileCache:
    """Decoded chunks, least recently used first out, at most ``max_bytes`` in total.

    Thread-safe: decode threads add to it while the event loop reads from it.

    Args:
        max_bytes: Memory for decoded chunks.
        shadow: Simulate whole against partial tiles on every lookup that names the
            chunk's full row count (:class:`ReuseShadow`, the ``"auto"`` policy).
    """

    def __init__(self, max_bytes: int, *, shadow: bool = False) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.shadow = ReuseShadow(self.max_bytes) if shadow else None
        self._items: OrderedDict[ChunkKey, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: ChunkKey, rows: int = 0, *, whole_rows: int = 0) -> np.ndarray | None:
        """The cached array if it holds at least ``rows`` rows, else None (counted as a
        hit or a miss). ``whole_rows`` (the chunk's full height) feeds the shadow
        policy, when there is one."""
        with self._lock:
            if self.shadow is not None and whole_rows:
                self.shadow.observe(key, rows, whole_rows)
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
            if self.shadow is not None:
                if array.shape[0]:
                    self.shadow.row_bytes = array.nbytes // array.shape[0]
                if not self.shadow.whole:
                    return  # partial decoding: tiles are rarely met again
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
            ``"auto"`` chooses between the two from the reuse the reads show (see the
            module docstring). Without memory, reads always decode only the rows they
            need.
    """

    def __init__(self, *, memory_bytes: int = 0, disk_dir: str | os.PathLike[str] | None = None,
                 whole_chunks: bool | Literal["auto"] = True):
        self.memory = (TileCache(memory_bytes, shadow=whole_chunks == "auto")
                       if memory_bytes > 0 else None)
        self.disk = DiskCache(disk_dir) if disk_dir else None
        self._whole_chunks = whole_chunks
        self._in_flight: dict[int, dict[ChunkKey, PendingChunk]] = {}

    @property
    def whole_chunks(self) -> bool:
        """Whether reads now decode (and keep) whole chunks: as configured, or the
        ``"auto"`` policy's current choice."""
        if self._whole_chunks == "auto":
            shadow = self.memory.shadow if self.memory is not None else None
            return shadow is not None and shadow.whole
        return bool(self._whole_chunks)

    def in_flight(self, loop: Any) -> dict[ChunkKey, PendingChunk]:
        """The chunks being read on ``loop`` (futures belong to one loop)."""
        return self._in_flight.setdefault(id(loop), {})
