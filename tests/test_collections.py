"""Collections: builds from a real local STAC API, static catalogs and tables;
failures, resumption, the GeoParquet format, the catalog and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rasteret
from rasteret.errors import ConfigurationError, IndexingError, NoScenesError
from testbed import HANG_GUARD
from testbed.scenes import stac_collection, stac_item, write_scenes
from testbed.stac import StacApiServer

BBOX = (14.0, 36.0, 16.5, 38.0)
DATES = ("2024-05-01", "2024-06-30")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Four small synthetic scenes (bands B02, B03, B04, B08, label) on disk."""
    root = tmp_path_factory.mktemp("scenes")
    return write_scenes(root, count=4, size=512, tile=256, shift=256)


@pytest.fixture(scope="module")
def served(scenes, nginx_server):
    """The scenes copied under nginx's root: href_of maps a file to its http URL."""
    root = Path(nginx_server.root) / "collections-test"
    for scene in scenes:
        for path in scene.files.values():
            target = root / scene.id / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)

    def href_of(scene, band, path):
        return f"{nginx_server.url}/collections-test/{scene.id}/{path.name}"

    return href_of


@pytest.fixture(scope="module")
def stac_api(scenes, served):
    """A rustac STAC API whose Earth Search-style items point at nginx."""
    items = [stac_item(s, served) for s in scenes]
    with StacApiServer(stac_collection(items), items) as server:
        yield server


@pytest.fixture()
def workspace(tmp_path):
    return tmp_path / "workspace"


def build(stac_api, workspace, **kwargs):
    options = dict(
        name="s2", stac_api=stac_api.url, collection="sentinel-2-l2a", bbox=BBOX,
        date_range=DATES, band_map={"B04": "red", "B08": "nir"}, workspace_dir=workspace,
        progress=False,
    )
    options.update(kwargs)
    return rasteret.build_from_stac(**options)


def test_build_from_stac_api_reads_every_item_and_header(stac_api, workspace, nginx_server):
    nginx_server.clear_log()
    collection = build(stac_api, workspace)
    assert len(collection) == 4
    assert collection.bands == ["B04", "B08"]
    assert collection.epsg_codes == [32633]
    headers = [r for r in nginx_server.requests() if r.path.startswith("/collections-test/")]
    # One ranged GET per asset, no HEAD.
    assert len(headers) == 8
    assert all(r.method == "GET" and r.range for r in headers)
    record = collection.band_record(0, "B04")
    assert record["href"].startswith(nginx_server.url)
    assert record["levels"][0]["width"] == 512
    assert record["levels"][0]["chunk_width"] == 256
    assert len(record["levels"]) > 1  # overviews indexed too


def test_collection_reads_use_stored_headers_only(stac_api, workspace, nginx_server, scenes):
    collection = build(stac_api, workspace)
    nginx_server.clear_log()
    cog = collection.cog(0, "B04")
    pixels = cog.read((0, 0, 256, 256))
    tifs = [r for r in nginx_server.requests() if r.path.endswith(".tif")]
    assert len(tifs) == 1  # the one tile; no header request
    import rasterio

    scene_id = collection.table["id"][0].as_py()
    scene = next(s for s in scenes if s.id == scene_id)
    with rasterio.open(scene.files["B04"]) as src:
        expected = src.read(1, window=((0, 256), (0, 256)))
    np.testing.assert_array_equal(pixels[0], expected)


def test_query_is_applied_client_side(stac_api, workspace, scenes):
    limit = sorted(s.cloud_cover for s in scenes)[2]
    collection = build(stac_api, workspace, query={"eo:cloud_cover": {"lt": limit}})
    assert len(collection) == 2
    assert all(v < limit for v in collection.table["eo:cloud_cover"].to_pylist())


def test_date_and_bbox_filters_reach_the_search(stac_api, workspace):
    collection = build(stac_api, workspace, date_range=("2024-05-01", "2024-05-06"))
    assert len(collection) == 2  # scenes on May 1 and May 6 (inclusive end date)


