"""Damaged collection files: loading only ever raises typed errors (and never runs
code: collections are Parquet with JSON in the footers, or, in the older layout,
Parquet and JSON files)."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rasteret
from rasteret.errors import RasteretError
from rasteret.schema import SCHEMA_VERSION
from rasteret.storage import with_metadata
from testbed.scenes import write_scenes


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A collection with one failure (its JSON rides in the footer), and beside it
    the same collection in the older layout (``collection.json``,
    ``failures.parquet``)."""
    root = tmp_path_factory.mktemp("fuzz-collection")
    scenes = write_scenes(root / "data", count=2, size=256, tile=128, bands=("B04",),
                          label=False)
    rows = [{"id": s.id, "datetime": s.datetime, "B04": str(s.files["B04"])} for s in scenes]
    rows.append({"id": "missing", "datetime": scenes[0].datetime, "B04": str(root / "no.tif")})
    with pytest.warns(UserWarning, match="1 asset"):
        good = rasteret.build_from_table(
            pa.Table.from_pylist(rows), name="good", href_columns=["B04"],
            workspace_dir=root / "ws", progress=False, on_error="skip",
        )
    old = root / "old" / "good"
    old.mkdir(parents=True)
    manifest = {k: v for k, v in good.manifest.items() if k != "schema_version"}
    pq.write_table(with_metadata(good.table, manifest), old / "part-00000.parquet")
    pq.write_table(good.failures, old / "failures.parquet")
    (old / "collection.json").write_text(
        json.dumps({**manifest, "schema_version": SCHEMA_VERSION})
    )
    return {"new": good.path, "old": old}


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_parts_and_manifests_raise_typed_errors(saved, tmp_path_factory, data):
    layout, victim = data.draw(st.sampled_from([
        ("new", "part-00000.parquet"),
        ("old", "part-00000.parquet"),
        ("old", "collection.json"),
        ("old", "failures.parquet"),
    ]))
    target = tmp_path_factory.mktemp("case") / "good"
    shutil.copytree(saved[layout], target)
    raw = bytearray((target / victim).read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw))))
    (target / victim).write_bytes(bytes(raw[:cut] if cut is not None else raw))
    try:
        collection = rasteret.load(target)
    except RasteretError:
        return
    # Loaded despite the damage (the flip hit padding or a value): reads stay typed.
    for row in range(len(collection)):
        try:
            collection.cog(row, "B04").read((0, 0, 16, 16))
        except RasteretError:
            pass
