"""rasteret: index-first, TorchGeo-ready reads of Cloud-Optimized GeoTIFFs.

``import rasteret`` stays light: torch, torchgeo and lightning load only from
``rasteret.torch``.
"""

from rasteret import datasets, errors, labels
from rasteret.collection import Collection
from rasteret.ingest.api import build, build_from_stac, build_from_table
from rasteret.io.backend import Backend, RetryPolicy, create_backend
from rasteret.io.cloud_config import CloudConfig
from rasteret.io.credentials import PlanetaryComputerSas
from rasteret.io.fetch import FetchStats, process_stats
from rasteret.loading import delete_collection, list_collections, load
from rasteret.options import ReadOptions
from rasteret.read.cog import CogFile, open_cog, open_cog_async
from rasteret.write import CogWriter

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "CloudConfig",
    "CogFile",
    "CogWriter",
    "Collection",
    "FetchStats",
    "PlanetaryComputerSas",
    "ReadOptions",
    "RetryPolicy",
    "build",
    "build_from_stac",
    "build_from_table",
    "create_backend",
    "datasets",
    "delete_collection",
    "errors",
    "labels",
    "list_collections",
    "load",
    "open_cog",
    "open_cog_async",
    "process_stats",
]
