"""Backends: a picklable description of how to reach object stores.

A :class:`Backend` holds what the user configured (credential provider, region,
S3 defaults, client and retry options). Live obstore stores are built lazily, one
per bucket / container / HTTP origin, in the process that uses them: pickling a
backend (into a DataLoader worker) drops its stores and each process builds and
authenticates its own.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from obstore.store import AzureStore, GCSStore, HTTPStore, LocalStore, S3Store

from rasteret.errors import AccessDeniedError, ConfigurationError
from rasteret.io.urls import StoreTarget, parse_url
from rasteret.redact import masked

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


def normalize_s3_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """Return ``config`` with boto-style keys (``aws_access_key_id``...) renamed to
    obstore's (``access_key_id``...), and boolean settings given as strings
    (``skip_signature="false"``) turned into booleans."""
    normalized: dict[str, Any] = {}
    for key, value in (config or {}).items():
        name = key.lower()
        normalized[_S3_ALIASES.get(name, name)] = value
    for name in _S3_BOOLEANS:
        if name in normalized:
            normalized[name] = _as_bool(name, normalized[name])
    if normalized.get("request_payer") is True:
        normalized["request_payer"] = "requester"
    return normalized


def endpoint_from_env() -> str | None:
    """The S3 endpoint set in the environment (``AWS_ENDPOINT_URL_S3``,
    ``AWS_ENDPOINT_URL``, or obstore's ``AWS_ENDPOINT``), as boto3 and the AWS CLI
    read it."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"):
        value = os.environ.get(name)
        if value:
            return value
    return None


def provider_kind(provider: Any) -> str:
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


def _needs_boto3_chain(config: dict[str, Any]) -> bool:
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
    """

    attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 4.0
    budget: float = 60.0
    throttle_delay: float = 0.5


class Backend:
    """How rasteret reaches object stores; pass the same one to builds and reads.

    Create one with :func:`create_backend`. It pickles to its description, so each
    DataLoader worker builds its own stores and fetches its own tokens.

    Attributes:
        retries: rasteret's :class:`RetryPolicy` (backoff around each request).
        retry_config: obstore's own retry settings handed to its stores, or None
            (obstore then does not retry: rasteret does).
    """

    def __init__(
        self,
        *,
        credential_provider: Any = None,
        region: str | None = None,
        default_s3_config: dict[str, Any] | None = None,
        client_options: dict[str, Any] | None = None,
        retry_config: dict[str, Any] | None = None,
        azure_config: dict[str, Any] | None = None,
        gcs_config: dict[str, Any] | None = None,
        max_concurrent_requests: int | None = None,
        retries: RetryPolicy | None = None,
    ) -> None:
        self.credential_provider = credential_provider
        self.retries = retries or RetryPolicy()
        self.max_concurrent_requests = max_concurrent_requests
        self.region = region
        self.default_s3_config = normalize_s3_config(default_s3_config)
        self.client_options = dict(client_options or {})
        self.retry_config = dict(retry_config) if retry_config else None
        self.azure_config = dict(azure_config or {})
        self.gcs_config = dict(gcs_config or {})
        self._stores: dict[tuple[str, str], Any] = {}
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
    def store_for(self, url: str) -> tuple[Any, str]:
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
            config = self._s3_config(None)
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

    def _options_for(self, endpoint: str | None) -> dict[str, Any]:
        options = dict(self.client_options)
        if endpoint and endpoint.startswith("http://"):
            options.setdefault("allow_http", True)
        return options

    def _s3_config(self, url_region: str | None) -> dict[str, Any]:
        config = dict(self.default_s3_config)
        if "endpoint" not in config and endpoint_from_env():
            # As boto3 does; passing it on lets an http:// endpoint get allow_http.
            config["endpoint"] = endpoint_from_env()
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

    def _azure_provider(self, account: str, container: str) -> Any:
        """The user's Azure provider, or a Planetary Computer provider for this
        container cloned from the user's (one provider serves one container)."""
        from rasteret.io.credentials import planetary_computer_template

        provider = self.credential_provider
        template = planetary_computer_template(provider)
        if template is None:
            return provider
        bound = getattr(provider, "config", None) or {}
        if bound.get("account_name") == account and bound.get("container_name") == container:
            return provider
        return template.for_container(account, container)

    def _build_store(self, target: StoreTarget) -> Any:
        # rasteret retries (and counts retries) itself; obstore's own retries stay off
        # unless the caller configured them.
        retry = {"retry_config": self.retry_config or {"max_retries": 0}}
        provider = self.credential_provider
        if target.kind == "file":
            return LocalStore()
        if target.kind == "http":
            return HTTPStore.from_url(
                target.key, client_options=self._options_for(target.key), **retry
            )
        if target.kind == "s3":
            config = self._s3_config(target.region)
            kwargs: dict[str, Any] = {}
            if provider is not None and provider_kind(provider) == "s3":
                kwargs["credential_provider"] = provider
            elif _needs_boto3_chain(config):
                # obstore reads AWS_* variables but not profiles or ~/.aws: boto3 does.
                from obstore.auth.boto3 import Boto3CredentialProvider

                kwargs["credential_provider"] = Boto3CredentialProvider(boto3_session())
            return S3Store(
                target.key,
                config=config,
                client_options=self._options_for(config.get("endpoint")),
                **retry,
                **kwargs,
            )
        if target.kind == "azure":
            account, _, container = target.key.partition("/")
            config = dict(self.azure_config)
            env_endpoint = os.environ.get("AZURE_STORAGE_ENDPOINT") or os.environ.get(
                "AZURE_ENDPOINT")
            if "endpoint" not in config and env_endpoint:
                # obstore reads it too, but explicit client options hide the environment's
                # allow_http: pass it on so an http:// emulator endpoint works.
                config["endpoint"] = env_endpoint
            account = account or config.get("account_name", "")
            if account:
                config.setdefault("account_name", account)
            kwargs = {}
            if provider is not None and provider_kind(provider) == "azure":
                kwargs["credential_provider"] = self._azure_provider(account, container)
            return AzureStore(
                container,
                config=config,
                client_options=self._options_for(config.get("endpoint")),
                **retry,
                **kwargs,
            )
        if target.kind == "gcs":
            kwargs = {}
            if provider is not None and provider_kind(provider) == "gcs":
                kwargs["credential_provider"] = provider
            return GCSStore(
                target.key,
                config=dict(self.gcs_config),
                client_options=self._options_for(None),
                **retry,
                **kwargs,
            )
        raise ConfigurationError(f"no store for {target.kind!r}")