def test_existing_name_loads_unless_forced(stac_api, workspace, nginx_server):
    build(stac_api, workspace)
    nginx_server.clear_log()
    again = build(stac_api, workspace)
    assert len(again) == 4
    assert not [r for r in nginx_server.requests() if r.path.endswith(".tif")]
    forced = build(stac_api, workspace, force=True, band_map={"B02": "blue"})
    assert forced.bands == ["B02"]


def test_empty_search_is_an_error_not_an_empty_collection(stac_api, workspace):
    with pytest.raises(NoScenesError, match="no scenes"):
        build(stac_api, workspace, date_range=("2020-01-01", "2020-01-31"))
    assert not (workspace / "s2").exists()


def test_geoparquet_format_is_readable_by_pyarrow_and_duckdb(stac_api, workspace):
    collection = build(stac_api, workspace)
    part = sorted(collection.path.glob("part-*.parquet"))[0]
    table = pq.read_table(part)
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0"
    assert geo["primary_column"] == "geometry"
    assert geo["columns"]["geometry"]["encoding"] == "WKB"
    assert geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    meta = json.loads(table.schema.metadata[b"rasteret"])
    assert meta["schema_version"] == 1
    assert table.schema.field("datetime").type == pa.timestamp("us", tz="UTC")
    for column in ("id", "geometry", "bbox", "collection", "proj:epsg", "eo:cloud_cover"):
        assert column in table.column_names
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(
        f"SELECT id, \"B04\".href AS href, \"eo:cloud_cover\" FROM read_parquet('{part}') "
        "WHERE bbox.xmin < 16 ORDER BY id"
    ).fetchall()
    assert len(rows) == 4 and rows[0][1].endswith("B04.tif")
    geopandas = pytest.importorskip("geopandas")
    frame = geopandas.read_parquet(part)
    assert frame.crs == "OGC:CRS84" and len(frame) == 4


