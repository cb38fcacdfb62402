"""String options (``on_error``, ``mode``, ``resampling``...) and their one check."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal, get_args

from rasteret.errors import ConfigurationError

#: ``on_error`` of builds, reads and datasets: stop at the first failure, or leave
#: the failing asset, scene or chip out and go on.
OnError = Literal["raise", "skip"]
ON_ERROR: tuple[OnError, ...] = get_args(OnError)

#: How pixels are resampled when a read leaves the native grid.
Resampling = Literal["nearest", "bilinear"]
RESAMPLING: tuple[Resampling, ...] = get_args(Resampling)

#: Which scene wins where scenes overlap in a mosaic.
MosaicOrder = Literal["latest", "earliest", "least_cloudy"]
MOSAIC_ORDER: tuple[MosaicOrder, ...] = get_args(MosaicOrder)

#: Which scenes a sampled point takes: every covering scene, the newest (at or before
#: the point's date when points carry dates), or the nearest in time to its date.
Match = Literal["all", "latest", "nearest"]
MATCH: tuple[Match, ...] = get_args(Match)


def check_option(name: str, value: Any, choices: Collection[Any]) -> None:
    """Refuse ``value`` for the option ``name`` unless it is one of ``choices``.

    Raises:
        ConfigurationError: Naming the option, the value given and the choices.
    """
    if value not in choices:
        listed = ", ".join(repr(choice) for choice in choices)
        raise ConfigurationError(f"{name} must be one of {listed}; got {value!r}")
