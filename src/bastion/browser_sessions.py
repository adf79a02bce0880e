"""Server-side sessions for browsers: what a session cookie stands for.

The cookie holds 256 random bits and nothing else; the server keeps the
session (user, times, where it came from) in a
:class:`~bastion.stores.protocols.BrowserSessionStore` under the SHA-256 of
that value, so a leaked store holds no usable cookie. The rules, after the
OWASP Session Management Cheat Sheet:

- **A fresh id at every login** (no session fixation): :meth:`BrowserSessionService.log_in`
  ends the session whose cookie came with the login request, whoever's it
  was, and mints a new one. An id is never chosen by the client.
- **Two timeouts**, both enforced here against the injected clock: idle
  (``BASTION_SESSION_IDLE_TIMEOUT``, 30 minutes) and absolute
  (``BASTION_SESSION_ABSOLUTE_TIMEOUT``, 12 hours, never extended by
  activity). A session past either is deleted when seen.
- **Activity is written coalesced**: ``last_seen_at`` moves at most once per
  touch interval (60 s, or a tenth of the idle timeout if that is shorter),
  so a busy page is not one store write per request. The price: idle
  precision is bounded by that interval; a session may end up to one
  interval *before* a full idle timeout of real inactivity, never after.
- **Logout ends the server side**: a replayed cookie is unknown afterwards.
  Password changes, "sign out everywhere" and disabling a user end all of the
  user's sessions (:meth:`BrowserSessionService.end_all`, hooked into
  :meth:`bastion.tokens.revocation.RevocationService.revoke_everything`).

CSRF tokens are derived from the session (:mod:`bastion.csrf`); this service
hands them out and checks them, and knows nothing of HTTP.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

from bastion.audit import AuditLog
from bastion.clients import FIRST_PARTY_CLIENT_ID
from bastion.clock import Clock
from bastion.csrf import TOKEN_MISMATCH, OriginPolicy, csrf_token_for, token_matches
from bastion.errors import CsrfRejected, NotFound
from bastion.ratelimit import ip_key
from bastion.stores.protocols import BrowserSession, BrowserSessionStore

if TYPE_CHECKING:
    from bastion.login import PasswordLogin
    from bastion.ratelimit import RateLimiter

__all__ = [
    "BrowserSessionService",
    "SessionInfo",
    "StartedSession",
    "hash_session_id",
    "looks_like_session_id",
]

logger = logging.getLogger("bastion.browser_sessions")

SESSION_ID_BYTES: Final = 32
"""256 bits of randomness (OWASP asks for at least 64 bits of entropy)."""
SESSION_ID_LENGTH: Final = 43
"""``secrets.token_urlsafe(32)``: 43 base64url characters."""
MAX_USER_AGENT: Final = 512
MAX_TOUCH_INTERVAL: Final = 60.0

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")


def looks_like_session_id(value: str) -> bool:
    """Whether ``value`` has the shape of a cookie this service mints: a
    tampered, truncated or oversized cookie is refused before any lookup."""
    return _SESSION_ID.fullmatch(value) is not None


def hash_session_id(value: str) -> str:
    """The store's key for a cookie value: its SHA-256, in hex."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StartedSession:
    """A new session: the cookie value to set (once; only its hash is
    stored), the record, and its CSRF token for the pages and SPAs."""

    cookie_value: str = field(repr=False)
    session: BrowserSession
    csrf_token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session as the account page shows it; nothing secret in it."""

    public_id: str
    """For the "end session" button (:meth:`BrowserSessionService.end_session`)."""
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    ip_address: str | None
    user_agent: str | None
    current: bool
    """The session of the request that asked."""


class BrowserSessionService:
    """Starts, resumes and ends browser sessions; checks their CSRF proofs.

    ``csrf_key`` comes from :func:`bastion.csrf.derive_csrf_key`; ``origins``
    are the origins trusted to send state-changing requests. With
    ``password_login`` (and optionally ``limiter``) :meth:`log_in` does the
    whole password login, so every login form shares one path.
    """

    def __init__(
        self,
        store: BrowserSessionStore,
        clock: Clock,
        *,
        csrf_key: bytes,
        origins: OriginPolicy,
        idle_timeout: int,
        absolute_timeout: int,
        touch_interval: float | None = None,
        audit: AuditLog | None = None,
        password_login: PasswordLogin | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        if idle_timeout <= 0 or absolute_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.store = store
        self.origins = origins
        self._clock = clock
        self._csrf_key = csrf_key
        self.idle_timeout = min(idle_timeout, absolute_timeout)
        self.absolute_timeout = absolute_timeout
        self.touch_interval = (
            min(MAX_TOUCH_INTERVAL, self.idle_timeout / 10)
            if touch_interval is None
            else touch_interval
        )
        self._audit = audit
        self._login = password_login
        self._limiter = limiter

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self, user_id: UUID, *, ip: str | None = None, user_agent: str | None = None
    ) -> StartedSession:
        """A new session for ``user_id`` with a freshly minted id. The caller
        must already have authenticated the user, and should end the session
        of any cookie the request carried (:meth:`log_in` does both)."""
        value = secrets.token_urlsafe(SESSION_ID_BYTES)
        now = self._clock.now()
        expires_at = now + timedelta(seconds=self.absolute_timeout)
        session = BrowserSession(
            id_hash=hash_session_id(value),
            public_id=secrets.token_urlsafe(16),
            user_id=user_id,
            created_at=now,
            last_seen_at=now,
            idle_expires_at=min(now + timedelta(seconds=self.idle_timeout), expires_at),
            expires_at=expires_at,
            ip_address=ip,
            user_agent=user_agent[:MAX_USER_AGENT] if user_agent else None,
        )
        await self.store.add(session)
        return StartedSession(value, session, self.csrf_token(session))

    async def log_in(
        self,
        *,
        username: str,
        password: str,
        ip: str | None,
        user_agent: str | None,
        previous_cookie: str | None,
    ) -> StartedSession:
        """A password login ending in a new session: the per-IP login limit
        (shared with the token endpoint, ``token_ip``), then
        :meth:`bastion.login.PasswordLogin.verify` (lockout, per-account
        limit, audited failures), then rotation: the session of
        ``previous_cookie`` ends and a new one starts. Audited as
        ``login.succeeded`` with ``method=session``.

        Raises :class:`~bastion.errors.InvalidCredentials` or
        :class:`~bastion.errors.RateLimited`; nothing changes then."""
        if self._login is None:
            raise RuntimeError("this BrowserSessionService was built without password_login")
        if self._limiter is not None:
            await self._limiter.hit("token_ip", ip_key(ip))
        user = await self._login.verify(
            username=username, password=password, client_id=FIRST_PARTY_CLIENT_ID, ip=ip
        )
        if previous_cookie:
            await self.end(previous_cookie, reason="login")
        started = await self.start(user.id, ip=ip, user_agent=user_agent)
        await self._record(
            "login.succeeded",
            actor=str(user.id),
            target=started.session.public_id,
            method="session",
            client_id=FIRST_PARTY_CLIENT_ID,
            ip=ip,
        )
        return started

    async def resume(self, cookie_value: str) -> BrowserSession | None:
        """The live session ``cookie_value`` names, or ``None`` (malformed,
        unknown, ended, or past a timeout; an expired one is deleted).

        Moves ``last_seen_at`` (and the idle deadline) only when the last
        stamp is at least :attr:`touch_interval` old (see the module docstring)."""
        if not looks_like_session_id(cookie_value):
            return None
        id_hash = hash_session_id(cookie_value)
        session = await self.store.get(id_hash)
        if session is None:
            return None
        now = self._clock.now()
        if not session.is_live(now):
            await self.store.delete(id_hash)
            logger.debug("browser session expired")
            return None
        if (now - session.last_seen_at).total_seconds() >= self.touch_interval:
            idle_deadline = now + timedelta(seconds=self.idle_timeout)
            session = replace(
                session,
                last_seen_at=now,
                idle_expires_at=min(idle_deadline, session.expires_at),
            )
            if not await self.store.touch(session):
                return None  # ended while we looked
        return session

    async def end(self, cookie_value: str, *, reason: str = "logout") -> bool:
        """End the session of ``cookie_value`` (logout); False when there was
        none. Audited as ``logout`` with ``method=session``."""
        if not looks_like_session_id(cookie_value):
            return False
        id_hash = hash_session_id(cookie_value)
        session = await self.store.get(id_hash)
        if session is None or not await self.store.delete(id_hash):
            return False
        await self._record(
            "logout",
            actor=str(session.user_id),
            target=session.public_id,
            method="session",
            reason=reason,
        )
        return True

    async def end_session(self, public_id: str, user_id: UUID) -> None:
        """End one of ``user_id``'s sessions by its public id (the account
        page's "end session"). :class:`~bastion.errors.NotFound` for an
        unknown id and for another user's, alike."""
        if len(public_id) > 64 or not await self.store.delete_by_public_id(user_id, public_id):
            raise NotFound("No such session.")
        await self._record("session.ended", actor=str(user_id), target=public_id, method="session")

    async def end_all(self, user_id: UUID) -> int:
        """End every session of the user (password change, sign out
        everywhere, account disabled); returns how many were live."""
        return await self.store.delete_all(user_id, now=self._clock.now())

    async def list(
        self, user_id: UUID, *, current: str | None = None
    ) -> builtins.list[SessionInfo]:
        """The user's live sessions, newest first; ``current`` is the public
        id of the asking session, marked in the answer."""
        sessions = await self.store.list_for_user(user_id, now=self._clock.now())
        return [
            SessionInfo(
                public_id=s.public_id,
                created_at=s.created_at,
                last_seen_at=s.last_seen_at,
                expires_at=s.expires_at,
                ip_address=s.ip_address,
                user_agent=s.user_agent,
                current=s.public_id == current,
            )
            for s in sessions
        ]

    async def purge(self, now: datetime | None = None) -> int:
        """Housekeeping: delete sessions dead by either timeout."""
        return await self.store.purge(now=now or self._clock.now())

    # ------------------------------------------------------------------ CSRF

    def csrf_token(self, session: BrowserSession) -> str:
        """The token a page or SPA must send back with unsafe requests."""
        return csrf_token_for(self._csrf_key, session.id_hash)

    def check_origin(self, origin: str | None, referer: str | None) -> None:
        """:class:`~bastion.errors.CsrfRejected` unless the request's origin is
        trusted. Alone, this guards the login form (no session, no token yet:
        login CSRF)."""
        self.origins.check(origin, referer)

    def check_csrf(
        self,
        session: BrowserSession,
        token: str | None,
        origin: str | None,
        referer: str | None,
    ) -> None:
        """Both proofs for an unsafe, cookie-authenticated request: a trusted
        origin, then the session's token (constant-time comparison).
        :class:`~bastion.errors.CsrfRejected` names which one failed."""
        self.check_origin(origin, referer)
        if not token_matches(self.csrf_token(session), token):
            raise CsrfRejected(TOKEN_MISMATCH)

    async def _record(self, action: str, *, actor: str, target: str, **details: str | None) -> None:
        if self._audit is not None:
            scalars: dict[str, Any] = details  # scalars only: never before/after snapshots
            await self._audit.record(action, actor=actor, target=target, **scalars)
