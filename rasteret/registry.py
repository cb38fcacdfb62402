"""The one registry of datasets and cloud configurations, keyed by id.

An id is a dataset id (``"earthsearch/landsat-c2-l2"``) or a STAC collection id
(``"my-collection"``). Its :class:`Entry` holds what is registered under it: the
dataset (:class:`DatasetInfo`: STAC source, band map, auth, license) and the cloud
configuration that builds and reads use (a :class:`rasteret.CloudConfig`, or the
keyword arguments of one, from ``DatasetInfo.cloud_config``).

The public verbs write here: ``rasteret.datasets.register(...)`` and
``rasteret.CloudConfig.register(id, config)``. This module sits at the bottom of the
package, below ``rasteret.io`` and ``rasteret.ingest``, which both read it; it
imports only ``errors`` and ``redact``. The built-in datasets load on the first
lookup and never replace what a user registered.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, cast

from rasteret.errors import ConfigurationError, DatasetNotFoundError
from rasteret.redact import masked

# A band's target is an asset key, an (asset key, 1-based band index) pair, or, for a
# dataset spanning several STAC collections whose asset keys differ, a mapping from
# collection id to either of those (e.g. HLS: {"HLSS30_2.0": "B8A", "HLSL30_2.0": "B05"}).
BandTarget = str | tuple[str, int]
BandMap = Mapping[str, BandTarget | Mapping[str, BandTarget]]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset.

    Attributes:
        id: ``provider/collection``, e.g. ``earthsearch/sentinel-2-l2a``.
        stac_api: The STAC API URL (or a static ``catalog.json``).
        collection: The STAC collection id.
        band_map: User band code -> asset key, or ``(asset key, 1-based band index)``
            for multi-band assets.
        description: One line on what it is.
        auth: What credentials reading needs (``none``, ``aws requester-pays``,
            ``planetary-computer``, ``earthdata``).
        cloud_config: Keyword arguments of :class:`rasteret.CloudConfig` registered
            for this dataset (region, requester pays, URL rewrites, provider).
        license: The data license.
        query: Default STAC query (e.g. a cloud-cover limit), or None.
    """

    id: str
    stac_api: str
    collection: str
    band_map: BandMap
    description: str = ""
    auth: str = "none"
    cloud_config: Mapping[str, Any] = field(default_factory=dict)
    license: str = ""
    query: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description (for ``rasteret datasets info --json``); keys,
        tokens and passwords in the cloud config or URLs are masked."""
        data = asdict(self)
        data["band_map"] = {k: list(v) if isinstance(v, tuple) else v
                            for k, v in self.band_map.items()}
        shown: dict[str, Any] = masked(data)
        return shown

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"DatasetInfo({fields})"


@dataclass
class Entry:
    """What is registered under one id.

    Attributes:
        key: The dataset id or STAC collection id.
        dataset: The dataset registered under ``key``, or None (an id that only has a
            cloud configuration, such as a STAC collection id).
        cloud_config: The :class:`rasteret.CloudConfig` of ``key``; for datasets whose
            config was given as keyword arguments (the built-ins), those arguments
            until :meth:`rasteret.CloudConfig.get` first builds the config; or None.
    """

    key: str
    dataset: DatasetInfo | None = None
    cloud_config: object | None = None


_ENTRIES: dict[str, Entry] = {}
_BUILTINS_LOADED = False


def entry(key: str) -> Entry | None:
    """The entry registered under ``key`` (a dataset or STAC collection id), or None."""
    _ensure_builtins()
    return _ENTRIES.get(key)


def entries() -> list[Entry]:
    """Every entry, sorted by id."""
    _ensure_builtins()
    return [_ENTRIES[key] for key in sorted(_ENTRIES)]


def register_dataset(info: DatasetInfo, cloud_config: object | None = None) -> None:
    """Register ``info`` under its id, replacing an earlier dataset of that id.

    Args:
        info: The dataset.
        cloud_config: The :class:`rasteret.CloudConfig` built from
            ``info.cloud_config``; when None, the keyword arguments are kept and the
            config is built on first use. A dataset without ``cloud_config`` keeps any
            config already registered under its id.

    Raises:
        ConfigurationError: The id does not look like ``provider/name``.
    """
    if "/" not in info.id:
        raise ConfigurationError(f"dataset ids look like 'provider/name', got {info.id!r}")
    _ensure_builtins()  # loaded first, so that they never replace this one
    found = _ENTRIES.setdefault(info.id, Entry(info.id))
    found.dataset = info
    if info.cloud_config:
        found.cloud_config = cloud_config if cloud_config is not None else dict(info.cloud_config)


def register_cloud_config(key: str, cloud_config: object) -> None:
    """Register the cloud configuration of ``key`` (replacing any earlier one); the
    dataset registered under ``key``, if any, stays."""
    _ensure_builtins()
    _ENTRIES.setdefault(key, Entry(key)).cloud_config = cloud_config


def find_dataset(dataset_id: str) -> DatasetInfo | None:
    """The dataset registered as ``dataset_id``, or None."""
    found = entry(dataset_id)
    return found.dataset if found is not None else None


def get_dataset(dataset_id: str) -> DatasetInfo:
    """The dataset registered as ``dataset_id``.

    Raises:
        DatasetNotFoundError: Unknown id (a ConfigurationError); the message lists
            the registered ones.
    """
    info = find_dataset(dataset_id)
    if info is None:
        raise DatasetNotFoundError(
            f"unknown dataset {dataset_id!r}; registered datasets: "
            f"{[d.id for d in list_datasets()]}"
        )
    return info


def list_datasets() -> list[DatasetInfo]:
    """All registered datasets, sorted by id."""
    return [e.dataset for e in entries() if e.dataset is not None]


@contextmanager
def restored_on_exit() -> Iterator[None]:
    """Undo, on leaving the block, every registration made inside it (for tests, and
    for trying a configuration in a notebook)."""
    _ensure_builtins()
    saved = {key: dataclasses.replace(e) for key, e in _ENTRIES.items()}
    try:
        yield
    finally:
        _ENTRIES.clear()
        _ENTRIES.update(saved)


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    for info in _builtin_datasets():
        found = _ENTRIES.setdefault(info.id, Entry(info.id))
        if found.dataset is None:
            found.dataset = info
        if found.cloud_config is None:
            found.cloud_config = dict(info.cloud_config)


# -- the built-in datasets ---------------------------------------------------------
#: The catalog shipped with the package (one [[dataset]] table per DatasetInfo).
BUILTIN_CATALOG = "data/datasets.toml"


def _band_target(value: Any) -> BandTarget | Mapping[str, BandTarget]:
    """A band map value from TOML: ``[asset, index]`` arrays become tuples."""
    if isinstance(value, list):
        return (str(value[0]), int(value[1]))
    if isinstance(value, dict):
        return {collection: cast(BandTarget, _band_target(target))
                for collection, target in value.items()}
    return str(value)


def _builtin_datasets() -> tuple[DatasetInfo, ...]:
    """The datasets of :data:`BUILTIN_CATALOG`, in the order they are listed."""
    text = resources.files("rasteret").joinpath(BUILTIN_CATALOG).read_text("utf-8")
    return tuple(
        DatasetInfo(**{**entry, "band_map": {code: _band_target(target) for code, target
                                             in entry["band_map"].items()}})
        for entry in tomllib.loads(text)["dataset"])
