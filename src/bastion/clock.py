"""Time as a dependency.

Every expiry rule (token ``exp``/``nbf``, key retirement, cache lifetimes) reads
the time through a :class:`Clock`, so tests move time forward instead of
sleeping and production code never calls ``datetime.now()`` directly.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """A source of the current time, in UTC."""

    def now(self) -> datetime:
        """Aware UTC datetime."""
        ...

    def timestamp(self) -> float:
        """Seconds since the epoch; the cheap form used on hot paths."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def timestamp(self) -> float:
        return time.time()


class FrozenClock:
    """A clock that stands still until told to move; for tests and simulations."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")

    def now(self) -> datetime:
        return self._now

    def timestamp(self) -> float:
        return self._now.timestamp()

    def advance(self, seconds: float = 0, **kwargs: float) -> None:
        """Move forward by ``seconds`` (and/or ``timedelta`` keyword arguments)."""
        self._now += timedelta(seconds=seconds, **kwargs)

    def set(self, moment: datetime) -> None:
        self._now = moment
