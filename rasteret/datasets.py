"""The dataset catalog: ``rasteret.datasets.list()``, ``info(id)``, ``register(...)``.

Each entry names a STAC source, a band map from user band codes to asset keys, the
credentials reading needs, its cloud configuration and its license.
"""

from rasteret.ingest.catalog import DatasetInfo, get, info, list_datasets, register

list = list_datasets  # noqa: A001 - the catalog's verb, as in rasteret.datasets.list()

__all__ = ["DatasetInfo", "get", "info", "list", "list_datasets", "register"]
