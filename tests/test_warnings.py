"""Warnings rasteret causes fail its own test run (pyproject's `filterwarnings`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import shapely
import shapely.ops


def _as_if_in(module: str, source: str) -> dict:
    """Run ``source`` as the code of ``module``: its frames are attributed to it."""
    namespace = {"__name__": module}
    exec(compile(source, f"<{module}>", "exec"), namespace)
    return namespace


def test_a_warning_raised_in_rasteret_code_is_an_error():
    emit = _as_if_in("rasteret.somewhere", "import warnings\n"
                     "def emit():\n    warnings.warn('old way', DeprecationWarning)\n")["emit"]
    with pytest.raises(DeprecationWarning, match="old way"):
        emit()


def test_a_library_deprecation_called_from_rasteret_is_attributed_to_rasteret():
    # shapely (like numpy, pandas and pyproj) warns with stacklevel=2: the warning names
    # the calling frame, so rasteret's use of a deprecated API fails the run.
    namespace = _as_if_in("rasteret.read.somewhere", "import shapely.ops\n"
                          "def move(geometry):\n"
                          "    return shapely.ops.transform(lambda x, y: (x + 1, y), geometry)\n")
    with pytest.raises(DeprecationWarning, match="shapely.ops.transform"):
        namespace["move"](shapely.Point(0, 0))


def test_warnings_attributed_elsewhere_are_left_to_the_default_filters():
    for module in ("tests.test_x", "rasterio.transform", "rasteret_plugin"):
        with warnings.catch_warnings(record=True) as caught:  # keeps the run's filters
            warnings.warn_explicit("elsewhere", UserWarning, "x.py", 1, module=module)
        assert [str(w.message) for w in caught] == ["elsewhere"], module


def test_the_left_out_warning_of_a_build_names_the_users_line(tmp_path):
    # Before, the builder's fixed stacklevel named rasteret/ingest/api.py: the warning
    # pointed into the package (and so failed this run's filter) instead of at the call.
    import pyarrow as pa

    import rasteret
    from testbed.scenes import write_scenes

    scenes = write_scenes(tmp_path / "scenes", count=1, size=256, tile=128, bands=("B04",),
                          label=False)
    table = pa.Table.from_pylist(
        [{"id": scenes[0].id, "datetime": scenes[0].datetime, "B04": str(scenes[0].files["B04"])},
         {"id": "missing", "datetime": scenes[0].datetime, "B04": str(tmp_path / "nope.tif")}])
    with pytest.warns(UserWarning, match="1 asset") as caught:
        collection = rasteret.build_from_table(table, name="t", href_columns=["B04"],
                                               workspace_dir=tmp_path / "ws", progress=False,
                                               on_error="skip")
    assert len(collection) == 1
    assert [Path(w.filename).name for w in caught] == [Path(__file__).name]