def create_backend(
    *,
    credential_provider: Any = None,
    region: str | None = None,
    default_s3_config: dict[str, Any] | None = None,
    client_options: dict[str, Any] | None = None,
    retry_config: dict[str, Any] | None = None,
    azure_config: dict[str, Any] | None = None,
    gcs_config: dict[str, Any] | None = None,
    max_concurrent_requests: int | None = None,
    retries: RetryPolicy | None = None,
) -> Backend:
    """Describe how to reach object stores; pass the result as ``backend=`` anywhere.

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
            obstore-style names both work).
        client_options: obstore HTTP client options (timeouts, ``allow_http``, ...).
        retry_config: obstore's own retry settings (``max_retries``,
            ``retry_timeout``, ``backoff``), applied inside each request; off unless
            given, since rasteret retries itself (see ``retries``).
        azure_config: Azure settings for every container (``endpoint`` for an emulator,
            ``account_name``...).
        gcs_config: Google Cloud Storage settings.
        max_concurrent_requests: Requests in flight at once through this backend in
            each process (default 256, or ``RASTERET_MAX_CONCURRENT_REQUESTS``).
        retries: rasteret's :class:`RetryPolicy` for transient failures (default: 5
            attempts within 60 s); retries are counted in ``FetchStats.retries``.

    Returns:
        A picklable :class:`Backend`.
    """
    return Backend(
        credential_provider=credential_provider,
        region=region,
        default_s3_config=default_s3_config,
        client_options=client_options,
        retry_config=retry_config,
        azure_config=azure_config,
        gcs_config=gcs_config,
        max_concurrent_requests=max_concurrent_requests,
        retries=retries,
    )


_default_backend: Backend | None = None


def default_backend() -> Backend:
    """The backend used when a call passes none (anonymous S3, environment credentials)."""
    global _default_backend
    if _default_backend is None:
        _default_backend = Backend()
    return _default_backend
