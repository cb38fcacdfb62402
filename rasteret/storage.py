"""Collections on disk: the workspace, atomic writes, GeoParquet metadata.

A saved collection is a folder ``<workspace>/<name>/`` holding ``part-*.parquet``
files (GeoParquet 1.1), ``failures.parquet`` (every asset that could not be
indexed, with its reason) and ``collection.json`` (name, dataset, bands, schema
version). A folder is only ever published whole: builds write elsewhere and
rename into place, so a killed build never leaves a half-written collection.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rasteret.errors import ConfigurationError
from rasteret.schema import METADATA_KEY, SCHEMA_VERSION

#: Environment variable naming the default workspace.
WORKSPACE_ENV = "RASTERET_WORKSPACE"
MANIFEST = "collection.json"
FAILURES = "failures.parquet"
ROWS_PER_PART = 5000

#: Tile tables are unique numbers: dictionary encoding only slows reading them down
#: (about 3x on a 100,000-row collection); zstd alone keeps files small.
PARQUET_OPTIONS = {"compression": "zstd", "use_dictionary": False}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def workspace_dir(workspace: str | os.PathLike | None = None) -> Path:
    """The folder collections live in: the argument, ``$RASTERET_WORKSPACE``, or
    ``~/.rasteret/collections``."""
    chosen = workspace or os.environ.get(WORKSPACE_ENV) or Path.home() / ".rasteret" / "collections"
    path = Path(chosen).expanduser()
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


def collection_path(name: str, workspace: str | os.PathLike | None = None) -> Path:
    """Where the collection ``name`` lives in the workspace."""
    return workspace_dir(workspace) / check_name(name)


def geo_metadata(bbox_covering: bool = True) -> dict[str, Any]:
    """GeoParquet 1.1 ``geo`` metadata for the footprint column (WKB, CRS84)."""
    from pyproj import CRS

    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": ["Polygon", "MultiPolygon"],
        "crs": CRS("OGC:CRS84").to_json_dict(),
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


def with_metadata(table: pa.Table, manifest: dict[str, Any]) -> pa.Table:
    """Attach GeoParquet and rasteret metadata to ``table``'s schema."""
    metadata = dict(table.schema.metadata or {})
    metadata[b"geo"] = json.dumps(geo_metadata()).encode()
    metadata[METADATA_KEY] = json.dumps({**manifest, "schema_version": SCHEMA_VERSION}).encode()
    return table.replace_schema_metadata(metadata)


def write_parts(table: pa.Table, folder: Path, manifest: dict[str, Any]) -> list[Path]:
    """Write ``table`` as ``part-*.parquet`` files of at most ROWS_PER_PART rows."""
    folder.mkdir(parents=True, exist_ok=True)
    table = with_metadata(table, manifest)
    paths = []
    for index, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_PART)):
        path = folder / f"part-{index:05d}.parquet"
        pq.write_table(table.slice(start, ROWS_PER_PART), path, **PARQUET_OPTIONS)
        paths.append(path)
    return paths


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


def resolve_existing(final: Path) -> Path | None:
    """Return the folder holding the collection, recovering from an interrupted swap."""
    if (final / MANIFEST).exists():
        return final
    for old in sorted(final.parent.glob(f".{final.name}.old-*")):
        if (old / MANIFEST).exists():
            os.replace(old, final)
            return final
    return None


def staging_dir(final: Path) -> Path:
    """A fresh, private folder next to ``final`` to write a build into."""
    path = final.with_name(f".{final.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    path.mkdir(parents=True)
    return path


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``collection.json`` (after every part file, so its presence means complete)."""
    text = json.dumps({**manifest, "schema_version": SCHEMA_VERSION}, indent=2, default=str)
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, folder / MANIFEST)


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read ``collection.json`` (plain JSON: loading never executes code)."""
    return json.loads((folder / MANIFEST).read_text())
