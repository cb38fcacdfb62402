"""The dataset catalog: registered datasets with their STAC source, band map, auth
needs, cloud configuration and license.

``rasteret.datasets.list()``, ``info(id)`` and ``register(...)`` are the public
verbs; :func:`rasteret.build` builds any registered dataset by id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rasteret.errors import ConfigurationError, DatasetNotFoundError
from rasteret.io.backend import masked

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
PLANETARY_COMPUTER = "https://planetarycomputer.microsoft.com/api/stac/v1"

_S2_EARTH_SEARCH = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
    "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
    "B11": "swir16", "B12": "swir22", "SCL": "scl",
}
_S2_PLANETARY = {
    code: code for code in (
        "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12",
        "SCL",
    )
}
_LANDSAT = {
    "B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "nir08", "B6": "swir16",
    "B7": "swir22", "ST_B10": "lwir11", "QA_PIXEL": "qa_pixel",
}
_NAIP = {"R": ("image", 1), "G": ("image", 2), "B": ("image", 3), "N": ("image", 4)}

# HLS v2.0 on NASA's CMR STAC (LP DAAC). Asset keys are the sensors' own band codes,
# and they differ: S30 B8A is narrow NIR, B11/B12 SWIR; L30 B05 is NIR, B06/B07 SWIR,
# B10/B11 thermal. Fmask is the quality layer of both.
CMR_LPCLOUD = "https://cmr.earthdata.nasa.gov/stac/LPCLOUD"
HLS_S30, HLS_L30 = "HLSS30_2.0", "HLSL30_2.0"
_HLS_S30 = {code: code for code in (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
    "Fmask",
)}
_HLS_L30 = {code: code for code in (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B09", "B10", "B11", "Fmask",
)}
# earthdata/hls: both collections under common names, each resolved per item's
# collection (nir is S30's narrow B8A, harmonised with L30's B05).
_HLS_COMMON = {
    name: {HLS_S30: s30, HLS_L30: l30} for name, s30, l30 in (
        ("coastal", "B01", "B01"), ("blue", "B02", "B02"), ("green", "B03", "B03"),
        ("red", "B04", "B04"), ("nir", "B8A", "B05"), ("swir16", "B11", "B06"),
        ("swir22", "B12", "B07"), ("cirrus", "B10", "B09"), ("fmask", "Fmask", "Fmask"),
    )
}
_HLS_CLOUD = {
    "provider": "earthdata",
    "region": "us-west-2",
    "credentials_url": "https://data.lpdaac.earthdatacloud.nasa.gov/s3credentials",
    "url_patterns": {
        "https://data.lpdaac.earthdatacloud.nasa.gov/lp-prod-protected/":
            "s3://lp-prod-protected/",
    },
}
_HLS_AUTH = ("earthdata (temporary S3 keys from LP DAAC's s3credentials, with your "
             "Earthdata login from ~/.netrc or EARTHDATA_TOKEN; in-region us-west-2)")


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
    band_map: Mapping[str, str | tuple[str, int]]
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
        return masked(data)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"DatasetInfo({fields})"


_REGISTRY: dict[str, DatasetInfo] = {}


def register(info: DatasetInfo | None = None, /, **fields: Any) -> DatasetInfo:
    """Register a dataset (a :class:`DatasetInfo`, or its fields as keywords) so that
    ``rasteret.build(id, ...)`` can build it; registers its CloudConfig too.

    Example:
        >>> rasteret.datasets.register(
        ...     id="nasa/hls-s30", stac_api="https://cmr.earthdata.nasa.gov/stac/LPCLOUD",
        ...     collection="HLSS30_2.0", band_map={"B04": "B04", "B08": "B08"},
        ...     auth="earthdata", cloud_config={"provider": "earthdata", "region": "us-west-2"})
    """
    if info is None:
        info = DatasetInfo(**fields)
    elif fields:
        raise ConfigurationError("pass a DatasetInfo or keyword fields, not both")
    if "/" not in info.id:
        raise ConfigurationError(f"dataset ids look like 'provider/name', got {info.id!r}")
    _REGISTRY[info.id] = info
    if info.cloud_config:
        from rasteret.io.cloud_config import CloudConfig

        CloudConfig.register(info.id, CloudConfig(**info.cloud_config))
    return info


def get(dataset_id: str) -> DatasetInfo:
    """The registered dataset ``dataset_id``.

    Raises:
        DatasetNotFoundError: Unknown id (a ConfigurationError); the message lists
            the registered ones.
    """
    _ensure_builtins()
    try:
        return _REGISTRY[dataset_id]
    except KeyError:
        raise DatasetNotFoundError(
            f"unknown dataset {dataset_id!r}; registered datasets: {sorted(_REGISTRY)}"
        ) from None


def find(dataset_id: str) -> DatasetInfo | None:
    """The registered dataset ``dataset_id``, or None."""
    _ensure_builtins()
    return _REGISTRY.get(dataset_id)


def info(dataset_id: str) -> dict[str, Any]:
    """A description of a registered dataset as a plain dict."""
    return get(dataset_id).as_dict()


def list_datasets() -> list[DatasetInfo]:
    """All registered datasets, sorted by id."""
    _ensure_builtins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


_BUILTINS_LOADED = False


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    aws_public = {"provider": "aws", "region": "us-west-2"}
    planetary = {"provider": "planetary_computer"}
    for entry in (
        DatasetInfo(
            "earthsearch/sentinel-2-l2a", EARTH_SEARCH, "sentinel-2-l2a", _S2_EARTH_SEARCH,
            "Sentinel-2 L2A surface reflectance COGs (Earth Search, AWS us-west-2)",
            "none (public bucket)", aws_public, "proprietary (Copernicus Sentinel data terms)",
        ),
        DatasetInfo(
            "earthsearch/landsat-c2-l2", EARTH_SEARCH, "landsat-c2-l2", _LANDSAT,
            "Landsat Collection 2 Level-2 (USGS requester-pays bucket usgs-landsat)",
            "aws requester-pays (your AWS credentials are billed for transfer)",
            {
                "provider": "aws",
                "region": "us-west-2",
                "requester_pays": True,
                "url_patterns": {"https://landsatlook.usgs.gov/data/": "s3://usgs-landsat/"},
            },
            "public domain (USGS)",
        ),
        DatasetInfo(
            "earthsearch/cop-dem-glo-30", EARTH_SEARCH, "cop-dem-glo-30", {"DEM": "data"},
            "Copernicus DEM GLO-30 (Earth Search, AWS)", "none (public bucket)",
            {"provider": "aws", "region": "eu-central-1"},
            "proprietary (Copernicus DEM license)",
        ),
        DatasetInfo(
            "earthsearch/naip", EARTH_SEARCH, "naip", _NAIP,
            "NAIP 4-band aerial imagery (one 4-band asset, read by band index)",
            "aws requester-pays",
            {"provider": "aws", "region": "us-west-2", "requester_pays": True},
            "public domain (USDA)",
        ),
        DatasetInfo(
            "earthdata/hls", CMR_LPCLOUD, f"{HLS_S30},{HLS_L30}", _HLS_COMMON,
            "Harmonized Landsat Sentinel-2 v2.0, 30 m: HLSS30 and HLSL30 together, bands "
            "by common name (LP DAAC, AWS us-west-2)", _HLS_AUTH, _HLS_CLOUD,
            "public domain (NASA; Copernicus Sentinel data terms for S30)",
        ),
        DatasetInfo(
            "earthdata/hls-s30", CMR_LPCLOUD, HLS_S30, _HLS_S30,
            "HLS v2.0 Sentinel-2 MSI surface reflectance, 30 m (LP DAAC, AWS us-west-2)",
            _HLS_AUTH, _HLS_CLOUD, "public domain (NASA; Copernicus Sentinel data terms)",
        ),
        DatasetInfo(
            "earthdata/hls-l30", CMR_LPCLOUD, HLS_L30, _HLS_L30,
            "HLS v2.0 Landsat 8/9 OLI surface reflectance and TIRS brightness, 30 m "
            "(LP DAAC, AWS us-west-2)", _HLS_AUTH, _HLS_CLOUD, "public domain (NASA)",
        ),
        DatasetInfo(
            "pc/sentinel-2-l2a", PLANETARY_COMPUTER, "sentinel-2-l2a", _S2_PLANETARY,
            "Sentinel-2 L2A on Planetary Computer (Azure Blob, SAS tokens)",
            "planetary-computer", planetary, "proprietary (Copernicus Sentinel data terms)",
        ),
        DatasetInfo(
            "pc/landsat-c2-l2", PLANETARY_COMPUTER, "landsat-c2-l2", _LANDSAT,
            "Landsat Collection 2 Level-2 on Planetary Computer", "planetary-computer",
            planetary, "public domain (USGS)",
        ),
        DatasetInfo(
            "pc/nasadem", PLANETARY_COMPUTER, "nasadem", {"elevation": "elevation"},
            "NASADEM elevation (EPSG:4326)", "planetary-computer", planetary,
            "public domain (NASA)",
        ),
        DatasetInfo(
            "pc/esa-worldcover", PLANETARY_COMPUTER, "esa-worldcover", {"map": "map"},
            "ESA WorldCover 10 m land cover", "planetary-computer", planetary, "CC-BY-4.0",
        ),
        DatasetInfo(
            "pc/io-lulc-annual-v02", PLANETARY_COMPUTER, "io-lulc-annual-v02",
            {"data": "data"}, "Impact Observatory annual 10 m land use / land cover",
            "planetary-computer", planetary, "CC-BY-4.0",
        ),
    ):
        register(entry)
