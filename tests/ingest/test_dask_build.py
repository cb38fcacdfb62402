"""Distributed builds: ``executor=`` on a Dask ``LocalCluster`` (2 worker processes)
and on a spawn ``ProcessPoolExecutor``, over COGs on moto (S3) found through a rustac
STAC API. The collection equals a build in one process, row for row; a worker killed
mid-build ends in the same collection (Dask's retry, or our resume); an s3://
workspace is written by the workers and published by the driver."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import warnings
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path

import distributed as distributed_dask  # the dev extra installs it: never skipped
import pyarrow as pa
import pytest

import rasteret
from rasteret.errors import ForkAfterIOError, IndexingError
from rasteret.ingest import builder, parts, tasks
from rasteret.io.backend import RetryPolicy
from testbed.scenes import stac_collection, stac_item, write_scenes
from testbed.stac import StacApiServer

FAST_RETRY = {"max_retries": 0, "retry_timeout": dt.timedelta(seconds=2)}
COGS = "dask-build-cogs"
WORKSPACES = "dask-build-workspaces"
BBOX = (14.0, 36.0, 16.5, 38.0)
DATES = ("2024-01-01", "2025-12-31")
BANDS = {"B04": "red", "B08": "nir"}
#: Assets per task in these tests: 2 scenes of 2 bands, so 14 scenes make 7 tasks.
BATCH = 4


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """14 small scenes of two bands (28 assets)."""
    root = tmp_path_factory.mktemp("dask-build-scenes")
    return write_scenes(root, count=14, size=128, tile=64, bands=("B04", "B08"), label=False,
                        shift=64, overviews=False)


@pytest.fixture(scope="module")
def moto(moto_server, scenes):
    """The session's moto holding the scenes' COGs, and a bucket for workspaces."""
    moto_server.create_bucket(COGS)
    moto_server.create_bucket(WORKSPACES)
    for scene in scenes:
        for band, path in scene.files.items():
            moto_server.upload(COGS, f"{scene.id}/{band}.tif", path)
    return moto_server


def href_of(scene, band, path):
    return f"s3://{COGS}/{scene.id}/{band}.tif"


@pytest.fixture(scope="module")
def backend(moto):
    return rasteret.create_backend(
        default_s3_config={"endpoint": moto.endpoint, "region": "us-east-1",
                           "aws_access_key_id": moto.access_key_id,
                           "aws_secret_access_key": moto.secret_access_key},
        retry_config=FAST_RETRY, retries=RetryPolicy(attempts=2, budget=5))


@pytest.fixture(scope="module")
def stac_api(scenes, moto):
    """A rustac STAC API over the scenes; one item's nir asset does not exist."""
    items = [stac_item(scene, href_of) for scene in scenes]
    items[5]["assets"]["nir"]["href"] = f"s3://{COGS}/missing/B08.tif"
    with StacApiServer(stac_collection(items), items) as server:
        yield server


@pytest.fixture(scope="module")
def client():
    """A Dask client of a LocalCluster: two worker processes of one thread each."""
    with distributed_dask.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                       dashboard_address=None) as cluster:
        with distributed_dask.Client(cluster) as dask_client:
            yield dask_client


def build(stac_api, backend, workspace, name="s2", **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the "left out" summary
        return rasteret.build_from_stac(
            name=name, stac_api=stac_api.url, collection="sentinel-2-l2a", bbox=BBOX,
            date_range=DATES, band_map=BANDS, backend=backend, workspace_dir=workspace,
            on_error="skip", progress=False, page_size=3, **kwargs)


@pytest.fixture(scope="module")
def single(stac_api, backend, tmp_path_factory):
    """The reference: the same build in this process alone."""
    return build(stac_api, backend, tmp_path_factory.mktemp("single-ws"))


def assert_same_collection(built, reference):
    """Same rows and columns (tables sorted by id), failures and build information."""
    def rows(table):
        return table.sort_by("id").replace_schema_metadata(None)

    assert rows(built.table).equals(rows(reference.table))

    def failures(collection):  # messages carry the server's timing and request id
        return sorted((row["id"], row["band"], row["href"], row["error_type"],
                       row["message"][:60]) for row in collection.failures.to_pylist())

    assert failures(built) == failures(reference)
    def manifest(collection):
        return {k: v for k, v in collection.manifest.items() if k != "created"}

    assert manifest(built) == manifest(reference)


class Recording(Executor):
    """An executor that hands tasks to ``inner`` and counts them; the ``kill``-th task
    (1-based) runs through :func:`die_once` first."""

    def __init__(self, inner, *, kill=None, marker=None):
        self.inner = inner
        self.kill = kill
        self.marker = marker
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs) -> Future:
        self.submitted += 1
        if self.submitted == self.kill:
            fn = partial(die_once, str(self.marker), fn)
        return self.inner.submit(fn, *args, **kwargs)


