"""Where a collection's scenes are held: a table in memory, or the parts of a saved
collection read lazily, behind one Protocol (:class:`SceneStore`).

A :class:`~rasteret.collection.Collection` keeps one store and asks it for rows,
columns and band views without knowing which kind it holds:

- :class:`TableStore` wraps an Arrow table (a collection built or filtered in
  memory); it pickles as its table.
- :class:`PartsStore` reads chosen rows of a saved collection's files
  (:class:`~rasteret.storage.PartsSource`): it keeps only the light columns in
  memory, decodes tile tables per row group when a read needs them, and pickles as
  where the files are (:class:`~rasteret.reopen.Origin`) plus its row numbers, a
  few kilobytes at any size.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from rasteret.band import BandView, band_views
from rasteret.reopen import Origin, open_source
from rasteret.storage import PartsSource

#: The build a collection's files held when loaded: manifest ``created``, rows.
Built = tuple[str | None, int]


class SceneStore(Protocol):
    """The scenes of a collection, however they are held.

    Rows are numbered ``0 .. num_rows - 1`` in the collection's order; every method
    taking rows takes those numbers. Stores pickle small where they can: a store of
    files pickles as where they are and its rows, not as its columns.
    """

    @property
    def num_rows(self) -> int:
        """How many scenes the store holds."""
        ...

    @property
    def schema(self) -> pa.Schema:
        """The schema of every column (band structs with their tile tables)."""
        ...

    @property
    def lazy(self) -> bool:
        """Whether the scenes are read lazily from files rather than held in memory."""
        ...

    @property
    def decoded(self) -> bool:
        """Whether every column of every row is in memory (:meth:`table` is free)."""
        ...

    @property
    def parts(self) -> PartsSource | None:
        """The files the store reads (opened again after unpickling), or None for a
        store held in memory."""
        ...

    def frame(self) -> pa.Table:
        """The columns filters and indexing use, in memory: every column but the
        bands' tile tables and masks (or simply every column)."""
        ...

    def table(self) -> pa.Table:
        """Every column of every row, decoded once and kept."""
        ...

    def take(self, rows: np.ndarray) -> pa.Table:
        """Every column of ``rows``, in that order."""
        ...

    def select(self, rows: np.ndarray) -> SceneStore:
        """A store of ``rows`` only, in that order (of the same kind)."""
        ...

    def band_views(self, band: str, rows: Sequence[int] | np.ndarray | None
                   ) -> list[BandView | None]:
        """Views of ``band`` of ``rows`` (default: all), in that order; None where the
        band was not indexed. The views report the store's row numbers.

        Raises:
            IndexError: A row is out of range.
        """
        ...


def _row_array(rows: Sequence[int] | np.ndarray) -> pa.Array:
    return pa.array(np.asarray(rows, dtype=np.int64).reshape(-1), pa.int64())


def _is_every_row(rows: np.ndarray, count: int) -> bool:
    return len(rows) == count and bool(np.array_equal(rows, np.arange(count)))


class TableStore:
    """Scenes held as one Arrow table in memory (every column decoded).

    Args:
        table: The scenes, band columns of today's type
            (see :func:`rasteret.schema.upgrade_band_columns`).
    """

    lazy = False
    decoded = True
    parts = None

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    @property
    def num_rows(self) -> int:
        """How many scenes the table holds."""
        return int(self._table.num_rows)

    @property
    def schema(self) -> pa.Schema:
        """The table's schema."""
        return self._table.schema

    def frame(self) -> pa.Table:
        """The table (every column is in memory already)."""
        return self._table

    def table(self) -> pa.Table:
        """The table."""
        return self._table

    def take(self, rows: np.ndarray) -> pa.Table:
        """The table's ``rows``, in that order."""
        return self._table.take(_row_array(rows))

    def select(self, rows: np.ndarray) -> TableStore:
        """A store of the table's ``rows`` (the same table when that is every row)."""
        if _is_every_row(np.asarray(rows), self.num_rows):
            return TableStore(self._table)
        return TableStore(self.take(rows))

    def band_views(self, band: str, rows: Sequence[int] | np.ndarray | None
                   ) -> list[BandView | None]:
        """Views of ``band`` of ``rows`` (default: all), read from the table's column."""
        ids_column = self._table["id"]
        ids = (ids_column.to_pylist() if rows is None
               else ids_column.take(_row_array(rows)).to_pylist())
        return band_views(self._table[band], band=band, ids=ids, rows=rows)


