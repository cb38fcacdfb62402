"""Secrets kept out of sight: masking for reprs, descriptions, logs and messages.

Keys, tokens, passwords and signed query strings never appear in anything rasteret
shows. This module sits at the bottom of the package (it imports nothing of
rasteret) so that every layer, from the dataset registry to the transport, masks
the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Config keys whose values never appear in a repr, a log or an error message.
SECRET_KEYS = frozenset(
    {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "token",
        "sas_key",
        "sas_token",
        "account_key",
        "client_secret",
        "bearer_token",
        "service_account_key",
        "password",
        "subscription_key",
    }
)


def strip_query(url: str) -> str:
    """Return ``url`` without its query string (where signatures and SAS tokens live)."""
    return url.split("?", 1)[0]


def mask(value: Any) -> str:
    """Return a masked stand-in for a secret value."""
    return "***" if value else repr(value)


def is_secret_key(name: Any) -> bool:
    """True when a config key names a secret (keys, tokens, passwords, SAS), in
    obstore, boto (``aws_``), Azure (``azure_storage_``) or Google spelling."""
    key = str(name).lower().replace("-", "_")
    for prefix in ("aws_", "azure_storage_", "azure_", "google_"):
        key = key.removeprefix(prefix)
    return (
        key in SECRET_KEYS
        or key.endswith("_key")
        or any(word in key for word in ("secret", "token", "password", "authorization"))
    )


def masked(value: Any) -> Any:
    """A copy of ``value`` (nested dicts, lists) safe to show: values under secret
    keys are masked, and in URLs the query string (signatures, SAS tokens) and any
    password are replaced by ``***``."""
    if isinstance(value, Mapping):
        return {k: (mask(v) if is_secret_key(k) else masked(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(masked(v) for v in value)
    if isinstance(value, str) and "://" in value:
        shown = strip_query(value) + ("?***" if "?" in value else "")
        scheme, _, rest = shown.partition("://")
        userinfo, at, host = rest.partition("@")
        if at and "/" not in userinfo and ":" in userinfo:  # user:password@host
            shown = f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"
        return shown
    return value
