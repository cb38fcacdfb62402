"""A changed object never becomes wrong pixels: a COG replaced under nginx or moto
after the build raises ObjectChangedError (or is skipped under on_error="skip")
through every read path, at no extra request; collections without a recorded ETag
read as before."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import rasterio
import shapely

import rasteret
from rasteret.errors import ObjectChangedError
from rasteret.io.fetch import ObjectInfo, _strong_etag, check_version
from testbed.scenes import write_scenes

pytestmark = pytest.mark.timeout(180)

BUCKET = "integrity"
FAST_RETRY = {"max_retries": 0, "retry_timeout": dt.timedelta(seconds=2)}
CHANGED = "changed after it was indexed"
_BUMPS = iter(range(10, 100_000, 10))


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """Two versions of one scene's B04: the original and its replacement (same grid,
    other pixels, another size)."""
    root = tmp_path_factory.mktemp("integrity")
    old = write_scenes(root / "old", count=1, size=512, tile=128, bands=("B04",),
                       label=False, seed=1)[0]
    new = write_scenes(root / "new", count=1, size=512, tile=128, bands=("B04",),
                       label=False, seed=2)[0]
    assert old.files["B04"].stat().st_size != new.files["B04"].stat().st_size
    return old, new


def _s3_backend(moto_server):
    return rasteret.create_backend(
        default_s3_config={"endpoint": moto_server.endpoint,
                           "aws_access_key_id": moto_server.access_key_id,
                           "aws_secret_access_key": moto_server.secret_access_key,
                           "region": moto_server.region},
        retry_config=FAST_RETRY,
    )


class Store:
    """One object on a local server that a test can replace."""

    def __init__(self, kind, nginx_server, moto_server, name):
        self.kind = kind
        if kind == "nginx":
            folder = Path(nginx_server.root) / "integrity"
            folder.mkdir(exist_ok=True)
            self.path = folder / f"{name}.tif"
            self.href = f"{nginx_server.url}/integrity/{name}.tif"
            self.backend = rasteret.create_backend(client_options={"allow_http": True},
                                                   retry_config=FAST_RETRY)
        else:
            moto_server.create_bucket(BUCKET)
            self.moto = moto_server
            self.key = f"{name}.tif"
            self.href = f"s3://{BUCKET}/{name}.tif"
            self.backend = _s3_backend(moto_server)

    def put(self, source: Path) -> None:
        if self.kind == "nginx":
            shutil.copy(source, self.path)
            # nginx's ETag is mtime + size: move the mtime on so it differs even when a
            # replacement had the same size and landed in the same second.
            stamp = time.time() + next(_BUMPS)
            os.utime(self.path, (stamp, stamp))
        else:
            self.moto.upload(BUCKET, self.key, source)

    def build(self, workspace, name, **options):
        table = pa.Table.from_pylist([{"id": "scene", "B04": self.href,
                                       "datetime": dt.datetime(2024, 5, 1, tzinfo=dt.UTC)}])
        return rasteret.build_from_table(table, name=name, href_columns=["B04"],
                                         backend=self.backend, workspace_dir=workspace,
                                         progress=False, **options)


def read_file(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.fixture(scope="module", params=["nginx", "moto"])
def changed(request, versions, nginx_server, moto_server, tmp_path_factory):
    """A collection built over the original, whose object was then replaced."""
    old, new = versions
    store = Store(request.param, nginx_server, moto_server, f"changed-{request.param}")
    store.put(old.files["B04"])
    collection = store.build(tmp_path_factory.mktemp("ws"), f"changed-{request.param}")
    record = collection.band_record(0, "B04")
    assert record["etag"] and record["size"]
    np.testing.assert_array_equal(collection.cog(0, "B04", backend=store.backend).read()[0],
                                  read_file(old.files["B04"]))
    store.put(new.files["B04"])
    return collection, store, old


def _area(scene):
    left, bottom, right, top = scene.bounds
    return shapely.box(left + 100, bottom + 100, left + 2000, bottom + 2000), scene.epsg


# -- every read path -------------------------------------------------------------------

def test_collection_cog_detects_the_replacement(changed):
    collection, store, _ = changed
    with pytest.raises(ObjectChangedError, match=CHANGED) as caught:
        collection.cog(0, "B04", backend=store.backend).read((0, 0, 64, 64))
    message = str(caught.value)
    assert store.href in message and "force=True" in message


def test_get_numpy_detects_the_replacement(changed):
    collection, store, scene = changed
    area, crs = _area(scene)
    with pytest.raises(ObjectChangedError, match=CHANGED):
        collection.get_numpy(area, ["B04"], geometry_crs=crs, backend=store.backend)


def test_get_numpy_skips_the_replaced_scene_on_request(changed):
    collection, store, scene = changed
    area, crs = _area(scene)
    # The only scene is skipped, with a warning naming it; then nothing is left.
    with pytest.warns(UserWarning, match=CHANGED), \
            pytest.raises(rasteret.errors.ConfigurationError, match="failed to read"):
        collection.get_numpy(area, ["B04"], geometry_crs=crs, backend=store.backend,
                             on_error="skip")


def test_get_xarray_detects_the_replacement(changed):
    collection, store, scene = changed
    area, crs = _area(scene)
    with pytest.raises(ObjectChangedError, match=CHANGED):
        collection.get_xarray(area, ["B04"], geometry_crs=crs, backend=store.backend)


def test_sample_points_detects_the_replacement(changed):
    collection, store, scene = changed
    left, bottom, _, _ = scene.bounds
    with pytest.raises(ObjectChangedError, match=CHANGED):
        collection.sample_points([(left + 555, bottom + 555)], ["B04"], geometry_crs=scene.epsg,
                                 backend=store.backend)


@pytest.mark.torch
def test_torchgeo_dataset_detects_or_skips_the_replacement(changed):
    pytest.importorskip("torchgeo")
    collection, store, scene = changed
    left, bottom, _, _ = scene.bounds
    where = (slice(left, left + 1280), slice(bottom, bottom + 1280))
    dataset = collection.to_torchgeo_dataset(["B04"], backend=store.backend)
    with pytest.raises(ObjectChangedError, match=CHANGED):
        dataset[where]
    skipping = collection.to_torchgeo_dataset(["B04"], backend=store.backend, on_error="skip")
    with pytest.warns(UserWarning, match=CHANGED), pytest.raises(IndexError):
        skipping[where]
    assert skipping.errors == 1


@pytest.mark.torch
def test_export_chips_detects_the_replacement(changed, tmp_path):
    pytest.importorskip("torchgeo")
    collection, store, _ = changed
    with pytest.raises(ObjectChangedError, match=CHANGED):
        collection.export_chips(["B04"], tmp_path / "chips", chip_size=128,
                                backend=store.backend)
    assert not (tmp_path / "chips" / "manifest.parquet").exists()


def test_a_rebuild_reads_the_new_version(changed, tmp_path, versions):
    collection, store, _ = changed
    rebuilt = store.build(tmp_path, "rebuilt", force=True)
    np.testing.assert_array_equal(rebuilt.cog(0, "B04", backend=store.backend).read()[0],
                                  read_file(versions[1].files["B04"]))


# -- cost, older collections, servers without ETags --------------------------------------

def test_checking_costs_no_request(versions, nginx_server, tmp_path):
    old, _ = versions
    store = Store("nginx", nginx_server, None, "requests")
    store.put(old.files["B04"])
    collection = store.build(tmp_path, "requests")
    counts = []
    for validate in (False, True):
        nginx_server.clear_log()
        cog = collection.cog(0, "B04", backend=store.backend, validate=validate)
        np.testing.assert_array_equal(cog.read()[0], read_file(old.files["B04"]))
        counts.append(nginx_server.count("/integrity/requests.tif"))
    assert counts[0] == counts[1] > 0


def _without(collection, *fields):
    """The collection as an older build (or an ETag-less server) would have left it."""
    column = collection.table["B04"].combine_chunks()
    children = {f.name: column.field(f.name) for f in column.type}
    for name in fields:
        children[name] = pa.nulls(len(column), children[name].type)
    stripped = pa.StructArray.from_arrays(list(children.values()), list(children))
    table = collection.table.set_column(collection.table.schema.get_field_index("B04"),
                                        "B04", stripped)
    assert pc.all(pc.is_null(table["B04"].combine_chunks().field(fields[0]))).as_py()
    return rasteret.Collection(table, name=collection.name, manifest=collection.manifest)


def test_collections_without_a_version_read_as_before(versions, nginx_server, tmp_path):
    old, new = versions
    store = Store("nginx", nginx_server, None, "unversioned")
    store.put(old.files["B04"])
    collection = _without(store.build(tmp_path, "unversioned"), "etag", "last_modified",
                          "size")
    area, crs = _area(old)
    expected = collection.get_numpy(area, ["B04"], geometry_crs=crs, backend=store.backend,
                                    validate=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        got = collection.get_numpy(area, ["B04"], geometry_crs=crs, backend=store.backend)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(collection.cog(0, "B04", backend=store.backend).read()[0],
                                  read_file(old.files["B04"]))


def test_without_an_etag_the_size_still_tells(versions, nginx_server, tmp_path):
    old, new = versions
    store = Store("nginx", nginx_server, None, "sized")
    store.put(old.files["B04"])
    collection = _without(store.build(tmp_path, "sized"), "etag")
    np.testing.assert_array_equal(collection.cog(0, "B04", backend=store.backend).read()[0],
                                  read_file(old.files["B04"]))
    store.put(new.files["B04"])
    with pytest.raises(ObjectChangedError, match="bytes now"):
        collection.cog(0, "B04", backend=store.backend).read()


@pytest.mark.torch
def test_disk_cache_never_serves_a_replaced_objects_bytes(versions, nginx_server, tmp_path):
    pytest.importorskip("torchgeo")
    old, new = versions
    store = Store("nginx", nginx_server, None, "cached")
    store.put(old.files["B04"])
    cache = tmp_path / "tiles"
    left, bottom, right, top = old.bounds
    where = (slice(left, right), slice(bottom, top))

    def sample(collection):
        dataset = collection.to_torchgeo_dataset(["B04"], backend=store.backend,
                                                 cache_dir=str(cache), cache_bytes=0)
        return dataset[where]["image"][0].numpy()

    first = store.build(tmp_path / "ws", "cached")
    np.testing.assert_array_equal(sample(first), read_file(old.files["B04"]))
    store.put(new.files["B04"])
    rebuilt = store.build(tmp_path / "ws", "cached", force=True)
    np.testing.assert_array_equal(sample(rebuilt), read_file(new.files["B04"]))


def test_weak_etags_are_compared_on_the_response():
    # If-Match compares strongly: a weak ETag would never match, so it is not sent.
    assert _strong_etag('W/"abc"') is None
    assert _strong_etag('"abc"') == '"abc"'
    recorded = ObjectInfo(100, 'W/"abc"', None)
    check_version("http://x/a.tif", recorded, {"size": 100, "e_tag": 'W/"abc"'})
    with pytest.raises(ObjectChangedError, match="ETag"):
        check_version("http://x/a.tif", recorded, {"size": 100, "e_tag": 'W/"abd"'})
    by_time = ObjectInfo(None, None, "2024-05-01T00:00:00+00:00")
    check_version("http://x/a.tif", by_time,
                  {"last_modified": dt.datetime(2024, 5, 1, tzinfo=dt.UTC)})
    with pytest.raises(ObjectChangedError, match="modified"):
        check_version("http://x/a.tif", by_time,
                      {"last_modified": dt.datetime(2024, 5, 2, tzinfo=dt.UTC)})
