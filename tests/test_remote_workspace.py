"""Workspaces on object storage: build to s3:// / az://, load, list, delete, export;
atomic publication through a manifest written last with a conditional put (two
concurrent builders, a reader during a replace, a killed build); credentials (a
denied backend, no secret in any object). Real servers: moto, and Azurite.

The credential tests run on a moto with IAM auth on. The protocol tests run on the
session's moto with auth off: with auth on, moto (5.2.5) rejects every listing whose
prefix contains a ``/`` with SignatureDoesNotMatch, boto3's requests as well as
obstore's (it checks the signature against the decoded query), and a workspace lists
``<prefix>/_rasteret/`` and ``<prefix>/<name>/``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rasteret
import rasteret.storage
import rasteret.workspace
from rasteret.errors import AccessDeniedError, CollectionConflictError, CollectionNotFoundError
from rasteret.io.backend import RetryPolicy
from rasteret.workspace import ObjectWorkspace
from testbed.scenes import write_scenes
from testbed.servers import MotoServer

FAST_RETRY = {"max_retries": 0, "retry_timeout": dt.timedelta(seconds=2)}
BUCKET = "workspace-bucket"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Six small single-band scenes on local disk (the COGs; the workspace is remote)."""
    root = tmp_path_factory.mktemp("remote-ws-scenes")
    return write_scenes(root, count=6, size=256, tile=128, bands=("B04",), label=False)


@pytest.fixture(scope="module")
def iam_moto():
    """A moto server with IAM auth on: a ``writer`` allowed everything on S3 and a
    ``stranger`` with no policy."""
    with MotoServer() as moto:
        moto.create_bucket(BUCKET)
        keys = moto.enable_iam({"writer": ["s3:*"], "stranger": None})
        yield moto, keys


def s3_backend(moto, key_id, secret):
    return rasteret.create_backend(
        default_s3_config={"endpoint": moto.endpoint, "region": "us-east-1",
                           "aws_access_key_id": key_id, "aws_secret_access_key": secret},
        retry_config=FAST_RETRY, retries=RetryPolicy(attempts=2, budget=5))


@pytest.fixture(scope="module")
def moto(moto_server):
    """The session's moto (auth off) with the workspace bucket."""
    moto_server.create_bucket(BUCKET)
    return moto_server


@pytest.fixture(scope="module")
def backend(moto):
    return s3_backend(moto, moto.access_key_id, moto.secret_access_key)


def keys_under(moto, prefix):
    """Every object key under ``prefix`` in the bucket (boto3, not rasteret)."""
    pages = moto.boto3_client().get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def object_bytes(moto, key):
    return moto.boto3_client().get_object(Bucket=BUCKET, Key=key)["Body"].read()


def rows(scenes, missing=None):
    table = [{"id": s.id, "datetime": s.datetime, "B04": str(s.files["B04"])} for s in scenes]
    if missing is not None:
        table.append({"id": "missing", "datetime": scenes[0].datetime, "B04": str(missing)})
    return pa.Table.from_pylist(table)


def build(scenes, workspace, name, backend, *, force=False, missing=None):
    # A missing asset is left out with a warning saying so.
    left_out = (pytest.warns(UserWarning, match="could not be indexed") if missing is not None
                else contextlib.nullcontext())
    with left_out:
        return rasteret.build_from_table(
            rows(scenes, missing), name=name, href_columns=["B04"], workspace_dir=workspace,
            backend=backend, progress=False, on_error="skip", force=force,
        )


def ids(collection):
    return sorted(collection.table["id"].to_pylist())


