"""A saved collection folder is a plain GeoParquet dataset (GeoPandas, pyarrow and
DuckDB read exactly its scenes), older folders still load, and ``load`` resolves a
bare name in the workspace, never in the current directory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rasteret
import rasteret.storage
from rasteret.errors import CollectionNotFoundError, ConfigurationError
from rasteret.schema import SCHEMA_VERSION
from rasteret.storage import FAILURE_SCHEMA, FAILURES_KEY, with_metadata
from testbed.scenes import write_scenes


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Five small single-band scenes on disk."""
    root = tmp_path_factory.mktemp("folder-scenes")
    return write_scenes(root, count=5, size=256, tile=128, bands=("B04",), label=False)


def rows_of(scenes, missing=None):
    rows = [{"id": s.id, "datetime": s.datetime, "B04": str(s.files["B04"])} for s in scenes]
    if missing is not None:
        rows.append({"id": "missing", "datetime": scenes[0].datetime, "B04": str(missing)})
    return pa.Table.from_pylist(rows)


def build(scenes, workspace, name, missing=None):
    # A missing asset is left out with a warning saying so.
    left_out = (pytest.warns(UserWarning, match="could not be indexed") if missing is not None
                else contextlib.nullcontext())
    with left_out:
        return rasteret.build_from_table(
            rows_of(scenes, missing), name=name, href_columns=["B04"],
            workspace_dir=workspace, progress=False, on_error="skip",
        )


@pytest.fixture()
def saved(scenes, tmp_path, monkeypatch):
    """A collection of 5 scenes in 3 parts (2 rows each) with one failure."""
    monkeypatch.setattr(rasteret.storage, "ROWS_PER_PART", 2)
    collection = build(scenes, tmp_path / "ws", "s2", missing=tmp_path / "nope.tif")
    assert len(collection) == 5 and collection.failures.num_rows == 1
    return collection


def test_folder_holds_only_the_scene_parts_each_with_geoparquet_metadata(saved):
    names = sorted(p.name for p in saved.path.iterdir())
    assert names == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for name in names:
        metadata = pq.read_schema(saved.path / name).metadata
        geo = json.loads(metadata[b"geo"])
        assert geo["primary_column"] == "geometry"
        assert geo["columns"]["geometry"]["crs"]["id"] == {"authority": "OGC", "code": "CRS84"}
        assert json.loads(metadata[b"rasteret"])["name"] == "s2"


def test_geopandas_reads_the_folder_as_geometry_with_its_crs(saved):
    geopandas = pytest.importorskip("geopandas")
    frame = geopandas.read_parquet(saved.path)
    assert isinstance(frame, geopandas.GeoDataFrame)
    assert frame.geometry.name == "geometry" and frame.crs == "OGC:CRS84"
    assert sorted(frame["id"]) == sorted(saved.table["id"].to_pylist())
    assert frame.geometry.is_valid.all() and not frame.geometry.is_empty.any()


def test_pyarrow_reads_the_folder_as_the_scenes(saved):
    table = pq.read_table(saved.path)
    assert table.num_rows == 5
    assert sorted(table["id"].to_pylist()) == sorted(saved.table["id"].to_pylist())
    assert json.loads(table.schema.metadata[b"geo"])["primary_column"] == "geometry"


def test_duckdb_reads_the_folder_recursively_as_the_scenes(saved):
    duckdb = pytest.importorskip("duckdb")
    for pattern in ("**", "*", "*.parquet"):
        rows = duckdb.sql(
            f"SELECT id, \"B04\".href FROM read_parquet('{saved.path}/{pattern}') ORDER BY id"
        ).fetchall()
        assert [r[0] for r in rows] == sorted(saved.table["id"].to_pylist()), pattern
        assert all(r[1].endswith("B04.tif") for r in rows)


def test_manifest_and_failures_come_back_from_the_footers(saved, tmp_path):
    loaded = rasteret.load(saved.path)
    assert loaded.manifest["name"] == "s2"
    assert loaded.manifest["schema_version"] == SCHEMA_VERSION
    assert loaded.manifest["failures"] == 1
    failures = loaded.failures.to_pylist()
    assert [(f["id"], f["band"], f["error_type"]) for f in failures] == [
        ("missing", "B04", "ObjectNotFoundError")
    ]
    assert failures[0]["href"].endswith("nope.tif")
    # The failures are not copied into the table's schema (nor onto every part).
    assert FAILURES_KEY not in (loaded.table.schema.metadata or {})
    for part in ("part-00001.parquet", "part-00002.parquet"):
        assert FAILURES_KEY not in pq.read_schema(saved.path / part).metadata
    # One exported file keeps them too.
    again = rasteret.load(loaded.export(tmp_path / "one.parquet"))
    assert again.failures.to_pylist() == failures and len(again) == 5


def test_an_interrupted_swap_is_recovered(saved):
    aside = saved.path.with_name(f".{saved.path.name}.old-12345678")
    os.replace(saved.path, aside)
    assert rasteret.list_collections(workspace_dir=saved.path.parent) == ["s2"]
    assert saved.path.is_dir() and not aside.exists()
    assert len(rasteret.load("s2", workspace_dir=saved.path.parent)) == 5