def die_once(marker, fn, *args):
    """End the worker process abruptly on the first attempt (the marker file records
    it); run ``fn`` on any later one."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return fn(*args)


# -- Dask ------------------------------------------------------------------------------
def test_cluster_build_equals_single_process(stac_api, backend, client, single, tmp_path):
    stats = rasteret.FetchStats()
    executor = Recording(client.get_executor())
    built = build(stac_api, backend, tmp_path / "ws", executor=executor, batch_size=BATCH,
                  stats=stats)
    assert_same_collection(built, single)
    assert len(built) == 13 and built.failures.num_rows == 1
    # 7 index tasks (two scenes each) and one part task; the workers' requests are
    # counted here (one per asset; the missing one returns no bytes).
    assert executor.submitted == 8 and stats.requests == 27
    # The finished batches are gone, and only the collection is left in the workspace.
    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == ["s2"]


def test_worker_killed_mid_build_is_retried_by_dask(stac_api, backend, client, single,
                                                     tmp_path):
    marker = tmp_path / "killed"
    executor = Recording(client.get_executor(), kill=3, marker=marker)
    built = build(stac_api, backend, tmp_path / "ws", executor=executor, batch_size=BATCH)
    assert marker.exists()  # a worker did die
    assert_same_collection(built, single)


def test_remote_workspace_built_through_the_cluster(stac_api, backend, client, single,
                                                    moto):
    workspace = f"s3://{WORKSPACES}/team"
    built = build(stac_api, backend, workspace, executor=client.get_executor(),
                  batch_size=BATCH)
    assert built.path is None
    assert_same_collection(built, single)
    assert_same_collection(rasteret.load(f"{workspace}/s2", backend=backend), single)
    keys = sorted(item["Key"] for item in moto.boto3_client().list_objects_v2(
        Bucket=WORKSPACES, Prefix="team/").get("Contents", []))
    # One manifest and one part: the task batches under _rasteret/builds/ are removed.
    assert keys[0] == "team/_rasteret/s2.json" and len(keys) == 2
    assert keys[1].startswith("team/s2/part-")


# -- ProcessPoolExecutor ----------------------------------------------------------------
def table_of(scenes):
    """The scenes as a table of hrefs on S3, one with a missing asset, and a property
    that has no value in the first scenes (typed by the later ones)."""
    rows = [{"id": s.id, "datetime": s.datetime, "B04": href_of(s, "B04", None),
             "B08": href_of(s, "B08", None), "quality": None if i < 6 else i / 2}
            for i, s in enumerate(scenes)]
    rows[5]["B08"] = f"s3://{COGS}/missing/B08.tif"
    return pa.Table.from_pylist(rows)


def build_table(scenes, backend, workspace, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return rasteret.build_from_table(
            table_of(scenes), name="t", href_columns=["B04", "B08"], backend=backend,
            workspace_dir=workspace, on_error="skip", progress=False, **kwargs)


def spawn_pool(workers):
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


@pytest.fixture(scope="module")
def pool():
    """Two spawned worker processes."""
    with spawn_pool(2) as executor:
        yield executor


def test_spawn_process_pool_build_equals_single_process(scenes, backend, pool, tmp_path):
    reference = build_table(scenes, backend, tmp_path / "one")
    assert reference.table.schema.field("quality").type == pa.float64()
    built = build_table(scenes, backend, tmp_path / "pool", executor=pool, batch_size=BATCH)
    assert_same_collection(built, reference)


def test_killed_pool_worker_then_rerun_resumes(scenes, backend, pool, tmp_path):
    reference = build_table(scenes, backend, tmp_path / "one")
    marker = tmp_path / "killed"
    # One worker runs the tasks in order: the first three finish, the fourth kills it.
    with spawn_pool(1) as dying, pytest.raises(BrokenProcessPool):
        build_table(scenes, backend, tmp_path / "pool",
                    executor=Recording(dying, kill=4, marker=marker), batch_size=BATCH)
    assert marker.exists() and not (tmp_path / "pool" / "t").exists()
    assert len(list((tmp_path / "pool" / ".t.tasks").glob("*.parquet"))) == 3
    stats = rasteret.FetchStats()
    built = build_table(scenes, backend, tmp_path / "pool", executor=pool, batch_size=BATCH,
                        stats=stats)
    assert_same_collection(built, reference)
    # The three finished tasks (12 assets) were not redone: 16 headers were read.
    assert stats.requests == 28 - 3 * 4
    assert not (tmp_path / "pool" / ".t.tasks").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads running
def test_forked_workers_after_io_raise_a_clear_error(scenes, backend, tmp_path):
    build_table(scenes, backend, tmp_path / "one")  # this process has done I/O
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        with pytest.raises(ForkAfterIOError, match="spawn"):
            build_table(scenes, backend, tmp_path / "fork", executor=pool, batch_size=BATCH)


# -- the driver -------------------------------------------------------------------------
def test_driver_streams_records_into_a_bounded_window(scenes, tmp_path, monkeypatch):
    """Tasks go out while the source is still being read, never more than
    TASKS_IN_FLIGHT at once, and with on_error="raise" a failure stops the build."""
    monkeypatch.setattr(builder, "TASKS_IN_FLIGHT", 2)
    monkeypatch.setattr(tasks, "STAGED_AHEAD", 1)  # each task goes out once written
    table = table_of(scenes).drop_columns(["quality"])
    local = pa.Table.from_pylist([
        {**row, "B04": str(s.files["B04"]), "B08": str(s.files["B08"])}
        for row, s in zip(table.to_pylist(), scenes)])
    pulled = []
    at_submit = []
    in_flight = []

    class Watching(Executor):
        def __init__(self, inner):
            self.inner = inner
            self.pending: set[Future] = set()

        def submit(self, fn, /, *args, **kwargs):
            at_submit.append(len(pulled))
            self.pending = {f for f in self.pending if not f.done()}
            future = self.inner.submit(fn, *args, **kwargs)
            self.pending.add(future)
            in_flight.append(len(self.pending))
            return future

    from rasteret.ingest import BuildOptions
    from rasteret.ingest.api import _table_record

    def records():
        for index, row in enumerate(local.to_pylist()):
            pulled.append(index)
            yield _table_record(index, row, columns=set(local.column_names),
                                band_columns={"B04": "B04", "B08": "B08"}, assets_column=None,
                                band_map=None, id_column="id", datetime_column="datetime",
                                geometry_column=None, used={"id", "datetime", "B04", "B08"})

    with ThreadPoolExecutor(2) as pool:
        built = builder.build_collection(
            records(), manifest={"dataset_id": None},
            options=BuildOptions(name="w", workspace_dir=tmp_path, progress=False,
                                 executor=Watching(pool), batch_size=BATCH))
    assert len(built) == 14 and at_submit[0] == 2 and max(in_flight) <= 2
    broken = local.to_pylist()
    broken[5]["B08"] = str(tmp_path / "missing.tif")
    with ThreadPoolExecutor(2) as pool, pytest.raises(IndexingError, match="missing.tif"):
        rasteret.build_from_table(
            pa.Table.from_pylist(broken), name="r", href_columns=["B04", "B08"],
            workspace_dir=tmp_path, progress=False, executor=pool, batch_size=BATCH)
    assert not (tmp_path / "r").exists()


def test_schemas_of_batches_merge_as_one_process_types_them():
    merge = parts.merge_schemas
    a = pa.schema([("id", pa.string()), ("q", pa.null()), ("n", pa.int64())])
    b = pa.schema([("id", pa.string()), ("q", pa.float64()), ("n", pa.float64()),
                   ("s", pa.string())])
    merged = merge(merge(None, a), b)
    assert merged == pa.schema([("id", pa.string()), ("q", pa.float64()),
                                ("n", pa.float64()), ("s", pa.string())])
    assert merge(pa.schema([("x", pa.int64())]), pa.schema([("x", pa.string())])) \
        == pa.schema([("x", pa.string())])
    with pytest.raises(rasteret.errors.ConfigurationError, match="'x'"):
        merge(pa.schema([("x", pa.int64())]), pa.schema([("x", pa.list_(pa.int64()))]))


def test_batch_size_must_be_positive(scenes, tmp_path):
    with ThreadPoolExecutor(1) as pool, pytest.raises(rasteret.errors.ConfigurationError,
                                                      match="batch_size"):
        rasteret.build_from_table(table_of(scenes), name="b", href_columns=["B04"],
                                  workspace_dir=tmp_path, executor=pool, batch_size=0)


def test_build_by_dataset_id_passes_the_executor_on(stac_api, backend, tmp_path):
    options = dict(stac_api=stac_api.url, bbox=BBOX, date_range=DATES, bands=["red"],
                   backend=backend, on_error="skip", progress=False)
    with warnings.catch_warnings(), ThreadPoolExecutor(2) as threads:
        warnings.simplefilter("ignore", UserWarning)
        reference = rasteret.build("my-org/sentinel-2-l2a", name="id", **options,
                                   workspace_dir=tmp_path / "one")
        executor = Recording(threads)
        built = rasteret.build("my-org/sentinel-2-l2a", name="id", **options,
                               workspace_dir=tmp_path / "pool", executor=executor,
                               batch_size=3)
    assert_same_collection(built, reference)
    assert executor.submitted == 5 + 1  # 14 one-band scenes in tasks of 3, one part


def test_tasks_go_out_by_reference_whatever_their_size(scenes, tmp_path):
    """The driver writes each task's scenes to the task area and submits only the
    task's key and size: Dask keeps what it was given, so the driver's memory would
    otherwise grow with the number of assets."""
    import pickle

    sizes: dict[int, list[int]] = {}

    class Measuring(Executor):
        def __init__(self, inner, batch):
            self.inner, self.batch = inner, batch

        def submit(self, fn, /, *args, **kwargs):
            if getattr(fn, "func", None) is tasks.index_task:
                sizes.setdefault(self.batch, []).append(len(pickle.dumps(args)))
                assert isinstance(args[0], tasks.TaskRef)
            return self.inner.submit(fn, *args, **kwargs)

    local = table_of(scenes)
    local = pa.Table.from_pylist([
        {**row, "B04": str(s.files["B04"]), "B08": str(s.files["B08"])}
        for row, s in zip(local.to_pylist(), scenes)])
    built = {}
    for batch in (2, 28):
        with ThreadPoolExecutor(2) as pool:
            built[batch] = rasteret.build_from_table(
                local, name=f"b{batch}", href_columns=["B04", "B08"],
                workspace_dir=tmp_path, progress=False, executor=Measuring(pool, batch),
                batch_size=batch)
        assert not (tmp_path / f".b{batch}.tasks").exists()
    assert len(sizes[2]) == 14 and len(sizes[28]) == 1
    assert max(sizes[28]) == max(sizes[2]) < 200
    def rows(collection):
        return collection.table.sort_by("id").replace_schema_metadata(None)

    assert rows(built[2]).equals(rows(built[28]))


def test_scenes_are_written_ahead_and_go_out_in_order(tmp_path, monkeypatch):
    """Up to STAGED_AHEAD writes run at once; references come out in the tasks' order,
    each once its scenes are written; a failed write stops the build."""
    import threading

    from rasteret.ingest.records import SceneRecord
    from rasteret.workspace import LocalTaskArea

    monkeypatch.setattr(tasks, "STAGED_AHEAD", 3)
    active, most = [0], [0]
    lock = threading.Lock()

    class Slow(LocalTaskArea):
        def put(self, name, data):
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            threading.Event().wait(0.05)
            super().put(name, data)
            with lock:
                active[0] -= 1

    area = Slow(tmp_path / "area")
    made = [tasks.IndexTask(f"k{i}", [SceneRecord(f"s{i}", None, None, None, None)],
                                   f"scenes {i}".encode()) for i in range(7)]
    refs = []
    for ref in tasks.staged(area, made):
        assert area.get(tasks.scenes_name(ref.key)) == f"scenes {ref.key[1:]}".encode()
        refs.append(ref.key)
    assert refs == [f"k{i}" for i in range(7)] and most[0] == 3

    class Denied(LocalTaskArea):
        def put(self, name, data):
            raise rasteret.errors.AccessDeniedError(f"may not write {name}")

    with pytest.raises(rasteret.errors.AccessDeniedError, match="k0"):
        list(tasks.staged(Denied(tmp_path / "denied"), made))


def test_task_scenes_round_trip_through_json_to_the_same_rows():
    """What a worker reads back from the task area makes the same table as the
    driver's records: times with zones, footprints, bboxes, nested and dropped
    properties, band metadata, absent bands."""
    from rasteret.ingest.records import (
        BandMetadata,
        BandSource,
        SceneRecord,
        records_from_json,
        records_to_json,
        records_to_table,
    )

    when = dt.datetime(2024, 5, 1, 10, 30, 15, 123456, tzinfo=dt.UTC)
    records = [
        SceneRecord(
            id="a", datetime=when,
            geometry={"type": "Polygon", "coordinates": (((0, 0), (1, 0), (1, 1), (0, 0)),)},
            bbox=None, collection="c",
            properties={"eo:cloud_cover": 12.5, "n": 3, "ok": True, "none": None,
                        "nested": {"x": [1, 2]}, "tags": ["a"], "datetime": "skip",
                        "when": when, "proj:epsg": 32633},
            bands={"red": BandSource("s3://b/a/red.tif", 1, BandMetadata(
                scale=0.0001, offset=-0.1, nodata=0.0, data_type="uint16", unit="m")),
                   "nir": None},
            epsg=32633),
        SceneRecord(id="b", datetime=None, geometry=None, bbox=(1.0, 2.0, 3.0, 4.0),
                    collection=None, bands={"red": BandSource("https://h/b.tif?x=1", 2)}),
    ]
    decoded = records_from_json(records_to_json(records))
    assert decoded[1] == records[1]
    assert decoded[0].datetime == when and decoded[0].bands == records[0].bands
    empty: list[dict[str, dict | None]] = [{}, {}]
    assert records_to_table(decoded, empty).equals(records_to_table(records, empty))


# -- one engine: in this process or on an executor ----------------------------------------
def local_table(scenes, missing=None):
    """The scenes as a table of local paths; one asset is ``missing`` when given."""
    rows = [{"id": s.id, "datetime": s.datetime, "B04": str(s.files["B04"]),
             "B08": str(s.files["B08"])} for s in scenes]
    if missing is not None:
        rows[5]["B08"] = str(missing)
    return pa.Table.from_pylist(rows)


def build_local(scenes, workspace, *, name="e", missing=None, **kwargs):
    return rasteret.build_from_table(
        local_table(scenes, missing), name=name, href_columns=["B04", "B08"],
        workspace_dir=workspace, progress=False, batch_size=BATCH, **kwargs)


class Interrupted(Exception):
    """Stands for whatever stops a build: Ctrl-C, a lost worker, a full disk."""


def interrupt_after(monkeypatch, finished):
    """Stop the build at its task number ``finished + 1`` (and any task after it)."""
    original = tasks.index_batch
    calls = []

    def stopping(*args, **kwargs):
        calls.append(1)
        if len(calls) > finished:
            raise Interrupted(f"stopped at task {len(calls)}")
        return original(*args, **kwargs)

    monkeypatch.setattr(tasks, "index_batch", stopping)


def test_one_process_build_runs_the_same_tasks_as_an_executor_build(scenes, tmp_path,
                                                                   monkeypatch):
    from rasteret.ingest.executor import InProcessExecutor

    in_process = []

    class Counting(InProcessExecutor):
        def submit(self, fn, /, *args, **kwargs):
            in_process.append(fn)
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(builder, "InProcessExecutor", Counting)
    alone = build_local(scenes, tmp_path / "one")
    with ThreadPoolExecutor(2) as pool:
        executor = Recording(pool)
        on_pool = build_local(scenes, tmp_path / "pool", executor=executor)
    assert_same_collection(on_pool, alone)
    # 7 index tasks and one part task either way, and the same parts.
    assert len(in_process) == executor.submitted == 8
    assert sorted(p.name for p in (tmp_path / "one" / "e").iterdir()) == sorted(
        p.name for p in (tmp_path / "pool" / "e").iterdir())


@pytest.mark.parametrize("first", ["one process", "executor"])
def test_a_build_resumes_the_finished_tasks_of_the_other_engine(scenes, tmp_path,
                                                                monkeypatch, first):
    """One resume format: the finished batches in the task area, whoever wrote them."""
    reference = build_local(scenes, tmp_path / "reference")
    monkeypatch.setattr(builder, "IN_PROCESS_TASKS", 1)  # tasks in order, one at a time
    workspace = tmp_path / "ws"
    with monkeypatch.context() as patch, ThreadPoolExecutor(1) as pool:
        interrupt_after(patch, 3)
        on = {"executor": pool} if first == "executor" else {}
        with pytest.raises(Interrupted):
            build_local(scenes, workspace, **on)
    assert not (workspace / "e").exists()
    assert len(list((workspace / ".e.tasks").glob("*.parquet"))) == 3
    stats = rasteret.FetchStats()
    with ThreadPoolExecutor(2) as pool:
        other = {} if first == "executor" else {"executor": pool}
        resumed = build_local(scenes, workspace, stats=stats, **other)
    assert_same_collection(resumed, reference)
    # The three finished tasks (12 assets) were not redone.
    assert stats.requests == 28 - 3 * 4
    assert not (workspace / ".e.tasks").exists()


def test_one_failure_report_whatever_the_engine(scenes, tmp_path):
    """The same failures table, one warning naming the caller's line, and the same
    IndexingError with on_error="raise", in one process or on an executor."""
    missing = tmp_path / "missing.tif"
    reports = {}
    for engine in ("one process", "executor"):
        with ThreadPoolExecutor(2) as pool:
            on = {"executor": pool} if engine == "executor" else {}
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                built = build_local(scenes, tmp_path / engine, missing=missing,
                                    on_error="skip", **on)
            with pytest.raises(IndexingError) as raised:
                build_local(scenes, tmp_path / engine, name="r", missing=missing, **on)
        left_out = [w for w in caught if "could not be indexed" in str(w.message)]
        assert len(left_out) == 1 and "1 asset(s)" in str(left_out[0].message)
        assert left_out[0].filename == __file__
        assert [f.href for f in raised.value.failures] == [str(missing)]
        assert not (tmp_path / engine / "r").exists()
        reports[engine] = ([{k: v for k, v in row.items() if k != "message"}
                            for row in built.failures.to_pylist()],
                           built.manifest["failures"], len(built))
    assert reports["one process"] == reports["executor"]
    assert reports["executor"][1:] == (1, 13)


def test_scene_ids_repeated_across_tasks_are_refused(scenes, tmp_path):
    table = local_table(scenes)
    ids = table["id"].to_pylist()
    ids[-1] = ids[0]  # the first and the last task share a scene id
    table = table.set_column(0, "id", pa.array(ids))
    with pytest.raises(rasteret.errors.ConfigurationError, match="not unique"):
        rasteret.build_from_table(table, name="dup", href_columns=["B04", "B08"],
                                  workspace_dir=tmp_path, progress=False, batch_size=BATCH)
    assert not (tmp_path / "dup").exists()
