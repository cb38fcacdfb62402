"""Known byte chunks of a remote file, and the signal that more are needed.

The header parser never does I/O: it reads from a :class:`ByteSource` and, when a
value lies outside the bytes it has, records the range and raises
:class:`MissingBytes` once it has collected every missing range it can see, so the
caller fetches them all in one concurrent round trip and parses again.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12


class MissingBytes(Exception):
    """Control-flow signal from the parser: fetch these ``(start, end)`` ranges."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        super().__init__(f"{len(ranges)} byte ranges needed")
        self.ranges = ranges


@dataclass
class ByteSource:
    """A sparse view of a file: non-overlapping chunks of known bytes.

    Attributes:
        size: The file's total size when known (from a short read or the store).
    """

    size: int | None = None
    _starts: list[int] = field(default_factory=list)
    _chunks: list[bytes] = field(default_factory=list)

    def add(self, start: int, data: Buffer) -> None:
        """Record ``data`` as the bytes starting at ``start``."""
        index = bisect.bisect_left(self._starts, start)
        self._starts.insert(index, start)
        self._chunks.insert(index, bytes(data))

    def get(self, start: int, length: int) -> bytes | None:
        """Return ``length`` bytes at ``start``, or None when they are not known."""
        # Few chunks per file (the first read and one round of extras): a scan is enough.
        for chunk_start, chunk in zip(self._starts, self._chunks):
            if chunk_start <= start and start + length <= chunk_start + len(chunk):
                offset = start - chunk_start
                return chunk[offset : offset + length]
        return None
