"""Progress bars: on standard error for builds, crawls, reads of many areas or points and
chip exports; hidden by ``progress=False`` and by ``RASTERET_PROGRESS=0`` (which wins
over the default); never on standard output (the command line's ``--json`` stays pure
JSON)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import rasteret
from rasteret import progress as progress_module
from rasteret.cli import main as cli_main
from rasteret.errors import ConfigurationError
from rasteret.progress import ENV_VAR, progress_enabled
from testbed.scenes import stac_item, write_scenes
from testbed.stac import write_static_catalog

pytest.importorskip("rasterio")  # write_scenes writes COGs through GDAL

BANDS = ("B04", "B08")
SIZE, TILE = 256, 64
LEFT, TOP = 500_000.0, 4_100_000.0  # write_scenes' default origin (EPSG:32633, 10 m)


@pytest.fixture(autouse=True)
def _switch_unset(monkeypatch):
    """Each test starts from the default: no RASTERET_PROGRESS in the environment."""
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Three small local scenes (B04, B08) in 64-px tiles: many tiles for few pixels."""
    return write_scenes(tmp_path_factory.mktemp("progress-scenes"), count=3, size=SIZE,
                        tile=TILE, bands=BANDS, label=False, overviews=False)


def _table(scenes) -> pa.Table:
    return pa.Table.from_pylist([{"id": s.id, "datetime": s.datetime,
                                  **{b: str(s.files[b]) for b in BANDS}} for s in scenes])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("ws")


@pytest.fixture(scope="module")
def collection(scenes, workspace):
    return rasteret.build_from_table(_table(scenes), name="quiet", href_columns=list(BANDS),
                                     workspace_dir=workspace, progress=False)


def _many_points(count: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({"x": LEFT + rng.uniform(0, SIZE, count) * 10.0,
                         "y": TOP - rng.uniform(0, SIZE, count) * 10.0})


# The three ways a call can be made: bars on by default, off by the argument, off by the
# environment switch although the argument is left at its default.
WAYS = {
    "default": ({}, None, True),
    "progress=False": ({"progress": False}, None, False),
    "RASTERET_PROGRESS=0": ({}, "0", False),
    "switch on, argument off": ({"progress": False}, "1", False),
}


def _set_switch(monkeypatch, value):
    if value is not None:
        monkeypatch.setenv(ENV_VAR, value)


# -- the switch -----------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "shown"), [
    (None, True), ("1", True), ("true", True), ("on", True), ("", True),
    ("0", False), ("false", False), ("OFF", False), (" no ", False),
])
def test_the_environment_switch_wins_over_the_default(monkeypatch, value, shown):
    _set_switch(monkeypatch, value)
    assert progress_enabled() is shown
    assert progress_enabled(True) is shown
    assert progress_enabled(False) is False  # the argument can always hide the bars


def test_an_unknown_switch_value_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "maybe")
    with pytest.raises(ConfigurationError, match="RASTERET_PROGRESS='maybe'.*0 to hide"):
        progress_enabled()


# -- builds and crawls ----------------------------------------------------------------------
@pytest.mark.parametrize("way", list(WAYS))
def test_build_bar_on_stderr_only(scenes, tmp_path, monkeypatch, capsys, way):
    options, switch, shown = WAYS[way]
    _set_switch(monkeypatch, switch)
    built = rasteret.build_from_table(_table(scenes), name="loud", href_columns=list(BANDS),
                                      workspace_dir=tmp_path, **options)
    assert len(built) == 3
    out, err = capsys.readouterr()
    assert out == ""
    if shown:
        # One bar over the whole build: 3 scenes x 2 bands.
        assert "Indexing loud" in err and "6/6" in err and "asset" in err
    else:
        assert err == ""


@pytest.mark.parametrize("way", ["default", "RASTERET_PROGRESS=0"])
def test_static_catalog_crawl_shows_its_bar_after_the_delay(scenes, tmp_path, monkeypatch,
                                                            capsys, way):
    options, switch, shown = WAYS[way]
    _set_switch(monkeypatch, switch)
    monkeypatch.setattr(progress_module, "DELAY", 0.0)  # as if the crawl had been long
    items = [stac_item(s, lambda scene, band, path: str(path)) for s in scenes]
    catalog = write_static_catalog(tmp_path / "catalog", {"s2": items})
    rasteret.build_from_stac(name="crawled", stac_api=str(catalog), collection=None,
                             band_map={"B04": "red"}, workspace_dir=tmp_path / "ws",
                             **options)
    out, err = capsys.readouterr()
    assert out == ""
    if shown:
        # catalog.json, the collection and its three items.
        assert "Crawling STAC catalog" in err and "5/5" in err and "Indexing crawled" in err
    else:
        assert err == ""