# -- build, load, list, delete, export ---------------------------------------------------
def test_build_to_s3_then_load_list_export_delete(moto, backend, scenes, tmp_path,
                                                   monkeypatch):
    monkeypatch.setattr(rasteret.storage, "ROWS_PER_PART", 2)
    workspace = f"s3://{BUCKET}/teams/a"
    built = build(scenes[:5], workspace, "s2", backend, missing=tmp_path / "nope.tif")
    local = build(scenes[:5], tmp_path / "ws", "s2", None, missing=tmp_path / "nope.tif")
    assert len(built) == 5 and built.failures.num_rows == 1 and built.path is None
    assert built.table.equals(local.table)

    keys = keys_under(moto, "teams/a/")
    head = json.loads(object_bytes(moto, "teams/a/_rasteret/s2.json"))
    parts = [f"teams/a/{part['path']}" for part in head["parts"]]
    assert keys == sorted(["teams/a/_rasteret/s2.json", *parts]) and len(parts) == 3
    assert all(p.startswith(f"teams/a/s2/part-{head['build']}-") for p in parts)
    # The folder alone is a GeoParquet dataset of exactly the scenes.
    from_folder = pa.concat_tables(
        [pq.read_table(pa.BufferReader(object_bytes(moto, p))) for p in parts])
    assert sorted(from_folder["id"].to_pylist()) == ids(local)

    by_name = rasteret.load("s2", workspace_dir=workspace, backend=backend)
    by_url = rasteret.load(f"{workspace}/s2", backend=backend)
    for loaded in (by_name, by_url):
        assert loaded.table.equals(local.table)
        assert loaded.failures.to_pylist() == local.failures.to_pylist()
        assert loaded.name == "s2" and loaded.manifest["scenes"] == 5
    assert rasteret.list_collections(workspace_dir=workspace, backend=backend) == ["s2"]
    other = f"s3://{BUCKET}/teams/other"
    assert rasteret.list_collections(workspace_dir=other, backend=backend) == []

    # Building the same name again without force loads it (no new objects).
    assert ids(build(scenes[:2], workspace, "s2", backend)) == ids(local)
    assert keys_under(moto, "teams/a/") == keys

    exported = by_name.export(f"s3://{BUCKET}/exports/s2.parquet", backend=backend)
    assert exported == f"s3://{BUCKET}/exports/s2.parquet"
    again = rasteret.load(exported, backend=backend)
    assert again.table.equals(local.table) and again.failures.num_rows == 1

    rasteret.delete_collection("s2", workspace_dir=workspace, backend=backend)
    assert keys_under(moto, "teams/a/") == []
    assert rasteret.list_collections(workspace_dir=workspace, backend=backend) == []
    with pytest.raises(CollectionNotFoundError, match="teams/a"):
        rasteret.load("s2", workspace_dir=workspace, backend=backend)
    with pytest.raises(CollectionNotFoundError):
        rasteret.delete_collection("s2", workspace_dir=workspace, backend=backend)


def test_load_reads_the_manifest_and_only_its_parts(moto, backend, scenes, monkeypatch):
    workspace = f"s3://{BUCKET}/teams/b"
    built = build(scenes[:3], workspace, "s2", backend)
    # A stray object in the folder (an unfinished build's part) is never read.
    moto.upload(BUCKET, "teams/b/s2/part-stray-00000.parquet", b"not parquet")
    import rasteret.io.objects as objects

    fetched = []
    real_get = objects.get_object_async

    async def counting_get(backend, url):
        fetched.append(url)
        return await real_get(backend, url)

    def no_listing(*args, **kwargs):
        raise AssertionError("load listed the bucket")

    monkeypatch.setattr(objects, "get_object_async", counting_get)
    monkeypatch.setattr(rasteret.workspace, "list_objects", no_listing)
    loaded = rasteret.load(f"{workspace}/s2", backend=backend)
    assert loaded.table.equals(built.table)
    head = json.loads(object_bytes(moto, "teams/b/_rasteret/s2.json"))
    assert fetched == [f"{workspace}/_rasteret/s2.json"] + [
        f"{workspace}/{part['path']}" for part in head["parts"]]


# -- atomic publication ------------------------------------------------------------------
def race_commits(monkeypatch, parties=2):
    """Hold every manifest write until ``parties`` builds are ready to write it."""
    barrier = threading.Barrier(parties, timeout=60)
    real_commit = ObjectWorkspace.write_manifest

    def commit(self, *args, **kwargs):
        barrier.wait()
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(ObjectWorkspace, "write_manifest", commit)


