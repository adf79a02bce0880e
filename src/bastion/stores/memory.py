"""In-process stores: the same Protocols as ``stores.sql`` and ``stores.redis``,
held in dictionaries.

For a single process only (one server, tests, development): nothing is shared
between instances and nothing survives a restart. There is deliberately no
memory refresh-token store: refresh tokens must outlive a restart.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bastion.clock import Clock

__all__ = ["MemoryRevocationStore"]


class MemoryRevocationStore:
    """:class:`~bastion.stores.protocols.RevocationStore` in two dicts.

    Entries stop counting once ``clock`` passes their expiry and :meth:`purge`
    drops them. Every method runs without awaiting anything, so on one event
    loop each is atomic.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._denied: dict[str, datetime] = {}
        """jti -> expires_at"""
        self._watermarks: dict[str, tuple[float, datetime]] = {}
        """subject -> (moment as epoch seconds, keep_until)"""

    async def deny(self, jti: str, *, expires_at: datetime) -> None:
        """Denylist ``jti`` until ``expires_at``; idempotent, and a token that
        has already expired is not stored."""
        expires_at = _as_utc(expires_at)
        if expires_at <= self._clock.now():
            return
        current = self._denied.get(jti)
        if current is None or current < expires_at:
            self._denied[jti] = expires_at

    async def set_watermark(self, subject: str, moment: datetime, *, keep_until: datetime) -> None:
        """Keep the later moment and the later expiry of old and new."""
        keep_until = _as_utc(keep_until)
        if keep_until <= self._clock.now():
            return
        stamp = _as_utc(moment).timestamp()
        current = self._watermarks.get(subject)
        if current is not None:
            stamp, keep_until = max(stamp, current[0]), max(keep_until, current[1])
        self._watermarks[subject] = (stamp, keep_until)

    async def is_revoked(self, jti: str | None, subject: str, issued_at: float) -> bool:
        now = self._clock.now()
        if jti is not None:
            expires_at = self._denied.get(jti)
            if expires_at is not None and now < expires_at:
                return True
        watermark = self._watermarks.get(subject)
        return watermark is not None and now < watermark[1] and issued_at <= watermark[0]

    async def purge(self, *, now: datetime) -> int:
        """Drop entries whose expiry is at or before ``now``; returns how many."""
        now = _as_utc(now)
        denied = [jti for jti, expires_at in self._denied.items() if expires_at <= now]
        for jti in denied:
            del self._denied[jti]
        marks = [subject for subject, (_, keep) in self._watermarks.items() if keep <= now]
        for subject in marks:
            del self._watermarks[subject]
        return len(denied) + len(marks)


def _as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime raises :class:`ValueError` (as in
    the SQL stores, whose ``as_utc`` this mirrors without importing SQLAlchemy)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime given; pass an aware UTC datetime")
    return moment.astimezone(UTC)
