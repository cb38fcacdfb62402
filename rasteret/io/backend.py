"""Backends: a picklable description of how to reach object stores.

A :class:`Backend` holds what the user configured (credential provider, region,
S3 defaults, client and retry options). Live obstore stores are built lazily, one
per bucket / container / HTTP origin, in the process that uses them: pickling a
backend (into a DataLoader worker) drops its stores and each process builds and
authenticates its own.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

from obstore.store import AzureStore, GCSStore, HTTPStore, LocalStore, S3Store

from rasteret.errors import AccessDeniedError, ConfigurationError
from rasteret.io.urls import StoreTarget, parse_url
from rasteret.redact import masked

if TYPE_CHECKING:
    # obstore's config types exist for type checkers only (not importable at runtime).
    from obstore.store import (
        AzureConfig,
        AzureCredentialProvider,
        ClientConfig,
        GCSConfig,
        GCSCredentialProvider,
        ObjectStore,
        RetryConfig,
        S3Config,
        S3CredentialProvider,
    )

    from rasteret.io.credentials import PlanetaryComputerSas

    class S3Options(S3Config, total=False):
        """obstore's S3 settings plus the boto-style names rasteret also accepts.

        Keys are case-insensitive at runtime, and boolean settings may be given as
        the strings ``"true"``/``"false"`` (as environment variables hold them).
        """

        aws_access_key_id: str
        aws_secret_access_key: str
        aws_session_token: str
        aws_region: str
        aws_endpoint: str
        aws_endpoint_url: str
        endpoint_url: str
        aws_skip_signature: bool
        aws_request_payer: bool
        requester_pays: bool

    CredentialProvider: TypeAlias = (
        S3CredentialProvider
        | AzureCredentialProvider
        | GCSCredentialProvider
        | PlanetaryComputerSas
    )

_S3_ALIASES = {
    "aws_access_key_id": "access_key_id",
    "aws_secret_access_key": "secret_access_key",
    "aws_session_token": "session_token",
    "aws_region": "region",
    "aws_endpoint": "endpoint",
    "aws_endpoint_url": "endpoint",
    "endpoint_url": "endpoint",
    "aws_skip_signature": "skip_signature",
    "aws_request_payer": "request_payer",
    "requester_pays": "request_payer",
}


# Boolean S3 settings that arrive as strings from environment variables and files.
_S3_BOOLEANS = ("skip_signature", "virtual_hosted_style_request", "unsigned_payload")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigurationError(
            f"default_s3_config[{name!r}] = {value!r} is not a boolean: use True/False "
            "(or the strings 'true'/'false')"
        )
    return bool(value)


def normalize_s3_config(config: S3Options | Mapping[str, Any] | None) -> S3Config:
    """Return ``config`` with boto-style keys (``aws_access_key_id``...) renamed to
    obstore's (``access_key_id``...), and boolean settings given as strings
    (``skip_signature="false"``) turned into booleans.

    Raises:
        ConfigurationError: A boolean setting is a string that is not a boolean.
    """
    normalized: dict[str, Any] = {}
    for key, value in (config or {}).items():
        name = key.lower()
        normalized[_S3_ALIASES.get(name, name)] = value
    for name in _S3_BOOLEANS:
        if name in normalized:
            normalized[name] = _as_bool(name, normalized[name])
    if normalized.get("request_payer") is True:
        normalized["request_payer"] = "requester"
    # Unknown keys pass through: obstore names them when the store is built.
    return cast("S3Config", normalized)


def endpoint_from_env() -> str | None:
    """The S3 endpoint set in the environment (``AWS_ENDPOINT_URL_S3``,
    ``AWS_ENDPOINT_URL``, or obstore's ``AWS_ENDPOINT``), as boto3 and the AWS CLI
    read it."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"):
        value = os.environ.get(name)
        if value:
            return value
    return None


def provider_kind(provider: object) -> Literal["s3", "azure", "gcs"]:
    """Guess which store kind a credential provider serves: ``s3``, ``azure`` or ``gcs``."""
    module = type(provider).__module__.lower()
    name = type(provider).__name__.lower()
    if "planetary" in module or "planetary" in name or "azure" in module or "azure" in name:
        return "azure"
    if "google" in module or "gcs" in name:
        return "gcs"
    return "s3"


def _aws_profile_configured() -> bool:
    """True when AWS credentials come from a profile or ``~/.aws`` (boto3's chain)."""
    return bool(os.environ.get("AWS_PROFILE")) or os.path.exists(
        os.environ.get("AWS_SHARED_CREDENTIALS_FILE", os.path.expanduser("~/.aws/credentials"))
    )


