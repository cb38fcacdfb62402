"""Collections on disk: the workspace, atomic writes, GeoParquet metadata.

A saved collection is a folder ``<workspace>/<name>/`` holding nothing but
``part-*.parquet`` files (GeoParquet 1.1), so any reader given the folder sees
exactly the scenes: ``geopandas.read_parquet(folder)``,
``pyarrow.parquet.read_table(folder)`` and DuckDB's ``read_parquet('folder/**')``.
DuckDB's recursive glob reads every file under the folder, hidden or ``_``-prefixed
ones too, so nothing else may live there. The build information (name, dataset,
bands, schema version) is in every part's footer under the ``rasteret`` key; the
failures (every asset that could not be indexed, with its reason) are in the footer
of ``part-00000.parquet`` under ``rasteret:failures``, as JSON rows.

Collections written before this layout (``collection.json`` and
``failures.parquet`` beside the parts) still load: their files are read instead of
the footers.

A folder is only ever published whole: builds write elsewhere and rename into
place, so a killed build never leaves a half-written collection.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rasteret.errors import ConfigurationError, CorruptCollectionError
from rasteret.schema import LIGHT_BAND_FIELDS, LIGHT_LEVEL_FIELDS, METADATA_KEY, SCHEMA_VERSION

#: Environment variable naming the default workspace.
WORKSPACE_ENV = "RASTERET_WORKSPACE"
#: The first part: always written (even for an empty table), so it marks a
#: collection folder and carries the failures.
FIRST_PART = "part-00000.parquet"
#: Footer key of the first part holding the failures as JSON rows.
FAILURES_KEY = b"rasteret:failures"
#: The files of the layout before the footers carried everything: still read.
LEGACY_MANIFEST = "collection.json"
LEGACY_FAILURES = "failures.parquet"
ROWS_PER_PART = 5000

#: One row per asset that could not be indexed.
FAILURE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("band", pa.string()),
        ("href", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
    ]
)

#: Tile tables are unique numbers: dictionary encoding only slows reading them down
#: (about 3x on a 100,000-row collection); zstd alone keeps files small. Row groups
#: of 1,000 scenes: a read of one scene's tile tables decodes (and a process caches)
#: one group of its band, a few MB, not a whole part.
ROWS_PER_GROUP = 1000
PARQUET_OPTIONS = {"compression": "zstd", "use_dictionary": False,
                   "row_group_size": ROWS_PER_GROUP}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def chosen_workspace(workspace: str | os.PathLike[str] | None = None) -> str | os.PathLike[str]:
    """The workspace asked for: the argument, ``$RASTERET_WORKSPACE``, or
    ``~/.rasteret/collections`` (a path or a URL, unchecked)."""
    return workspace or os.environ.get(WORKSPACE_ENV) or Path.home() / ".rasteret" / "collections"


def is_remote(location: str | os.PathLike[str] | None) -> bool:
    """Whether ``location`` is an object-store URL (``s3://``, ``az://``, ``gs://``,
    ``https://``...), not a local path or a ``file://`` URL."""
    return isinstance(location, str) and "://" in location and not location.startswith(
        "file://")


def local_path(location: str | os.PathLike[str]) -> Path:
    """The local path of a path or ``file://`` URL."""
    text = os.fspath(location)
    if isinstance(text, str) and text.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(text).path))
    return Path(text).expanduser()


def workspace_dir(workspace: str | os.PathLike[str] | None = None) -> Path:
    """The local folder collections live in: the argument (a path or ``file://`` URL),
    ``$RASTERET_WORKSPACE``, or ``~/.rasteret/collections``.

    Raises:
        ConfigurationError: The workspace is an object-store URL (see
            :func:`rasteret.workspace.open_workspace`).
    """
    chosen = chosen_workspace(workspace)
    if is_remote(chosen):
        raise ConfigurationError(
            f"workspace {chosen!r} is an object-store URL, not a local folder")
    path = local_path(chosen)
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_name(name: str) -> str:
    """Validate a collection name so it can never escape the workspace.

    Raises:
        ConfigurationError: The name is empty, too long, or has path characters.
    """
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ConfigurationError(
            f"invalid collection name {name!r}: use letters, digits, '.', '_' and '-' "
            "(up to 128 characters, starting with a letter or digit)"
        )
    return name


def _crs84() -> str:
    from pyproj import CRS

    return json.dumps(CRS("OGC:CRS84").to_json_dict())


_CRS84_PROJJSON = _crs84()


