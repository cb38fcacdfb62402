"""Scene records: one scene, its footprint, properties and one unsigned href per band.

Every source (STAC API, static catalog, user table) becomes a list of
:class:`SceneRecord`; the indexer adds headers; :func:`records_to_table` turns the
result into the collection's Arrow table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import shapely
from shapely.geometry import box, shape

from rasteret.band import BandView, band_views, crs_of
from rasteret.redact import strip_query
from rasteret.schema import BAND_TYPE, BASE_FIELDS, BBOX_TYPE, with_band_metadata

# STAC properties that are not kept as scalar columns (they live elsewhere or are
# too nested to be useful as columns).
_SKIPPED_PROPERTIES = {"datetime", "proj:epsg", "proj:code"}


@dataclass(frozen=True)
class BandMetadata:
    """What the catalog says about one band's values (STAC ``raster:bands``).

    Reads use ``scale``/``offset`` and ``nodata`` only where the COG itself carries
    none (see :func:`rasteret.schema.band_scale_offset`).

    Attributes:
        scale: Multiply stored values by this to get physical values.
        offset: Then add this.
        nodata: The value that marks pixels without data.
        data_type: The STAC data type (``uint16``, ``float32``...).
        unit: The unit of the physical values.
    """

    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    data_type: str | None = None
    unit: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The metadata as a dict matching :data:`rasteret.schema.STAC_BAND_TYPE`."""
        return {"scale": self.scale, "offset": self.offset, "nodata": self.nodata,
                "data_type": self.data_type, "unit": self.unit}


@dataclass(frozen=True)
class BandSource:
    """Where one band of a scene lives: an unsigned href and, for multi-band assets,
    the 1-based sample to read, plus what the catalog says about its values."""

    href: str
    band_index: int = 1
    metadata: BandMetadata | None = None


@dataclass
class SceneRecord:
    """One scene before indexing."""

    id: str
    datetime: dt.datetime | None
    geometry: dict[str, Any] | None
    bbox: tuple[float, float, float, float] | None
    collection: str | None
    properties: dict[str, Any] = field(default_factory=dict)
    bands: dict[str, BandSource | None] = field(default_factory=dict)
    epsg: int | None = None


def epsg_of(properties: dict[str, Any]) -> int | None:
    """The EPSG code from ``proj:epsg`` or ``proj:code`` (``"EPSG:32633"``)."""
    code = properties.get("proj:epsg")
    if code is None and isinstance(properties.get("proj:code"), str):
        authority, _, number = properties["proj:code"].partition(":")
        if authority.upper() == "EPSG" and number.isdigit():
            code = int(number)
    return int(code) if code is not None else None


def unsigned(href: str) -> str:
    """Drop a query string that carries a signature or SAS token: collections store
    unsigned hrefs and credentials are added at read time."""
    lowered = href.lower()
    if "?" in href and any(k in lowered for k in ("sig=", "x-amz-signature", "se=", "token")):
        return strip_query(href)
    return href


def _scalar_properties(properties: dict[str, Any]) -> dict[str, Any]:
    kept = {}
    for key, value in properties.items():
        if key in _SKIPPED_PROPERTIES:
            continue
        if isinstance(value, (str, int, float, bool)) or value is None:
            kept[key] = value
        elif isinstance(value, (list, dict)):
            kept[key] = json.dumps(value)  # keep nested values queryable as JSON text
    return kept


def _property_column(values: list[Any]) -> pa.Array:
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {bool}:
        return pa.array(values, pa.bool_())
    if kinds <= {int}:
        return pa.array(values, pa.int64())
    if kinds <= {int, float}:
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def footprint_in_degrees(view: BandView | None) -> shapely.Polygon | None:
    """The footprint of a band's image in degrees (CRS84), or None without a view or
    georeferencing."""
    if view is None or not view.georeferenced:
        return None
    return view.footprint(crs_of(4326))


