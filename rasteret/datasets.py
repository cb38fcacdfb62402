"""The dataset catalog: ``rasteret.datasets.list()``, ``info(id)``, ``register(...)``.

Each entry names a STAC source, a band map from user band codes to asset keys, the
credentials reading needs, its cloud configuration and its license. Entries live in
the one registry of :mod:`rasteret.registry`, beside the configs of
:meth:`rasteret.CloudConfig.register`.
"""

from __future__ import annotations

from typing import Any

from rasteret.errors import ConfigurationError
from rasteret.io.cloud_config import CloudConfig
from rasteret.registry import DatasetInfo, get_dataset, list_datasets, register_dataset

# The catalog's verbs, as in rasteret.datasets.list(), imported under those names: to
# readers and tools (the API reference) they are the registry's functions.
from rasteret.registry import get_dataset as get
from rasteret.registry import list_datasets as list  # noqa: A004

__all__ = ["DatasetInfo", "get", "info", "list", "list_datasets", "register"]


def register(info: DatasetInfo | None = None, /, **fields: Any) -> DatasetInfo:
    """Register a dataset (a :class:`DatasetInfo`, or its fields as keywords) so that
    ``rasteret.build(id, ...)`` can build it; its ``cloud_config`` becomes the
    :class:`~rasteret.CloudConfig` registered under its id.

    Example:
        >>> rasteret.datasets.register(
        ...     id="nasa/hls-s30", stac_api="https://cmr.earthdata.nasa.gov/stac/LPCLOUD",
        ...     collection="HLSS30_2.0", band_map={"B04": "B04", "B08": "B08"},
        ...     auth="earthdata", cloud_config={"provider": "earthdata", "region": "us-west-2"})

    Raises:
        ConfigurationError: Both a DatasetInfo and fields, an id that does not look
            like ``provider/name``, or a ``cloud_config`` CloudConfig rejects.
    """
    if info is None:
        info = DatasetInfo(**fields)
    elif fields:
        raise ConfigurationError("pass a DatasetInfo or keyword fields, not both")
    # Built now, so that a mistake in the config fails here and not at the first build.
    config = CloudConfig(**info.cloud_config) if info.cloud_config else None
    register_dataset(info, config)
    return info


def info(dataset_id: str) -> dict[str, Any]:
    """A description of a registered dataset as a plain dict (secrets masked).

    Raises:
        ConfigurationError: Unknown id; the message lists the registered ones.
    """
    return get_dataset(dataset_id).as_dict()