def crs84_projjson() -> dict[str, Any]:
    """OGC:CRS84 (the footprints' CRS) as PROJJSON, a fresh copy.

    Built once, the first time ``import rasteret`` runs, on the importing thread:
    DuckDB and others call the Arrow export from their own threads, and building a
    pyproj CRS there crashed the process (seen with pyproj on Python 3.11).
    """
    projjson: dict[str, Any] = json.loads(_CRS84_PROJJSON)
    return projjson


def geo_metadata(bbox_covering: bool = True) -> dict[str, Any]:
    """GeoParquet 1.1 ``geo`` metadata for the footprint column (WKB, CRS84)."""
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": ["Polygon", "MultiPolygon"],
        "crs": crs84_projjson(),
        "edges": "planar",
    }
    if bbox_covering:
        column["covering"] = {
            "bbox": {
                "xmin": ["bbox", "xmin"],
                "ymin": ["bbox", "ymin"],
                "xmax": ["bbox", "xmax"],
                "ymax": ["bbox", "ymax"],
            }
        }
    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}


def with_metadata(
    table: pa.Table, manifest: dict[str, Any], failures: pa.Table | None = None
) -> pa.Table:
    """Attach GeoParquet and rasteret metadata to ``table``'s schema.

    Args:
        table: The scenes.
        manifest: Build information (no secrets); the schema version is added.
        failures: Assets that could not be indexed, stored as JSON rows under
            :data:`FAILURES_KEY` (left out when None).
    """
    metadata = dict(table.schema.metadata or {})
    metadata.pop(FAILURES_KEY, None)
    metadata[b"geo"] = json.dumps(geo_metadata()).encode()
    metadata[METADATA_KEY] = json.dumps(
        {**manifest, "schema_version": SCHEMA_VERSION}, default=str
    ).encode()
    if failures is not None:
        metadata[FAILURES_KEY] = json.dumps(failures.to_pylist()).encode()
    return table.replace_schema_metadata(metadata)


def write_parts(
    table: pa.Table,
    folder: Path,
    manifest: dict[str, Any],
    failures: pa.Table | None = None,
) -> list[Path]:
    """Write ``table`` as a complete collection folder: ``part-*.parquet`` files of at
    most ROWS_PER_PART rows, each with the GeoParquet and rasteret metadata, the
    first one also with ``failures`` (none when None)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, part in enumerate(split_parts(table, manifest, failures)):
        path = folder / part_file(index)
        pq.write_table(part, path, **PARQUET_OPTIONS)
        paths.append(path)
    return paths


def part_file(index: int) -> str:
    """The file name of part ``index`` of a local collection folder."""
    return f"part-{index:05d}.parquet"


def split_parts(
    table: pa.Table, manifest: dict[str, Any], failures: pa.Table | None = None
) -> list[pa.Table]:
    """``table`` cut into the parts of a collection: at most ROWS_PER_PART rows each
    (one part, possibly empty, at least), each with the GeoParquet and rasteret
    metadata, the first one also with ``failures`` (none when None)."""
    failures = FAILURE_SCHEMA.empty_table() if failures is None else failures
    return [
        with_metadata(table.slice(start, ROWS_PER_PART), manifest,
                      failures if index == 0 else None)
        for index, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_PART))
    ]


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as the bytes of a Parquet file written with PARQUET_OPTIONS."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def publish(staging: Path, final: Path) -> None:
    """Atomically replace ``final`` with the fully written folder ``staging``.

    The old folder is renamed aside first and removed only after the new one is in
    place; :func:`resolve_existing` recovers it if the process dies in between.
    """
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_collection_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a saved collection (today's layout or the older one)."""
    return (folder / FIRST_PART).is_file() or (folder / LEGACY_MANIFEST).is_file()


def resolve_existing(final: Path) -> Path | None:
    """Return the folder holding the collection, recovering from an interrupted swap."""
    if is_collection_folder(final):
        return final
    for old in sorted(final.parent.glob(f".{final.name}.old-*")):
        if is_collection_folder(old):
            os.replace(old, final)
            return final
    return None