def run_both(targets):
    results = [None] * len(targets)

    def run(index, target):
        try:
            results[index] = target()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replace"])
def test_two_concurrent_publishers_exactly_one_wins(moto, backend, scenes, monkeypatch,
                                                    existing):
    workspace = f"s3://{BUCKET}/race-{existing}"
    if existing:
        build(scenes[5:], workspace, "s2", backend)
    race_commits(monkeypatch)
    first, second = scenes[:2], scenes[2:5]
    results = run_both([
        lambda: build(first, workspace, "s2", backend, force=True),
        lambda: build(second, workspace, "s2", backend, force=True),
    ])
    errors = [r for r in results if isinstance(r, BaseException)]
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1 and len(errors) == 1, results
    assert isinstance(errors[0], CollectionConflictError)
    assert "s2" in str(errors[0]) and workspace in str(errors[0])
    loaded = rasteret.load("s2", workspace_dir=workspace, backend=backend)
    assert ids(loaded) == ids(winners[0])
    # Only the winner's parts remain: the loser removed its own, the winner the old ones.
    head = json.loads(object_bytes(moto, f"race-{existing}/_rasteret/s2.json"))
    assert keys_under(moto, f"race-{existing}/s2/") == sorted(
        f"race-{existing}/{part['path']}" for part in head["parts"])


def test_concurrent_builds_without_force_both_get_the_winner(moto, backend, scenes,
                                                             monkeypatch):
    workspace = f"s3://{BUCKET}/race-noforce"
    race_commits(monkeypatch)
    results = run_both([
        lambda: build(scenes[:2], workspace, "s2", backend),
        lambda: build(scenes[2:5], workspace, "s2", backend),
    ])
    assert not any(isinstance(r, BaseException) for r in results), results
    assert ids(results[0]) == ids(results[1])
    assert ids(results[0]) in (sorted(s.id for s in scenes[:2]),
                               sorted(s.id for s in scenes[2:5]))
    assert len(keys_under(moto, "race-noforce/s2/")) == 1


def test_reader_during_a_replace_gets_the_new_rows_not_a_mix(moto, backend, scenes,
                                                             monkeypatch):
    """The replace runs (and deletes the old parts) right after the reader read the
    old manifest: the reader finds a part gone and reads the new manifest."""
    workspace = f"s3://{BUCKET}/replace"
    old = build(scenes[:3], workspace, "s2", backend)
    real_head = ObjectWorkspace._head
    state = {"replaced": False}

    def head_then_replace(self, name):
        found = real_head(self, name)
        if not state["replaced"]:
            state["replaced"] = True
            build(scenes[3:], workspace, "s2", backend, force=True)
        return found

    monkeypatch.setattr(ObjectWorkspace, "_head", head_then_replace)
    loaded = rasteret.load("s2", workspace_dir=workspace, backend=backend)
    assert state["replaced"]
    assert ids(loaded) == sorted(s.id for s in scenes[3:]) != ids(old)


def test_readers_see_old_or_new_while_a_writer_replaces(backend, scenes):
    workspace = f"s3://{BUCKET}/flip"
    versions = [scenes[:3], scenes[3:]]
    build(versions[0], workspace, "s2", backend)
    allowed = [sorted(s.id for s in v) for v in versions]
    done = threading.Event()

    def writer():
        try:
            for round_ in range(6):
                build(versions[(round_ + 1) % 2], workspace, "s2", backend, force=True)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    while not done.is_set():
        seen.append(ids(rasteret.load("s2", workspace_dir=workspace, backend=backend)))
    thread.join(60)
    assert seen and all(s in allowed for s in seen), seen


def published_keys(moto, prefix):
    """The keys under ``prefix`` less the task areas of builds in flight."""
    return [key for key in keys_under(moto, prefix)
            if not key.startswith(f"{prefix}_rasteret/builds/")]


