"""Credential helpers that span many stores.

obstore's ``PlanetaryComputerCredentialProvider`` is bound to one storage account
and container, while a Planetary Computer collection spans several. A backend given
one (or a :class:`PlanetaryComputerSas` description) builds one provider per
container it meets, sharing the token endpoint and subscription key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PlanetaryComputerSas:
    """Fetch Planetary Computer SAS tokens for whichever container a read needs.

    Args:
        sas_url: The token API base (default: ``PC_SDK_SAS_URL`` or the public API).
        subscription_key: A Planetary Computer subscription key (default:
            ``PC_SDK_SUBSCRIPTION_KEY``). Never shown in reprs.
    """

    sas_url: str | None = None
    subscription_key: str | None = None

    def __repr__(self) -> str:
        key = "***" if self.subscription_key else None
        return f"PlanetaryComputerSas(sas_url={self.sas_url!r}, subscription_key={key})"

    def for_container(self, account: str, container: str) -> Any:
        """An obstore provider for one account/container."""
        from obstore.auth.planetary_computer import PlanetaryComputerCredentialProvider

        return PlanetaryComputerCredentialProvider(
            account_name=account, container_name=container, sas_url=self.sas_url,
            subscription_key=self.subscription_key,
        )


def planetary_computer_template(provider: Any) -> PlanetaryComputerSas | None:
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