def staging_dir(final: Path) -> Path:
    """A fresh, private folder next to ``final`` to write a build into."""
    path = final.with_name(f".{final.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    path.mkdir(parents=True)
    return path


def manifest_from_metadata(metadata: dict[bytes, bytes] | None) -> dict[str, Any]:
    """The build information in a Parquet footer (empty when there is none).

    Raises:
        ValueError: The stored value is not a JSON object.
    """
    raw = (metadata or {}).get(METADATA_KEY)
    manifest = json.loads(raw) if raw else {}
    if not isinstance(manifest, dict):
        raise ValueError("its rasteret metadata is not a JSON object")
    return manifest


def failures_from_metadata(metadata: dict[bytes, bytes] | None) -> pa.Table:
    """The failures in a Parquet footer (an empty table when there are none).

    Raises:
        ValueError: The stored value is not a list of failure rows.
    """
    raw = (metadata or {}).get(FAILURES_KEY)
    rows = json.loads(raw) if raw else []
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError("its rasteret failures are not a JSON list of objects")
    return pa.Table.from_pylist(rows, schema=FAILURE_SCHEMA)


def read_folder_metadata(folder: Path) -> tuple[dict[str, Any], pa.Table]:
    """The manifest and failures of the collection folder ``folder``.

    Both come from the first part's footer, or from ``collection.json`` and
    ``failures.parquet`` in a folder of the older layout (plain JSON and Parquet:
    loading never executes code).

    Raises:
        ValueError: The metadata is not what a collection stores.
        OSError: A file cannot be read.
    """
    legacy = folder / LEGACY_MANIFEST
    if legacy.is_file():
        manifest = json.loads(legacy.read_text())
        if not isinstance(manifest, dict):
            raise ValueError(f"{LEGACY_MANIFEST} is not a JSON object")
        failures_path = folder / LEGACY_FAILURES
        failures = (
            pq.read_table(failures_path) if failures_path.is_file()
            else FAILURE_SCHEMA.empty_table()
        )
        return manifest, failures
    metadata = pq.read_schema(folder / FIRST_PART).metadata
    return manifest_from_metadata(metadata), failures_from_metadata(metadata)


#: Decoded row groups of heavy columns a process keeps (least recently used first out).
GROUP_CACHE_BYTES = 64 * 1024 * 1024


class PartsSource:
    """The Parquet parts of a saved collection, read column by column and row group by
    row group on demand.

    Local parts are opened memory-mapped (``pyarrow.memory_map``); object-store parts
    are held as the bytes read (still compressed). Only what a caller asks for is
    decoded: :meth:`read_light` gives the small columns of every row, :meth:`take`
    gives any columns of chosen rows by decoding only the row groups holding them, and
    the row groups of heavy columns used for reading pixels (:meth:`group_columns`)
    are kept in a small least-recently-used cache.

    Rows are numbered globally: part after part, in the order given.

    Args:
        files: The parts, in order: local paths, or ``pyarrow.Buffer`` s of their
            bytes.
    """

    def __init__(self, files: list[Path] | list[pa.Buffer]) -> None:
        import threading
        from collections import OrderedDict

        self.files = list(files)
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, tuple[str, ...]], pa.Table] = OrderedDict()
        self._cached_bytes = 0
        self._maps: dict[int, pa.MemoryMappedFile] = {}
        #: Row groups whose heavy columns were decoded so far, as ``(part, row
        #: group)`` pairs (diagnostics: what a subset or a read made this process open).
        self.groups_read: set[tuple[int, int]] = set()
        groups: list[tuple[int, int]] = []
        counts: list[int] = []
        self.schema: pa.Schema | None = None
        # One footer at a time: a part's footer describes every leaf column of every
        # row group (hundreds of KB), so only the row counts are kept.
        for part in range(len(self.files)):
            meta = self._open(part).metadata
            if part == 0:
                self.schema = strip_failures_schema(meta.schema.to_arrow_schema())
            for group in range(meta.num_row_groups):
                groups.append((part, group))
                counts.append(meta.row_group(group).num_rows)
            del meta
        self._groups = groups
        self._starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])

    @property
    def num_rows(self) -> int:
        """Rows in all parts."""
        return int(self._starts[-1])

    def _open(self, part: int) -> pq.ParquetFile:
        source = self.files[part]
        if isinstance(source, pa.Buffer):
            return pq.ParquetFile(pa.BufferReader(source))
        with self._lock:
            mapped = self._maps.get(part)
            if mapped is None:
                # Mapped once and kept: a rebuild that swaps the folder later leaves
                # this source reading the build it opened, never another one's rows.
                mapped = self._maps[part] = pa.memory_map(str(source))
        return pq.ParquetFile(mapped)

    def light_columns(self) -> list[str]:
        """The column paths :meth:`read_light` reads: every column that is not a band
        struct, and the light fields of each band struct."""
        from rasteret.schema import is_band_struct

        assert self.schema is not None
        columns: list[str] = []
        for field in self.schema:
            if not is_band_struct(field.type):
                columns.append(field.name)
                continue
            names = {f.name for f in field.type}
            columns += [f"{field.name}.{n}" for n in LIGHT_BAND_FIELDS if n in names]
            columns += [f"{field.name}.levels.list.element.{n}" for n in LIGHT_LEVEL_FIELDS]
        return columns

    def read_light(self) -> pa.Table:
        """The light columns (see :meth:`light_columns`) of every row, parts read in
        parallel threads."""
        from concurrent.futures import ThreadPoolExecutor

        columns = self.light_columns()

        def read(part: int) -> pa.Table:
            with self._damage_is_typed(part):
                return self._open(part).read(columns=columns, use_threads=False)

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            tables = list(pool.map(read, range(len(self.files))))
        table = pa.concat_tables(tables) if tables else pa.table({})
        return table.replace_schema_metadata(None)

    def group_of(self, rows: np.ndarray) -> np.ndarray:
        """The row group (numbered across parts) holding each global row."""
        groups: np.ndarray = np.searchsorted(self._starts, rows, side="right") - 1
        return groups

    def file_metadata(self) -> dict[bytes, bytes] | None:
        """The schema metadata of the first part (manifest and failures)."""
        metadata: dict[bytes, bytes] | None = self._open(0).schema_arrow.metadata
        return metadata

    def _read_group(self, group: int, columns: tuple[str, ...]) -> pa.Table:
        from rasteret.schema import upgrade_band_columns

        part, number = self._groups[group]
        self.groups_read.add((part, number))
        with self._damage_is_typed(part):
            table = self._open(part).read_row_group(number, columns=list(columns),
                                                    use_threads=False)
        return upgrade_band_columns(table.replace_schema_metadata(None))

    @contextlib.contextmanager
    def _damage_is_typed(self, part: int) -> Iterator[None]:
        """Turn Arrow's and Parquet's errors on reading ``part`` into
        :class:`CorruptCollectionError`: parts are decoded lazily, long after
        :func:`rasteret.load` checked their footers, so damage in a page shows here."""
        try:
            yield
        except (pa.ArrowException, OSError) as exc:
            source = self.files[part]
            where = str(source) if isinstance(source, Path) else f"part {part}"
            raise CorruptCollectionError(
                f"collection part {where!r} is damaged ({type(exc).__name__}: {exc}); "
                "rebuild the collection with force=True") from exc

    def group_columns(self, row: int, columns: Sequence[str]) -> tuple[pa.Table, int]:
        """``columns`` of the row group holding the global row ``row``, decoded once and
        kept in this process's cache, and the row's position in it.

        Raises:
            IndexError: ``row`` is out of range.
        """
        if not 0 <= row < self.num_rows:
            raise IndexError(f"row {row} out of range for {self.num_rows} rows")
        group = int(self.group_of(np.array([row]))[0])
        key = (group, tuple(columns))
        with self._lock:
            table = self._cache.get(key)
            if table is not None:
                self._cache.move_to_end(key)
        if table is None:
            table = self._read_group(group, key[1])
            with self._lock:
                if key not in self._cache:
                    self._cache[key] = table
                    self._cached_bytes += table.nbytes
                while self._cached_bytes > GROUP_CACHE_BYTES and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cached_bytes -= old.nbytes
        return table, row - int(self._starts[group])

    def take(self, rows: np.ndarray, columns: Sequence[str] | None = None) -> pa.Table:
        """``columns`` (default: all) of the global ``rows``, in that order, decoding
        only the row groups that hold them."""
        rows = np.asarray(rows, dtype=np.int64)
        names = tuple(columns) if columns is not None else tuple(
            f.name for f in (self.schema or pa.schema([])))
        if not len(rows):
            assert self.schema is not None
            empty = pa.table({n: pa.array([], self.schema.field(n).type) for n in names})
            from rasteret.schema import upgrade_band_columns

            return upgrade_band_columns(empty)
        groups = self.group_of(rows)
        pieces = []
        order = np.argsort(groups, kind="stable")
        sorted_groups = groups[order]
        bounds = np.flatnonzero(np.diff(sorted_groups)) + 1
        for chunk in np.split(order, bounds):
            group = int(groups[chunk[0]])
            table = self._read_group(group, names)
            local = rows[chunk] - self._starts[group]
            if len(local) == table.num_rows and np.array_equal(local, np.arange(len(local))):
                pieces.append(table)
            else:
                pieces.append(table.take(pa.array(local)))
        result = pa.concat_tables(pieces)
        if not np.array_equal(order, np.arange(len(order))):
            result = result.take(pa.array(np.argsort(order, kind="stable")))
        return result


def strip_failures_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` without the failures the first part's footer carries."""
    metadata = dict(schema.metadata or {})
    metadata.pop(FAILURES_KEY, None)
    return schema.with_metadata(metadata)
