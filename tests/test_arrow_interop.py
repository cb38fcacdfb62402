"""Arrow interop: a Collection as an Arrow stream (PyCapsule interface) read by
pyarrow, Polars, DuckDB and GeoPandas, and Collection.from_arrow back to pixels."""

from __future__ import annotations

import json
import pickle
import re
import textwrap
from pathlib import Path

import duckdb
import geopandas as gpd
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import shapely
from pyproj import CRS

import rasteret
from rasteret.errors import ConfigurationError, CorruptCollectionError
from rasteret.schema import BAND_TYPE, BASE_FIELDS
from testbed.scenes import write_scenes

BANDS = ["B04", "B08"]
DOCS = Path(__file__).parents[1] / "docs" / "collections.md"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Four small synthetic scenes, one of them under 20 % cloud cover."""
    return write_scenes(tmp_path_factory.mktemp("arrow-scenes"), count=4, size=512,
                        tile=256, shift=256)


@pytest.fixture(scope="module")
def hrefs(scenes, nginx_server):
    """The scenes copied under nginx's root; maps (scene, path) to its http URL."""
    return nginx_server.serve_scenes(scenes, "arrow-interop")


def build(scenes, hrefs, workspace, name="arrow"):
    rows = []
    for scene in scenes:
        row = {"id": scene.id, "datetime": scene.datetime, "eo:cloud_cover": scene.cloud_cover,
               "platform": "sentinel-2x"}
        row.update({band: hrefs(scene, scene.files[band]) for band in BANDS})
        rows.append(row)
    return rasteret.build_from_table(pa.Table.from_pylist(rows), name=name,
                                     href_columns=BANDS, workspace_dir=workspace,
                                     progress=False)


@pytest.fixture(scope="module")
def collection(scenes, hrefs, tmp_path_factory):
    built = build(scenes, hrefs, tmp_path_factory.mktemp("arrow-ws"))
    return rasteret.load(built.path)  # as users have it: loaded, with footer metadata


def stored_table(collection):
    return collection.table.replace_schema_metadata(None)


# -- out: the PyCapsule stream -------------------------------------------------------
def test_pyarrow_table_shares_buffers_and_tags_geometry_as_geoarrow_wkb(collection):
    table = pa.table(collection)
    assert table.equals(collection.table)  # same rows and types
    # No copy: the stream hands out the stored buffers.
    for name in ("id", "geometry", "B04"):
        ours, theirs = collection.table[name].chunk(0), table[name].chunk(0)
        assert [b.address for b in theirs.buffers() if b] == [
            b.address for b in ours.buffers() if b]
    field = table.schema.field("geometry")
    assert field.type == pa.binary()
    assert field.metadata[b"ARROW:extension:name"] == b"geoarrow.wkb"
    extension = json.loads(field.metadata[b"ARROW:extension:metadata"])
    assert extension["crs_type"] == "projjson"
    assert CRS.from_json_dict(extension["crs"]) == CRS("OGC:CRS84")
    assert json.loads(table.schema.metadata[b"rasteret"])["dataset_id"] is None
    assert json.loads(table.schema.metadata[b"rasteret"])["bands"] == BANDS
    assert b"geo" in table.schema.metadata
    # Only the other fields carry no metadata; the stored table keeps plain binary.
    assert all(f.metadata is None for f in table.schema if f.name != "geometry")
    assert collection.table.schema.field("geometry").metadata is None


def test_arrow_c_schema_is_the_stream_schema(collection):
    schema = pa.schema(collection)
    assert schema.equals(pa.table(collection).schema, check_metadata=True)
    assert schema.field("geometry").metadata[b"ARROW:extension:name"] == b"geoarrow.wkb"


def test_requested_schema_is_honoured(collection):
    wanted = pa.table(collection).schema
    wanted = wanted.set(wanted.get_field_index("id"), pa.field("id", pa.large_string()))
    reader = pa.RecordBatchReader.from_stream(collection, schema=wanted)
    assert reader.schema.field("id").type == pa.large_string()
    assert reader.read_all()["id"].to_pylist() == collection.table["id"].to_pylist()


def test_polars_dataframe_reads_the_collection(collection):
    frame = pl.DataFrame(collection)
    assert frame.shape == (len(collection), collection.table.num_columns)
    assert frame["id"].to_list() == collection.table["id"].to_pylist()
    assert frame["B04"].struct.field("href").to_list() == [
        r["href"] for r in collection.table["B04"].to_pylist()]
    assert frame["geometry"].dtype.ext_name() == "geoarrow.wkb"


