"""Execute read plans: fetch every range at once, decode each chunk in the thread
pool as soon as its bytes arrive, and paste it into the output array."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from rasteret.io.backend import Backend
from rasteret.io.fetch import FetchStats, fetch_range
from rasteret.io.runtime import decode_pool
from rasteret.read.cache import ChunkCaches, chunk_key
from rasteret.read.plan import MERGE_GAP, ChunkRead, ReadPlan, merge_ranges
from rasteret.tiff.codecs import decode_chunk
from rasteret.tiff.header import ImageLevel


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
    byteorder: str,
    out: np.ndarray,
    stats: FetchStats | None = None,
    caches: ChunkCaches | None = None,
    etag: str | None = None,
) -> np.ndarray:
    """Fill ``out`` with the plan's pixels; pixels no chunk covers keep their value.

    All ranges are requested concurrently; each chunk is decoded in the decode pool
    as soon as its range arrives, so decoding overlaps the remaining transfers.
    With ``caches``, chunks decoded earlier are pasted from memory, chunks stored on
    disk are decoded without a request, and only the rest is fetched (and stored).
    """
    loop = asyncio.get_running_loop()
    pool = decode_pool()
    memory = caches.memory if caches else None
    disk = caches.disk if caches else None

    def decode_and_paste(data: Any, chunk: ChunkRead) -> None:
        tile = decode_chunk(data, level, byteorder, chunk.rows, url)
        if memory is not None:
            memory.put(chunk_key(url, level, chunk.index), tile)
        paste_chunk(out, tile, chunk, plan, level)

    ranges = plan.ranges
    pending: list[Any] = []
    if caches is not None:
        missing = []
        for chunk in (c for r in plan.ranges for c in r.chunks):
            key = chunk_key(url, level, chunk.index)
            tile = memory.get(key) if memory is not None else None
            if tile is not None:
                paste_chunk(out, tile, chunk, plan, level)
                continue
            stored = disk.get(key) if disk is not None else None
            if stored is not None:
                pending.append(loop.run_in_executor(pool, decode_and_paste, stored, chunk))
                continue
            missing.append(chunk)
        ranges = merge_ranges(missing, MERGE_GAP)

    async def one_range(byte_range) -> None:
        data = memoryview(await fetch_range(backend, url, byte_range.start, byte_range.end, stats,
                                            etag=etag))
        if disk is not None:
            for c in byte_range.chunks:
                offset = c.start - byte_range.start
                disk.put(chunk_key(url, level, c.index), data[offset : offset + c.length])
        await asyncio.gather(
            *(
                loop.run_in_executor(
                    pool,
                    decode_and_paste,
                    data[c.start - byte_range.start : c.start - byte_range.start + c.length],
                    c,
                )
                for c in byte_range.chunks
            )
        )

    await asyncio.gather(*pending, *(one_range(r) for r in ranges))
    return out