def test_a_killed_build_leaves_no_visible_collection(moto, backend, scenes, monkeypatch):
    workspace = f"s3://{BUCKET}/killed"

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt("killed between the parts and the manifest")

    with monkeypatch.context() as patch:
        patch.setattr(ObjectWorkspace, "write_manifest", killed)
        with pytest.raises(KeyboardInterrupt):
            build(scenes[:3], workspace, "s2", backend)
    assert rasteret.list_collections(workspace_dir=workspace, backend=backend) == []
    with pytest.raises(CollectionNotFoundError):
        rasteret.load(f"{workspace}/s2", backend=backend)
    # Its parts were removed again; its task area stays for a re-run to resume from.
    assert published_keys(moto, "killed/") == []
    assert keys_under(moto, "killed/_rasteret/builds/s2/")

    # A replace killed the same way leaves the old version whole.
    old = build(scenes[:3], workspace, "s2", backend)
    before = keys_under(moto, "killed/")
    assert before == published_keys(moto, "killed/")  # the re-run cleared its task area
    with monkeypatch.context() as patch:
        patch.setattr(ObjectWorkspace, "write_manifest", killed)
        with pytest.raises(KeyboardInterrupt):
            build(scenes[3:], workspace, "s2", backend, force=True)
    assert published_keys(moto, "killed/") == before
    assert ids(rasteret.load("s2", workspace_dir=workspace, backend=backend)) == ids(old)


def test_parts_of_a_hard_killed_build_are_invisible_and_swept_later(moto, backend, scenes,
                                                                    monkeypatch):
    workspace = f"s3://{BUCKET}/hard-kill"

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as patch:  # no clean-up either: as after SIGKILL
        patch.setattr(ObjectWorkspace, "write_manifest", killed)
        patch.setattr(ObjectWorkspace, "remove_objects", lambda self, urls: None)
        with pytest.raises(KeyboardInterrupt):
            build(scenes[:3], workspace, "s2", backend)
    orphans = keys_under(moto, "hard-kill/s2/")
    assert orphans and rasteret.list_collections(workspace_dir=workspace, backend=backend) == []
    # A build in flight keeps its young parts; once older than ORPHAN_AGE they go.
    build(scenes[3:], workspace, "s2", backend)
    assert set(orphans) <= set(keys_under(moto, "hard-kill/s2/"))
    monkeypatch.setattr(rasteret.workspace, "ORPHAN_AGE", dt.timedelta(0))
    fresh = build(scenes[:2], workspace, "s2", backend, force=True)
    head = json.loads(object_bytes(moto, "hard-kill/_rasteret/s2.json"))
    assert keys_under(moto, "hard-kill/s2/") == sorted(
        f"hard-kill/{part['path']}" for part in head["parts"])
    assert ids(rasteret.load("s2", workspace_dir=workspace, backend=backend)) == ids(fresh)


# -- credentials ---------------------------------------------------------------------------
def iam_objects(iam_moto, prefix):
    """``{key: bytes}`` of every object under ``prefix`` on the IAM moto (listed with
    the bucket as the only query, the one listing moto's auth mode accepts)."""
    import boto3

    moto, keys = iam_moto
    client = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1",
                          aws_access_key_id=keys["writer"][0],
                          aws_secret_access_key=keys["writer"][1])
    listed = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return {item["Key"]: client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            for item in listed if item["Key"].startswith(prefix)}


def test_iam_writer_builds_loads_and_a_denied_backend_names_the_workspace(iam_moto, scenes):
    moto, keys = iam_moto
    workspace = f"s3://{BUCKET}/denied"
    writer = s3_backend(moto, *keys["writer"])
    built = build(scenes[:2], workspace, "s2", writer)
    assert rasteret.load(f"{workspace}/s2", backend=writer).table.equals(built.table)
    stranger = s3_backend(moto, *keys["stranger"])
    calls = [
        lambda: build(scenes[:2], workspace, "other", stranger),
        lambda: build(scenes[:2], workspace, "s2", stranger, force=True),
        lambda: rasteret.load("s2", workspace_dir=workspace, backend=stranger),
        lambda: rasteret.load(f"{workspace}/s2", backend=stranger),
        lambda: rasteret.delete_collection("s2", workspace_dir=workspace, backend=stranger),
        lambda: built.export(f"s3://{BUCKET}/denied/export.parquet", backend=stranger),
    ]
    for call in calls:
        with pytest.raises(AccessDeniedError) as caught:
            call()
        message = str(caught.value)
        assert f"workspace s3://{BUCKET}/denied" in message and "access denied" in message
        assert "AccessDenied" in message  # the policy's refusal, not a signature error
        assert keys["stranger"][1] not in message
    assert rasteret.load(f"{workspace}/s2", backend=writer).table.equals(built.table)