def test_duckdb_replacement_scan_and_register(collection):
    scenes = collection  # noqa: F841 (DuckDB finds the Python variable by its name)
    rows = duckdb.sql(
        'SELECT id, typeof(geometry), ST_CRS(geometry), "B04".href FROM scenes ORDER BY id'
    ).fetchall()
    assert [r[0] for r in rows] == sorted(collection.table["id"].to_pylist())
    assert {r[1] for r in rows} == {"GEOMETRY('OGC:CRS84')"}
    assert {r[2] for r in rows} == {"OGC:CRS84"}
    assert all(r[3].endswith("/B04.tif") for r in rows)
    wkt = duckdb.sql("SELECT ST_AsText(geometry) FROM scenes ORDER BY id").fetchall()
    expected = sorted(zip(collection.table["id"].to_pylist(),
                          shapely.from_wkb(collection.table["geometry"].to_pylist()),
                          strict=True))
    for (text,), (_, geometry) in zip(wkt, expected, strict=True):
        assert shapely.from_wkt(text).equals_exact(geometry, 1e-12)

    con = duckdb.connect()
    con.register("catalogue", collection)
    assert con.sql("SELECT count(*) FROM catalogue").fetchall() == [(len(collection),)]
    # The registration scans the collection anew: a second query sees every row too.
    inside = con.sql("SELECT count(*) FROM catalogue WHERE bbox.xmin < 180").fetchall()
    assert inside == [(len(collection),)]


def test_geopandas_from_arrow_reads_geometry_with_its_crs(collection):
    frame = gpd.GeoDataFrame.from_arrow(collection)
    assert frame.crs == CRS("OGC:CRS84")
    assert frame.geometry.name == "geometry"
    expected = collection.to_geopandas()
    assert frame["id"].tolist() == expected["id"].tolist()
    assert all(a.equals_exact(b, 0) for a, b in zip(frame.geometry, expected.geometry,
                                                      strict=True))


def test_streaming_caches_nothing_on_the_collection(collection):
    before = len(pickle.dumps(collection))
    attributes = dict(vars(collection))
    pa.table(collection)
    pa.schema(collection)
    scenes = collection  # noqa: F841 (read by DuckDB's replacement scan)
    duckdb.sql("SELECT count(*) FROM scenes").fetchall()
    assert len(pickle.dumps(collection)) == before
    assert vars(collection).keys() == attributes.keys()


# -- back: Collection.from_arrow -----------------------------------------------------
def test_from_arrow_of_a_pyarrow_table_keeps_the_manifest(collection):
    back = rasteret.Collection.from_arrow(pa.table(collection))
    assert back.manifest == collection.manifest
    assert back.name == collection.name == "arrow"
    assert back.path is None
    assert back.table.equals(stored_table(collection))
    assert back.table.schema.field("geometry").metadata is None
    renamed = rasteret.Collection.from_arrow(pa.table(collection), name="other")
    assert renamed.name == "other"


def test_from_arrow_accepts_readers_batches_and_streams(collection):
    table = pa.table(collection)
    for data in (table.to_reader(), table.to_batches()[0], collection):
        back = rasteret.Collection.from_arrow(data)
        assert back.table.equals(stored_table(collection))
        assert back.manifest == collection.manifest


def test_from_arrow_restores_types_after_polars(collection):
    frame = pl.DataFrame(collection)
    exported = frame.to_arrow()  # large strings, large lists, string views
    assert exported.schema.field("B04").type != BAND_TYPE
    back = rasteret.Collection.from_arrow(frame, manifest=collection.manifest)
    assert back.table.equals(stored_table(collection))
    assert back.table.schema.equals(stored_table(collection).schema)


def test_duckdb_filter_from_arrow_reads_the_same_pixels(collection, scenes):
    scenes_table = collection  # noqa: F841 (read by DuckDB's replacement scan)
    clear = duckdb.sql(
        'SELECT * FROM scenes_table WHERE "eo:cloud_cover" < 20 ORDER BY datetime')
    subset = rasteret.Collection.from_arrow(clear, manifest=collection.manifest)
    expected_ids = [s.id for s in scenes if s.cloud_cover < 20]
    assert expected_ids and subset.table["id"].to_pylist() == expected_ids
    # DuckDB hands back Etc/UTC timestamps, geoarrow.wkb geometry, its own list
    # field names: all restored to the stored types.
    assert subset.table.schema.equals(stored_table(collection).schema)
    for field in BASE_FIELDS:
        assert subset.table.schema.field(field.name).type == field.type
    assert subset.table.schema.field("geometry").metadata is None
    assert subset.bands == BANDS and subset.dataset_id == collection.dataset_id
    rows = collection.table["id"].to_pylist()
    for index, scene_id in enumerate(expected_ids):
        original = rows.index(scene_id)
        assert subset.table.slice(index, 1).equals(
            stored_table(collection).slice(original, 1))
        for band in BANDS:
            np.testing.assert_array_equal(subset.cog(index, band).read(),
                                          collection.cog(original, band).read())
    import rasterio

    scene = next(s for s in scenes if s.id == expected_ids[0])
    with rasterio.open(scene.files["B04"]) as src:
        np.testing.assert_array_equal(subset.cog(0, "B04").read()[0], src.read(1))


