"""Encoded tiles kept on local disk until the COG they belong to is assembled.

A spool is an anonymous temporary file (nothing is left behind, whatever happens),
or, for a run that must survive being killed, a journal folder::

    <journal>/run.json      what the run writes (grid, dtype, codec): a resume checks it
    <journal>/tiles.bin     the encoded tiles, appended
    <journal>/journal.bin   one fixed-size record per tile, appended after its bytes

A record is written only after its tile's bytes, so replaying the records of a killed
run finds every tile it finished, whole; a torn last record or tile is dropped.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from rasteret.errors import WriteConflictError

#: A tile not written yet.
MISSING = -1
#: A journal record: image, band, row, col, offset, length.
RECORD = struct.Struct("<6q")
RUN_FILE, TILES_FILE, JOURNAL_FILE = "run.json", "tiles.bin", "journal.bin"


def run_description(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``run.json`` of a journal folder (None when there is none)."""
    path = Path(folder) / RUN_FILE
    if not path.exists():
        return None
    description: dict[str, Any] = json.loads(path.read_text())
    return description


def replay(folder: str | os.PathLike[str], shapes: list[tuple[int, int, int]]
           ) -> tuple[list[np.ndarray], list[np.ndarray], int, int]:
    """The tiles a journal records: ``(offsets, lengths, records, tiles_end)``.

    ``records`` is the number of whole, valid records (the rest is torn) and
    ``tiles_end`` where their tiles end in ``tiles.bin``.
    """
    offsets = [np.full(shape, MISSING, np.int64) for shape in shapes]
    lengths = [np.zeros(shape, np.int64) for shape in shapes]
    folder = Path(folder)
    journal = folder / JOURNAL_FILE
    data = journal.read_bytes() if journal.exists() else b""
    size = (folder / TILES_FILE).stat().st_size if (folder / TILES_FILE).exists() else 0
    records = end = 0
    for image, band, row, col, offset, length in RECORD.iter_unpack(
            data[: len(data) // RECORD.size * RECORD.size]):
        if not (0 <= image < len(shapes) and offset >= 0 and length > 0
                and offset + length <= size
                and all(0 <= i < n for i, n in zip((band, row, col), shapes[image]))):
            break  # torn: this record and those after it do not count
        offsets[image][band, row, col] = offset
        lengths[image][band, row, col] = length
        records, end = records + 1, max(end, offset + length)
    return offsets, lengths, records, end


class TileSpool:
    """Encoded tiles of every image of a COG, in a temporary file or a journal.

    Memory holds only two numbers per tile (where its bytes are), never pixels.

    Args:
        shapes: Per image, its tile table's shape ``(bands, tiles_down, tiles_across)``.
        folder: Where an anonymous spool file lives (default: the system's temp folder).
        journal: A folder that keeps the tiles across runs instead (created if needed);
            the tiles it already holds count as written.
        run: What the run writes, kept in the journal; a journal holding another
            run's tiles is refused.

    Raises:
        WriteConflictError: ``journal`` holds the tiles of another run.
    """

    def __init__(self, shapes: list[tuple[int, int, int]],
                 folder: str | os.PathLike[str] | None = None, *,
                 journal: str | os.PathLike[str] | None = None,
                 run: Mapping[str, Any] | None = None) -> None:
        self.folder = folder
        self.journal = None if journal is None else Path(journal)
        self.lock = threading.Lock()
        self.records: IO[bytes] | None = None
        if self.journal is None:
            self.file: IO[bytes] = tempfile.TemporaryFile(dir=folder)
            self.offsets = [np.full(shape, MISSING, np.int64) for shape in shapes]
            self.lengths = [np.zeros(shape, np.int64) for shape in shapes]
            self.size = 0
            return
        self.journal.mkdir(parents=True, exist_ok=True)
        wanted = json.loads(json.dumps(dict(run or {})))
        found = run_description(self.journal)
        if found is not None and found != wanted:
            raise WriteConflictError(
                f"{self.journal} holds the tiles of another run ({found}); remove it or give "
                "another journal folder")
        if found is None:
            (self.journal / RUN_FILE).write_text(json.dumps(wanted))
        self.offsets, self.lengths, records, self.size = replay(self.journal, shapes)
        self.file = open(self.journal / TILES_FILE, "a+b")  # noqa: SIM115 - kept open
        self.file.truncate(self.size)
        self.records = open(self.journal / JOURNAL_FILE, "a+b")  # noqa: SIM115
        self.records.truncate(records * RECORD.size)

    def has(self, image: int, band: int, row: int, col: int) -> bool:
        """True when that tile was written."""
        return bool(self.offsets[image][band, row, col] != MISSING)

    def put(self, image: int, band: int, row: int, col: int, data: bytes) -> None:
        """Store one tile's encoded bytes (journaled after them)."""
        with self.lock:
            self.file.seek(self.size)
            self.file.write(data)
            if self.records is not None:
                self.file.flush()  # the bytes reach the OS before their record
                self.records.write(RECORD.pack(image, band, row, col, self.size, len(data)))
                self.records.flush()
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

    def close(self, *, keep: bool = True) -> None:
        """Close the files; a journal is kept (to resume) unless ``keep`` is False."""
        self.file.close()
        if self.records is not None:
            self.records.close()
        if self.journal is not None and not keep:
            for name in (RUN_FILE, TILES_FILE, JOURNAL_FILE):
                (self.journal / name).unlink(missing_ok=True)
            try:
                self.journal.rmdir()
            except OSError:
                pass  # the user's own files are in it too
