"""In-process stores: the same Protocols as ``stores.sql`` and ``stores.redis``,
held in dictionaries.

For a single process only (one server, tests, development): nothing is shared
between instances and nothing survives a restart. There is deliberately no
memory refresh-token store: refresh tokens must outlive a restart.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from uuid import UUID

from bastion.clock import Clock
from bastion.stores.protocols import BrowserSession

__all__ = ["MemoryBrowserSessionStore", "MemoryRevocationStore"]


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


class MemoryBrowserSessionStore:
    """:class:`~bastion.stores.protocols.BrowserSessionStore` in one dict.

    For a single process: a restart signs every browser out. No method awaits
    anything, so on one event loop each is atomic (:meth:`delete_all` cannot
    interleave with :meth:`add`)."""

    def __init__(self) -> None:
        self._sessions: dict[str, BrowserSession] = {}
        """id_hash -> session"""

    async def add(self, session: BrowserSession) -> None:
        self._sessions[session.id_hash] = session

    async def get(self, id_hash: str) -> BrowserSession | None:
        return self._sessions.get(id_hash)

    async def touch(self, session: BrowserSession) -> bool:
        current = self._sessions.get(session.id_hash)
        if current is None:
            return False
        self._sessions[session.id_hash] = _touched(current, session)
        return True

    async def delete(self, id_hash: str) -> bool:
        return self._sessions.pop(id_hash, None) is not None

    async def delete_by_public_id(self, user_id: UUID, public_id: str) -> bool:
        for id_hash, session in list(self._sessions.items()):
            if session.user_id == user_id and session.public_id == public_id:
                del self._sessions[id_hash]
                return True
        return False

    async def delete_all(self, user_id: UUID, *, now: datetime) -> int:
        now = _as_utc(now)
        mine = [s for s in self._sessions.values() if s.user_id == user_id]
        for session in mine:
            del self._sessions[session.id_hash]
        return sum(1 for session in mine if session.is_live(now))

    async def list_for_user(self, user_id: UUID, *, now: datetime) -> list[BrowserSession]:
        now = _as_utc(now)
        live = [s for s in self._sessions.values() if s.user_id == user_id and s.is_live(now)]
        return sorted(live, key=lambda s: (-s.created_at.timestamp(), s.id_hash))

    async def purge(self, *, now: datetime) -> int:
        now = _as_utc(now)
        dead = [h for h, session in self._sessions.items() if not session.is_live(now)]
        for id_hash in dead:
            del self._sessions[id_hash]
        return len(dead)


def _touched(current: BrowserSession, update: BrowserSession) -> BrowserSession:
    """``current`` with the activity fields of ``update``, nothing else."""
    return replace(
        current, last_seen_at=update.last_seen_at, idle_expires_at=update.idle_expires_at
    )