def test_reopen_in_another_process(stac_api, workspace):
    build(stac_api, workspace)
    code = textwrap.dedent(
        f"""
        import rasteret
        c = rasteret.load("s2", workspace_dir={str(workspace)!r})
        print(len(c), c.bands, len(c.subset(date_range=("2024-05-01", "2024-05-06"))))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=HANG_GUARD)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "['B04',", "'B08']", "2"]


def test_failures_are_recorded_with_reasons(scenes, tmp_path, workspace):
    broken = tmp_path / "not-a-tiff.tif"
    broken.write_bytes(b"hello, not a tiff" * 10)
    rows = [
        {"id": s.id, "datetime": s.datetime, "red": str(s.files["B04"])} for s in scenes[:2]
    ]
    missing = str(tmp_path / "nope.tif")
    rows.append({"id": "missing", "datetime": scenes[0].datetime, "red": missing})
    rows.append({"id": "broken", "datetime": scenes[0].datetime, "red": str(broken)})
    table = pa.Table.from_pylist(rows)
    with pytest.raises(IndexingError) as caught:
        rasteret.build_from_table(table, name="t", href_columns=["red"], workspace_dir=workspace,
                                  progress=False)
    assert {f.scene_id for f in caught.value.failures} == {"missing", "broken"}
    assert not (workspace / "t").exists()
    with pytest.warns(UserWarning, match="2 asset"):
        collection = rasteret.build_from_table(
            table, name="t", href_columns=["red"], workspace_dir=workspace, progress=False,
            on_error="skip",
        )
    assert len(collection) == 2
    failures = {row["id"]: row for row in collection.failures.to_pylist()}
    assert failures["missing"]["error_type"] == "ObjectNotFoundError"
    assert failures["broken"]["error_type"] == "CorruptTiffError"
    assert "nope.tif" in failures["missing"]["message"]
    assert rasteret.load("t", workspace_dir=workspace).failures.num_rows == 2


def test_build_from_table_inputs(scenes, tmp_path, workspace):
    pandas = pytest.importorskip("pandas")
    rows = [
        {"id": s.id, "datetime": s.datetime.isoformat(), "B04": str(s.files["B04"]),
         "B08": str(s.files["B08"]), "tile": "33SVB"}
        for s in scenes
    ]
    arrow = pa.Table.from_pylist(rows)
    by_arrow = rasteret.build_from_table(arrow, name="a", href_columns=["B04", "B08"],
                                         workspace_dir=workspace, progress=False)
    assert len(by_arrow) == 4 and by_arrow.table["tile"].to_pylist() == ["33SVB"] * 4
    # Footprints come from the headers when the table has no geometry.
    assert by_arrow.bounds[0] == pytest.approx(15.0, abs=0.1)
    path = tmp_path / "input.parquet"
    pq.write_table(arrow, path)
    by_path = rasteret.build_from_table(path, name="p", href_columns={"red": "B04"},
                                        workspace_dir=workspace, progress=False)
    assert by_path.bands == ["red"]
    frame = pandas.DataFrame(rows)
    frame["assets"] = [{"red": {"href": r["B04"]}, "nir": {"href": r["B08"]}} for r in rows]
    by_assets = rasteret.build_from_table(
        frame.drop(columns=["B04", "B08"]), name="d", assets_column="assets",
        band_map={"B04": "red", "B08": "nir"}, workspace_dir=workspace, progress=False,
    )
    assert by_assets.bands == ["B04", "B08"] and len(by_assets) == 4
    with pytest.raises(ConfigurationError, match="no column"):
        rasteret.build_from_table(arrow, name="x", href_columns=["B99"],
                                  workspace_dir=workspace, progress=False)


def test_static_catalog_with_relative_hrefs(scenes, tmp_path, workspace):
    import pystac

    catalog = pystac.Catalog(id="synthetic", description="local test catalog")
    for scene in scenes:
        item = pystac.Item.from_dict(stac_item(scene, lambda s, b, p: str(p)))
        catalog.add_item(item)
    root = tmp_path / "static"
    catalog.normalize_hrefs(str(root))
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    # Put the assets next to the items and make their hrefs relative.
    for item_json in root.rglob("*.json"):
        data = json.loads(item_json.read_text())
        if data.get("type") != "Feature":
            continue
        for asset in data["assets"].values():
            source = Path(asset["href"])
            shutil.copy(source, item_json.parent / source.name)
            asset["href"] = f"./{source.name}"
        item_json.write_text(json.dumps(data))
    collection = rasteret.build_from_stac(
        name="static", stac_api=str(root / "catalog.json"), collection=None, bbox=BBOX,
        date_range=DATES, band_map={"B04": "red"}, workspace_dir=workspace, progress=False,
    )
    assert len(collection) == 4
    href = collection.band_record(0, "B04")["href"]
    assert Path(href).is_absolute() and Path(href).exists()


def test_signed_hrefs_are_stored_unsigned(scenes, workspace, served, nginx_server):
    rows = [{"id": s.id, "red": served(s, "B04", s.files["B04"]) + "?se=2030&sig=SECRETSIG123"}
            for s in scenes[:1]]
    collection = rasteret.build_from_table(pa.Table.from_pylist(rows), name="signed",
                                           href_columns=["red"], workspace_dir=workspace,
                                           progress=False)
    assert "?" not in collection.band_record(0, "red")["href"]
    for path in collection.path.rglob("*"):
        if path.is_file():
            assert b"SECRETSIG123" not in path.read_bytes()


def test_interrupted_build_keeps_old_collection_and_resumes(scenes, tmp_path, workspace):
    rows = [{"id": s.id, "red": str(s.files["B04"])} for s in scenes]
    table_path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), table_path)
    first = rasteret.build_from_table(table_path, name="k", href_columns=["red"],
                                      workspace_dir=workspace, progress=False)
    assert len(first) == 4
    # Rebuild with two bands in tasks of one scene run one at a time, killed (SIGKILL)
    # at the third task.
    killer = textwrap.dedent(
        f"""
        import os, signal
        import rasteret.ingest.builder as builder
        import rasteret.ingest.tasks as tasks
        builder.IN_PROCESS_TASKS = 1
        original = tasks.index_batch
        calls = []
        def dying(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)
        tasks.index_batch = dying
        import rasteret
        rasteret.build_from_table({str(table_path)!r}, name="k",
            href_columns={{"red": "red", "again": "red"}}, workspace_dir={str(workspace)!r},
            progress=False, force=True, batch_size=2)
        """
    )
    out = subprocess.run([sys.executable, "-c", killer], capture_output=True, timeout=HANG_GUARD)
    assert out.returncode == -9
    old = rasteret.load("k", workspace_dir=workspace)
    assert old.bands == ["red"] and len(old) == 4  # the previous collection is intact
    area = workspace / ".k.tasks"
    assert len(list(area.glob("*.parquet"))) == 2
    # The rerun resumes: only the two scenes not yet indexed are parsed.
    stats = rasteret.FetchStats()
    resumed = rasteret.build_from_table(
        table_path, name="k", href_columns={"red": "red", "again": "red"},
        workspace_dir=workspace, progress=False, force=True, batch_size=2, stats=stats)
    assert resumed.bands == ["red", "again"] and len(resumed) == 4
    assert stats.requests == 2
    assert not area.exists()


def test_collection_api_views_and_filters(stac_api, workspace, tmp_path):
    collection = build(stac_api, workspace)
    assert "4 scenes" in repr(collection)
    assert collection.summary()["bands"] == ["B04", "B08"]
    first, last = collection.date_range
    assert first < last
    assert len(collection.subset(bbox=(0, 0, 1, 1))) == 0
    assert len(collection.subset(ids=[collection.table["id"][0].as_py()])) == 1
    assert len(collection.subset(platform="sentinel-2x")) == 4
    import pyarrow.compute as pc

    assert len(collection.filter(pc.field("eo:cloud_cover") >= 0)) == 4
    frame = collection.to_geopandas()
    assert frame.crs.to_epsg() == 4326 and len(frame) == 4
    exported = collection.export(tmp_path / "export.parquet")
    again = rasteret.load(exported)
    assert len(again) == 4 and again.bands == ["B04", "B08"]
    with pytest.raises(ConfigurationError, match="available bands"):
        collection.check_bands(["B99"])
    with pytest.raises(FileNotFoundError, match="saved collections"):
        rasteret.load("does-not-exist", workspace_dir=workspace)
    with pytest.raises(ConfigurationError, match="invalid collection name"):
        build(stac_api, workspace, name="../escape")


def test_catalog_lists_builtin_datasets_with_band_maps():
    ids = [d.id for d in rasteret.datasets.list()]
    for expected in ("earthsearch/sentinel-2-l2a", "earthsearch/landsat-c2-l2",
                     "earthsearch/cop-dem-glo-30", "earthsearch/naip", "pc/sentinel-2-l2a",
                     "pc/landsat-c2-l2", "pc/nasadem", "pc/esa-worldcover",
                     "pc/io-lulc-annual-v02"):
        assert expected in ids
    assert rasteret.datasets.info("earthsearch/sentinel-2-l2a")["band_map"]["B04"] == "red"
    assert rasteret.datasets.info("pc/sentinel-2-l2a")["band_map"]["B04"] == "B04"
    assert rasteret.datasets.info("earthsearch/naip")["band_map"]["N"] == ["image", 4]
    landsat = rasteret.datasets.info("earthsearch/landsat-c2-l2")
    assert landsat["cloud_config"]["requester_pays"] is True
    assert landsat["cloud_config"]["region"] == "us-west-2"
    with pytest.raises(ConfigurationError, match="registered datasets"):
        rasteret.datasets.info("nope/nothing")


def test_register_own_dataset_and_build_it_by_id(stac_api, workspace):
    rasteret.datasets.register(
        id="local/synthetic-s2", stac_api=stac_api.url, collection="sentinel-2-l2a",
        band_map={"B04": "red", "B08": "nir", "LC": "label"},
        description="synthetic scenes on a local STAC API", auth="none",
    )
    collection = rasteret.build("local/synthetic-s2", name="mine", bbox=BBOX, date_range=DATES,
                                bands=["B04", "LC"], workspace_dir=workspace, progress=False)
    assert collection.bands == ["B04", "LC"] and collection.dataset_id == "local/synthetic-s2"
    with pytest.raises(ConfigurationError, match="unknown band"):
        rasteret.build("local/synthetic-s2", name="bad", bbox=BBOX, date_range=DATES,
                       bands=["B99"], workspace_dir=workspace, progress=False)


def test_missing_asset_in_an_item_is_a_recorded_failure(stac_api, workspace):
    # Every scene lacks the asset: even with on_error="skip" that is an error, never an
    # empty collection.
    with pytest.raises(IndexingError) as caught:
        build(stac_api, workspace, band_map={"B04": "red", "X": "no-such-asset"},
              on_error="skip")
    assert {f.error_type for f in caught.value.failures} == {"MissingAsset"}
    assert "no asset for band 'X'" in str(caught.value)


def run_cli(*args, workspace):
    return subprocess.run(
        [sys.executable, "-m", "rasteret.cli", *args],
        capture_output=True, text=True, timeout=HANG_GUARD,
        env={**os.environ, "RASTERET_WORKSPACE": str(workspace)},
    )


def test_cli_datasets_build_and_collections(stac_api, workspace):
    out = run_cli("datasets", "list", "--json", workspace=workspace)
    assert out.returncode == 0, out.stderr
    assert "pc/sentinel-2-l2a" in {d["id"] for d in json.loads(out.stdout)}
    out = run_cli("datasets", "info", "earthsearch/landsat-c2-l2", workspace=workspace)
    assert out.returncode == 0 and "requester_pays" in out.stdout
    out = run_cli("datasets", "info", "nope/x", workspace=workspace)
    assert out.returncode == 1 and "registered datasets" in out.stderr
    out = run_cli("build", "--stac-api", stac_api.url, "--collection", "sentinel-2-l2a",
                  "--name", "cli", "--bbox", ",".join(map(str, BBOX)), "--dates",
                  "2024-05-01/2024-06-30", "--json", workspace=workspace)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["scenes"] == 4
    out = run_cli("collections", "list", "--json", workspace=workspace)
    assert [c["name"] for c in json.loads(out.stdout)] == ["cli"]
    out = run_cli("collections", "info", "cli", "--failures", "--json", workspace=workspace)
    assert json.loads(out.stdout)["failure_list"] == []
    out = run_cli("collections", "delete", "cli", workspace=workspace)
    assert out.returncode == 0
    out = run_cli("collections", "info", "cli", workspace=workspace)
    assert out.returncode == 1 and "no collection" in out.stderr


def test_search_follows_pages(scenes, served, workspace, nginx_server):
    # 24 items on pages of 5: every page is fetched.
    items = []
    for copy in range(6):
        for scene in scenes:
            item = stac_item(scene, served)
            item["id"] = f"{scene.id}-copy{copy}"
            items.append(item)
    with StacApiServer(stac_collection(items), items) as server:
        from rasteret.ingest.stac import search_items

        found = search_items(server.url, collection="sentinel-2-l2a", bbox=BBOX,
                             date_range=DATES, page_size=5)
    assert len(found) == 24 and len({i["id"] for i in found}) == 24
