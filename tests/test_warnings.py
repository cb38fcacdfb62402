"""Warnings rasteret causes fail its own test run (pyproject's `filterwarnings`), and
`make test` also runs the core suite on Python 3.11, the oldest supported version."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import pytest
import shapely
import shapely.ops

ROOT = Path(__file__).resolve().parents[1]


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


def _filters() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["pytest"]["ini_options"]["filterwarnings"]


def test_the_filter_is_configured_for_rasteret_modules_only():
    assert "error:::rasteret(\\.|$)" in _filters()


def _recipe(target: str) -> list[str]:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in recipe.splitlines()[1:]]


def test_make_test_runs_the_core_suite_on_python_311_after_the_main_run():
    test = _recipe("test")
    main = next(i for i, line in enumerate(test) if "-m pytest" in line)
    assert any("$(MAKE)" in line and "test311" in line for line in test[main + 1:])
    core = " ".join(_recipe("test311"))
    assert "$(VENV311)/bin/python -m pytest" in core and '-m "not torch"' in core
    # pytest's exit code 5 (nothing collected) fails both runs.
    assert "-eq 5" in " ".join(test) and "-eq 5" in core
    makefile = (ROOT / "Makefile").read_text()
    stamp = makefile.split("\n$(STAMP311):", 1)[1].split("\n\n", 1)[0]
    assert "pyproject.toml" in stamp.splitlines()[0]
    assert "pip install -q -e '.[dev,aws]' -e ./testbed" in stamp  # no torch extra



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
