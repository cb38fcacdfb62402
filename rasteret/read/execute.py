"""Execute read plans: fetch every range at once, decode each chunk in the thread
pool as soon as its bytes arrive, and paste it into the output array."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from rasteret.io.backend import Backend
from rasteret.io.fetch import FetchStats, ObjectInfo, fetch_range
from rasteret.io.runtime import decode_pool
from rasteret.read.cache import ChunkCaches, ChunkKey, PendingChunk, chunk_key
from rasteret.read.plan import MERGE_GAP, ByteRange, ChunkRead, ReadPlan, merge_ranges
from rasteret.tiff.codecs import decode_chunk
from rasteret.tiff.header import ByteOrder, ImageLevel


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

    All ranges are requested concurrently; once they arrive, the read's chunks are
    decoded in one job of the decode pool (one hand-off per read, not per chunk: the
    many reads of a call keep every decode thread busy while others still transfer).
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
    loop = asyncio.get_running_loop()
    memory = caches.memory if caches else None
    disk = caches.disk if caches else None
    # Whole chunks only pay off when memory keeps them for later reads.
    whole = caches is not None and memory is not None and caches.whole_chunks
    # Chunks this call decodes that other calls may be waiting for (and the reverse).
    in_flight = caches.in_flight(loop) if caches else None
    tag = f"{version.etag or ''}|{version.size or ''}" if version is not None else ""
    expected = version if validate else None
    owned: dict[ChunkKey, PendingChunk] = {}

    def decode_all(pieces: list[tuple[ChunkRead, Any, int]]) -> list[Any]:
        """Decode and paste chunks (in a decode thread): a tile or the error, each."""
        results: list[Any] = []
        for chunk, data, rows in pieces:
            try:
                tile = decode_chunk(data, level, byteorder, chunk.rows, url, max_rows=rows,
                                    nodata=nodata)
            except Exception as exc:  # noqa: BLE001 - handed to the waiters, then raised
                results.append(exc)
                continue
            if memory is not None:
                memory.put(chunk_key(url, level, chunk.index), tile)
            paste_chunk(out, tile, chunk, plan, level)
            results.append(tile)
        return results

    def rows_to_decode(chunk: ChunkRead) -> int:
        return chunk.rows if whole else chunk.needed_rows

    async def decode(pieces: list[tuple[ChunkRead, Any]]) -> None:
        jobs = []
        for chunk, data in pieces:
            pending = owned.get(chunk_key(url, level, chunk.index))
            rows = rows_to_decode(chunk)
            if pending is not None:
                pending.decoding = True  # from now on, joining reads get these rows
                rows = pending.rows
            jobs.append((chunk, data, rows))
        try:
            results = await loop.run_in_executor(decode_pool(), decode_all, jobs)
        except BaseException as exc:
            settle_all([chunk for chunk, _ in pieces], exc)
            raise
        for (chunk, _), result in zip(pieces, results):
            key = chunk_key(url, level, chunk.index)
            _settle(owned.pop(key, None), in_flight, key, result)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    def settle_all(chunks: list[ChunkRead], exc: BaseException) -> None:
        for chunk in chunks:
            key = chunk_key(url, level, chunk.index)
            _settle(owned.pop(key, None), in_flight, key, exc)

    async def wait_for(future: asyncio.Future[np.ndarray], chunk: ChunkRead) -> None:
        paste_chunk(out, await asyncio.shield(future), chunk, plan, level)

    async def fetch_and_decode(ranges: list[ByteRange]) -> None:
        try:
            fetched = await asyncio.gather(*(
                fetch_range(backend, url, r.start, r.end, stats, version=expected)
                for r in ranges))
        except BaseException as exc:
            settle_all([c for r in ranges for c in r.chunks], exc)
            raise
        pieces = []
        for byte_range, data in zip(ranges, fetched):
            view = memoryview(data)
            for chunk in byte_range.chunks:
                offset = chunk.start - byte_range.start
                pieces.append((chunk, view[offset : offset + chunk.length]))
        if disk is not None:
            for chunk, piece in pieces:
                disk.put(chunk_key(url, level, chunk.index), piece, tag)
        await decode(pieces)

    ranges = plan.ranges
    tasks: list[Any] = []
    if caches is not None and in_flight is not None:
        missing, stored = [], []
        for chunk in (c for r in plan.ranges for c in r.chunks):
            key = chunk_key(url, level, chunk.index)
            tile = (memory.get(key, chunk.needed_rows, whole_rows=chunk.rows)
                    if memory is not None else None)
            if tile is not None:
                paste_chunk(out, tile, chunk, plan, level)
                continue
            rows = rows_to_decode(chunk)
            pending = in_flight.get(key)
            if pending is not None and (not pending.decoding or pending.rows >= rows):
                pending.rows = max(pending.rows, rows)  # another read fetches it: share
                tasks.append(wait_for(pending.future, chunk))
                continue
            if pending is None:
                owned[key] = in_flight[key] = PendingChunk(loop.create_future(), rows)
            data = disk.get(key, tag) if disk is not None else None
            if data is not None:
                stored.append((chunk, data))
            else:
                missing.append(chunk)
        if stored:
            tasks.append(decode(stored))
        ranges = merge_ranges(missing, MERGE_GAP)
    if ranges:
        tasks.append(fetch_and_decode(ranges))

    # Let every task finish (so every chunk this call owns is settled for the reads
    # waiting on it) before raising the first failure.
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return out


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
