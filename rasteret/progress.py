"""Progress bars: whether they show, and the one way they are made.

Every long operation (builds, static catalog crawls, STAC searches, reads of many
areas or points, chip exports, label imports) takes ``progress=True``. A bar shows
when both allow it:

1. the call's ``progress`` argument (``False`` hides that call's bars), and
2. the ``RASTERET_PROGRESS`` environment variable: ``0`` (or ``false``, ``no``,
   ``off``) hides every bar of the process whatever the argument, for logs of batch
   jobs and CI; ``1`` (or ``true``, ``yes``, ``on``) or unset leaves it to the argument.

Bars are tqdm's (``tqdm.auto``: a widget in notebooks), written to standard error so
standard output (e.g. the command line's ``--json``) stays clean. Bars of reads and
catalog searches wait :data:`DELAY` seconds before they show, so quick calls print
nothing; builds, chip exports and label imports show theirs at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

from tqdm.auto import tqdm

from rasteret.errors import ConfigurationError

#: The environment switch: ``0`` hides every bar of the process.
ENV_VAR = "RASTERET_PROGRESS"
#: Seconds the bar of a read or a search waits before it shows (a call that ends sooner
#: prints nothing).
DELAY = 2.0

_OFF = frozenset({"0", "false", "no", "off"})
_ON = frozenset({"", "1", "true", "yes", "on"})

T = TypeVar("T")


class ProgressBar(Protocol):
    """What rasteret does with a bar (a ``tqdm``): count work, grow its total, close it."""

    total: float | None

    def update(self, n: float = 1) -> bool | None:
        """Count ``n`` more units done."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        """Show ``key=value`` pairs after the bar (e.g. failures so far)."""

    def close(self) -> None:
        """End the bar (a hidden or not yet shown bar prints nothing)."""


def progress_enabled(progress: bool = True) -> bool:
    """Whether bars show: ``progress`` and the ``RASTERET_PROGRESS`` switch both allow it.

    Raises:
        ConfigurationError: ``RASTERET_PROGRESS`` holds something other than an on or
            off value.
    """
    if not progress:
        return False
    value = os.environ.get(ENV_VAR)
    if value is None:
        return True
    setting = value.strip().lower()
    if setting in _OFF:
        return False
    if setting in _ON:
        return True
    raise ConfigurationError(
        f"{ENV_VAR}={value!r} is neither on nor off: set it to 0 to hide progress bars "
        "or 1 to show them (or unset it)")


def progress_bar(*, desc: str, unit: str, progress: bool, total: float | None = None,
                 delayed: bool = False) -> ProgressBar:
    """A bar counting ``unit``s, hidden unless :func:`progress_enabled`.

    Args:
        desc: What is being done, e.g. ``"Indexing s2"``.
        unit: What is counted, e.g. ``"asset"``.
        progress: The caller's ``progress`` argument.
        total: Units to do, if known (a bar may grow it later).
        delayed: Show the bar only after :data:`DELAY` seconds (reads and searches,
            often quick); else at once.
    """
    bar: ProgressBar = tqdm(total=total, desc=desc, unit=unit, delay=DELAY if delayed else 0.0,
                            disable=not progress_enabled(progress))
    return bar


def track(iterable: Iterable[T], *, desc: str, unit: str, progress: bool,
          total: float | None = None, delayed: bool = False) -> Iterator[T]:
    """``iterable``, counted by a bar as it is consumed (the arguments as for
    :func:`progress_bar`); the bar closes when the iteration ends, also early."""
    wrapped: Iterator[T] = tqdm(iterable, total=total, desc=desc, unit=unit,
                                delay=DELAY if delayed else 0.0,
                                disable=not progress_enabled(progress))
    return wrapped


def grow(bar: ProgressBar, units: float) -> None:
    """Add ``units`` to the total of ``bar`` (work found while it runs); shown from its
    next update (a redraw now would show a bar whose delay has not passed)."""
    bar.total = (bar.total or 0) + units


__all__ = ["ENV_VAR", "DELAY", "ProgressBar", "grow", "progress_bar", "progress_enabled",
           "track"]
