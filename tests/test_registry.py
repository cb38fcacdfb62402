"""The one registry of datasets and cloud configurations (``rasteret.registry``):
``rasteret.datasets.register`` and ``rasteret.CloudConfig.register`` write the same
entry, built-ins never replace a user's registration, and a rejected registration
leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import rasteret
from rasteret import registry
from rasteret.errors import ConfigurationError
from rasteret.io.cloud_config import CloudConfig
from testbed import HANG_GUARD


def _register(dataset_id: str, **extra):
    return rasteret.datasets.register(
        id=dataset_id, stac_api="https://stac.example/api", collection="one",
        band_map={"B04": "red"}, **extra)


def test_a_dataset_and_its_cloud_config_are_one_entry():
    with registry.restored_on_exit():
        info = _register("unit/one", cloud_config={"provider": "aws", "region": "eu-west-1"})
        entry = registry.entry("unit/one")
        assert entry.dataset is info
        assert entry.cloud_config is CloudConfig.get("unit/one")
        assert CloudConfig.get("unit/one").region == "eu-west-1"

        # CloudConfig.register replaces the config in the same entry; the dataset stays.
        replacement = CloudConfig(provider="gcp")
        CloudConfig.register("unit/one", replacement)
        assert registry.entry("unit/one").cloud_config is replacement
        assert rasteret.datasets.get("unit/one") is info
        assert CloudConfig.registered()["unit/one"] is replacement

        # A dataset without a config has none; lookup falls through to the collection id.
        _register("unit/plain")
        assert CloudConfig.get("unit/plain") is None
        by_collection = CloudConfig(provider="http")
        CloudConfig.register("plain-collection", by_collection)
        assert registry.entry("plain-collection").dataset is None
        assert CloudConfig.lookup("unit/plain", "plain-collection") == \
            ("plain-collection", by_collection)
    assert registry.entry("unit/one") is None and CloudConfig.get("unit/one") is None
    assert CloudConfig.get("plain-collection") is None


def test_builtin_configs_are_built_once_and_restored():
    naip = CloudConfig.get("earthsearch/naip")
    assert naip is CloudConfig.get("earthsearch/naip")  # one object: one cached backend
    assert (naip.provider, naip.region, naip.requester_pays) == ("aws", "us-west-2", True)
    with registry.restored_on_exit():
        CloudConfig.register("earthsearch/naip", CloudConfig(provider="http"))
        assert CloudConfig.get("earthsearch/naip").provider == "http"
    assert CloudConfig.get("earthsearch/naip") is naip
    assert "earthsearch/naip" in [d.id for d in rasteret.datasets.list()]


def test_builtins_never_replace_what_a_user_registered_first():
    """In a fresh process, registrations made before the built-in catalog first loads
    survive its loading."""
    code = textwrap.dedent("""
        import rasteret

        mine = rasteret.CloudConfig(provider="aws", region="eu-central-1")
        rasteret.CloudConfig.register("earthsearch/landsat-c2-l2", mine)
        naip = rasteret.datasets.register(
            id="earthsearch/naip", stac_api="https://mirror.example/stac",
            collection="naip-mirror", band_map={"R": "red"})
        ids = [d.id for d in rasteret.datasets.list()]  # loads the built-ins
        assert "earthsearch/sentinel-2-l2a" in ids, ids
        found = rasteret.CloudConfig.get("earthsearch/landsat-c2-l2")
        assert found is mine, found
        assert rasteret.datasets.get("earthsearch/landsat-c2-l2").collection == "landsat-c2-l2"
        found = rasteret.datasets.get("earthsearch/naip")
        assert found is naip, found
        print("ok")
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=HANG_GUARD)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_rejected_dataset_leaves_nothing_registered():
    with registry.restored_on_exit():
        with pytest.raises(ConfigurationError, match="dropbox"):
            _register("unit/bad", cloud_config={"provider": "dropbox"})
        with pytest.raises(ConfigurationError, match="unknown dataset 'unit/bad'"):
            rasteret.datasets.get("unit/bad")
        assert CloudConfig.get("unit/bad") is None
        with pytest.raises(ConfigurationError, match="provider/name"):
            rasteret.datasets.register(id="no-slash", stac_api="x", collection="c",
                                       band_map={})
        assert registry.entry("no-slash") is None
