"""rasteret: index-first, TorchGeo-ready reads of Cloud-Optimized GeoTIFFs.

``import rasteret`` stays light: torch, torchgeo and lightning load only from
``rasteret.torch``.
"""

from rasteret import errors
from rasteret.io.backend import Backend, create_backend
from rasteret.io.fetch import FetchStats
from rasteret.read.cog import CogFile, open_cog, open_cog_async

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "CogFile",
    "FetchStats",
    "create_backend",
    "errors",
    "open_cog",
    "open_cog_async",
]