def test_from_arrow_of_a_projection_keeps_only_the_bands_present(collection):
    scenes_table = collection  # noqa: F841 (read by DuckDB's replacement scan)
    picked = duckdb.sql(
        'SELECT id, datetime, geometry, bbox, collection, "proj:epsg", B08 FROM scenes_table')
    subset = rasteret.Collection.from_arrow(picked, manifest=collection.manifest)
    assert subset.bands == ["B08"] and subset.manifest["bands"] == ["B08"]
    assert collection.manifest["bands"] == BANDS  # the caller's manifest is not changed


def test_from_arrow_collection_exports_plain_geoparquet(collection, tmp_path):
    back = rasteret.Collection.from_arrow(pa.table(collection))
    path = back.export(tmp_path / "back.parquet")
    schema = pq.read_schema(path)
    assert schema.field("geometry").metadata is None
    assert json.loads(schema.metadata[b"geo"])["primary_column"] == "geometry"
    assert rasteret.load(path).table.equals(stored_table(collection))


@pytest.mark.parametrize("missing", [f.name for f in BASE_FIELDS])
def test_from_arrow_names_a_missing_column(collection, missing):
    table = pa.table(collection).drop_columns([missing])
    with pytest.raises(ConfigurationError, match=re.escape(repr(missing))):
        rasteret.Collection.from_arrow(table)


def test_from_arrow_refuses_bad_input(collection):
    table = pa.table(collection)
    with pytest.raises(ConfigurationError, match="no band column"):
        rasteret.Collection.from_arrow(table.drop_columns(BANDS))
    hrefs_only = table.set_column(table.schema.get_field_index("B04"), "B04",
                                  pc.struct_field(table["B04"], "href"))
    with pytest.raises(ConfigurationError, match="'B04'.*not a band struct"):
        rasteret.Collection.from_arrow(hrefs_only)
    with pytest.raises(ConfigurationError, match="needs Arrow data"):
        rasteret.Collection.from_arrow([{"id": "a"}])
    wkt = pa.array(shapely.to_wkt(shapely.from_wkb(table["geometry"].to_pylist())))
    with pytest.raises(ConfigurationError, match="WKB"):
        rasteret.Collection.from_arrow(
            table.set_column(table.schema.get_field_index("geometry"), "geometry", wkt))
    utm = pa.field("geometry", pa.binary(), metadata={
        b"ARROW:extension:name": b"geoarrow.wkb",
        b"ARROW:extension:metadata": json.dumps({"crs": CRS.from_epsg(32633).to_json_dict()}
                                                ).encode()})
    with pytest.raises(ConfigurationError, match="CRS84"):
        rasteret.Collection.from_arrow(
            table.set_column(table.schema.get_field_index("geometry"), utm, table["geometry"]))
    garbled = utm.with_metadata({b"ARROW:extension:name": b"geoarrow.wkb",
                                 b"ARROW:extension:metadata": b"{not json"})
    with pytest.raises(ConfigurationError, match="not a JSON object"):
        rasteret.Collection.from_arrow(
            table.set_column(table.schema.get_field_index("geometry"), garbled,
                             table["geometry"]))
    damaged = table.replace_schema_metadata({b"rasteret": b"[1, 2]"})
    with pytest.raises(CorruptCollectionError, match="not a JSON object"):
        rasteret.Collection.from_arrow(damaged)
    dates = table.set_column(table.schema.get_field_index("datetime"), "datetime",
                             pa.array(["not a date"] * table.num_rows))
    with pytest.raises(ConfigurationError, match="'datetime'"):
        rasteret.Collection.from_arrow(dates)


def test_from_arrow_accepts_epsg_4326_footprints_from_geopandas(collection):
    frame = collection.to_geopandas()  # EPSG:4326, longitude/latitude WKB
    arrow = pa.table(frame.to_arrow(geometry_encoding="WKB"))
    back = rasteret.Collection.from_arrow(arrow, manifest=collection.manifest)
    assert back.table["geometry"].to_pylist() == collection.table["geometry"].to_pylist()
    assert back.table["B04"].to_pylist() == collection.table["B04"].to_pylist()


# -- the guide's example, run ----------------------------------------------------------
def test_collections_guide_arrow_example_runs(scenes, hrefs, tmp_path, monkeypatch):
    section = DOCS.read_text().split("## Arrow, DuckDB, Polars and GeoPandas", 1)[1]
    code = textwrap.dedent(re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1))
    workspace = tmp_path / "workspace"
    build(scenes, hrefs, workspace, name="s2-bengaluru")
    monkeypatch.setenv("RASTERET_WORKSPACE", str(workspace))
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    assert namespace["footprints"].crs == CRS("OGC:CRS84")
    subset = namespace["subset"]
    assert subset.table["id"].to_pylist() == [s.id for s in scenes if s.cloud_cover < 20]
    assert namespace["pixels"].shape == (1, 512, 512)
