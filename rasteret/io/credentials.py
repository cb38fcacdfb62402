"""Credential helpers that span many stores.

obstore's ``PlanetaryComputerCredentialProvider`` is bound to one storage account
and container, while a Planetary Computer collection spans several. A backend given
one (or a :class:`PlanetaryComputerSas` description) builds one provider per
container it meets, sharing the token endpoint and subscription key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from obstore.auth.planetary_computer import PlanetaryComputerCredentialProvider


@dataclass(frozen=True)
class PlanetaryComputerSas:
    """Fetch Planetary Computer SAS tokens for whichever container a read needs.

    Give it as ``credential_provider=`` to :func:`rasteret.create_backend`. Unlike
    obstore's ``PlanetaryComputerCredentialProvider`` (whose first argument is a blob
    container URL), it is bound to no container: the backend asks the token API for
    each container a collection spans. ``pc/...`` datasets of the catalog use one
    with the defaults and need no backend at all.

    Args:
        sas_url: The token API base; a token is fetched from
            ``{sas_url}/{account}/{container}`` (default: ``PC_SDK_SAS_URL``, else
            ``https://planetarycomputer.microsoft.com/api/sas/v1/token``).
        subscription_key: A Planetary Computer subscription key (default:
            ``PC_SDK_SUBSCRIPTION_KEY``). Never shown in reprs.

    Raises:
        ConfigurationError: ``sas_url`` is not an http(s) URL, or is a blob container
            URL rather than the token API.

    Example:
        >>> import rasteret
        >>> backend = rasteret.create_backend(
        ...     credential_provider=rasteret.PlanetaryComputerSas(
        ...         "https://planetarycomputer.microsoft.com/api/sas/v1/token"))
        >>> backend.credential_provider
        PlanetaryComputerSas(sas_url='https://planetarycomputer.microsoft.com/api/sas/v1/token', subscription_key=None)
    """  # noqa: E501

    sas_url: str | None = None
    subscription_key: str | None = None

    def __post_init__(self) -> None:
        if self.sas_url is None:
            return
        from rasteret.errors import ConfigurationError

        if not self.sas_url.startswith(("https://", "http://")):
            raise ConfigurationError(
                f"PlanetaryComputerSas(sas_url={self.sas_url!r}): give the token API's URL, "
                "e.g. 'https://planetarycomputer.microsoft.com/api/sas/v1/token'"
            )
        if ".blob.core.windows.net" in self.sas_url:
            raise ConfigurationError(
                f"PlanetaryComputerSas(sas_url={self.sas_url!r}) is a blob container URL; "
                "give the token API instead (default: "
                "'https://planetarycomputer.microsoft.com/api/sas/v1/token'), or nothing"
            )
        # Tokens are fetched from f"{sas_url}/{account}/{container}".
        object.__setattr__(self, "sas_url", self.sas_url.rstrip("/"))

    def __repr__(self) -> str:
        key = "***" if self.subscription_key else None
        return f"PlanetaryComputerSas(sas_url={self.sas_url!r}, subscription_key={key})"

    def for_container(self, account: str, container: str) -> PlanetaryComputerCredentialProvider:
        """An obstore provider for one account/container."""
        from obstore.auth.planetary_computer import PlanetaryComputerCredentialProvider

        return PlanetaryComputerCredentialProvider(
            account_name=account, container_name=container, sas_url=self.sas_url,
            subscription_key=self.subscription_key,
        )


def planetary_computer_template(provider: object) -> PlanetaryComputerSas | None:
    """The per-container template of a Planetary Computer provider (or None if
    ``provider`` is not one)."""
    if isinstance(provider, PlanetaryComputerSas):
        return provider
    if type(provider).__name__ != "PlanetaryComputerCredentialProvider":
        return None
    settings = getattr(provider, "_settings", None)
    return PlanetaryComputerSas(
        sas_url=getattr(settings, "sas_url", None),
        subscription_key=getattr(settings, "subscription_key", None),
    )