def _needs_boto3_chain(config: S3Config) -> bool:
    """True when the credentials live where only boto3 reads them (a profile, ``~/.aws``).

    Raises:
        AccessDeniedError: They do, but boto3 is not installed (obstore alone would
            fall back to the EC2 metadata service, which does not exist elsewhere).
    """
    if config.get("skip_signature") or "access_key_id" in config:
        return False
    if os.environ.get("AWS_ACCESS_KEY_ID") or not _aws_profile_configured():
        return False
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise AccessDeniedError(
            "AWS credentials are configured in a profile / ~/.aws (aws configure), but "
            "boto3, which reads them, is not installed: pip install 'rasteret[aws]' (or "
            "boto3), or set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or pass keys in "
            "default_s3_config"
        ) from None
    return True


def boto3_session() -> Any:
    """A boto3 session for the configured profile.

    Raises:
        ConfigurationError: ``AWS_PROFILE`` names a profile that does not exist; the
            message lists the profiles found.
    """
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        return boto3.Session()
    except ProfileNotFound:
        import botocore.session

        profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE")
        try:
            found = sorted(botocore.session.Session(profile=None).full_config["profiles"])
        except Exception:  # noqa: BLE001 - only used to enrich the message
            found = []
        raise ConfigurationError(
            f"AWS_PROFILE={profile!r} names a profile that is not in "
            f"{os.environ.get('AWS_SHARED_CREDENTIALS_FILE', '~/.aws/credentials')} or "
            f"{os.environ.get('AWS_CONFIG_FILE', '~/.aws/config')} (profiles found: "
            f"{found}): run `aws configure --profile {profile}` or set AWS_PROFILE to one "
            "of them"
        ) from None


@dataclass(frozen=True)
class RetryPolicy:
    """How rasteret retries transient failures (5xx, 429, resets, timeouts, short
    bodies): exponential backoff with full jitter, bounded in attempts and time.

    Attributes:
        attempts: Tries in total (1 disables retrying).
        base_delay: Seconds before the first retry (doubled each time, randomised).
        max_delay: Longest wait between two tries.
        budget: Seconds a request may spend retrying before it fails.
        throttle_delay: Seconds added to the backoff when the store throttles (429
            Too Many Requests, 503 Slow Down / Service Unavailable). obstore's errors
            carry the status and the body but not the ``Retry-After`` header, so this
            floor stands in for it.
        clock: Seconds on a monotonic clock, read to spend the ``budget``
            (``time.monotonic``).
        sleep: Waits between two tries, given the seconds (``asyncio.sleep``).
            ``clock`` and ``sleep`` are there to be replaced together, by tests that
            count attempts and waits instead of timing them; both must pickle (module
            level functions or instances of module level classes) so a backend still
            reaches worker processes.
    """

    attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 4.0
    budget: float = 60.0
    throttle_delay: float = 0.5
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False)


