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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

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
# Planetary Computer signs every blob with a SAS token from its token API (fetched
# anonymously, or with PC_SDK_SUBSCRIPTION_KEY for the collections that require an
# account, such as sentinel-1-rtc).
_PC_AUTH = "planetary-computer (SAS token from the PC token API, anonymous)"
_PC_ACCOUNT_AUTH = ("planetary-computer with an account (SAS token from the PC token API; "
                    "set PC_SDK_SUBSCRIPTION_KEY)")
_COP_DEM_LICENSE = "proprietary (Copernicus DEM licence: free use, attribution)"
_HLS_AUTH = ("earthdata (temporary S3 keys from LP DAAC's s3credentials, with your "
             "Earthdata login from ~/.netrc or EARTHDATA_TOKEN; in-region us-west-2)")


def _builtin_datasets() -> tuple[DatasetInfo, ...]:
    aws_public = {"provider": "aws", "region": "us-west-2"}
    planetary = {"provider": "planetary_computer"}
    return (
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
            "earthsearch/cop-dem-glo-90", EARTH_SEARCH, "cop-dem-glo-90", {"DEM": "data"},
            "Copernicus DEM GLO-90, 90 m elevation, float32 (Earth Search, AWS eu-central-1)",
            "none (public bucket)", {"provider": "aws", "region": "eu-central-1"},
            _COP_DEM_LICENSE,
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
            "pc/cop-dem-glo-30", PLANETARY_COMPUTER, "cop-dem-glo-30", {"DEM": "data"},
            "Copernicus DEM GLO-30, 30 m elevation, EPSG:4326 (Planetary Computer)",
            _PC_AUTH, planetary, _COP_DEM_LICENSE,
        ),
        DatasetInfo(
            "pc/alos-dem", PLANETARY_COMPUTER, "alos-dem", {"DSM": "data"},
            "ALOS World 3D 30 m surface model (JAXA AW3D30), EPSG:4326 (Planetary Computer)",
            _PC_AUTH, planetary, "proprietary (JAXA AW3D30 terms of use: free, attribution)",
        ),
        DatasetInfo(
            "pc/usda-cdl", PLANETARY_COMPUTER, "usda-cdl", {"cropland": "cropland"},
            "USDA Cropland Data Layer, 30 m crop classes over CONUS, EPSG:5070 "
            "(Planetary Computer)", _PC_AUTH, planetary,
            "proprietary (USDA NASS; free to use, cite NASS)",
        ),
        DatasetInfo(
            "pc/sentinel-1-rtc", PLANETARY_COMPUTER, "sentinel-1-rtc", {"vv": "vv", "vh": "vh"},
            "Sentinel-1 GRD radiometrically terrain corrected gamma0, float32 VV/VH COGs "
            "(Planetary Computer)", _PC_ACCOUNT_AUTH, planetary,
            "CC-BY-4.0 (Copernicus Sentinel data, processed by Catalyst)",
        ),
        DatasetInfo(
            "pc/hls2-s30", PLANETARY_COMPUTER, "hls2-s30", _HLS_S30,
            "HLS v2.0 Sentinel-2 MSI surface reflectance, 30 m (Planetary Computer's copy)",
            _PC_AUTH, planetary, "proprietary (LP DAAC data policy: NASA open data; "
            "Copernicus Sentinel data terms)",
        ),
        DatasetInfo(
            "pc/hls2-l30", PLANETARY_COMPUTER, "hls2-l30", _HLS_L30,
            "HLS v2.0 Landsat 8/9 OLI/TIRS, 30 m (Planetary Computer's copy)",
            _PC_AUTH, planetary, "proprietary (LP DAAC data policy: NASA open data)",
        ),
        DatasetInfo(
            "pc/io-lulc-annual-v02", PLANETARY_COMPUTER, "io-lulc-annual-v02",
            {"data": "data"}, "Impact Observatory annual 10 m land use / land cover",
            "planetary-computer", planetary, "CC-BY-4.0",
        ),
    )