def records_to_table(
    records: list[SceneRecord], band_records: list[dict[str, dict[str, Any] | None]]
) -> pa.Table:
    """Build the collection table from scenes and their per-band header records.

    Args:
        records: The scenes.
        band_records: For each scene, band name -> header record (None: not indexed).
    """
    band_names: list[str] = []
    for bands in band_records:
        for name in bands:
            if name not in band_names:
                band_names.append(name)
    band_columns = {
        name: pa.array(
            [with_band_metadata(bands.get(name), _metadata(record.bands.get(name)))
             for record, bands in zip(records, band_records)],
            BAND_TYPE,
        )
        for name in band_names
    }
    ids = [r.id for r in records]
    views = [band_views(band_columns[name], band=name, ids=ids) for name in band_names]
    # Per scene, the views of its indexed bands in band order (the first one gives the
    # footprint when the source has none, and the CRS).
    scene_views = [[v[row] for v in views if v[row] is not None] for row in range(len(records))]
    geometries: list[bytes | None] = []
    bboxes: list[dict[str, float] | None] = []
    for record, indexed in zip(records, scene_views):
        if record.geometry:
            geom = shape(record.geometry)
        elif record.bbox:
            geom = box(*record.bbox)
        else:
            geom = footprint_in_degrees(indexed[0] if indexed else None)
        geometries.append(shapely.to_wkb(geom) if geom is not None else None)
        if geom is not None:
            minx, miny, maxx, maxy = geom.bounds
            bboxes.append({"xmin": minx, "ymin": miny, "xmax": maxx, "ymax": maxy})
        else:
            bboxes.append(None)
    epsgs = []
    for record, indexed in zip(records, scene_views):
        header_epsg = next((v.epsg for v in indexed if v is not None and v.epsg), None)
        epsgs.append(header_epsg or record.epsg)
    columns: dict[str, pa.Array] = {
        "id": pa.array([r.id for r in records], pa.string()),
        "datetime": pa.array([r.datetime for r in records], pa.timestamp("us", tz="UTC")),
        "geometry": pa.array(geometries, pa.binary()),
        "bbox": pa.array(bboxes, BBOX_TYPE),
        "collection": pa.array([r.collection for r in records], pa.string()),
        "proj:epsg": pa.array(epsgs, pa.int32()),
    }
    base = {f.name for f in BASE_FIELDS}
    properties = [_scalar_properties(r.properties) for r in records]
    property_names = sorted({k for p in properties for k in p} - base - set(band_names))
    for name in property_names:
        columns[name] = _property_column([p.get(name) for p in properties])
    columns.update(band_columns)
    return pa.table(columns)


def _metadata(source: BandSource | None) -> dict[str, Any] | None:
    """What the catalog says about a band's values, as a STAC band record (or None)."""
    return None if source is None or source.metadata is None else source.metadata.to_record()


def records_to_json(records: list[SceneRecord]) -> bytes:
    """``records`` as JSON lines, one scene per line, for a distributed build's task
    area (plain data: workers never unpickle what is on shared storage).

    Properties are reduced to what :func:`records_to_table` keeps (scalars, nested
    values as JSON text), so the table built from the decoded records is the same.
    """
    lines = []
    for record in records:
        # asdict turns the band sources and their metadata into plain dicts.
        row = dataclasses.asdict(dataclasses.replace(record, properties={}))
        row["datetime"] = record.datetime.isoformat() if record.datetime else None
        row["properties"] = _scalar_properties(record.properties)
        lines.append(json.dumps(row))
    return "\n".join(lines).encode()


def records_from_json(data: bytes) -> list[SceneRecord]:
    """The scenes written by :func:`records_to_json`."""
    records = []
    for line in data.decode().splitlines():
        row = json.loads(line)
        bands = {name: None if source is None else BandSource(**{
            **source, "metadata": source["metadata"] and BandMetadata(**source["metadata"])})
            for name, source in row["bands"].items()}
        when = row["datetime"]
        records.append(SceneRecord(**{
            **row, "bands": bands, "bbox": tuple(row["bbox"]) if row["bbox"] else None,
            "datetime": dt.datetime.fromisoformat(when) if when else None}))
    return records
