"""Read plans: a pixel window -> the chunks it covers -> merged byte ranges.

A plan is pure arithmetic on a header's tile table: no I/O, so it can be tested on
its own and reused by every reader (single files, collections, TorchGeo chips).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rasteret.errors import ConfigurationError, CorruptTiffError
from rasteret.tiff.header import ImageLevel

# Merged ranges are capped so that one huge request does not serialise a read.
MAX_MERGED_RANGE = 16 * 1024 * 1024
#: Chunks closer than this are fetched in one request: GDAL COGs put a few bytes (tile
#: leaders, interleaved mask tiles) between image tiles, and a request costs far more
#: than a kilobyte of transfer.
MERGE_GAP = 1024


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels: ``col_off, row_off, width, height`` (may extend past the image)."""

    col_off: int
    row_off: int
    width: int
    height: int

    @classmethod
    def of(cls, window: Window | tuple[int, int, int, int] | None, level: ImageLevel) -> Window:
        """Coerce a tuple (or None, meaning the whole image) into a :class:`Window`."""
        if window is None:
            return cls(0, 0, level.width, level.height)
        if isinstance(window, Window):
            return window
        col_off, row_off, width, height = (int(v) for v in window)
        if width <= 0 or height <= 0:
            raise ConfigurationError(f"window {window} must have a positive width and height")
        return cls(col_off, row_off, width, height)


@dataclass(frozen=True)
class ChunkRead:
    """One tile or strip to decode and where its pixels go.

    Attributes:
        index: The chunk's index in the level's tile table.
        plane: The sample a planar chunk holds, or -1 for a chunky chunk (all samples).
        row0, col0: The chunk's top-left pixel in the level.
        rows: Rows the chunk holds (short for a file's last strip).
        start, length: The chunk's bytes in the file.
        needed_rows: Rows from the chunk's top down to the window's last row in it:
            decoding can stop there.
    """

    index: int
    plane: int
    row0: int
    col0: int
    rows: int
    start: int
    length: int
    needed_rows: int


@dataclass
class ByteRange:
    """A contiguous run of bytes fetched in one request, holding one or more chunks."""

    start: int
    end: int
    chunks: list[ChunkRead] = field(default_factory=list)


@dataclass
class ReadPlan:
    """Everything a window read needs: ranges to fetch and sparse chunks to skip."""

    window: Window
    bands: tuple[int, ...]
    ranges: list[ByteRange]
    sparse: list[ChunkRead]

    @property
    def nbytes(self) -> int:
        """Total bytes the plan fetches."""
        return sum(r.end - r.start for r in self.ranges)


def covering_chunks(
    level: ImageLevel, window: Window, bands: tuple[int, ...], file_size: int | None = None
) -> list[ChunkRead]:
    """Return the chunks of ``level`` that hold pixels of ``window`` for ``bands``.

    Raises:
        CorruptTiffError: A chunk lies outside the file.
    """
    col0 = max(window.col_off, 0)
    row0 = max(window.row_off, 0)
    col1 = min(window.col_off + window.width, level.width)
    row1 = min(window.row_off + window.height, level.height)
    if col0 >= col1 or row0 >= row1:
        return []
    cw, ch = level.chunk_width, level.chunk_height
    planes = sorted(set(bands)) if level.planar_config == 2 else [-1]
    chunks: list[ChunkRead] = []
    for plane in planes:
        base = level.chunks_per_plane * max(plane, 0)
        for ty in range(row0 // ch, (row1 - 1) // ch + 1):
            top = ty * ch
            rows = ch if level.tiled else min(ch, level.height - top)
            for tx in range(col0 // cw, (col1 - 1) // cw + 1):
                index = base + ty * level.chunks_across + tx
                start = int(level.offsets[index])
                length = int(level.byte_counts[index])
                if file_size is not None and length and start + length > file_size:
                    raise CorruptTiffError(
                        f"chunk {index} (bytes {start}-{start + length}) lies past the end "
                        f"of the file ({file_size} bytes)"
                    )
                needed = min(rows, row1 - top)
                chunks.append(ChunkRead(index, plane, top, tx * cw, rows, start, length, needed))
    return chunks


def merge_ranges(chunks: list[ChunkRead], gap: int = 0) -> list[ByteRange]:
    """Group chunks into byte ranges, merging chunks at most ``gap`` bytes apart."""
    ranges: list[ByteRange] = []
    for chunk in sorted((c for c in chunks if c.length), key=lambda c: c.start):
        end = chunk.start + chunk.length
        last = ranges[-1] if ranges else None
        if (
            last is not None
            and chunk.start <= last.end + gap
            and max(end, last.end) - last.start <= MAX_MERGED_RANGE
        ):
            last.end = max(last.end, end)
            last.chunks.append(chunk)
        else:
            ranges.append(ByteRange(chunk.start, end, [chunk]))
    return ranges


def plan_window(
    level: ImageLevel,
    window: Window,
    bands: tuple[int, ...],
    *,
    file_size: int | None = None,
    gap: int = MERGE_GAP,
) -> ReadPlan:
    """Plan the read of ``window`` (0-based ``bands``) from ``level``."""
    chunks = covering_chunks(level, window, bands, file_size)
    return ReadPlan(
        window=window,
        bands=bands,
        ranges=merge_ranges(chunks, gap),
        sparse=[c for c in chunks if not c.length],
    )
