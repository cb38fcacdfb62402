"""Errors in one place: every exception a user may catch is defined in
``rasteret.errors``; configuration mistakes are ConfigurationErrors; the command line
exits with 2 for them."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import rasteret
from rasteret import errors
from rasteret.errors import (
    BackendError,
    CollectionNotFoundError,
    ConfigurationError,
    CorruptCollectionError,
    DatasetNotFoundError,
    IndexingError,
    NetworkError,
    NoCoverageError,
    NoScenesError,
    ObjectChangedError,
    RasteretError,
    ShortReadError,
    StacSearchError,
)
from testbed import HANG_GUARD

ROOT = Path(__file__).parents[1]


#: Core modules that need an optional extra, and the package it brings.
OPTIONAL = {"rasteret.plots": "matplotlib"}


def _core_modules():
    """Every module of the package but the torch layer (which imports torch), and the
    modules whose extra is not installed (the 3.11 core venv has no matplotlib)."""
    for info in pkgutil.walk_packages(rasteret.__path__, "rasteret."):
        needs = OPTIONAL.get(info.name)
        if needs is not None and importlib.util.find_spec(needs) is None:
            continue
        if not info.name.startswith("rasteret.torch"):
            yield importlib.import_module(info.name)


# The parser's internal signal to fetch more bytes: read_header always catches it.
CONTROL_FLOW = {"rasteret.tiff.bytesource.MissingBytes"}


def test_every_exception_class_is_defined_in_errors():
    elsewhere = {
        f"{module.__name__}.{name}"
        for module in _core_modules()
        for name, item in vars(module).items()
        if inspect.isclass(item) and issubclass(item, BaseException)
        and item.__module__ == module.__name__ and module is not errors
    }
    assert elsewhere == CONTROL_FLOW


def test_moved_errors_have_their_stdlib_bases():
    assert issubclass(CollectionNotFoundError, FileNotFoundError)
    assert issubclass(CorruptCollectionError, ValueError)
    assert issubclass(StacSearchError, ConnectionError)
    assert issubclass(ShortReadError, NetworkError) and issubclass(ShortReadError, ConnectionError)
    assert issubclass(ObjectChangedError, BackendError)
    assert issubclass(NoCoverageError, ConfigurationError)
    assert issubclass(DatasetNotFoundError, ConfigurationError)
    for error in (IndexingError, NoScenesError):
        assert issubclass(error, RasteretError)


def test_old_homes_do_not_re_export_errors():
    import rasteret.ingest

    assert not {"IndexingError", "NoScenesError"} & set(rasteret.ingest.__all__)
    assert not hasattr(rasteret.ingest, "IndexingError")


def test_indexing_error_lists_failures_without_query_strings():
    from rasteret.ingest import IndexFailure

    failures = [IndexFailure(f"s{i}", "B04", f"https://h/s{i}.tif?sig=SECRET", "CorruptTiffError",
                             "not a TIFF") for i in range(12)]
    message = str(IndexingError(failures))
    assert message.startswith("12 asset(s) could not be indexed:\n  s0/B04 https://h/s0.tif: "
                              "CorruptTiffError: not a TIFF")
    assert "... and 2 more" in message and "SECRET" not in message
    assert 'on_error="skip"' in message


def test_an_empty_window_is_a_configuration_error():
    from rasteret.read.plan import Window

    with pytest.raises(ConfigurationError, match="positive width and height"):
        Window.of((0, 0, 0, 16), None)


def test_a_band_index_beyond_the_asset_is_a_configuration_error():
    from types import SimpleNamespace

    from rasteret.ingest.indexer import band_record

    header = SimpleNamespace(levels=[SimpleNamespace(samples_per_pixel=3)])
    with pytest.raises(ConfigurationError, match=r"band index 4 does not exist in "
                       r"https://h/naip\.tif \(3 band\(s\)\)"):
        band_record((header, None), "https://h/naip.tif?sig=x", 4)


def test_unknown_dataset_is_a_configuration_error_and_a_lookup_error():
    with pytest.raises(DatasetNotFoundError, match="registered datasets") as caught:
        rasteret.datasets.get("nope/nothing")
    assert isinstance(caught.value, LookupError)


def run_cli(*args: str, workspace: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rasteret.cli", *args], capture_output=True, text=True,
        timeout=HANG_GUARD, env={**os.environ, "RASTERET_WORKSPACE": str(workspace),
                          "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
                              "PYTHONPATH", "")])},
    )


def test_cli_exits_2_on_configuration_mistakes(tmp_path):
    out = run_cli("build", "--name", "x", "--bbox", "0,0,1,1", "--dates",
                  "2024-01-01/2024-02-01", workspace=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("rasteret: error: give a DATASET_ID")
    out = run_cli("collections", "info", "bad name!", workspace=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "invalid collection name 'bad name!'" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_exits_1_when_the_named_thing_does_not_exist(tmp_path):
    out = run_cli("collections", "info", "missing", workspace=tmp_path)
    assert out.returncode == 1 and "no collection 'missing'" in out.stderr
    out = run_cli("datasets", "info", "nope/x", workspace=tmp_path)
    assert out.returncode == 1 and "registered datasets" in out.stderr
