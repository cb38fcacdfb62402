"""String options (``on_error``, ``mode``, ``resampling``...) and their one check."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from rasteret.errors import ConfigurationError

#: ``on_error`` of builds, reads and datasets: stop at the first failure, or leave
#: the failing asset, scene or chip out and go on.
ON_ERROR = ("raise", "skip")


def check_option(name: str, value: Any, choices: Collection[Any]) -> None:
    """Refuse ``value`` for the option ``name`` unless it is one of ``choices``.

    Raises:
        ConfigurationError: Naming the option, the value given and the choices.
    """
    if value not in choices:
        listed = ", ".join(repr(choice) for choice in choices)
        raise ConfigurationError(f"{name} must be one of {listed}; got {value!r}")
