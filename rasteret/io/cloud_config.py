"""``CloudConfig``: how a dataset's hrefs are reached, registered per dataset id.

A config names the provider (``aws``, ``planetary_computer``, ``earthdata``,
``http``), whether the bucket is requester-pays, its region, and URL rewrites
(``https://landsatlook.usgs.gov/data/`` -> ``s3://usgs-landsat/``). Builds apply
the rewrites to hrefs; reads of a collection whose dataset has a registered config
build their backend from it when the caller passes none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from rasteret.errors import ConfigurationError
from rasteret.io.backend import Backend, create_backend, default_backend

PROVIDERS = ("aws", "planetary_computer", "earthdata", "http", "gcs", "azure")


@dataclass(frozen=True)
class CloudConfig:
    """Where and how a dataset's objects are read.

    Args:
        provider: ``"aws"``, ``"planetary_computer"``, ``"earthdata"``, ``"http"``,
            ``"gcs"`` or ``"azure"``.
        requester_pays: Sign requests and send ``x-amz-request-payer: requester``
            (the reader's AWS account pays for the transfer).
        region: The bucket region (S3).
        url_patterns: Prefix rewrites applied to hrefs, e.g.
            ``{"https://landsatlook.usgs.gov/data/": "s3://usgs-landsat/"}``.
        credentials_url: For ``earthdata``: the DAAC's S3 credentials endpoint.
        s3_config: Extra S3 settings (``endpoint``, ``skip_signature``...).
    """

    provider: str = "aws"
    requester_pays: bool = False
    region: str | None = None
    url_patterns: dict[str, str] = field(default_factory=dict)
    credentials_url: str | None = None
    s3_config: dict[str, Any] = field(default_factory=dict)

    _registry: ClassVar[dict[str, CloudConfig]] = {}

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ConfigurationError(
                f"unknown provider {self.provider!r}; use one of {PROVIDERS}"
            )

    # -- the registry ----------------------------------------------------------------
    @classmethod
    def register(cls, dataset_id: str, config: CloudConfig) -> None:
        """Register ``config`` for ``dataset_id`` (replacing any earlier one)."""
        cls._registry[dataset_id] = config

    @classmethod
    def get(cls, dataset_id: str | None) -> CloudConfig | None:
        """The config registered for ``dataset_id``, or None."""
        if dataset_id is None:
            return None
        if dataset_id not in cls._registry:
            # Built-in datasets register their configs when the catalog loads.
            from rasteret.ingest import catalog

            catalog.list_datasets()
        return cls._registry.get(dataset_id)

    @classmethod
    def registered(cls) -> dict[str, CloudConfig]:
        """A copy of the registry: dataset id -> config."""
        return dict(cls._registry)

    # -- use -------------------------------------------------------------------------
    def rewrite_url(self, url: str) -> str:
        """Apply the first matching prefix rewrite of ``url_patterns``."""
        for prefix, replacement in self.url_patterns.items():
            if url.startswith(prefix):
                return replacement + url[len(prefix):]
        return url

    def to_backend(self, credential_provider: Any = None) -> Backend:
        """A backend reading this dataset.

        Args:
            credential_provider: Overrides the provider the config implies (for
                example an Earthdata provider with your own ``auth``).
        """
        s3 = dict(self.s3_config)
        if self.requester_pays:
            s3["request_payer"] = True
        if credential_provider is None and self.provider == "planetary_computer":
            from rasteret.io.credentials import PlanetaryComputerSas

            credential_provider = PlanetaryComputerSas()
        if credential_provider is None and self.provider == "earthdata":
            if not self.credentials_url:
                raise ConfigurationError(
                    "an earthdata CloudConfig needs credentials_url= (the DAAC's "
                    "s3credentials endpoint)"
                )
            from obstore.auth.earthdata import NasaEarthdataCredentialProvider

            credential_provider = NasaEarthdataCredentialProvider(self.credentials_url)
        if credential_provider is None and self.requester_pays:
            credential_provider = _boto3_provider_if_configured()
        return create_backend(
            credential_provider=credential_provider, region=self.region,
            default_s3_config=s3 or None,
        )


def _boto3_provider_if_configured() -> Any:
    """A boto3 credential provider when boto3 is installed (the AWS chain: variables,
    ``~/.aws``, SSO, instance roles); None otherwise (obstore reads the variables)."""
    try:
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        return None
    try:
        import boto3
    except ImportError:
        return None
    if boto3.Session().get_credentials() is None:
        return None
    return Boto3CredentialProvider()


def backend_for_dataset(dataset_id: str | None, backend: Backend | None = None) -> Backend:
    """The backend to read ``dataset_id`` with: the caller's, else one from its
    registered CloudConfig, else the default (anonymous / environment credentials)."""
    if backend is not None:
        return backend
    config = CloudConfig.get(dataset_id)
    if config is None:
        return default_backend()
    return _cached_backend(dataset_id, config)


_backends: dict[str, tuple[CloudConfig, Backend]] = {}


def _cached_backend(dataset_id: str, config: CloudConfig) -> Backend:
    # One backend per dataset and process, so stores and tokens are reused.
    cached = _backends.get(dataset_id)
    if cached is None or cached[0] is not config:
        cached = _backends[dataset_id] = (config, config.to_backend())
    return cached[1]
