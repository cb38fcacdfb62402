"""Static catalogs: crawled breadth-first through the backend's stores (local paths with
relative hrefs, nginx over http, moto over s3://), each JSON fetched once, filters
applied as on the API path, and typed errors naming a missing or corrupt document."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import rasteret
from rasteret.errors import RasteretError, StacSearchError
from rasteret.ingest.stac import resolve_href
from testbed.scenes import stac_item, write_scenes
from testbed.stac import write_static_catalog

rasterio = pytest.importorskip("rasterio")

BBOX = (14.0, 36.0, 16.5, 38.0)
DATES = ("2024-05-01", "2024-06-30")
FAST_RETRY = {"max_retries": 0, "retry_timeout": dt.timedelta(seconds=2)}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Four small synthetic scenes (B04, B08), five days apart."""
    return write_scenes(tmp_path_factory.mktemp("static-scenes"), count=4, size=256, tile=128,
                        bands=("B04", "B08"), label=False)


def _copy_assets_next_to_item(folder: Path, item: dict) -> None:
    """Put each asset file next to the item JSON and make its href relative."""
    for asset in item["assets"].values():
        source = Path(asset["href"])
        shutil.copy(source, folder / source.name)
        asset["href"] = f"./{source.name}"


def _two_collections(scenes) -> dict[str, list[dict]]:
    items = [stac_item(s, lambda scene, band, path: str(path)) for s in scenes]
    return {"s2-a": items[:3], "s2-b": items[3:]}


def test_resolve_href_on_every_kind_of_store():
    assert resolve_href("./a/b.tif", "s3://bucket/cat/items/x.json") == \
        "s3://bucket/cat/items/a/b.tif"
    assert resolve_href("../c.json", "az://container/root/sub/collection.json") == \
        "az://container/root/c.json"
    assert resolve_href("../../x.tif?v=1", "http://host:8/a/b/c/item.json?sig=1") == \
        "http://host:8/a/x.tif?v=1"
    assert resolve_href("/abs/x.tif", "https://host/a/b.json") == "https://host/abs/x.tif"
    assert resolve_href("item.json", "file:///data/cat/catalog.json") == \
        "file:///data/cat/item.json"
    assert resolve_href("../B04.tif", "/mirror/cat/items/i.json") == "/mirror/cat/B04.tif"
    assert resolve_href("/elsewhere/B04.tif", "/mirror/cat/i.json") == "/elsewhere/B04.tif"
    assert resolve_href("s3://other/x.tif", "/mirror/cat/i.json") == "s3://other/x.tif"


def test_local_mirror_with_relative_paths_builds_without_a_server(scenes, tmp_path,
                                                                 monkeypatch):
    """An HPC mirror: a tree of JSON and COGs linked by relative paths, opened by a
    relative path from its parent folder."""
    root = tmp_path / "mirror"
    write_static_catalog(root, _two_collections(scenes), assets=_copy_assets_next_to_item)
    monkeypatch.chdir(tmp_path)
    collection = rasteret.build_from_stac(
        name="mirror", stac_api="mirror/catalog.json", collection=None, bbox=BBOX,
        date_range=DATES, band_map={"B04": "red"}, workspace_dir=tmp_path / "ws",
        progress=False)
    assert len(collection) == 4
    assert sorted(collection.table["collection"].to_pylist()) == ["s2-a"] * 3 + ["s2-b"]
    for row, scene_id in enumerate(collection.table["id"].to_pylist()):
        href = collection.band_record(row, "B04")["href"]
        assert href == str(root / ("s2-b" if scene_id == scenes[3].id else "s2-a") / scene_id
                           / "B04.tif")
        scene = next(s for s in scenes if s.id == scene_id)
        with rasterio.open(scene.files["B04"]) as src:
            np.testing.assert_array_equal(collection.cog(row, "B04").read(), src.read())


def test_collection_filter_and_bbox_dates_as_on_the_api_path(scenes, tmp_path):
    root = tmp_path / "filtered"
    catalog = write_static_catalog(root, _two_collections(scenes),
                                   assets=_copy_assets_next_to_item)
    only_b = rasteret.build_from_stac(
        name="b", stac_api=str(catalog), collection="s2-b", bbox=BBOX, date_range=DATES,
        band_map={"B04": "red"}, workspace_dir=tmp_path / "ws", progress=False)
    assert only_b.table["id"].to_pylist() == [scenes[3].id]
    # The second scene's day only (scenes are five days apart).
    day = scenes[1].datetime.date().isoformat()
    one_day = rasteret.build_from_stac(
        name="day", stac_api=str(catalog), collection=None, bbox=BBOX, date_range=(day, day),
        band_map={"B04": "red"}, workspace_dir=tmp_path / "ws", progress=False)
    assert one_day.table["id"].to_pylist() == [scenes[1].id]
    with pytest.raises(RasteretError, match="no scenes"):  # NoScenesError
        rasteret.build_from_stac(
            name="nowhere", stac_api=str(catalog), collection=None, bbox=(-10, -10, -9, -9),
            date_range=DATES, band_map={"B04": "red"}, workspace_dir=tmp_path / "ws",
            progress=False)


