"""Execute read plans: fetch the ranges concurrently, decode each range's chunks in
the thread pool as soon as its bytes arrive, and paste them into the output array.

The compressed bytes fetched but not yet decoded are bounded per event loop
(:data:`IN_FLIGHT_BYTES_PER_THREAD`): a read of a large area streams through a fixed working
set instead of holding every tile's bytes at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import numpy as np

from rasteret.io.backend import Backend
from rasteret.io.fetch import FetchStats, ObjectInfo, fetch_range
from rasteret.io.runtime import decode_pool, decode_pool_size
from rasteret.read.cache import ChunkCaches, ChunkKey, PendingChunk, chunk_key
from rasteret.read.plan import MERGE_GAP, ByteRange, ChunkRead, ReadPlan, merge_ranges
from rasteret.tiff.codecs import decode_chunk
from rasteret.tiff.header import ByteOrder, ImageLevel

#: Compressed bytes one event loop may have requested but not yet decoded, per decode
#: thread (at least 32 MiB in all): a decode thread eats about 150 MB/s of deflate input,
#: so this keeps every thread fed across a tenth of a second of latency while staying
#: small beside the output of a large read.
IN_FLIGHT_BYTES_PER_THREAD = 16 * 1024 * 1024


class ByteBudget:
    """Bytes in flight on one event loop: fetches wait for room, decodes give it back.

    A request larger than the whole budget is let through alone, so it never waits
    forever. Waiters are served first come, first served. Releasing never waits, so
    a cancelled read always gives its room back.
    """

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, nbytes: int) -> bool:
        return self.used == 0 or self.used + nbytes <= self.limit

    async def acquire(self, nbytes: int) -> int:
        """Wait until ``nbytes`` fit (capped at the limit); returns what was taken."""
        nbytes = min(int(nbytes), self.limit)
        if not self._waiters and self._fits(nbytes):
            self.used += nbytes
            return nbytes
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((nbytes, future))
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release(nbytes)  # granted just as the waiter was cancelled
            raise
        return nbytes

    def release(self, nbytes: int) -> None:
        """Give back what :meth:`acquire` took and wake the waiters that now fit."""
        self.used -= nbytes
        while self._waiters:
            wanted, future = self._waiters[0]
            if future.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            if not self._fits(wanted):
                break
            self._waiters.popleft()
            self.used += wanted
            future.set_result(None)


_budgets: dict[int, tuple[asyncio.AbstractEventLoop, ByteBudget]] = {}


def in_flight_budget(loop: asyncio.AbstractEventLoop) -> ByteBudget:
    """The byte budget shared by every read on ``loop`` (one per loop: its condition
    belongs to it)."""
    entry = _budgets.get(id(loop))
    if entry is None or entry[0] is not loop:
        for key in [k for k, (other, _) in _budgets.items() if other.is_closed()]:
            del _budgets[key]
        limit = max(32 * 1024 * 1024, IN_FLIGHT_BYTES_PER_THREAD * decode_pool_size())
        entry = _budgets[id(loop)] = (loop, ByteBudget(limit))
    return entry[1]


def fill_uncovered(out: np.ndarray, plan: ReadPlan, level: ImageLevel, fill: Any) -> None:
    """Set the pixels of ``out`` that no fetched chunk of ``plan`` will write to ``fill``:
    the window's parts outside the image and its sparse (empty) chunks.

    ``out`` is shaped like :func:`paste_chunk`'s; with this, a caller may allocate it
    uninitialised and every pixel is still written exactly once or twice.
    """
    window = plan.window
    top = min(max(-window.row_off, 0), window.height)
    bottom = max(min(level.height - window.row_off, window.height), top)
    left = min(max(-window.col_off, 0), window.width)
    right = max(min(level.width - window.col_off, window.width), left)
    out[:, :top] = fill
    out[:, bottom:] = fill
    out[:, top:bottom, :left] = fill
    out[:, top:bottom, right:] = fill
    for chunk in plan.sparse:
        r0 = max(chunk.row0, window.row_off) - window.row_off
        r1 = min(chunk.row0 + chunk.rows, window.row_off + window.height) - window.row_off
        c0 = max(chunk.col0, window.col_off) - window.col_off
        c1 = min(chunk.col0 + level.chunk_width, window.col_off + window.width) - window.col_off
        if r0 < r1 and c0 < c1:
            out[:, r0:r1, c0:c1] = fill


def paste_chunk(
    out: np.ndarray, tile: np.ndarray, chunk: ChunkRead, plan: ReadPlan, level: ImageLevel
) -> None:
    """Copy the part of a decoded chunk that falls in the plan's window into ``out``.

    ``out`` is shaped ``(len(plan.bands), window.height, window.width)``; ``tile`` is
    ``(rows, chunk_width, samples_per_chunk)``.
    """
    window = plan.window
    top = max(chunk.row0, window.row_off, 0)
    bottom = min(chunk.row0 + chunk.rows, window.row_off + window.height, level.height)
    left = max(chunk.col0, window.col_off, 0)
    right = min(chunk.col0 + level.chunk_width, window.col_off + window.width, level.width)
    if top >= bottom or left >= right:
        return
    src = tile[top - chunk.row0 : bottom - chunk.row0, left - chunk.col0 : right - chunk.col0]
    dst_rows = slice(top - window.row_off, bottom - window.row_off)
    dst_cols = slice(left - window.col_off, right - window.col_off)
    for slot, band in enumerate(plan.bands):
        if chunk.plane == -1:
            out[slot, dst_rows, dst_cols] = src[:, :, band]
        elif chunk.plane == band:
            out[slot, dst_rows, dst_cols] = src[:, :, 0]


async def execute_plan(
    plan: ReadPlan,
    level: ImageLevel,
    *,
    backend: Backend,
    url: str,
    byteorder: ByteOrder,
    nodata: float | None = None,
    out: np.ndarray,
    stats: FetchStats | None = None,
    caches: ChunkCaches | None = None,
    version: ObjectInfo | None = None,
    validate: bool = False,
) -> np.ndarray:
    """Fill ``out`` with the plan's pixels; pixels no chunk covers keep their value.

    Ranges are requested concurrently within the loop's byte budget; as each range
    arrives its chunks are decoded in one job of the decode pool (one hand-off per
    range, not per chunk) straight into ``out``, and its bytes are released, so the
    memory of a read is ``out`` plus a fixed working set however large the window.
    Decoding stops at the last row the window needs in each chunk, unless ``caches``
    keep whole chunks for later reads.
    With ``caches``, chunks decoded earlier are pasted from memory, chunks stored on
    disk are decoded without a request, chunks another read is fetching are awaited,
    and only the rest is fetched (and stored).
    ``nodata`` (the file's) fills pixels a codec's own validity mask marks invalid.
    ``version`` is the object's recorded version: with ``validate`` every request
    must come from it (else ``ObjectChangedError``); it also names the bytes on disk,
    so a rebuilt collection never decodes a replaced object's cached bytes.
    """
    return await _PlanRun(plan, level, backend=backend, url=url, byteorder=byteorder,
                          nodata=nodata, out=out, stats=stats, caches=caches,
                          version=version, validate=validate).run()


class _PlanRun:
    """One execution of a read plan (see :func:`execute_plan`): the chunks it owns
    for the reads that wait on them, and the steps from ranges to pasted pixels."""

    def __init__(self, plan: ReadPlan, level: ImageLevel, *, backend: Backend, url: str,
                 byteorder: ByteOrder, nodata: float | None, out: np.ndarray,
                 stats: FetchStats | None, caches: ChunkCaches | None,
                 version: ObjectInfo | None, validate: bool) -> None:
        self.plan, self.level, self.out = plan, level, out
        self.backend, self.url, self.stats = backend, url, stats
        self.byteorder, self.nodata = byteorder, nodata
        self.loop = asyncio.get_running_loop()
        self.caches = caches
        self.memory = caches.memory if caches else None
        self.disk = caches.disk if caches else None
        # Whole chunks only pay off when memory keeps them for later reads.
        self.whole = caches is not None and self.memory is not None and caches.whole_chunks
        # Chunks this call decodes that other calls may be waiting for (and the reverse).
        self.in_flight = caches.in_flight(self.loop) if caches else None
        self.tag = f"{version.etag or ''}|{version.size or ''}" if version is not None else ""
        self.expected = version if validate else None
        self.owned: dict[ChunkKey, PendingChunk] = {}
        self.budget = in_flight_budget(self.loop)

    def key(self, chunk: ChunkRead) -> ChunkKey:
        """The caches' key of ``chunk``."""
        return chunk_key(self.url, self.level, chunk.index)

    def rows_to_decode(self, chunk: ChunkRead) -> int:
        """Rows of ``chunk`` to decode: all of them for the memory cache, else down to
        the last row the window needs."""
        return chunk.rows if self.whole else chunk.needed_rows

    def decode_all(self, pieces: list[tuple[ChunkRead, Any, int]]) -> list[Any]:
        """Decode and paste chunks (in a decode thread): a tile or the error, each."""
        results: list[Any] = []
        for chunk, data, rows in pieces:
            try:
                tile = decode_chunk(data, self.level, self.byteorder, chunk.rows, self.url,
                                    max_rows=rows, nodata=self.nodata)
            except Exception as exc:  # noqa: BLE001 - handed to the waiters, then raised
                results.append(exc)
                continue
            if self.memory is not None:
                self.memory.put(self.key(chunk), tile)
            paste_chunk(self.out, tile, chunk, self.plan, self.level)
            results.append(tile)
        return results

    async def decode(self, pieces: list[tuple[ChunkRead, Any]]) -> None:
        """Decode ``pieces`` in one job of the decode pool and settle their waiters."""
        jobs = []
        for chunk, data in pieces:
            pending = self.owned.get(self.key(chunk))
            rows = self.rows_to_decode(chunk)
            if pending is not None:
                pending.decoding = True  # from now on, joining reads get these rows
                rows = pending.rows
            jobs.append((chunk, data, rows))
        try:
            results = await self.loop.run_in_executor(decode_pool(), self.decode_all, jobs)
        except BaseException as exc:
            self.settle_all([chunk for chunk, _ in pieces], exc)
            raise
        for (chunk, _), result in zip(pieces, results):
            key = self.key(chunk)
            _settle(self.owned.pop(key, None), self.in_flight, key, result)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    def settle_all(self, chunks: list[ChunkRead], exc: BaseException) -> None:
        """Hand ``exc`` to the reads waiting on ``chunks``."""
        for chunk in chunks:
            key = self.key(chunk)
            _settle(self.owned.pop(key, None), self.in_flight, key, exc)

    async def wait_for(self, future: asyncio.Future[np.ndarray], chunk: ChunkRead) -> None:
        """Paste a chunk another read is decoding, once it has."""
        paste_chunk(self.out, await asyncio.shield(future), chunk, self.plan, self.level)

    async def fetch_and_decode(self, byte_range: ByteRange) -> None:
        """Fetch one range within the budget, decode its chunks, give the room back."""
        taken = 0
        try:
            taken = await self.budget.acquire(byte_range.end - byte_range.start)
            data = await fetch_range(self.backend, self.url, byte_range.start,
                                     byte_range.end, self.stats, version=self.expected)
        except BaseException as exc:
            self.settle_all(byte_range.chunks, exc)
            self.budget.release(taken)
            raise
        try:
            view = memoryview(data)
            pieces = []
            for chunk in byte_range.chunks:
                offset = chunk.start - byte_range.start
                pieces.append((chunk, view[offset : offset + chunk.length]))
            if self.disk is not None:
                for chunk, piece in pieces:
                    self.disk.put(self.key(chunk), piece, self.tag)
            await self.decode(pieces)
        finally:
            self.budget.release(taken)

    def from_caches(self, tasks: list[Any]) -> list[ByteRange]:
        """Paste the chunks memory holds, join the ones other reads are fetching, queue
        the decoding of those on disk (into ``tasks``); the ranges left to fetch."""
        assert self.in_flight is not None
        missing, stored = [], []
        for chunk in (c for r in self.plan.ranges for c in r.chunks):
            key = self.key(chunk)
            tile = (self.memory.get(key, chunk.needed_rows, whole_rows=chunk.rows)
                    if self.memory is not None else None)
            if tile is not None:
                paste_chunk(self.out, tile, chunk, self.plan, self.level)
                continue
            rows = self.rows_to_decode(chunk)
            pending = self.in_flight.get(key)
            if pending is not None and (not pending.decoding or pending.rows >= rows):
                pending.rows = max(pending.rows, rows)  # another read fetches it: share
                tasks.append(self.wait_for(pending.future, chunk))
                continue
            if pending is None:
                self.owned[key] = self.in_flight[key] = PendingChunk(
                    self.loop.create_future(), rows)
            data = self.disk.get(key, self.tag) if self.disk is not None else None
            if data is not None:
                stored.append((chunk, data))
            else:
                missing.append(chunk)
        if stored:
            tasks.append(self.decode(stored))
        return merge_ranges(missing, MERGE_GAP)

    async def run(self) -> np.ndarray:
        """Fill the output; raise the first failure once every task has finished."""
        tasks: list[Any] = []
        ranges = self.plan.ranges
        if self.caches is not None and self.in_flight is not None:
            ranges = self.from_caches(tasks)
        tasks.extend(self.fetch_and_decode(r) for r in ranges)
        # Let every task finish (so every chunk this call owns is settled for the reads
        # waiting on it) before raising the first failure.
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return self.out


def _settle(pending: PendingChunk | None, in_flight: dict[ChunkKey, PendingChunk] | None,
            key: ChunkKey,
            outcome: np.ndarray | BaseException) -> None:
    """Hand a decoded chunk (or its failure) to the reads waiting for it."""
    if pending is None:
        return
    if in_flight is not None and in_flight.get(key) is pending:
        del in_flight[key]
    future = pending.future
    if future.done():
        return
    if isinstance(outcome, asyncio.CancelledError):
        future.cancel()
    elif isinstance(outcome, BaseException):
        future.set_exception(outcome)
        future.exception()  # mark retrieved: the owner raises it too
    else:
        future.set_result(outcome)
