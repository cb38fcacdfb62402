"""Dates as users give them (ISO strings, dates, datetimes) and date ranges, parsed once."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rasteret.errors import ConfigurationError

#: ``(start, end)``: ISO strings, dates or datetimes; the end is inclusive (a bare
#: date ends at the end of its day).
DateRange = tuple[Any, Any]


def parse_datetime(value: Any, *, end: bool = False) -> dt.datetime | None:
    """Parse a date or datetime (ISO string as STAC writes it, date, datetime) into an
    aware UTC datetime; None stays None. Naive values are taken as UTC.

    Args:
        value: The date or datetime.
        end: ``value`` ends a range: a bare date then means the whole day.

    Raises:
        ValueError: The string is not an ISO 8601 date or datetime.
    """
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, dt.date):
        stamp = dt.datetime(value.year, value.month, value.day)
        if end:
            stamp += dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    else:
        text = str(value).strip().replace("Z", "+00:00")
        stamp = dt.datetime.fromisoformat(text)
        if end and len(text) <= 10:
            stamp += dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.astimezone(dt.UTC)


def parse_date_range(date_range: DateRange | None) -> tuple[dt.datetime, dt.datetime] | None:
    """Normalise ``(start, end)`` into aware UTC datetimes (end inclusive)."""
    if date_range is None:
        return None
    if len(date_range) != 2 or None in date_range:
        raise ConfigurationError(f"date_range must be (start, end), got {date_range!r}")
    try:
        start, end = parse_datetime(date_range[0]), parse_datetime(date_range[1], end=True)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"date_range {date_range!r} is not two ISO dates or datetimes "
            f"(e.g. ('2024-05-01', '2024-06-30')): {exc}"
        ) from None
    assert start is not None and end is not None  # None was refused above
    if start > end:
        raise ConfigurationError(f"date_range starts after it ends: {date_range!r}")
    return start, end