def write_old_layout(collection, folder):
    """The layout before footers carried everything: ``collection.json`` and
    ``failures.parquet`` beside ``part-*.parquet``, as that code wrote them."""
    folder.mkdir(parents=True)
    manifest = {k: v for k, v in collection.manifest.items() if k != "schema_version"}
    table = collection.table.replace_schema_metadata({})
    for index, start in enumerate(range(0, table.num_rows, 2)):
        pq.write_table(with_metadata(table.slice(start, 2), manifest),
                       folder / f"part-{index:05d}.parquet")
    pq.write_table(collection.failures, folder / "failures.parquet")
    (folder / "collection.json").write_text(
        json.dumps({**manifest, "schema_version": SCHEMA_VERSION}, indent=2)
    )


def test_older_layout_still_loads_lists_and_deletes(saved, tmp_path):
    workspace = tmp_path / "old-ws"
    write_old_layout(saved, workspace / "legacy")
    assert rasteret.list_collections(workspace_dir=workspace) == ["legacy"]
    for how in ("legacy", workspace / "legacy"):
        old = rasteret.load(how, workspace_dir=workspace)
        assert old.name == "s2" and old.bands == ["B04"] and len(old) == 5
        assert old.table["id"].to_pylist() == saved.table["id"].to_pylist()
        assert old.failures.to_pylist() == saved.failures.to_pylist()
        # Its stored headers still read pixels.
        assert old.cog(0, "B04").read((0, 0, 16, 16)).shape[-2:] == (16, 16)
    rasteret.delete_collection("legacy", workspace_dir=workspace)
    assert rasteret.list_collections(workspace_dir=workspace) == []


def test_older_layout_without_failures_file_has_no_failures(saved, tmp_path):
    folder = tmp_path / "old-ws" / "legacy"
    write_old_layout(saved, folder)
    (folder / "failures.parquet").unlink()
    old = rasteret.load(folder)
    assert old.failures.num_rows == 0 and old.failures.schema == FAILURE_SCHEMA


# -- load: names and paths -------------------------------------------------------------


@pytest.fixture()
def bench_and_other(scenes, tmp_path):
    """A workspace with ``bench`` (5 scenes) and ``other`` (2 scenes)."""
    workspace = tmp_path / "ws"
    build(scenes, workspace, "bench")
    build(scenes[:2], workspace, "other")
    return workspace


def test_bare_name_ignores_a_same_named_folder_in_the_current_directory(
    bench_and_other, tmp_path, monkeypatch
):
    here = tmp_path / "here"
    (here / "bench").mkdir(parents=True)
    monkeypatch.chdir(here)
    collection = rasteret.load("bench", workspace_dir=bench_and_other)
    assert len(collection) == 5 and collection.path == bench_and_other / "bench"


def test_bare_name_ignores_a_collection_folder_in_the_current_directory(
    bench_and_other, tmp_path, monkeypatch
):
    here = tmp_path / "here"
    here.mkdir()
    shutil.copytree(bench_and_other / "other", here / "bench")
    monkeypatch.chdir(here)
    assert len(rasteret.load("bench", workspace_dir=bench_and_other)) == 5
    # A path (a separator, or a pathlib.Path) is the folder in the current directory.
    assert len(rasteret.load("./bench", workspace_dir=bench_and_other)) == 2
    assert len(rasteret.load(here / "bench")) == 2
    from pathlib import Path

    assert len(rasteret.load(Path("bench"))) == 2
    assert len(rasteret.load((here / "bench").as_uri())) == 2


def test_missing_bare_name_points_at_the_folder_in_the_current_directory(
    bench_and_other, tmp_path, monkeypatch
):
    here = tmp_path / "here"
    here.mkdir()
    shutil.copytree(bench_and_other / "other", here / "mine")
    monkeypatch.chdir(here)
    with pytest.raises(CollectionNotFoundError, match=r"'\./mine'") as caught:
        rasteret.load("mine", workspace_dir=bench_and_other)
    assert "['bench', 'other']" in str(caught.value)


def test_tilde_paths_expand_to_the_home_folder(bench_and_other, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert len(rasteret.load("~/ws/other", workspace_dir=tmp_path / "elsewhere")) == 2


def test_paths_that_are_not_collections_and_remote_urls_are_typed_errors(
    bench_and_other, tmp_path
):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CollectionNotFoundError, match="not a collection folder"):
        rasteret.load(tmp_path / "empty", workspace_dir=bench_and_other)
    with pytest.raises(CollectionNotFoundError, match="not a collection folder"):
        rasteret.load(str(tmp_path / "absent"), workspace_dir=bench_and_other)
    # Object-store URLs load (tests/test_remote_workspace.py); unknown schemes do not.
    with pytest.raises(ConfigurationError, match="unsupported URL scheme"):
        rasteret.load("ftp://bucket/collections/bench", workspace_dir=bench_and_other)
    with pytest.raises(ConfigurationError, match="invalid collection name"):
        rasteret.load("bad name", workspace_dir=bench_and_other)
