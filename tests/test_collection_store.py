"""A collection's scenes held in memory or read lazily from its files behave alike
(rasteret/scenes.py); rows_where selects row numbers that readers use directly; a lazy
subset pickles as where its files are and its rows."""

from __future__ import annotations

import datetime as dt
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import rasteret
from rasteret.collection import Collection
from rasteret.errors import ConfigurationError
from rasteret.scenes import PartsStore, TableStore
from rasteret.storage import write_parts
from testbed.scenes import write_scenes

BANDS = ["B02", "B04"]
SCENES = 2_500  # three row groups of one part


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Four small scenes built from a table of local files (in memory)."""
    scenes = write_scenes(tmp_path_factory.mktemp("store-scenes"), count=4, size=256,
                          tile=128, shift=128, seed=3, bands=tuple(BANDS), label=False)
    rows = [{"id": s.id, "datetime": s.datetime, "eo:cloud_cover": s.cloud_cover,
             "platform": "a" if i % 2 else "b", **{b: str(p) for b, p in s.files.items()}}
            for i, s in enumerate(scenes)]
    return rasteret.build_from_table(
        pa.Table.from_pylist(rows), name="store-base", href_columns=BANDS,
        workspace_dir=tmp_path_factory.mktemp("store-ws"), progress=False)


def replicate(table: pa.Table, scenes: int) -> pa.Table:
    """``scenes`` rows of copies of ``table``'s rows: unique ids, one hour later and a
    different cloud cover per copy, so filters pick scattered rows."""
    index = np.arange(scenes) % table.num_rows
    copy = np.arange(scenes) // table.num_rows
    big = table.take(pa.array(index))
    ids = pc.binary_join_element_wise(big["id"], pa.array(copy.astype(str)), "-r")
    when = pc.cast(pc.add(pc.cast(big["datetime"], pa.int64()),
                          pa.array(copy * 3_600_000_000, pa.int64())), big["datetime"].type)
    cloud = pa.array((np.arange(scenes) * 7 % 100).astype(float))
    for name, column in (("id", ids), ("datetime", when), ("eo:cloud_cover", cloud)):
        big = big.set_column(big.schema.get_field_index(name), name, column)
    return big


def saved(base, scenes: int, folder) -> Collection:
    write_parts(replicate(base.table, scenes), folder, {**base.manifest, "name": folder.name},
                base.failures)
    return rasteret.load(folder)


@pytest.fixture(scope="module")
def loaded(base, tmp_path_factory):
    return saved(base, SCENES, tmp_path_factory.mktemp("store") / "loaded")


@pytest.fixture(params=["memory", "loaded"])
def collection(request, loaded):
    """The same scenes held as a table in memory, and read lazily from files."""
    if request.param == "memory":
        return Collection(loaded.table, name=loaded.name, manifest=loaded.manifest,
                          failures=loaded.failures)
    return rasteret.load(loaded.path)  # fresh: nothing decoded yet


def test_the_kind_of_store_is_what_was_made(collection):
    kind = PartsStore if collection.lazy else TableStore
    assert isinstance(collection.store, kind)
    assert collection.store.decoded is not collection.lazy
    if not collection.lazy:
        with pytest.raises(ConfigurationError, match="not loaded from files"):
            collection.source  # noqa: B018


def test_rows_where_gives_the_row_numbers_of_each_filter(collection):
    frame = collection.table
    times = frame["datetime"].to_numpy()
    cloud = frame["eo:cloud_cover"].to_numpy()
    start = times.min()
    assert np.array_equal(collection.rows_where(), np.arange(SCENES))
    end = start + np.timedelta64(9, "h")
    window = collection.rows_where(date_range=(start.astype(dt.datetime),
                                               end.astype(dt.datetime)))
    assert window.dtype == np.int64
    assert np.array_equal(window, np.flatnonzero(times <= start + np.timedelta64(9, "h")))
    clear = collection.rows_where(cloud_cover_lt=10)
    assert np.array_equal(clear, np.flatnonzero(cloud < 10))
    ids = ["S2X_SYN_001-r3", "S2X_SYN_000-r600", "S2X_SYN_002-r0"]
    wanted = collection.rows_where(ids=ids)
    assert sorted(collection.column("id").take(pa.array(wanted)).to_pylist()) == sorted(ids)
    platform = collection.rows_where(platform="a")
    assert np.array_equal(platform, np.flatnonzero(np.arange(SCENES) % 4 % 2 == 1))
    both = collection.rows_where(pc.field("platform") == "a", cloud_cover_lt=10)
    assert np.array_equal(both, np.intersect1d(platform, clear))
    box = collection.column("bbox")[0].as_py()  # scene 0's western edge: scene 0 only
    west = collection.rows_where(bbox=(box["xmin"], box["ymin"], box["xmin"] + 1e-6,
                                       box["ymax"]))
    assert len(west) and set(np.asarray(west) % 4) <= {0}


def test_an_expression_on_a_field_kept_in_the_files(collection):
    rows = collection.rows_where(pc.field("B04", "size") > 0)  # not a light field
    assert np.array_equal(rows, np.arange(SCENES))


def test_subset_and_filter_keep_the_rows_of_rows_where(collection):
    rows = collection.rows_where(cloud_cover_lt=30, platform="b")
    subset = collection.subset(cloud_cover_lt=30, platform="b")
    filtered = collection.filter(pc.field("platform") == "b")
    assert subset.lazy is collection.lazy and filtered.lazy is collection.lazy
    assert subset.column("id").equals(collection.column("id").take(pa.array(rows)))
    assert filtered.column("id").equals(collection.column("id").filter(
        pc.equal(collection.column("platform"), "b")))
    assert subset.table.equals(collection.table.take(pa.array(rows)))
    assert len(collection.subset()) == SCENES


def test_both_stores_give_the_same_answers(collection, loaded):
    memory = Collection(loaded.table, name=loaded.name, manifest=loaded.manifest)
    assert len(collection) == SCENES
    assert collection.column_names == memory.column_names
    assert collection.bands == memory.bands == BANDS
    assert collection.bounds == memory.bounds and collection.date_range == memory.date_range
    assert collection.epsg_codes == memory.epsg_codes
    assert collection.column("id").equals(memory.column("id"))
    assert collection.table.equals(memory.table)
    rows = [2_400, 3, 1_500, 3]  # several row groups, out of order, repeated
    views = collection.band_views("B04", rows)
    expected = memory.band_views("B04", rows)
    assert [v.row for v in views] == rows
    assert [v.record() for v in views] == [v.record() for v in expected]
    assert [v.scene_id for v in views] == [v.scene_id for v in expected]
    taken = collection.take_rows(rows)
    assert taken.lazy is collection.lazy
    assert taken.table.equals(memory.table.take(pa.array(rows)))
    assert [v.row for v in taken.band_views("B04")] == [0, 1, 2, 3]
    with pytest.raises(IndexError):
        collection.take_rows([SCENES])
    with pytest.raises(IndexError):
        collection.band_views("B04", [-1])
    with pytest.raises(ConfigurationError, match="no column"):
        collection.rows_where(orbit=3)
    with pytest.raises(ConfigurationError, match="bbox"):
        collection.rows_where(bbox=(1, 1, 0, 0))
    with pytest.raises((pa.ArrowInvalid, KeyError)):
        collection.filter(pc.field("orbit") == 3)


def test_a_lazy_subset_pickles_to_kilobytes(base, tmp_path):
    big = saved(base, 12_000, tmp_path / "pickled")  # three parts
    scattered = big.subset(cloud_cover_lt=50)  # every other row or so: many runs
    assert len(scattered) > 5_000
    data = pickle.dumps(scattered)
    # Its 6,000 row numbers alone are 48 KB; packed as steps they are a few hundred bytes.
    assert len(data) < 8_000
    assert len(pickle.dumps(big.subset(date_range=big.date_range))) < 8_000
    again = pickle.loads(data)
    assert again.lazy and not again.store.decoded
    assert again.column("id").equals(scattered.column("id"))
    assert again.band_view(17, "B04").record() == scattered.band_view(17, "B04").record()
    # Decoding the table first does not make the pickle carry it.
    scattered.table  # noqa: B018
    assert len(pickle.dumps(scattered)) == len(data)


def test_a_store_that_cannot_reopen_its_files_pickles_its_rows(loaded):
    alone = Collection.from_source(loaded.source, origin=None, name="alone",
                                   manifest=loaded.manifest, failures=loaded.failures,
                                   path=None, rows=np.array([5, 1, 2_000]))
    assert alone.lazy
    again = pickle.loads(pickle.dumps(alone))
    assert not again.lazy and again.table.equals(alone.table)
    assert again.column("id").to_pylist() == ["S2X_SYN_001-r1", "S2X_SYN_001-r0",
                                               "S2X_SYN_000-r500"]
