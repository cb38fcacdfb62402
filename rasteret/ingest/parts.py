"""The parts of a build's collection: the batches of its tasks, their schemas merged,
cut into parts of at most :data:`rasteret.storage.ROWS_PER_PART` rows and written
into a workspace draft by part tasks (:func:`write_part`, run on the build's
executor).

Part ``i`` holds rows ``i * ROWS_PER_PART`` up to the next part of the batches in the
tasks' order (the source's order), sorted by time and id: the same parts for any
executor and any ``batch_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rasteret.errors import CollectionConflictError, ConfigurationError
from rasteret.ingest.tasks import batch_name, check_process
from rasteret.storage import with_metadata
from rasteret.workspace import Draft, TaskArea

_NUMBERS = {pa.int64(), pa.float64()}
_SCALARS = {pa.bool_(), pa.int64(), pa.float64(), pa.string()}


def _merged_type(name: str, current: pa.DataType, other: pa.DataType) -> pa.DataType:
    """The type of column ``name`` over two batches, as one table of all the scenes
    would type the values of both (ints and floats: float; other mixed scalars: text)."""
    if current == other or pa.types.is_null(other):
        return current
    if pa.types.is_null(current):
        return other
    if {current, other} <= _NUMBERS:
        return pa.float64()
    if {current, other} <= _SCALARS:
        return pa.string()
    raise ConfigurationError(
        f"column {name!r} has type {current} in some scenes and {other} in others")


def merge_schemas(current: pa.Schema | None, other: pa.Schema) -> pa.Schema:
    """``current`` widened by the columns and types of ``other`` (columns in order of
    first appearance, as concatenating the batches gives)."""
    if current is None:
        return other
    fields = {field.name: field for field in current}
    for field in other:
        if field.name in fields:
            merged = _merged_type(field.name, fields[field.name].type, field.type)
            fields[field.name] = fields[field.name].with_type(merged)
        else:
            fields[field.name] = field
    return pa.schema(list(fields.values()))


def final_schema(schema: pa.Schema) -> pa.Schema:
    """Columns without a value in any batch are booleans, as one table of all the
    scenes would type them."""
    return pa.schema([field.with_type(pa.bool_()) if pa.types.is_null(field.type) else field
                      for field in schema])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly the columns and types of ``schema`` (absent: nulls)."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            if column.type != field.type:
                column = (pa.nulls(len(column), field.type) if pa.types.is_null(column.type)
                          else pc.cast(column, field.type))
            columns.append(column)
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.table(columns, schema=schema.remove_metadata())


@dataclass(frozen=True)
class BatchSlice:
    """Rows of one task's batch that go into a part.

    Attributes:
        key: The task's key (its batch is ``batch_name(key)`` in the task area).
        start: The first row.
        rows: The number of rows.
    """

    key: str
    start: int
    rows: int


def plan_parts(batches: list[tuple[str, int]], rows_per_part: int) -> list[list[BatchSlice]]:
    """Cut the batches ``(key, rows)``, in order, into parts of ``rows_per_part`` rows
    (the last one shorter; empty batches are left out)."""
    parts: list[list[BatchSlice]] = []
    room = 0
    for key, count in batches:
        start = 0
        while start < count:
            if not room:
                parts.append([])
                room = rows_per_part
            taken = min(room, count - start)
            parts[-1].append(BatchSlice(key, start, taken))
            start += taken
            room -= taken
    return parts


def write_part(draft: Draft, part: tuple[int, list[BatchSlice]], *, area: TaskArea,
               schema: pa.Schema, manifest: dict[str, Any],
               failures: pa.Table) -> list[dict[str, Any]]:
    """Write part ``index`` of ``draft`` from the batch slices ``slices`` (``part`` is
    ``(index, slices)``; runs on a worker): conformed to ``schema``, sorted by time
    and id, with the collection's metadata (part 0 also with ``failures``).

    Returns:
        The part's entry (path, rows, size), in a list.

    Raises:
        ForkAfterIOError: The worker was forked after its parent did I/O.
        CollectionConflictError: A batch is gone: another build of the same
            collection finished and removed it.
    """
    check_process()
    index, slices = part
    # The unsorted rows are dropped once sorted: a part is held once while written.
    table = pa.concat_tables([_read_slice(area, piece, schema, manifest) for piece in slices])
    table = table.sort_by([("datetime", "ascending"), ("id", "ascending")])
    return draft.write_parts({index: with_metadata(table, manifest,
                                                   failures if index == 0 else None)})


def _read_slice(area: TaskArea, piece: BatchSlice, schema: pa.Schema,
                manifest: dict[str, Any]) -> pa.Table:
    """The rows ``piece`` of a batch in ``area``, conformed to ``schema``."""
    data = area.get(batch_name(piece.key))
    if data is None:
        raise CollectionConflictError(
            f"batch {piece.key} of this build is gone from its task area: another "
            f"build of collection {manifest.get('name')!r} finished and removed it; "
            "load that collection, or run this build again")
    return _conform(pq.read_table(pa.BufferReader(data)).slice(piece.start, piece.rows), schema)