class Backend:
    """How rasteret reaches object stores; pass the same one to builds and reads.

    ``rasteret.create_backend(...)`` is this class under the verb the guides use. A
    backend pickles to its description, so each DataLoader worker builds its own
    stores and fetches its own tokens.

    Args:
        credential_provider: An obstore credential provider (for example
            ``obstore.auth.planetary_computer.PlanetaryComputerCredentialProvider``,
            ``obstore.auth.earthdata.NasaEarthdataCredentialProvider`` or
            ``obstore.auth.boto3.Boto3CredentialProvider``). It is handed to the stores
            of its kind (Azure providers to Azure stores, S3 providers to S3 stores).
        region: Default region for S3 buckets.
        default_s3_config: S3 settings for every bucket: ``region``,
            ``skip_signature``, ``aws_access_key_id``, ``aws_secret_access_key``,
            ``aws_session_token``, ``endpoint``, ``request_payer``, ... (boto-style and
            obstore-style names both work; typed as obstore's ``S3Config`` plus the
            boto-style names).
        client_options: obstore HTTP client options (timeouts, ``allow_http``, ...; an
            ``obstore.store.ClientConfig``).
        retry_config: obstore's own retry settings (``max_retries``, ``retry_timeout`` as a
            ``datetime.timedelta``, ``backoff``; an ``obstore.store.RetryConfig``),
            applied inside each request; off unless given, since rasteret retries
            itself (see ``retries``).
        azure_config: Azure settings for every container (``endpoint`` for an emulator,
            ``account_name``...; an ``obstore.store.AzureConfig``).
        gcs_config: Google Cloud Storage settings (an ``obstore.store.GCSConfig``).
        max_concurrent_requests: Requests in flight at once through this backend in
            each process (default 256, or ``RASTERET_MAX_CONCURRENT_REQUESTS``).
        retries: rasteret's :class:`RetryPolicy` for transient failures (default: 5
            attempts within 60 s); retries are counted in ``FetchStats.retries``.

    Attributes:
        retries: rasteret's :class:`RetryPolicy` (backoff around each request).
        retry_config: obstore's own retry settings handed to its stores, or None
            (obstore then does not retry: rasteret does).
    """

    def __init__(
        self,
        *,
        credential_provider: CredentialProvider | None = None,
        region: str | None = None,
        default_s3_config: S3Options | None = None,
        client_options: ClientConfig | None = None,
        retry_config: RetryConfig | None = None,
        azure_config: AzureConfig | None = None,
        gcs_config: GCSConfig | None = None,
        max_concurrent_requests: int | None = None,
        retries: RetryPolicy | None = None,
    ) -> None:
        self.credential_provider = credential_provider
        self.retries = retries or RetryPolicy()
        self.max_concurrent_requests = max_concurrent_requests
        self.region = region
        self.default_s3_config = normalize_s3_config(default_s3_config)
        self.client_options: ClientConfig = client_options.copy() if client_options else {}
        self.retry_config: RetryConfig | None = retry_config.copy() if retry_config else None
        self.azure_config: AzureConfig = azure_config.copy() if azure_config else {}
        self.gcs_config: GCSConfig = gcs_config.copy() if gcs_config else {}
        self._stores: dict[tuple[str, str], ObjectStore] = {}
        self._lock = threading.Lock()

    # -- pickling: the description travels, live stores do not -----------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_stores"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        provider = type(self.credential_provider).__name__ if self.credential_provider else None
        return (
            f"Backend(credential_provider={provider}, region={self.region!r}, "
            f"default_s3_config={masked(self.default_s3_config)}, "
            f"azure_config={masked(self.azure_config)}, gcs_config={masked(self.gcs_config)}, "
            f"client_options={masked(self.client_options)})"
        )

    # -- routing --------------------------------------------------------------------
    def store_for(self, url: str) -> tuple[ObjectStore, str]:
        """Return ``(store, path)`` for ``url``, building the store on first use."""
        target = parse_url(url)
        cache_key = (target.kind, target.key)
        store = self._stores.get(cache_key)
        if store is None:
            with self._lock:
                store = self._stores.get(cache_key)
                if store is None:
                    store = self._build_store(target)
                    self._stores[cache_key] = store
        return store, target.path

    def describe_credentials(self, url: str) -> str:
        """Say, without any secret, which credentials requests to ``url`` use."""
        kind = parse_url(url).kind
        if self.credential_provider is not None and provider_kind(self.credential_provider) == kind:
            return f"credential provider {type(self.credential_provider).__name__}"
        if kind == "s3":
            config = self.s3_config(None)
            if config.get("skip_signature"):
                return "anonymous (unsigned) requests"
            if "access_key_id" in config:
                return "explicit access keys from default_s3_config"
            if os.environ.get("AWS_ACCESS_KEY_ID"):
                return "AWS keys from the environment (AWS_ACCESS_KEY_ID)"
            if _needs_boto3_chain(config):
                return "the AWS profile / ~/.aws credentials through boto3"
            return "the AWS default credential chain"
        if kind in ("http", "file"):
            return "no credentials"
        return "the store's default credentials from the environment"

    def _options_for(self, endpoint: str | None) -> ClientConfig:
        options = self.client_options.copy()
        if endpoint and endpoint.startswith("http://"):
            options.setdefault("allow_http", True)
        return options

    def s3_config(self, url_region: str | None) -> S3Config:
        """The S3 settings a store for a bucket gets: ``default_s3_config``, the
        endpoint from the environment (as boto3 reads it), and the region: the
        settings', else the backend's, else ``url_region`` (the one a URL names), else
        the environment's or the AWS profile's."""
        config = self.default_s3_config.copy()
        env_endpoint = endpoint_from_env()
        if "endpoint" not in config and env_endpoint:
            # As boto3 does; passing it on lets an http:// endpoint get allow_http.
            config["endpoint"] = env_endpoint
        region = (
            config.get("region")
            or self.region
            or url_region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        )
        if not region and _needs_boto3_chain(config):
            region = boto3_session().region_name  # `aws configure` puts it in ~/.aws/config
        if region:
            config["region"] = region
        # Publishing a large object (a multipart upload) only where none exists is a
        # server-side copy that S3 completes with If-None-Match (see put_file_async).
        config.setdefault("copy_if_not_exists", "multipart")
        has_provider = (
            self.credential_provider is not None
            and provider_kind(self.credential_provider) == "s3"
        )
        signs = (
            has_provider
            or "access_key_id" in config
            or "skip_signature" in config
            or os.environ.get("AWS_ACCESS_KEY_ID")
            or os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE")
            or os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            or os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            or _aws_profile_configured()
        )
        if not signs:
            # No credentials anywhere: read public buckets anonymously rather than
            # waiting on the instance-metadata service, which does not exist off EC2.
            config["skip_signature"] = True
        return config

    def _azure_provider(self, account: str, container: str) -> AzureCredentialProvider:
        """The user's Azure provider, or a Planetary Computer provider for this
        container cloned from the user's (one provider serves one container)."""
        from rasteret.io.credentials import planetary_computer_template

        provider = self.credential_provider
        template = planetary_computer_template(provider)
        if template is None:
            # provider_kind() said "azure": an Azure provider of the user's.
            return cast("AzureCredentialProvider", provider)
        bound = getattr(provider, "config", None) or {}
        if bound.get("account_name") == account and bound.get("container_name") == container:
            return cast("AzureCredentialProvider", provider)
        return template.for_container(account, container)

    def _build_store(self, target: StoreTarget) -> ObjectStore:
        # rasteret retries (and counts retries) itself; obstore's own retries stay off
        # unless the caller configured them.
        retry: RetryConfig = self.retry_config or {"max_retries": 0}
        provider = self.credential_provider
        # provider_kind() routes the user's provider to the stores of its kind; the
        # casts below say what that runtime check found.
        kind = provider_kind(provider) if provider is not None else None
        if target.kind == "file":
            return LocalStore()
        if target.kind == "http":
            return HTTPStore.from_url(
                target.key, client_options=self._options_for(target.key), retry_config=retry
            )
        if target.kind == "s3":
            config = self.s3_config(target.region)
            s3_provider: S3CredentialProvider | None = None
            if kind == "s3":
                s3_provider = cast("S3CredentialProvider", provider)
            elif _needs_boto3_chain(config):
                # obstore reads AWS_* variables but not profiles or ~/.aws: boto3 does.
                from obstore.auth.boto3 import Boto3CredentialProvider

                s3_provider = Boto3CredentialProvider(boto3_session())
            return S3Store(
                target.key,
                config=config,
                client_options=self._options_for(config.get("endpoint")),
                retry_config=retry,
                credential_provider=s3_provider,
            )
        if target.kind == "azure":
            account, _, container = target.key.partition("/")
            azure = self.azure_config.copy()
            env_endpoint = os.environ.get("AZURE_STORAGE_ENDPOINT") or os.environ.get(
                "AZURE_ENDPOINT")
            if "endpoint" not in azure and env_endpoint:
                # obstore reads it too, but explicit client options hide the environment's
                # allow_http: pass it on so an http:// emulator endpoint works.
                azure["endpoint"] = env_endpoint
            account = account or azure.get("account_name", "")
            if account:
                azure.setdefault("account_name", account)
            return AzureStore(
                container,
                config=azure,
                client_options=self._options_for(azure.get("endpoint")),
                retry_config=retry,
                credential_provider=(
                    self._azure_provider(account, container) if kind == "azure" else None
                ),
            )
        if target.kind == "gcs":
            return GCSStore(
                target.key,
                config=self.gcs_config.copy(),
                client_options=self._options_for(None),
                retry_config=retry,
                credential_provider=(
                    cast("GCSCredentialProvider", provider) if kind == "gcs" else None
                ),
            )
        raise ConfigurationError(f"no store for {target.kind!r}")


create_backend = Backend
"""Describe how to reach object stores; pass the result as ``backend=`` anywhere. The
same as constructing a :class:`Backend` (it takes the same arguments and does nothing
more), under the verb the guides use."""


_default_backend: Backend | None = None


def default_backend() -> Backend:
    """The backend used when a call passes none (anonymous S3, environment credentials)."""
    global _default_backend
    if _default_backend is None:
        _default_backend = Backend()
    return _default_backend