# -- reads ----------------------------------------------------------------------------------
@pytest.mark.parametrize("way", list(WAYS))
def test_sample_points_over_many_points(collection, monkeypatch, capsys, way):
    options, switch, shown = WAYS[way]
    _set_switch(monkeypatch, switch)
    monkeypatch.setattr(progress_module, "DELAY", 0.0)  # as if sampling had been long
    values = collection.sample_points(_many_points(2000), ["B04"], geometry_crs=32633,
                                      xy_columns=("x", "y"), **options)
    assert len(values) == 3 * 2000
    out, err = capsys.readouterr()
    assert out == ""
    if shown:
        # Every 64-px tile of B04 in each of the 3 scenes, each read once.
        tiles = 3 * (SIZE // TILE) ** 2
        assert "Sampling quiet" in err and f"{tiles}/{tiles}" in err and "tile" in err
    else:
        assert err == ""


def test_quick_reads_print_nothing(collection, monkeypatch, capsys):
    # A read that ends before the delay shows no bar, even with bars on.
    monkeypatch.setattr(progress_module, "DELAY", 3600.0)
    collection.sample_points(_many_points(2000), ["B04"], geometry_crs=32633,
                             xy_columns=("x", "y"))
    collection.get_numpy([(LEFT, TOP - 640, LEFT + 640, TOP)] * 2, ["B04"],
                         geometry_crs=32633)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("method", ["get_numpy", "get_xarray", "get_gdf"])
def test_reads_of_many_areas(collection, monkeypatch, capsys, way, method):
    options, switch, shown = WAYS[way]
    _set_switch(monkeypatch, switch)
    monkeypatch.setattr(progress_module, "DELAY", 0.0)
    areas = [(LEFT, TOP - 640, LEFT + 640, TOP), (LEFT + 640, TOP - 1280, LEFT + 1280, TOP)]
    getattr(collection, method)(areas, ["B04", "B08"], geometry_crs=32633, **options)
    out, err = capsys.readouterr()
    assert out == ""
    if shown:
        assert "Reading quiet" in err and "6/6" in err and "scene" in err  # 2 areas x 3
    else:
        assert err == ""


# -- chip export and the command line --------------------------------------------------------
@pytest.mark.parametrize("way", list(WAYS))
def test_chip_export_bar(collection, tmp_path, monkeypatch, capsys, way):
    pytest.importorskip("torchgeo")
    options, switch, shown = WAYS[way]
    _set_switch(monkeypatch, switch)
    collection.export_chips(["B04"], tmp_path / "chips", chip_size=128, quicklook=False,
                            label_studio=False, **options)
    out, err = capsys.readouterr()
    assert out == ""
    if shown:
        assert "Exporting chips of quiet" in err and "12/12" in err  # 3 scenes x 4 chips
    else:
        assert err == ""


def test_cli_json_is_pure_json_and_bars_go_to_stderr(collection, workspace, tmp_path,
                                                      capsys):
    pytest.importorskip("torchgeo")
    where = ["--workspace-dir", str(workspace)]
    assert cli_main(["collections", "list", "--json", *where]) == 0
    out, err = capsys.readouterr()
    assert [c["name"] for c in json.loads(out)] == ["quiet"] and err == ""
    export = ["chips", "export", "quiet", "--bands", "B04", "--size", "128", *where]
    assert cli_main([*export, "--out", str(tmp_path / "a"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["chips"] == 12 and err == ""
    # Without --json: the summary on stdout, the bar on stderr.
    assert cli_main([*export, "--out", str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1].split() == ["chips", "12"]
    assert "Exporting chips of quiet" in err and "12/12" in err
    assert "Exporting" not in out
    assert cli_main([*export, "--out", str(tmp_path / "c"), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "chips" in out and err == ""