class PartsStore:
    """Chosen rows of a saved collection's files, read lazily.

    Only the light columns of its rows are kept in memory (read on first use, see
    :meth:`PartsSource.light_columns`); tile tables are decoded per row group when a
    view needs them, and :meth:`table` decodes every column of its rows on first use.

    Args:
        source: The files, opened.
        rows: The rows of ``source`` the store holds, in order (default: all).
        origin: How another process opens the files again; None when it cannot
            (the store then pickles as a :class:`TableStore` of its rows).
        built: The build the files held when loaded: a process that opens them again
            refuses another one (:class:`~rasteret.errors.CollectionChangedError`).
        light: The light columns of ``rows``, if already read.
        table: Every column of ``rows``, if already decoded.
    """

    lazy = True

    def __init__(self, source: PartsSource | None, rows: np.ndarray | None = None, *,
                 origin: Origin | None, built: Built | None,
                 light: pa.Table | None = None, table: pa.Table | None = None) -> None:
        if source is None and origin is None:
            raise ValueError("a store of parts needs its files or where they are")
        self._source = source
        self._origin = origin
        self._built = built
        if rows is None:
            assert source is not None
            rows = np.arange(source.num_rows, dtype=np.int64)
        self._rows = np.asarray(rows, dtype=np.int64)
        self._light = light
        self._table = table

    # -- pickling: where the files are and the rows, as zlib-packed steps --------------
    def __reduce__(self) -> tuple[Any, ...]:
        if self._origin is None:  # nothing to open the files again from: the rows travel
            return TableStore, (self.table(),)
        # A few bytes per run of consecutive rows: millions of scenes pickle to kilobytes.
        steps = np.diff(self._rows, prepend=np.int64(0)).astype("<i8")
        return _reopened_store, (self._origin, self._built, zlib.compress(steps.tobytes(), 6))

    @property
    def num_rows(self) -> int:
        """How many rows of the files the store holds."""
        return len(self._rows)

    @property
    def rows(self) -> np.ndarray:
        """The store's rows as row numbers of its files."""
        return self._rows

    @property
    def origin(self) -> Origin | None:
        """Where the files are, for another process."""
        return self._origin

    @property
    def parts(self) -> PartsSource:
        """The files, opened again in this process after unpickling (once per process
        and build, see :func:`rasteret.reopen.open_source`)."""
        if self._source is None:
            assert self._origin is not None  # checked when made
            self._source = open_source(self._origin, self._built)
        return self._source

    @property
    def schema(self) -> pa.Schema:
        """The files' schema."""
        schema = self.parts.schema
        assert schema is not None  # a source always has a first part
        return schema

    @property
    def decoded(self) -> bool:
        """Whether :meth:`table` was decoded already."""
        return self._table is not None

    def frame(self) -> pa.Table:
        """The light columns of the store's rows (read from every part once), or the
        table once decoded."""
        if self._table is not None:
            return self._table
        if self._light is None:
            light = self.parts.read_light()
            if not _is_every_row(self._rows, light.num_rows):
                light = light.take(pa.array(self._rows))
            self._light = light
        return self._light

    def table(self) -> pa.Table:
        """Every column of the store's rows, decoded from the row groups holding them
        on first use."""
        if self._table is None:
            self._table = self.parts.take(self._rows)
        return self._table

    def take(self, rows: np.ndarray) -> pa.Table:
        """Every column of ``rows``, decoding only the row groups holding them."""
        if self._table is not None:
            return self._table.take(_row_array(rows))
        return self.parts.take(self._rows[np.asarray(rows, dtype=np.int64)])

    def select(self, rows: np.ndarray) -> PartsStore:
        """A store of ``rows``: the same files, their light columns (and table) taken
        when in memory, nothing decoded."""
        rows = np.asarray(rows, dtype=np.int64)
        picked = _row_array(rows)
        return PartsStore(
            self._source, self._rows[rows], origin=self._origin, built=self._built,
            light=None if self._light is None else self._light.take(picked),
            table=None if self._table is None else self._table.take(picked))

    def band_views(self, band: str, rows: Sequence[int] | np.ndarray | None
                   ) -> list[BandView | None]:
        """Views of ``band`` of ``rows`` (default: all): each row group holding a
        requested row is decoded once (and kept in the source's cache)."""
        count = len(self._rows)
        wanted = (np.arange(count, dtype=np.int64) if rows is None
                  else np.asarray(rows, dtype=np.int64).reshape(-1))
        if len(wanted) and (int(np.min(wanted)) < 0 or int(np.max(wanted)) >= count):
            raise IndexError(f"rows out of range for a collection of {count} rows")
        return self._views(band, self._rows[wanted], numbers=wanted)

    def _views(self, band: str, global_rows: np.ndarray, numbers: np.ndarray
               ) -> list[BandView | None]:
        """Views of ``band`` of the files' ``global_rows``, reported as the rows
        ``numbers`` (ids read with the band from the same row groups)."""
        source = self.parts
        views: list[BandView | None] = [None] * len(global_rows)
        if not len(global_rows):
            return views
        groups = source.group_of(global_rows)
        order = np.argsort(groups, kind="stable")
        splits = np.flatnonzero(np.diff(groups[order])) + 1
        for positions in np.split(order, splits):
            table, first = source.group_columns(int(global_rows[positions[0]]), ("id", band))
            local = global_rows[positions] - (int(global_rows[positions[0]]) - first)
            # A copy of the requested rows: views must not keep the whole row group
            # alive after the source's cache dropped it.
            rows_of = table.take(pa.array(local))
            built = band_views(rows_of[band], band=band, ids=rows_of["id"].to_pylist(),
                               numbers=numbers[positions])
            for position, view in zip(positions, built, strict=True):
                views[int(position)] = view
        return views


def _reopened_store(origin: Origin, built: Built | None, packed: bytes) -> PartsStore:
    """A :class:`PartsStore` unpickled: its files are opened on first use."""
    rows = np.cumsum(np.frombuffer(zlib.decompress(packed), "<i8"))
    return PartsStore(None, rows, origin=origin, built=built)