def test_http_catalog_fetches_each_json_once(scenes, nginx_server):
    root = Path(nginx_server.root) / "static-http"
    write_static_catalog(root, _two_collections(scenes), assets=_copy_assets_next_to_item)
    nginx_server.clear_log()
    collection = rasteret.build_from_stac(
        name="http-static", stac_api=f"{nginx_server.url}/static-http/catalog.json",
        collection="s2-a", bbox=BBOX, date_range=DATES,
        band_map={"B04": "red", "B08": "nir"}, force=True, progress=False)
    assert len(collection) == 3
    assert collection.band_record(0, "B04")["href"].startswith(f"{nginx_server.url}/static-http/")
    requests = [r.path for r in nginx_server.requests()]
    documents = [p for p in requests if p.endswith(".json")]
    # The catalog, both collections (to learn their ids) and the wanted one's three
    # items, each once; nothing below the other collection.
    assert sorted(documents) == sorted(
        ["/static-http/catalog.json", "/static-http/s2-a/collection.json",
         "/static-http/s2-b/collection.json"]
        + [f"/static-http/s2-a/{s.id}/{s.id}.json" for s in scenes[:3]])
    assert not any(p.startswith(f"/static-http/s2-b/{scenes[3].id}/") for p in requests)
    # One header request per COG.
    tiffs = [p for p in requests if p.endswith(".tif")]
    assert len(tiffs) == len(set(tiffs)) == 6


def test_s3_catalog_through_the_backend(scenes, moto_server, tmp_path):
    bucket = "static-catalog"
    moto_server.create_bucket(bucket)
    root = tmp_path / "s3-tree"
    write_static_catalog(root, _two_collections(scenes), assets=_copy_assets_next_to_item)
    for path in root.rglob("*"):
        if path.is_file():
            moto_server.upload(bucket, f"mirror/{path.relative_to(root)}", path)
    backend = rasteret.create_backend(
        default_s3_config={"endpoint": moto_server.endpoint, "region": moto_server.region,
                           "aws_access_key_id": moto_server.access_key_id,
                           "aws_secret_access_key": moto_server.secret_access_key},
        retry_config=FAST_RETRY)
    collection = rasteret.build_from_stac(
        name="s3-static", stac_api=f"s3://{bucket}/mirror/catalog.json", collection=None,
        bbox=BBOX, date_range=DATES, band_map={"B08": "nir"}, backend=backend,
        workspace_dir=tmp_path / "ws", progress=False)
    assert len(collection) == 4
    row = collection.table["id"].to_pylist().index(scenes[0].id)
    assert collection.band_record(row, "B08")["href"] == \
        f"s3://{bucket}/mirror/s2-a/{scenes[0].id}/B08.tif"
    with rasterio.open(scenes[0].files["B08"]) as src:
        np.testing.assert_array_equal(collection.cog(row, "B08", backend=backend).read(),
                                      src.read())


def test_missing_item_json_names_it_and_its_parent(scenes, tmp_path):
    root = tmp_path / "broken"
    catalog = write_static_catalog(root, _two_collections(scenes),
                                   assets=_copy_assets_next_to_item)
    missing = root / "s2-a" / scenes[1].id / f"{scenes[1].id}.json"
    missing.unlink()
    with pytest.raises(StacSearchError) as caught:
        rasteret.build_from_stac(name="broken", stac_api=str(catalog), collection=None,
                                 band_map={"B04": "red"}, workspace_dir=tmp_path / "ws",
                                 progress=False)
    message = str(caught.value)
    assert str(missing) in message
    assert f"linked from {root / 's2-a' / 'collection.json'}" in message


def test_corrupt_json_names_the_document(scenes, tmp_path):
    root = tmp_path / "corrupt"
    catalog = write_static_catalog(root, _two_collections(scenes),
                                   assets=_copy_assets_next_to_item)
    bad = root / "s2-b" / "collection.json"
    bad.write_text('{"type": "Collection", "id": "s2-b", "links": [')
    with pytest.raises(StacSearchError, match="is not valid JSON") as caught:
        rasteret.build_from_stac(name="corrupt", stac_api=str(catalog), collection=None,
                                 band_map={"B04": "red"}, workspace_dir=tmp_path / "ws",
                                 progress=False)
    assert str(bad) in str(caught.value)
    bad.write_text(json.dumps(["not", "a", "catalog"]))
    with pytest.raises(StacSearchError, match="not a STAC catalog"):
        rasteret.build_from_stac(name="corrupt", stac_api=str(catalog), collection=None,
                                 band_map={"B04": "red"}, workspace_dir=tmp_path / "ws",
                                 progress=False)


def test_the_guides_static_catalog_example_runs(tmp_path, monkeypatch, capsys):
    guide = (Path(__file__).parents[2] / "docs" / "collections.md").read_text()
    after = guide.split("A complete example, runnable as is", 1)[1]
    code = after.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    exec(compile(code, "docs/collections.md", "exec"), {})
    assert "(1, 256, 256)" in capsys.readouterr().out
