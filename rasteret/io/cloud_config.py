"""``CloudConfig``: how a dataset's hrefs are reached, registered per dataset id.

A config names the provider (``aws``, ``gcp``, ``azure``, ``planetary_computer``,
``earthdata``, ``http``), whether the bucket is requester-pays, its region, and URL
rewrites (``https://landsatlook.usgs.gov/data/`` -> ``s3://usgs-landsat/``).

A config is registered under a dataset id (``"my-org/my-collection"``) or under a
STAC collection id (``"my-collection"``); the full id wins when both exist. Builds
apply its rewrites to hrefs and index headers through its backend; reads of a
collection built from that dataset or STAC collection use the same backend when the
caller passes none. An explicit ``backend=`` always wins.

Configs are kept in the one registry of :mod:`rasteret.registry`, in the entry of
their id, beside the dataset ``rasteret.datasets.register`` put there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, get_args

from rasteret import registry
from rasteret.errors import ConfigurationError
from rasteret.io.backend import Backend, boto3_session, create_backend, default_backend
from rasteret.redact import masked

if TYPE_CHECKING:
    from obstore.auth.boto3 import Boto3CredentialProvider

    from rasteret.io.backend import CredentialProvider, S3Options

#: The providers a CloudConfig names.
Provider = Literal["aws", "gcp", "azure", "planetary_computer", "earthdata", "http"]

PROVIDERS: tuple[Provider, ...] = get_args(Provider)
# Other spellings of a provider -> the one value a config holds.
_PROVIDER_ALIASES = {"gcs": "gcp"}


def _no_s3_options() -> S3Options:
    return {}


@dataclass(frozen=True)
class CloudConfig:
    """Where and how a dataset's objects are read.

    Args:
        provider: ``"aws"``, ``"gcp"``, ``"azure"``, ``"planetary_computer"``,
            ``"earthdata"`` or ``"http"`` (case-insensitive; ``"gcs"`` means
            ``"gcp"``, and is stored as ``"gcp"``).
        requester_pays: Sign requests and send ``x-amz-request-payer: requester``
            (the reader's AWS account pays for the transfer).
        region: The bucket region (S3).
        url_patterns: Prefix rewrites applied to hrefs, e.g.
            ``{"https://landsatlook.usgs.gov/data/": "s3://usgs-landsat/"}``.
        credentials_url: For ``earthdata``: the DAAC's S3 credentials endpoint.
        s3_config: Extra S3 settings (``endpoint``, ``skip_signature``...).
    """

    provider: Provider = "aws"
    requester_pays: bool = False
    region: str | None = None
    url_patterns: dict[str, str] = field(default_factory=dict)
    credentials_url: str | None = None
    s3_config: S3Options = field(default_factory=lambda: _no_s3_options())

    def __post_init__(self) -> None:
        name = str(self.provider).strip().lower()
        name = _PROVIDER_ALIASES.get(name, name)
        if name not in PROVIDERS:
            raise ConfigurationError(
                f"unknown provider {self.provider!r} in CloudConfig; use one of {PROVIDERS}"
            )
        object.__setattr__(self, "provider", name)  # frozen: normalise once, here

    def __repr__(self) -> str:
        # Keys, session tokens, passwords and signed query strings never appear here.
        return (
            f"CloudConfig(provider={self.provider!r}, requester_pays={self.requester_pays!r}, "
            f"region={self.region!r}, url_patterns={masked(self.url_patterns)!r}, "
            f"credentials_url={masked(self.credentials_url)!r}, "
            f"s3_config={masked(self.s3_config)!r})"
        )

    # -- the registry ----------------------------------------------------------------
    @classmethod
    def register(cls, dataset_id: str, config: CloudConfig) -> None:
        """Register ``config`` for a dataset (replacing any earlier one).

        Args:
            dataset_id: A dataset id (``"my-org/my-collection"``), which applies to
                ``rasteret.build("my-org/my-collection", ...)``, or a STAC collection
                id (``"my-collection"``), which applies to every build and read of that
                STAC collection (``build`` of any id ending in ``/my-collection`` and
                ``build_from_stac(collection="my-collection")``).
            config: The settings.

        Raises:
            ConfigurationError: ``config`` is not a CloudConfig or the key is empty.
        """
        if not isinstance(config, CloudConfig):
            raise ConfigurationError(
                f"CloudConfig.register({dataset_id!r}, ...) takes a CloudConfig, not "
                f"{type(config).__name__}"
            )
        if not dataset_id or not isinstance(dataset_id, str):
            raise ConfigurationError("CloudConfig.register needs a dataset or collection id")
        registry.register_cloud_config(dataset_id, config)

    @classmethod
    def get(cls, dataset_id: str | None) -> CloudConfig | None:
        """The config registered for ``dataset_id`` (a dataset or STAC collection id),
        or None."""
        entry = registry.entry(dataset_id) if dataset_id is not None else None
        if entry is None:
            return None
        if isinstance(entry.cloud_config, Mapping):
            # A dataset's keyword arguments (the built-ins): built once, on first use,
            # so that every later lookup returns the same config (and backend).
            entry.cloud_config = cls(**entry.cloud_config)
        return entry.cloud_config if isinstance(entry.cloud_config, CloudConfig) else None

    @classmethod
    def lookup(
        cls, dataset_id: str | None, collection: str | None = None
    ) -> tuple[str, CloudConfig] | None:
        """The config for a dataset, and the key it is registered under.

        Args:
            dataset_id: The dataset id (tried first).
            collection: The STAC collection id (tried when the dataset id has none).

        Returns:
            ``(key, config)``, or None when neither id has a config.
        """
        for key in (dataset_id, collection):
            config = cls.get(key)
            if key is not None and config is not None:
                return key, config
        return None

    @classmethod
    def registered(cls) -> dict[str, CloudConfig]:
        """A copy of the registry's configs: dataset or collection id -> config."""
        found = {e.key: cls.get(e.key) for e in registry.entries()}
        return {key: config for key, config in found.items() if config is not None}

    # -- use -------------------------------------------------------------------------
    def rewrite_url(self, url: str) -> str:
        """Apply the first matching prefix rewrite of ``url_patterns``."""
        for prefix, replacement in self.url_patterns.items():
            if url.startswith(prefix):
                return replacement + url[len(prefix):]
        return url

    def to_backend(self, credential_provider: CredentialProvider | None = None) -> Backend:
        """A backend reading this dataset.

        Args:
            credential_provider: Overrides the provider the config implies (for
                example an Earthdata provider with your own ``auth``).
        """
        s3 = self.s3_config.copy()
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
        explicit = {str(k).lower().removeprefix("aws_") for k in s3}
        if (credential_provider is None and self.requester_pays
                and not explicit & {"access_key_id", "skip_signature"}):
            # Explicit keys in s3_config sign the requests themselves.
            credential_provider = _boto3_provider_if_configured()
        return create_backend(
            credential_provider=credential_provider, region=self.region,
            default_s3_config=s3 or None,
        )


def _boto3_provider_if_configured() -> Boto3CredentialProvider | None:
    """A boto3 credential provider when the AWS chain (variables, ``~/.aws``, SSO,
    instance roles) has credentials; None otherwise (obstore reads the variables).

    Raises:
        ConfigurationError: ``AWS_PROFILE`` names a profile that does not exist.
    """
    from obstore.auth.boto3 import Boto3CredentialProvider

    session = boto3_session()
    if session.get_credentials() is None:
        return None
    return Boto3CredentialProvider(session)


def backend_for_dataset(
    dataset_id: str | None, backend: Backend | None = None, *, collection: str | None = None
) -> Backend:
    """The backend to build or read a dataset with.

    Args:
        dataset_id: The dataset id, or None.
        backend: The caller's backend; it always wins.
        collection: The STAC collection id, used when no config is registered under
            ``dataset_id``.

    Returns:
        The caller's backend, else one from the CloudConfig registered under
        ``dataset_id`` or ``collection``, else the default (anonymous / environment
        credentials). The same config gives the same backend within a process.
    """
    if backend is not None:
        return backend
    found = CloudConfig.lookup(dataset_id, collection)
    if found is None:
        return default_backend()
    return _cached_backend(*found)


class HasDatasetIds(Protocol):
    """What :func:`backend_for_collection` needs of a collection."""

    @property
    def dataset_id(self) -> str | None: ...  # noqa: D102

    @property
    def stac_collection(self) -> str | None: ...  # noqa: D102


def backend_for_collection(collection: HasDatasetIds, backend: Backend | None = None) -> Backend:
    """The backend reads of ``collection`` use: the caller's, else the one its build
    used (from the CloudConfig of its dataset id or STAC collection id)."""
    return backend_for_dataset(
        collection.dataset_id, backend, collection=collection.stac_collection
    )


_backends: dict[str, tuple[CloudConfig, Backend]] = {}


def _cached_backend(dataset_id: str, config: CloudConfig) -> Backend:
    # One backend per dataset and process, so stores and tokens are reused.
    cached = _backends.get(dataset_id)
    if cached is None or cached[0] is not config:
        cached = _backends[dataset_id] = (config, config.to_backend())
    return cached[1]