def test_no_secret_is_written_into_any_object(iam_moto, scenes, tmp_path):
    moto, keys = iam_moto
    writer = s3_backend(moto, *keys["writer"])
    workspace = f"s3://{BUCKET}/secrets"
    collection = build(scenes[:3], workspace, "s2", writer, missing=tmp_path / "nope.tif")
    collection.export(f"s3://{BUCKET}/secrets/export.parquet", backend=writer)
    found = iam_objects(iam_moto, "secrets/")
    assert "secrets/_rasteret/s2.json" in found and "secrets/export.parquet" in found
    blob = b"".join(found.values())
    assert b"B04" in blob  # the objects were read
    for secret in keys["writer"]:
        assert secret.encode() not in blob


def test_file_url_workspace_is_the_local_layout(scenes, tmp_path):
    workspace = (tmp_path / "ws").as_uri()
    built = build(scenes[:2], workspace, "s2", None)
    assert built.path == tmp_path / "ws" / "s2"
    assert sorted(p.name for p in built.path.iterdir()) == ["part-00000.parquet"]
    assert rasteret.list_collections(workspace_dir=workspace) == ["s2"]
    assert rasteret.load("s2", workspace_dir=workspace).table.equals(built.table)
    rasteret.delete_collection("s2", workspace_dir=workspace)
    assert rasteret.list_collections(workspace_dir=workspace) == []


# -- Azure Blob (Azurite) ------------------------------------------------------------------
@pytest.fixture(scope="module")
def azurite():
    from testbed.auth_servers import AzuriteServer

    with AzuriteServer() as server:
        server.upload("workspaces", "README", b"a container for rasteret workspaces")
        yield server


def azure_backend(azurite, key=None):
    from testbed.auth_servers import AZURITE_ACCOUNT, AZURITE_KEY

    return rasteret.create_backend(
        azure_config={"endpoint": azurite.endpoint, "account_name": AZURITE_ACCOUNT,
                      "account_key": key or AZURITE_KEY},
        retry_config=FAST_RETRY, retries=RetryPolicy(attempts=2, budget=5))


def test_azure_workspace_build_load_list_race_delete(azurite, scenes, monkeypatch):
    backend = azure_backend(azurite)
    workspace = "az://workspaces/teams/a"
    built = build(scenes[:3], workspace, "s2", backend)
    assert rasteret.list_collections(workspace_dir=workspace, backend=backend) == ["s2"]
    assert rasteret.load(f"{workspace}/s2", backend=backend).table.equals(built.table)

    race_commits(monkeypatch)
    results = run_both([
        lambda: build(scenes[3:], workspace, "s2", backend, force=True),
        lambda: build(scenes[:1], workspace, "s2", backend, force=True),
    ])
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], CollectionConflictError), results
    winner = next(r for r in results if not isinstance(r, BaseException))
    assert ids(rasteret.load("s2", workspace_dir=workspace, backend=backend)) == ids(winner)

    rasteret.delete_collection("s2", workspace_dir=workspace, backend=backend)
    assert rasteret.list_collections(workspace_dir=workspace, backend=backend) == []
    from rasteret.io.objects import list_objects

    assert list_objects(backend, workspace) == []


def test_azure_wrong_key_is_access_denied_naming_the_workspace(azurite, scenes):
    import base64

    wrong = base64.b64encode(b"not the account key, 64 bytes long..............").decode()
    with pytest.raises(AccessDeniedError, match="workspace az://workspaces/denied"):
        rasteret.list_collections(workspace_dir="az://workspaces/denied",
                                  backend=azure_backend(azurite, wrong))
