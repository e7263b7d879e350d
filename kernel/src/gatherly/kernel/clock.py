"""Time as a dependency, so rules about time are testable without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock tests move by hand."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, delta: timedelta) -> None:
        self.at += delta


def time_problem(value: datetime, zone: tzinfo = UTC) -> str | None:
    """Why this time cannot be stored or shown in `zone`, or None: it has no offset (it names no instant), or it
    falls before year 1 or after 9999 in UTC (the timestamp columns store UTC) or in `zone` (where calendars show
    it). Python's datetime holds only years 1 to 9999: an offset can push a time past them, and the conversion
    then overflows where it is stored or shown, far from the request that brought it."""
    if value.utcoffset() is None:
        return "has no offset"
    try:
        value.astimezone(UTC).astimezone(zone)
    except OverflowError:
        return "falls outside the years 1 to 9999" + ("" if zone is UTC else f" in {zone}")
    return None
