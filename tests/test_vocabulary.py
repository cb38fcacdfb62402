"""One vocabulary (issue 20, item 3): every read entry point names each option alike,
takes the options as one frozen ``ReadOptions`` value or as explicit keywords, and has
no catch-all ``**options``, option dicts, older names or private switches."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import get_args

import pytest

from rasteret import ReadOptions
from rasteret.collection import Collection
from rasteret.errors import ConfigurationError
from rasteret.options import read_options

ROOT = Path(__file__).parents[1]
READERS = ("get_numpy", "get_xarray", "get_gdf", "sample_points", "to_torchgeo_dataset",
           "export_chips")
#: The read options each entry point cannot apply (points have their scenes' own grid).
NOT_APPLIED = {"sample_points": {"target_crs", "resolution", "resampling", "clip"}}
#: Names the vocabulary retired (CHANGELOG.md), which no entry point may take again.
RETIRED = {"res", "mask", "mask_band", "mask_values", "scenes", "dataset_options",
           "_allow_empty"}


def _entry_points():
    points = [(name, getattr(Collection, name)) for name in READERS]
    try:
        from rasteret.torch import RasteretDataModule, RasteretDataset
    except ImportError:  # the core suite (no torch): the Collection methods only
        return points
    return points + [("RasteretDataset", RasteretDataset.__init__),
                     ("RasteretDataModule", RasteretDataModule.__init__)]


@pytest.mark.parametrize(("name", "function"), _entry_points(), ids=lambda v: str(v)[:24])
def test_each_entry_point_takes_every_read_option_it_applies_by_its_one_name(name, function):
    parameters = inspect.signature(function).parameters
    assert not [p for p in parameters.values() if p.kind is p.VAR_KEYWORD], name
    assert not RETIRED & set(parameters), name
    assert parameters["options"].default is None
    for field in dataclasses.fields(ReadOptions):
        if field.name in NOT_APPLIED.get(name, set()) or (
                name == "RasteretDataModule" and field.name == "clip"):
            assert field.name not in parameters, (name, field.name)
            continue
        parameter = parameters[field.name]
        assert parameter.kind is parameter.KEYWORD_ONLY, (name, field.name)
        assert parameter.default == field.default, (name, field.name)
        # The same annotation as the options' field (aliases spelled alike).
        assert parameter.annotation == field.type, (name, field.name, parameter.annotation)


def test_modes_are_literals():
    from rasteret.options import MOSAIC_ORDER, ON_ERROR, RESAMPLING, MosaicOrder, OnError

    assert get_args(OnError) == ON_ERROR == ("raise", "skip")
    assert get_args(MosaicOrder) == MOSAIC_ORDER and RESAMPLING == ("nearest", "bilinear")
    annotations = inspect.signature(Collection.export_chips).parameters
    assert annotations["mode"].annotation == "ChipMode"
    assert "PointValues" in str(inspect.signature(Collection.sample_points).return_annotation)


def test_the_options_are_one_frozen_checked_value():
    options = ReadOptions(apply_scale=True, resolution=20)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.apply_scale = False  # type: ignore[misc]
    assert options.values == "scaled" and ReadOptions(masked=True).values == "masked"
    assert ReadOptions().values == "stored"
    assert options.given() == {"apply_scale": True, "resolution": 20}
    bad = [{"resampling": "cubic"}, {"on_error": "ignore"}, {"resolution": -10},
           {"resolution": (10, 0)}, {"resolution": True}, {"date_range": ("2024-05-02",)},
           {"date_range": ("2024-06-01", "2024-05-01")}, {"target_crs": "EPSG:0"}]
    for wrong in bad:
        with pytest.raises(ConfigurationError):
            ReadOptions(**wrong)


def test_a_keyword_overrides_the_options_when_it_differs_from_its_default():
    shared = ReadOptions(apply_scale=True, resolution=20)
    assert read_options(shared) is shared
    assert read_options(None, resolution=20) == ReadOptions(resolution=20)
    changed = read_options(shared, resolution=30, on_error="skip", validate=True)
    assert changed == ReadOptions(apply_scale=True, resolution=30, on_error="skip")
    with pytest.raises(ConfigurationError, match="not read options"):
        shared.merged(res=10)
    with pytest.raises(ConfigurationError, match="does not apply"):
        shared.refuse("sample_points", ("resolution",))


def test_the_changelog_lists_every_retired_name():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    for name in RETIRED - {"_allow_empty"}:
        assert re.search(rf"`{re.escape(name)}=", changelog), name
    assert "`_allow_empty=`" in changelog


def test_the_guide_table_names_every_read_option():
    guide = (ROOT / "docs" / "reading-pixels.md").read_text()
    section = guide[guide.index("## Read options"):guide.index("## Scale, offset")]
    for field in dataclasses.fields(ReadOptions):
        assert f"| `{field.name}`" in section, field.name
    assert "res" in section and "TorchGeo" in section  # why resolution, not res
